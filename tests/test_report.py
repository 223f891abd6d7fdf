"""`critmass.report` and `critmass report`: figures (inspected as matplotlib objects), tables, the HTML page."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from critmass.cli._app import main
from critmass.exceptions import ConfigError, DataError
from critmass.metrics import class_drops, dr, dr_curve, dr_table
from critmass.report import (
    build_report,
    gini_table,
    load_run,
    make_figures,
    plot_cka,
    plot_class_drops,
    plot_curves,
    plot_dr_curve,
    plot_dr_heatmap,
    plot_gini,
    save_figure,
)

MODELS = {"timm:resnet18": 512, "timm:vit_small_patch16_224": 384}
DATASETS = {"cifar10": 10, "flowers": 8}
FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0)
SEEDS = (0, 1, 2)
SELECTORS = {"random": 1.0, "pca": 0.25, "randproj": 0.8}  # scale of the saturation size k0
PANELS = {f"{m} | {d}" for m in MODELS for d in DATASETS}


def make_run(path: Path, *, per_class: bool = True, cka: bool = True) -> Path:
    """A small run directory with realistic synthetic tables (what `critmass probe` + `cka` write).

    Class accuracy saturates with the subset size k as ``chance + (full_c - chance) * s(k) ** sens_c``,
    ``s(k) = 1 - exp(-k / k0)``: PCA saturates fastest, random projections slightly faster than random
    neurons, and classes differ in how much they suffer (sens_c). Random selectors get seed noise;
    deterministic ones (pca) and the full layer are recorded with seed 0 only, as `run_probes` does.
    """
    rng = np.random.default_rng(0)
    cfg = json.dumps({"selectors": ["all", *SELECTORS], "fractions": list(FRACTIONS), "seeds": list(SEEDS),
                      "solver": "logistic"}, sort_keys=True)
    vers = json.dumps({"python": "3.11.2", "critmass": "0.1.0", "numpy": "2.4.6", "torch": "2.14.1"})
    res_rows, pc_rows, cka_rows = [], [], []
    for mi, (model, d) in enumerate(MODELS.items()):
        for di, (dataset, n_cls) in enumerate(DATASETS.items()):
            chance = 1.0 / n_cls
            full_c = np.clip(0.9 - 0.12 * di - 0.04 * mi + rng.uniform(-0.08, 0.05, n_cls), 0.2, 0.99)
            sens = rng.uniform(0.6, 2.2, n_cls)
            support = rng.integers(80, 121, n_cls)
            k0_base = (0.025 + 0.03 * di + 0.015 * mi) * d  # DR(0.9) of random subsets 0.5 .. 0.9
            units = [("all", 0, 1.0)] + [(s, seed, f) for s in SELECTORS for seed in (SEEDS if s != "pca" else (0,))
                                         for f in FRACTIONS]
            for sel, seed, f in units:
                k = d if sel == "all" else max(1, round(f * d))
                s = 1.0 if sel == "all" else 1 - np.exp(-k / (k0_base * SELECTORS[sel]))
                noise = 0.0 if sel in ("all", "pca") else rng.normal(0, 0.012, n_cls)
                acc_c = np.clip(chance + (full_c - chance) * s ** sens + noise, 0.0, 1.0)
                acc_c = np.round(acc_c * support) / support  # recalls are ratios of counts
                key = dict(model=model, dataset=dataset, layer="penultimate", selector=sel, fraction=float(f),
                           n_neurons=int(k), seed=int(seed), solver="logistic")
                test_acc = float((acc_c * support).sum() / support.sum())
                res_rows.append({**key, "n_features": d, "reg": 1e-3, "train_accuracy": min(1.0, test_acc + 0.05),
                                 "val_accuracy": test_acc + rng.normal(0, 0.005), "test_accuracy": test_acc,
                                 "mean_per_class_recall": float(acc_c.mean()), "n_train": 900, "n_val": 100,
                                 "n_test": int(support.sum()), "n_classes": n_cls, "n_iter": 30, "refit": False,
                                 "weights_file": None, "config": cfg, "versions": vers})
                pc_rows += [{**key, "class": c, "accuracy": float(a), "support": int(n)}
                            for c, (a, n) in enumerate(zip(acc_c, support))]
                if sel != "all":
                    c0 = {"random": 0.55, "pca": 0.85, "randproj": 0.6}[sel]
                    value = 1 - (1 - c0) * (1 - f) ** 0.5 - 0.3 * np.exp(-k / (0.02 * d)) * (1 - c0)
                    if seed == 0:
                        for cs in SEEDS:  # cka_curve records every seed, deterministic selectors too
                            jitter = 0.0 if sel == "pca" else rng.normal(0, 0.01) * (1 - f)
                            cka_rows.append(dict(model=model, dataset=dataset, layer="penultimate", split="train",
                                                 selector=sel, fraction=float(f), n_neurons=int(k), n_features=d,
                                                 seed=cs, cka=float(np.clip(value + jitter, 0, 1)),
                                                 cka_debiased=np.nan))
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(res_rows).to_parquet(path / "results.parquet", index=False)
    if per_class:
        pd.DataFrame(pc_rows).to_parquet(path / "per_class.parquet", index=False)
    if cka:
        pd.DataFrame(cka_rows).to_parquet(path / "cka.parquet", index=False)
    return path


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def report(run_dir):
    return build_report(run_dir, delta=0.9, n_boot=200)


def _panels(fig) -> dict:
    """Visible panels by title (hidden grid cells and colour bars have no title)."""
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}


def _y_span(patch) -> tuple[float, float]:
    """(low, high) of an axhspan: a Rectangle since matplotlib 3.9, a Polygon before."""
    if hasattr(patch, "get_height"):
        return patch.get_y(), patch.get_y() + patch.get_height()
    ys = np.asarray(patch.get_xy())[:, 1]
    return ys.min(), ys.max()


def _lines(ax) -> dict:
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


# ----------------------------------------------------------------------------------------------- loading
def test_load_run_reads_tables_config_and_versions(run):
    assert len(run.results) == len(pd.read_parquet(run.path / "results.parquet"))
    assert run.per_class is not None and run.cka is not None
    assert run.versions["numpy"] == "2.4.6" and run.versions["torch"] == "2.14.1"
    assert "probe config" in run.config and '"solver": "logistic"' in run.config["probe config"]


def test_load_run_errors_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass the --out directory"):
        load_run(tmp_path / "nope")
    with pytest.raises(DataError, match="has no results.parquet"):
        load_run(tmp_path)
    (tmp_path / "results.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read .* as Parquet"):
        load_run(tmp_path)
    pd.DataFrame({"model": ["m"], "test_accuracy": [0.5]}).to_parquet(tmp_path / "results.parquet")
    with pytest.raises(DataError, match="lacks required column"):
        load_run(tmp_path)


def test_load_run_accepts_the_results_file_and_reads_sweep_files(tmp_path):
    path = make_run(tmp_path / "r", per_class=False, cka=False)
    (path / "config.resolved.yaml").write_text("models: [timm:resnet18]\n")
    (path / "versions.json").write_text(json.dumps({"timm": "1.0.0"}))
    run = load_run(path / "results.parquet")
    assert run.path == path and run.per_class is None and run.cka is None
    assert run.config["config.resolved.yaml"] == "models: [timm:resnet18]\n"
    assert run.versions["timm"] == "1.0.0" and run.versions["numpy"] == "2.4.6"


# ----------------------------------------------------------------------------------------------- figures
def test_accuracy_figure_has_a_panel_per_model_dataset_and_a_line_per_selector(run):
    res = run.results
    fig = plot_curves(res, delta=0.9)
    panels = _panels(fig)
    assert set(panels) == PANELS
    for title, ax in panels.items():
        model, dataset = title.split(" | ")
        sub = res[(res["model"] == model) & (res["dataset"] == dataset)]
        lines = _lines(ax)
        assert set(lines) == {*SELECTORS, "full layer"}, lines
        assert ax.get_xscale() == "log"
        for sel in SELECTORS:  # the line is the mean over seeds at each size, at the fraction used (k / D)
            rows = sub[sub["selector"] == sel]
            want = rows.groupby(rows["n_neurons"] / rows["n_features"])["test_accuracy"].mean()
            x, y = lines[sel].get_data()
            np.testing.assert_allclose(x, want.index)
            np.testing.assert_allclose(y, want.to_numpy())
        full = sub.loc[sub["selector"] == "all", "test_accuracy"].mean()
        assert lines["full layer"].get_ydata()[0] == pytest.approx(full)
        band = [p for p in ax.patches if p.get_gid() == "delta-band"]
        assert len(band) == 1
        assert _y_span(band[0]) == pytest.approx((0.9 * full, full))
        # one seed band per selector, and each critical fraction marked where metrics.dr puts it
        assert sorted(c.get_gid() for c in ax.collections) == sorted(f"band:{s}" for s in SELECTORS)
        crit = dr(sub, 0.9, selector=list(SELECTORS), n_boot=0).set_index("selector")["critical_fraction"]
        for sel in SELECTORS:
            marks = [ln for ln in ax.get_lines() if ln.get_gid() == f"critical:{sel}"]
            assert len(marks) == 1 and marks[0].get_xdata()[0] == pytest.approx(crit[sel])
    assert fig.legends and {t.get_text() for t in fig.legends[0].get_texts()} >= {*SELECTORS, "full layer"}


def test_plot_curves_options_and_errors(run):
    fig = plot_curves(run.results, delta=None, selector="random", band="std")
    ax = next(iter(_panels(fig).values()))
    assert set(_lines(ax)) == {"random", "full layer"} and not [p for p in ax.patches if p.get_gid() == "delta-band"]
    with pytest.raises(ConfigError, match="band must be one of"):
        plot_curves(run.results, band="iqr")
    with pytest.raises(DataError, match="no rows with selector 'rnd'.*closest: random"):
        plot_curves(run.results, selector="rnd")
    with pytest.raises(DataError, match="lacks required column"):
        plot_curves(run.results.drop(columns="seed"))


def test_cka_figure_same_layout_with_full_layer_at_one(run):
    fig = plot_cka(run.cka)
    panels = _panels(fig)
    assert set(panels) == PANELS
    for title, ax in panels.items():
        lines = _lines(ax)
        assert set(lines) == {*SELECTORS, "full layer"}
        assert lines["full layer"].get_ydata()[0] == 1.0
        model, dataset = title.split(" | ")
        sub = run.cka[(run.cka["model"] == model) & (run.cka["dataset"] == dataset) & (run.cka["selector"] == "pca")]
        want = sub.groupby(sub["n_neurons"] / sub["n_features"])["cka"].mean()  # one point per size k
        np.testing.assert_allclose(lines["pca"].get_xdata(), want.index)
        np.testing.assert_allclose(lines["pca"].get_ydata(), want.to_numpy())
    with pytest.raises(DataError, match="no CKA rows for split 'test'"):
        plot_cka(run.cka, split="test")


def test_dr_curve_figure_matches_metrics(run):
    fig = plot_dr_curve(run.results, delta=0.9, n_boot=50)
    panels = _panels(fig)
    assert set(panels) == PANELS
    curve = dr_curve(run.results, np.linspace(0.5, 1, 51), selector=list(SELECTORS), n_boot=0)
    for title, ax in panels.items():
        model, dataset = title.split(" | ")
        lines = _lines(ax)
        assert set(lines) == {*SELECTORS, "δ = 0.9"}
        for sel in SELECTORS:
            want = curve[(curve["model"] == model) & (curve["dataset"] == dataset) & (curve["selector"] == sel)]
            np.testing.assert_allclose(lines[sel].get_xdata(), want["delta"], atol=1e-9)
            np.testing.assert_allclose(lines[sel].get_ydata(), want["dr"])
            assert lines[sel].get_drawstyle() == "steps-post"
        assert lines["δ = 0.9"].get_xdata()[0] == 0.9


def test_class_drop_figure_has_a_line_per_class_and_the_mean(run):
    fig = plot_class_drops(run.per_class)
    panels = _panels(fig)
    assert set(panels) == PANELS
    drops = class_drops(run.per_class, selector="random")
    for title, ax in panels.items():
        model, dataset = title.split(" | ")
        gids = [ln.get_gid() or "" for ln in ax.get_lines()]
        assert sum(g.startswith("class:") for g in gids) == DATASETS[dataset]
        assert sum(g.startswith("worst:") for g in gids) == 1 and "mean" in gids
        sub = drops[(drops["model"] == model) & (drops["dataset"] == dataset)]
        mean = next(ln for ln in ax.get_lines() if ln.get_gid() == "mean")
        np.testing.assert_allclose(mean.get_ydata(), sub.groupby("fraction")["drop"].mean().to_numpy())
        worst = int(next(g for g in gids if g.startswith("worst:")).split(":")[1])
        by = sub[sub["fraction"] < 1].groupby("class")["drop"].mean()
        assert worst == by.idxmax()
        assert "mean over classes (random)" in _lines(ax)


def test_gini_figure_has_a_line_per_selector_and_the_full_layer(run):
    fig = plot_gini(run.per_class)
    panels = _panels(fig)
    assert set(panels) == PANELS
    g = gini_table(run.per_class)
    for title, ax in panels.items():
        model, dataset = title.split(" | ")
        lines = _lines(ax)
        assert set(lines) == {*SELECTORS, "full layer"}
        sub = g[(g["model"] == model) & (g["dataset"] == dataset)]
        assert lines["full layer"].get_ydata()[0] == pytest.approx(sub.loc[sub["selector"] == "all", "gini"].mean())
        np.testing.assert_allclose(lines["random"].get_ydata(),
                                   sub[sub["selector"] == "random"].groupby("fraction")["gini"].mean().to_numpy())
    assert ((g["gini"] >= 0) & (g["gini"] < 1)).all()


def test_heatmap_values_equal_dr(run):
    fig = plot_dr_heatmap(run.results, delta=0.9)
    panels = _panels(fig)
    assert list(panels) == ["random", "pca", "randproj"]
    res = dr(run.results, 0.9, selector=list(SELECTORS), n_boot=0)
    for sel, ax in panels.items():
        cols = [t.get_text() for t in ax.get_xticklabels()]
        assert cols == sorted(DATASETS)
        arr = ax.images[0].get_array()
        for i, model in enumerate(sorted(MODELS)):
            for j, dataset in enumerate(cols):
                want = res[(res["model"] == model) & (res["dataset"] == dataset) & (res["selector"] == sel)]["dr"]
                assert arr[i, j] == pytest.approx(float(want.iloc[0]))
    labels = [t.get_text() for t in panels["random"].get_yticklabels()]
    assert labels == [f"{m} ({MODELS[m]})" for m in sorted(MODELS)]


def test_heatmap_leaves_missing_pairs_blank(run):
    res = run.results
    res = res[~((res["model"] == "timm:resnet18") & (res["dataset"] == "flowers"))]
    fig = plot_dr_heatmap(res, selector="random")
    arr = fig.axes[0].images[0].get_array()
    assert arr.mask[0, 1] and not arr.mask[0, 0] and not arr.mask[1].any()


def test_save_figure_writes_each_format(run, tmp_path):
    fig = plot_curves(run.results, delta=0.9)
    paths = save_figure(fig, tmp_path / "acc")
    assert [p.name for p in paths] == ["acc.png", "acc.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert save_figure(fig, tmp_path / "x", formats="svg")[0].read_text().lstrip().startswith("<?xml")
    with pytest.raises(ConfigError, match="unknown figure format 'jpeg'"):
        save_figure(fig, tmp_path / "acc", formats=["jpeg"])


def test_make_figures_names(run):
    assert list(make_figures(run, n_boot=0)) == ["accuracy_vs_fraction", "cka_vs_fraction", "dr_vs_delta",
                                                 "class_drop_vs_fraction", "gini_vs_fraction", "dr_heatmap", "savings"]


# ----------------------------------------------------------------------------------------------- the report
FIGURE_NAMES = ["accuracy_vs_fraction", "cka_vs_fraction", "dr_vs_delta", "class_drop_vs_fraction",
                "gini_vs_fraction", "dr_heatmap", "savings"]


def test_report_writes_every_figure_and_table(report, run_dir):
    assert report.out == run_dir / "report" and report.html == report.out / "report.html"
    assert list(report.figures) == FIGURE_NAMES
    for name in FIGURE_NAMES:
        png, pdf = report.out / "figures" / f"{name}.png", report.out / "figures" / f"{name}.pdf"
        assert report.figures[name] == [png, pdf]
        assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:5] == b"%PDF-"
    assert set(report.tables) == {"table1.md", "table1.tex", "table1.csv", "critical_mass.csv", "per_class.csv"}
    assert not list(report.out.rglob(".*.tmp"))  # atomic writes leave nothing behind


def test_table1_values_equal_the_results(report, run):
    want = dr(run.results, 0.9, selector="random", n_boot=200)
    csv = pd.read_csv(report.tables["table1.csv"])
    assert list(csv.columns) == ["model", "n_features", "n_seeds", *sorted(DATASETS)]
    for _, r in want.iterrows():
        row = csv[csv["model"] == r["model"]]
        assert int(row["n_features"].iloc[0]) == MODELS[r["model"]]
        assert row[r["dataset"]].iloc[0] == pytest.approx(r["dr"])
    md = report.tables["table1.md"].read_text()
    tex = report.tables["table1.tex"].read_text()
    shown = dr_table(run.results, 0.9, n_boot=200)
    for cell in shown[sorted(DATASETS)].to_numpy().ravel():
        assert cell in md and cell in tex
    for _, r in want.iterrows():
        assert f"{r['dr']:.2f} [{r['dr_ci_low']:.2f}, {r['dr_ci_high']:.2f}]" in md
    assert "| model" in md and "DR(δ = 0.9)" in md
    assert r"\begin{tabular}{lllll}" in tex and r"\caption{" in tex and r"timm:vit\_small\_patch16\_224" in tex
    long = pd.read_csv(report.tables["critical_mass.csv"])
    assert len(long) == len(MODELS) * len(DATASETS) * len(SELECTORS)
    pc = pd.read_csv(report.tables["per_class.csv"])
    assert {"critical_fraction", "mean_class_drop", "max_class_drop", "gini", "full_gini"} <= set(pc.columns)


def _html(report) -> str:
    return report.html.read_text(encoding="utf-8")


def test_html_is_self_contained_with_figures_tables_notes_and_versions(report, run):
    page = _html(report)
    # Nothing fetched from anywhere: no http(s) or protocol-relative src/href, no CSS url()/@import.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    imgs = re.findall(r'<figure class="cm-figure" id="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"',
                      page)
    assert [name for name, _ in imgs] == FIGURE_NAMES
    for name, b64 in imgs:  # the embedded PNG is the saved one
        assert base64.b64decode(b64) == (report.out / "figures" / f"{name}.png").read_bytes()
    for table_id in ("table1", "critical-mass", "per-class", "versions"):
        assert f'id="{table_id}"' in page
    for title in PANELS:  # a note per panel
        assert page.count(f"<li><b>{title}</b>:") == 6  # accuracy, cka, dr curve, class drop, gini, savings
    assert "critical mass" in page and "Fewest neurons" in page
    assert "2.14.1" in page and "&quot;solver&quot;: &quot;logistic&quot;" in page


def test_report_notes_quote_the_metrics(report, run):
    page = _html(report)
    r = dr(run.results, 0.9, selector="random", n_boot=200).iloc[0]
    title = f"{r['model']} | {r['dataset']}"
    note = re.search(rf"<li><b>{re.escape(title)}</b>: The full layer \((\d+) neurons\) reaches ([0-9.]+) test "
                     rf"accuracy[^<]*random from (\d+) neurons", page)
    assert note, "accuracy note missing"
    assert int(note.group(1)) == MODELS[r["model"]]
    assert float(note.group(2)) == pytest.approx(r["full_accuracy"], abs=5e-4)
    assert int(note.group(3)) == r["critical_n_neurons"]


def test_report_without_cka_and_per_class(tmp_path):
    path = make_run(tmp_path / "r", per_class=False, cka=False)
    rep = build_report(path, formats="png", n_boot=0, out=tmp_path / "out")
    assert list(rep.figures) == ["accuracy_vs_fraction", "dr_vs_delta", "dr_heatmap", "savings"]
    assert not list((tmp_path / "out" / "figures").glob("*.pdf"))
    page = rep.html.read_text()
    assert "no cka.parquet" in page and "no per_class.parquet" in page
    assert "per_class.csv" not in rep.tables


def test_report_option_errors(run_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"delta must be in \(0, 1\]"):
        build_report(run_dir, delta=1.5, out=tmp_path)
    with pytest.raises(ConfigError, match="unknown figure format 'jpg'"):
        build_report(run_dir, formats="png,jpg", out=tmp_path)
    with pytest.raises(DataError, match="no rows with selector 'randon'"):
        build_report(run_dir, selector="randon", out=tmp_path)
    with pytest.raises(ConfigError, match="'all' is the full layer itself"):
        build_report(run_dir, selector="all", out=tmp_path)
    with pytest.raises(ConfigError, match="n_boot must be a non-negative integer"):
        build_report(run_dir, n_boot=-1, out=tmp_path)
    only_full = make_run(tmp_path / "full", per_class=False, cka=False)
    res = pd.read_parquet(only_full / "results.parquet")
    res[res["selector"] == "all"].to_parquet(only_full / "results.parquet")
    with pytest.raises(DataError, match="only full-layer"):
        build_report(only_full, out=tmp_path / "o")


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_report(tmp_path, capsys):
    path = make_run(tmp_path / "r", per_class=False, cka=False)
    code = main(["report", str(path), "--delta", "0.8", "--formats", "png", "--n-boot", "0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (path / "report" / "report.html").is_file() and "open " in out
    assert (path / "report" / "figures" / "dr_heatmap.png").is_file()
    assert not list((path / "report").rglob("*.pdf"))
    assert pd.read_csv(path / "report" / "tables" / "table1.csv").iloc[0, 3] == pytest.approx(
        dr(pd.read_parquet(path / "results.parquet"), 0.8, n_boot=0).sort_values(["model", "dataset"])["dr"].iloc[0])


def test_cli_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main(["report", str(tmp_path), "--formats", "gif"]) == 2
    assert "unknown figure format 'gif'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; "
                                             "`make test` installs it)")
def test_html_renders_in_headless_chromium(report, tmp_path):
    # The page checks itself on load (images decoded with a size, tables laid out with rows) and writes
    # the verdict into <body data-render-check>; --dump-dom prints the DOM after the scripts ran.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", report.html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict = re.search(r'data-render-check="([^"]*)"', proc.stdout)
    assert verdict, f"no render check in the page (did the script run?): {proc.stderr[-2000:]}"
    assert verdict.group(1) == f"ok: {len(FIGURE_NAMES)} figures, 4 tables"
    shot = tmp_path / "shot.png"
    subprocess.run([*cmd[:-2], "--hide-scrollbars", "--window-size=1200,2000", f"--screenshot={shot}",
                    report.html.resolve().as_uri()], capture_output=True, timeout=120, cwd=tmp_path, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
