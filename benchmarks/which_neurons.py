"""Benchmark: the neuron rankings (which neurons) against random subsets, in accuracy and in time.

Two parts, each measured in one run on one machine:

1. **Time.** Fitting every ranking selector (variance, cluster, fscore, probe-weight, greedy up to k = D/4,
   attribution) on the probes' fit rows of EfficientNet-Lite0 / Fashion-MNIST features (5,000 train images
   at 112 px, 1,280 neurons; 4,500 fit rows), against the baseline of the default random probe curve on the
   same features: ``run_probes(selectors=['random'])`` with the paper's 15 fractions x 5 seeds, logistic
   probes, the default penalty grid. Printed: each selector's time, their sum, the baseline, the ratio.
2. **Accuracy.** Test accuracy of logistic probes on the first k neurons of each ordering (random: mean of 3
   seeds), and the gap to random, for EfficientNet-Lite0 on Fashion-MNIST (k = 3, 13, 64, 128 of 1,280: the
   issue's table) and all-MiniLM-L6-v2 on BBC News (k = 2, 4, 19, 38 of 384). Written to
   ``benchmarks/results/selectors_gap.csv`` (one row per model, dataset, selector, k: accuracy, random's,
   gap) with the CPU, versions and seconds.
3. **Are they the same neurons?** For EfficientNet-Lite0, the top-k of ``fscore`` and ``greedy`` on
   Fashion-MNIST against those on digits (the same layer, another task), and their stability over 10
   bootstrap resamples of Fashion-MNIST's fit rows (``critmass.metrics.neuron_overlap`` /
   ``neuron_stability``), written to ``benchmarks/results/selectors_neurons.csv``.

Usage::

    python benchmarks/which_neurons.py                   # both parts, both data sets (a few minutes on 2 cores)
    python benchmarks/which_neurons.py --quick           # timing only, 3 fractions x 2 seeds baseline
    python benchmarks/which_neurons.py --no-timing --out /tmp/gap.csv
    python benchmarks/which_neurons.py --no-timing --datasets fashion-mnist --no-overlap
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

RANKINGS = ["variance", "cluster", "fscore", "probe-weight", "greedy", "attribution"]
CASES = {
    "fashion-mnist": dict(model="efficientnet-lite0", dataset="fashion-mnist", ks=[3, 13, 64, 128],
                          max_samples={"train": 5000, "test": 2000}, image_size=112),
    "bbc-news": dict(model="all-minilm-l6-v2", dataset="bbc-news", ks=[2, 4, 19, 38], max_samples=None,
                     image_size=None),
}


def cpu_model() -> str:
    from critmass._blas import cpu_model as _cpu_model  # the one reading of /proc/cpuinfo

    return _cpu_model()


def features(case: dict, cache):
    import critmass

    kw = {"max_samples": case["max_samples"]} if case["max_samples"] else {}
    if case["image_size"]:
        kw["image_size"] = case["image_size"]
    return critmass.extract(case["model"], case["dataset"], split=["train", "test"], cache=cache, device="cpu",
                            progress=False, **kw)


def timing(fs, *, quick: bool) -> list[dict]:
    from critmass._defaults import DEFAULT_FRACTIONS
    from critmass.probes import run_probes
    from critmass.subsets import make_selector, probe_fit_rows

    rows, _ = probe_fit_rows(fs["train"].y, has_val="val" in fs)
    X = np.asarray(fs["train"].x if rows is None else fs["train"].x[rows], dtype=np.float32)
    y = np.asarray(fs["train"].y if rows is None else fs["train"].y[rows])
    out = []
    total = 0.0
    for name in RANKINGS:
        sel = make_selector(name)
        t = time.perf_counter()
        sel.fit(X, y) if sel.requires_y else sel.fit(X)
        dt = time.perf_counter() - t
        total += dt
        out.append({"what": name, "seconds": dt})
        print(f"  {name:<14} {dt:7.2f} s", flush=True)
    fractions = (0.01, 0.1, 1.0) if quick else DEFAULT_FRACTIONS
    seeds = 2 if quick else 5
    t = time.perf_counter()
    run_probes(fs, selectors=["random"], fractions=fractions, seeds=seeds, device="cpu", save_weights=False)
    base = time.perf_counter() - t
    print(f"  all rankings   {total:7.2f} s  (fit on {X.shape[0]} x {X.shape[1]}; greedy to k = {X.shape[1] // 4})")
    print(f"  baseline: random probe curve, {len(fractions)} fractions x {seeds} seeds: {base:.2f} s  "
          f"-> rankings / baseline = {total / base:.2f}")
    out += [{"what": "all rankings", "seconds": total},
            {"what": f"random curve {len(fractions)}x{seeds}", "seconds": base}]
    return out


def gap(fs, case: dict, out=None) -> pd.DataFrame:
    from critmass.probes import run_probes

    t = time.perf_counter()
    res = run_probes(fs, selectors=["random", *RANKINGS], fractions=[], n_neurons=case["ks"], seeds=3, device="cpu",
                     save_weights=out is not None, out=out).results
    dt = time.perf_counter() - t
    res = res[res["selector"] != "all"]
    mean = res.groupby(["selector", "n_neurons"], as_index=False)["test_accuracy"].mean()
    rnd = mean[mean["selector"] == "random"].set_index("n_neurons")["test_accuracy"]
    mean["random_accuracy"] = mean["n_neurons"].map(rnd)
    mean["gap"] = mean["test_accuracy"] - mean["random_accuracy"]
    mean["n_features"] = fs.n_features
    mean["model"], mean["dataset"] = case["model"], case["dataset"]
    mean["n_train"], mean["n_test"] = fs["train"].n_samples, fs["test"].n_samples
    mean["probe_seconds"] = round(dt, 2)
    order = {s: i for i, s in enumerate(["random", *RANKINGS])}
    mean = mean.sort_values(["n_neurons", "selector"], key=lambda c: c.map(order) if c.name == "selector" else c)
    wide = mean.pivot(index="selector", columns="n_neurons", values="test_accuracy").loc[["random", *RANKINGS]]
    print(f"\n{case['model']} / {case['dataset']} ({fs.n_features} neurons; {fs['train'].n_samples} train, "
          f"{fs['test'].n_samples} test; logistic probes, random = mean of 3 seeds; {dt:.0f} s):")
    print(wide.map(lambda v: f"{v:.3f}").to_string())
    return mean


def neurons(args, work: Path) -> None:
    """Part 3: top-k overlap of Fashion-MNIST's and digits' rankings of EfficientNet-Lite0's neurons, and their
    bootstrap stability on Fashion-MNIST."""
    from critmass.metrics import neuron_overlap, neuron_stability
    from critmass.probes import run_probes

    digits = features(dict(CASES["fashion-mnist"], dataset="digits", max_samples=None), args.cache)
    ks = CASES["fashion-mnist"]["ks"]
    run_probes(digits, selectors=["fscore", "greedy"], fractions=[], n_neurons=ks, seeds=1, device="cpu",
               solver="ridge", out=work / "digits")
    frames = []
    print("\nare they the same neurons? EfficientNet-Lite0 penultimate (1,280): Fashion-MNIST vs digits, and "
          "stability on Fashion-MNIST (10 bootstrap resamples of the fit rows)")
    for sel in ("fscore", "greedy"):
        ov = neuron_overlap([work / "fashion-mnist", work / "digits"], sel, k=ks)
        st = neuron_stability(work / "fashion-mnist", sel, k=ks, n_boot=10, random_state=0)
        for _, r in ov.iterrows():
            frames.append({"selector": sel, "k": int(r["k"]), "what": "fashion-mnist vs digits",
                           "jaccard": r["jaccard"], "low": np.nan, "high": np.nan, "chance": r["chance"]})
        for _, r in st.iterrows():
            frames.append({"selector": sel, "k": int(r["k"]), "what": "bootstrap vs run (fashion-mnist)",
                           "jaccard": r["jaccard"], "low": r["jaccard_low"], "high": r["jaccard_high"],
                           "chance": r["chance"]})
    table = pd.DataFrame(frames)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out = Path(args.out).with_name("selectors_neurons.csv")
    table.assign(cpu=cpu_model()).to_csv(out, index=False)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="timing only, against a 3-fraction x 2-seed baseline")
    ap.add_argument("--no-timing", action="store_true", help="skip part 1")
    ap.add_argument("--datasets", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--cache", default=None, help="feature cache (default $CRITMASS_CACHE or ~/.cache/critmass/features)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "selectors_gap.csv"))
    ap.add_argument("--no-overlap", action="store_true", help="skip part 3")
    args = ap.parse_args()
    import torch

    import critmass

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; critmass {critmass.__version__}", flush=True)
    fm = features(CASES["fashion-mnist"], args.cache)
    timings = []
    if not args.no_timing:
        print("\npart 1: time to fit every ranking vs the default random probe curve (Fashion-MNIST features)")
        timings = timing(fm, quick=args.quick)
    if args.quick:
        return
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="which-neurons-"))
    tables = []
    for name in args.datasets.split(","):
        fs = fm if name == "fashion-mnist" else features(CASES[name], args.cache)
        tables.append(gap(fs, CASES[name], out=work / name))
    if not args.no_overlap and "fashion-mnist" in args.datasets:
        neurons(args, work)
    table = pd.concat(tables, ignore_index=True)
    table["cpu"] = cpu_model()
    table["versions"] = json.dumps({"critmass": critmass.__version__, "torch": torch.__version__}, sort_keys=True)
    if timings:
        table["timing"] = json.dumps({t["what"]: round(t["seconds"], 2) for t in timings}, sort_keys=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
