"""Tables and figure of the training-factors study from its run directory (see run_study.py).

    .venv/bin/python examples/factors/summarize.py runs/factors

Writes OUT/summary.md, OUT/dr.csv and OUT/factors.png / .pdf. Every number comes from the critmass
metrics (critmass.metrics.dr, per_class_summary) on the sweep's results.parquet, per_class.parquet and
cka.parquet, plus each model's train.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ORDER = ["plain", "dropout-0.2", "dropout-0.5", "decov-0.001", "decov-0.01", "decov-0.1", "mrl", "mrl-mean", "width-32",
         "width-512", "pgd-linf"]
PAPER = {  # the paper's direction of DR relative to the plain model
    "dropout-0.2": "+", "dropout-0.5": "+", "decov-0.001": "-", "decov-0.01": "-", "decov-0.1": "-",
    "width-32": "-", "width-512": "+", "pgd-linf": "+", "mrl": "?", "mrl-mean": "?",
}
DATASETS = ["fashion-mnist-5to9", "digits", "textures"]


def _split(model: str) -> tuple[str, int]:
    factor, _, seed = model.rpartition("-seed")
    return factor, int(seed)


def _order(factors) -> list[str]:
    return [f for f in ORDER if f in set(factors)] + sorted(set(factors) - set(ORDER))


def robust_accuracy(model_dir: Path, n: int = 500, eps: float = 0.0314, steps: int = 10) -> float:
    """PGD-``steps`` Linf accuracy of a trained model on the first ``n`` of its upstream test images."""
    import timm.data
    import torch

    from critmass.models import load_model
    from critmass.train import PGD, Penultimate
    from critmass.train._data import load_images, split_transform

    info = json.loads((model_dir / "train.json").read_text())
    data_cfg = info["config"]["data"]
    backbone = load_model(info["spec"], weights=model_dir / "model.safetensors")
    pil, mean, std = split_transform(timm.data.resolve_model_data_config(backbone.module))
    data = load_images(data_cfg["spec"], "test", pil_transform=pil, classes=data_cfg["classes"],
                       max_samples=data_cfg["test_max_samples"], seed=data_cfg["seed"])
    net = Penultimate(backbone.module, mean=mean, std=std).eval()
    x, y = data.batch(torch.arange(min(n, len(data))))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        adv = PGD("Linf", eps, steps=steps)(net, x, y)
    with torch.no_grad():
        return float((net(adv).argmax(1) == y).float().mean())


def _constant_neurons(out: Path, models: list[str]) -> dict[str, int]:
    """Penultimate neurons of each model that are constant (dead) on the fashion-mnist-5to9 training images,
    from the sweep's cached features."""
    import critmass

    found = {}
    for m in models:
        w = out / "models" / m / "model.safetensors"
        if not w.is_file():
            continue
        fs = critmass.extract("timm:convnext_atto", f"npz:{out / 'fashion-mnist-5to9.npz'}", weights=w,
                              split=["train", "test"], cache=out / "cache", batch_size=256, device="cpu",
                              progress=False)
        x = np.asarray(fs.x_train, dtype=np.float64)
        found[m] = int((x.std(axis=0) <= 1e-6 * max(1e-12, x.std(axis=0).max())).sum())
    return found


def summarize(out) -> str:
    from critmass.metrics import dr, per_class_summary

    out = Path(out)
    sweep = out / "sweep"
    res = pd.read_parquet(sweep / "results.parquet")
    per_class = pd.read_parquet(sweep / "per_class.parquet")
    cka = pd.read_parquet(sweep / "cka.parquet") if (sweep / "cka.parquet").is_file() else None

    table = dr(res, 0.9, selector=["random", "prefix"], n_boot=1000, random_state=0)
    interp = dr(res, 0.9, selector="random", interpolate=True, n_boot=0)
    table[["factor", "train_seed"]] = table["model"].apply(lambda m: pd.Series(_split(m)))
    table = table.merge(interp[["model", "dataset", "dr"]].rename(columns={"dr": "dr_interpolated"}),
                        on=["model", "dataset"], how="left")
    table.to_csv(out / "dr.csv", index=False)
    rnd = table[table["selector"] == "random"]
    factors = _order(rnd["factor"].unique())
    datasets = [d for d in DATASETS if d in set(rnd["dataset"])]
    lines = ["# Training factors study: results", ""]

    # ---- upstream
    robust_path = out / "robust.json"
    robust = json.loads(robust_path.read_text()) if robust_path.is_file() else {}
    for m in sorted(rnd["model"].unique()):
        if m not in robust and (out / "models" / m / "train.json").is_file():
            robust[m] = robust_accuracy(out / "models" / m)
            robust_path.write_text(json.dumps(robust, indent=1, sort_keys=True))
    dead = _constant_neurons(out, sorted(rnd["model"].unique()))
    lines += ["## Upstream (Fashion-MNIST classes 0-4, 2,000 test images)", "",
              "| model | penultimate | test accuracy (seed 0 / 1) | PGD-10 Linf 8/255 accuracy (first 500 test images) "
              "| constant neurons on fashion-mnist-5to9 train | train s |", "|---|---|---|---|---|---|"]
    for f in factors:
        infos = []
        for s in sorted(rnd.loc[rnd["factor"] == f, "train_seed"].unique()):
            p = out / "models" / f"{f}-seed{s}" / "train.json"
            if p.is_file():
                infos.append(json.loads(p.read_text())["final"])
        if not infos:
            continue
        accs = " / ".join(f"{i['test_accuracy']:.3f}" for i in infos)
        seeds_f = sorted(rnd.loc[rnd["factor"] == f, "train_seed"].unique())
        rob = " / ".join(f"{robust[f'{f}-seed{s}']:.3f}" for s in seeds_f if f"{f}-seed{s}" in robust) or "-"
        secs = " / ".join(f"{i['seconds']:.0f}" for i in infos)
        consts = " / ".join(str(dead[f"{f}-seed{s}"]) for s in seeds_f if f"{f}-seed{s}" in dead) or "-"
        lines.append(f"| {f} | {infos[0]['n_features']} | {accs} | {rob} | {consts} | {secs} |")

    # ---- DR(0.9), random subsets
    lines += ["", "## DR(0.9), random subsets (probe on the penultimate layer; 3 subset seeds)", "",
              "Cells: mean over the 2 training seeds, then each seed's DR with its 95% bootstrap CI over subset "
              "seeds. Delta: mean minus plain's mean. Paper: the direction the paper reports.", "",
              "| model | paper | " + " | ".join(f"{d} DR | delta" for d in datasets) + " |",
              "|---|---|" + "---|---|" * len(datasets)]
    plain = {d: rnd[(rnd["factor"] == "plain") & (rnd["dataset"] == d)]["dr"].mean() for d in datasets}
    verdicts = {}
    for f in factors:
        cells = []
        signs = []
        for d in datasets:
            g = rnd[(rnd["factor"] == f) & (rnd["dataset"] == d)].sort_values("train_seed")
            if g.empty:
                cells.append("- | -")
                continue
            per = ", ".join(f"{r.dr:.2f} [{r.dr_ci_low:.2f}, {r.dr_ci_high:.2f}]" for r in g.itertuples())
            delta = g["dr"].mean() - plain[d]
            cells.append(f"{g['dr'].mean():.3f} ({per}) | {delta:+.3f}")
            if f != "plain":
                # a trend counts only if every seed of the factor is on the same side of every seed of plain
                p = rnd[(rnd["factor"] == "plain") & (rnd["dataset"] == d)]["dr"]
                signs.append("+" if g["dr"].min() > p.max() else "-" if g["dr"].max() < p.min() else "0")
        verdicts[f] = signs
        lines.append(f"| {f} | {PAPER.get(f, '')} | " + " | ".join(cells) + " |")

    lines += ["", "Separation per dataset (+: both seeds above both plain seeds, -: both below, 0: overlap), "
              "in the order " + ", ".join(datasets) + ":", ""]
    for f in factors:
        if f == "plain":
            continue
        s = verdicts.get(f, [])
        want = PAPER.get(f, "?")
        agree = sum(x == want for x in s)
        lines.append(f"- {f}: {' '.join(s)} (paper: {want}; agrees on {agree}/{len(s)})")

    # ---- critical mass in neurons (widths differ)
    lines += ["", "## Critical mass k*(0.9) in neurons, random subsets (mean over training seeds)", "",
              "| model | D | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for f in factors:
        g = rnd[rnd["factor"] == f]
        row = [f"{g[g['dataset'] == d]['critical_n_neurons'].mean():.1f}" for d in datasets]
        lines.append(f"| {f} | {int(g['n_features'].iloc[0])} | " + " | ".join(row) + " |")

    # ---- MRL: prefixes vs random subsets
    lines += ["", "## Matryoshka: first-k neurons (prefix) vs random k neurons, test accuracy "
              "(mean over training and subset seeds)", ""]
    fr = sorted(res["fraction"].unique())
    small = [f for f in fr if f <= 0.2]
    for d in datasets:
        lines += [f"{d}:", "", "| model | selector | " + " | ".join(f"k={max(1, round(f * 128))}" for f in small)
                  + " | full |", "|---|---|" + "---|" * (len(small) + 1)]
        for f in [x for x in ("plain", "mrl", "mrl-mean") if x in factors]:
            sub = res[(res["model"].str.startswith(f + "-seed")) & (res["dataset"] == d)]
            full = sub[sub["selector"] == "all"]["test_accuracy"].mean()
            for sel in ("prefix", "random"):
                s2 = sub[sub["selector"] == sel]
                accs = [s2[np.isclose(s2["fraction"], x)]["test_accuracy"].mean() for x in small]
                lines.append(f"| {f} | {sel} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {full:.3f} |")
        lines.append("")

    # ---- per-class Gini and CKA at 10% of the neurons
    summ = per_class_summary(per_class, selector="random")
    summ["factor"] = summ["model"].map(lambda m: _split(m)[0])
    at = summ[np.isclose(summ["fraction"], 0.1)]
    lines += ["## Per-class Gini of class accuracies with 10% random neurons (full layer in brackets)", "",
              "| model | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for f in factors:
        row = []
        for d in datasets:
            g = at[(at["factor"] == f) & (at["dataset"] == d)]
            row.append(f"{g['gini'].mean():.3f} ({g['full_gini'].mean():.3f})" if len(g) else "-")
        lines.append(f"| {f} | " + " | ".join(row) + " |")
    if cka is not None:
        cka = cka[cka["selector"] == "random"].copy()
        cka["factor"] = cka["model"].map(lambda m: _split(m)[0])
        lines += ["", "## Linear CKA of random subsets with the full layer (train split), mean over seeds", "",
                  "| model | " + " | ".join(f"{d} f=0.05 / 0.2" for d in datasets) + " |", "|---|" + "---|" * len(datasets)]
        for f in factors:
            row = []
            for d in datasets:
                g = cka[(cka["factor"] == f) & (cka["dataset"] == d)]
                a, b = (g[np.isclose(g["fraction"], x)]["cka"].mean() for x in (0.05, 0.2))
                row.append(f"{a:.3f} / {b:.3f}")
            lines.append(f"| {f} | " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    _figure(out, res, rnd, factors, datasets, cka)
    print(text)
    return text


def _figure(out: Path, res, rnd, factors, datasets, cka) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tab = plt.get_cmap("tab20")

    def colors(i):  # 11+ factors: distinct colours, not tab10 repeating
        return tab((2 * i) % 20 + (i // 10) % 2)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    d0 = datasets[0]
    ax = axes[0]
    for i, f in enumerate(factors):
        sub = res[res["model"].str.startswith(f + "-seed") & (res["dataset"] == d0)]
        full = sub[sub["selector"] == "all"].groupby("model")["test_accuracy"].mean()
        r = sub[sub["selector"] == "random"].copy()
        r["rel"] = r["test_accuracy"] / r["model"].map(full)
        curve = r.groupby("fraction")["rel"].mean()
        ax.plot(curve.index, curve.values, marker="o", ms=3, label=f, color=colors(i))
    ax.axhline(0.9, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of penultimate neurons (random)")
    ax.set_ylabel("test accuracy / full layer")
    ax.set_title(f"{d0}: accuracy of random subsets")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    width = 0.8 / max(1, len(datasets))
    for j, d in enumerate(datasets):
        for i, f in enumerate(factors):
            g = rnd[(rnd["factor"] == f) & (rnd["dataset"] == d)]
            x = i + (j - (len(datasets) - 1) / 2) * width
            ax.scatter([x] * len(g), g["dr"], color=colors(j), s=14, label=d if i == 0 else None)
            ax.plot([x - width / 2, x + width / 2], [g["dr"].mean()] * 2, color=colors(j), lw=2)
    ax.set_xticks(range(len(factors)))
    ax.set_xticklabels(factors, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("DR(0.9), random subsets")
    ax.set_title("DR(0.9) per model (dots: training seeds)")
    ax.legend(fontsize=7)
    ax = axes[2]
    if cka is not None:
        for i, f in enumerate(factors):
            g = cka[(cka["factor"] == f) & (cka["dataset"] == d0)].groupby("fraction")["cka"].mean()
            ax.plot(g.index, g.values, marker="o", ms=3, label=f, color=colors(i))
        ax.set_xscale("log")
        ax.set_xlabel("fraction of penultimate neurons (random)")
        ax.set_ylabel("linear CKA with the full layer")
        ax.set_title(f"{d0}: CKA of random subsets")
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"factors.{ext}", dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    summarize(sys.argv[1] if len(sys.argv) > 1 else "runs/factors")
