"""The gap to random (critmass.metrics.selector_gap, selector_critical_mass, diffuseness), its Table 1 block,
`critmass gap` and the report panel, on synthetic results tables whose answers are known by construction."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import make_run

from critmass.cli._app import main
from critmass.exceptions import ConfigError, DataError
from critmass.metrics import (
    critical_mass_table,
    diffuseness,
    dr,
    dr_table,
    dr_table_rows,
    gap_table,
    selector_critical_mass,
    selector_gap,
    selector_kinds,
    table_notes,
)
from critmass.report import build_report, plot_gap
from critmass.report._gap import gap_selectors

KEYS = dict(model="m", layer="penultimate", solver="ridge")
D = 64
SIZES = (1, 2, 4, 8, 16, 32, 64)


def rows_for(selector, curve, *, dataset="d", seeds=(0,), n_features=D, noise=None):
    """Rows of one selector: ``curve`` maps k -> accuracy; ``noise[seed]`` (per k) is added when given."""
    out = []
    for i, seed in enumerate(seeds):
        for j, (k, acc) in enumerate(curve.items()):
            a = acc + (0.0 if noise is None else float(noise[i][j]))
            out.append(dict(KEYS, dataset=dataset, selector=selector, fraction=k / n_features, n_neurons=k,
                            n_features=n_features, seed=seed, test_accuracy=a))
    return out


def full_row(dataset="d", acc=1.0, n_features=D):
    return dict(KEYS, dataset=dataset, selector="all", fraction=1.0, n_neurons=n_features, n_features=n_features,
                seed=0, test_accuracy=acc)


def step(k_reach, sizes=SIZES, lo=0.5, hi=0.95):
    """A curve below 0.9 before ``k_reach`` and at ``hi`` from it (full layer 1.0, delta 0.9: k* = k_reach)."""
    return {k: (hi if k_reach is not None and k >= k_reach else lo + 0.3 * k / max(sizes)) for k in sizes}


# ----------------------------------------------------------------------------------------------- the gap
@pytest.mark.numeric
def test_a_shifted_copy_of_random_has_the_shift_as_its_gap():
    rng = np.random.default_rng(0)
    base = {k: 0.3 + 0.6 * (1 - np.exp(-k / 10)) for k in SIZES}
    noise = rng.normal(0, 0.02, (4, len(SIZES)))
    rows = [full_row()] + rows_for("random", base, seeds=(0, 1, 2, 3), noise=noise)
    mean = {k: base[k] + noise[:, j].mean() for j, k in enumerate(SIZES)}
    # one seed, exactly random's mean + 0.1; and a four-seed selector shifted seed by seed
    rows += rows_for("fscore", {k: mean[k] + 0.1 for k in SIZES})
    rows += rows_for("prefix", {k: base[k] + 0.1 for k in SIZES}, seeds=(0, 1, 2, 3), noise=noise)
    # a size only random tested and one only fscore tested: left out
    rows += rows_for("random", {3: 0.5}, seeds=(0, 1, 2, 3)) + rows_for("fscore", {5: 0.9})
    gap = selector_gap(pd.DataFrame(rows), n_boot=500)
    assert set(gap["selector"]) == {"fscore", "prefix"}
    for sel, g in gap.groupby("selector"):
        assert list(g["n_neurons"]) == list(SIZES)
        np.testing.assert_allclose(g["gap"], 0.1, atol=1e-12)
        np.testing.assert_allclose(g["baseline_accuracy"], [mean[k] for k in SIZES], atol=1e-12)
        np.testing.assert_allclose(g["fraction"], np.array(SIZES) / D)
        assert (g["gap_ci_low"] <= 0.1 + 1e-12).all() and (g["gap_ci_high"] >= 0.1 - 1e-12).all()
        assert (g["gap_ci_high"] > g["gap_ci_low"]).all()
        assert (g["baseline_n_seeds"] == 4).all() and (g["n_seeds"] == (1 if sel == "fscore" else 4)).all()


@pytest.mark.numeric
def test_gap_ci_equals_a_naive_loop_over_resampled_seeds():
    """Resample counts drawn as documented (baseline first, then the selector); a seed lacking k is left out."""
    acc_b = np.array([[0.50, 0.62, 0.80], [0.55, 0.60, 0.78], [0.45, np.nan, 0.83]])  # random: 3 seeds x 3 sizes
    acc_s = np.array([[0.60, 0.70, 0.81], [0.66, 0.75, 0.85]])  # 2 seeds
    sizes = (2, 4, 8)
    rows = []
    for sel, mat in (("random", acc_b), ("variance", acc_s)):
        for seed, row in enumerate(mat):
            rows += rows_for(sel, {k: a for k, a in zip(sizes, row) if not np.isnan(a)}, seeds=(seed,))
    n_boot, ci = 64, 0.9
    got = selector_gap(pd.DataFrame(rows), n_boot=n_boot, ci=ci, random_state=np.random.default_rng(5))

    rng = np.random.default_rng(5)
    cb = rng.multinomial(3, [1 / 3] * 3, size=n_boot)
    cs = rng.multinomial(2, [1 / 2] * 2, size=n_boot)
    gaps = np.empty((n_boot, len(sizes)))
    for b in range(n_boot):
        for j in range(len(sizes)):
            pick_b = [acc_b[s, j] for s in range(3) for _ in range(cb[b, s]) if not np.isnan(acc_b[s, j])]
            pick_s = [acc_s[s, j] for s in range(2) for _ in range(cs[b, s])]
            gaps[b, j] = (sum(pick_s) / len(pick_s) - sum(pick_b) / len(pick_b)) if pick_b else np.nan
    lo, hi = np.nanpercentile(gaps, [5, 95], axis=0)
    np.testing.assert_allclose(got["gap_ci_low"], lo, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["gap_ci_high"], hi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["gap"], acc_s.mean(0) - np.nanmean(acc_b, axis=0), atol=1e-12)
    assert list(got["baseline_n_seeds"]) == [3, 2, 3]


@pytest.mark.numeric
def test_gap_ci_is_reproducible_and_independent_of_other_groups():
    rng = np.random.default_rng(1)
    rows = []
    for dataset in ("d", "e"):
        rows += rows_for("random", step(16), dataset=dataset, seeds=(0, 1, 2), noise=rng.normal(0, 0.02, (3, 7)))
        rows += rows_for("fscore", step(4), dataset=dataset)
    df = pd.DataFrame(rows)
    both = selector_gap(df, n_boot=200, random_state=3)
    alone = selector_gap(df[df["dataset"] == "d"], n_boot=200, random_state=3)
    pd.testing.assert_frame_equal(both[both["dataset"] == "d"].reset_index(drop=True), alone)
    assert not np.allclose(both[both["dataset"] == "e"]["gap_ci_low"], alone["gap_ci_low"])


def test_gap_table_shows_one_column_per_selector():
    rows = rows_for("random", step(16), seeds=(0, 1)) + rows_for("fscore", step(4)) + rows_for("pca", step(2))
    gap = selector_gap(pd.DataFrame(rows), n_boot=0)
    shown = gap_table(gap, digits=2)
    assert list(shown.columns) == ["model", "dataset", "k", "fraction", "random", "fscore", "pca"]
    r = shown[shown["k"] == 4].iloc[0]
    assert r["fscore"] == f"{0.95 - (0.5 + 0.3 * 4 / 64):+.2f}" and "[" not in r["fscore"]  # no CI with n_boot=0


# ----------------------------------------------------------------------------------------------- k* and diffuseness
def diffuse_table() -> pd.DataFrame:
    """Datasets whose k* (full layer 1.0, delta 0.9) are set explicitly, one case each."""
    rows = []
    r3 = (0, 1, 2)
    # a: random 32, fscore 8, variance 4 (best), pca 2 (a projection: not a candidate), prefix never
    rows += [full_row("a")] + rows_for("random", step(32), dataset="a", seeds=r3)
    rows += rows_for("fscore", step(8), dataset="a") + rows_for("variance", step(4), dataset="a")
    rows += rows_for("pca", step(2), dataset="a") + rows_for("prefix", step(None), dataset="a")
    # b: a tie at 4
    rows += [full_row("b")] + rows_for("random", step(16), dataset="b", seeds=r3)
    rows += rows_for("fscore", step(4), dataset="b") + rows_for("variance", step(4), dataset="b")
    # c: the best selector no better than random
    rows += [full_row("c")] + rows_for("random", step(16), dataset="c", seeds=r3)
    rows += rows_for("fscore", step(16), dataset="c") + rows_for("variance", step(32), dataset="c")
    # e: sizes from 4 up and fscore already there: only a lower bound
    sizes = SIZES[2:]
    rows += [full_row("e")] + rows_for("random", step(32, sizes), dataset="e", seeds=r3)
    rows += rows_for("fscore", step(4, sizes), dataset="e")
    # f: random never reaches 0.9 x full
    rows += [full_row("f")] + rows_for("random", step(None), dataset="f", seeds=r3)
    rows += rows_for("fscore", step(8), dataset="f")
    return pd.DataFrame(rows)


def test_critical_mass_per_selector_next_to_randoms():
    cm = selector_critical_mass(diffuse_table(), 0.9).set_index(["dataset", "selector"])
    a = cm.loc["a"]
    assert a.loc["fscore", "critical_n_neurons"] == 8 and a.loc["fscore", "baseline_critical_n_neurons"] == 32
    assert a.loc["fscore", "k_ratio"] == 4 and a.loc["variance", "k_ratio"] == 8 and a.loc["pca", "k_ratio"] == 16
    assert not a.loc["pca", "is_column"] and a.loc["variance", "is_column"]
    assert np.isnan(a.loc["prefix", "critical_n_neurons"]) and np.isnan(a.loc["prefix", "k_ratio"])
    assert not a.loc["prefix", "reached"] and "prefix never reaches 0.9 x full" in a.loc["prefix", "reason"]
    assert (a.loc[["fscore", "variance", "pca"], "reason"] == "").all()
    assert cm.loc[("f", "fscore"), "reason"].startswith("random never reaches")
    # the same k* as critmass.metrics.dr, the same full-layer reference
    want = dr(diffuse_table(), 0.9, selector=["fscore"], n_boot=0).set_index("dataset")["critical_n_neurons"]
    got = cm.xs("fscore", level="selector")["critical_n_neurons"]
    assert got.to_dict() == {d: float(v) for d, v in want.items()}


def test_diffuseness_by_construction():
    out = diffuseness(diffuse_table(), 0.9).set_index("dataset")
    assert out.loc["a", "diffuseness"] == 8.0 and out.loc["a", "best_selector"] == "variance"
    assert out.loc["a", "candidates"] == "fscore, prefix, variance"  # pca is a projection
    assert out.loc["b", "diffuseness"] == 4.0 and out.loc["b", "best_selector"] == "fscore, variance"
    assert out.loc["c", "diffuseness"] == 1.0 and out.loc["c", "best_selector"] == "fscore"
    assert out.loc["e", "diffuseness"] == 8.0 and out.loc["e", "bound"] == "lower"
    assert (out.loc[["a", "b", "c"], "bound"] == "").all() and (out.loc[["a", "b", "c", "e"], "reason"] == "").all()
    assert np.isnan(out.loc["f", "diffuseness"]) and out.loc["f", "reason"].startswith("random never reaches 0.9")
    shown = critical_mass_table(selector_critical_mass(diffuse_table(), 0.9), diffuseness(diffuse_table(), 0.9))
    cells = shown.groupby("dataset")["diffuseness"].first()
    assert cells["a"] == "8.00 (variance)" and cells["e"] == "≥ 8.00 (fscore)" and cells["f"] == "–"


def test_selector_kinds_and_a_run_without_column_selectors(tmp_path):
    """The report tests' run has random neurons and projections only: no diffuseness, no report panel."""
    res = pd.read_parquet(make_run(tmp_path / "r", per_class=False, cka=False) / "results.parquet")
    kinds = selector_kinds(res).set_index("selector")
    assert kinds.loc["random", "is_column"] and kinds.loc["random", "is_random"]
    assert not kinds.loc["pca", "is_column"] and not kinds.loc["randproj", "is_column"]
    with pytest.raises(DataError, match="no column selector besides 'random'.*pca, randproj pick projections"):
        diffuseness(res, 0.9)
    assert gap_selectors(res) == []
    # a name the registry does not know: a column selector, random when it comes with several seeds
    extra = pd.DataFrame(rows_for("my-ranking", {1: 0.5}) + rows_for("my-sampler", {1: 0.5}, seeds=(0, 1)))
    kinds = selector_kinds(extra).set_index("selector")
    assert kinds["is_column"].all() and not kinds["registered"].any()
    assert kinds["is_random"].to_dict() == {"my-ranking": False, "my-sampler": True}


def test_table1_gets_an_optional_diffuseness_block():
    df = diffuse_table()
    df = df[df["dataset"].isin(["a", "b", "f"])]
    plain = dr_table(df, 0.9, n_boot=50)
    assert list(plain.columns) == ["model", "n_features", "n_seeds", "a", "b", "f"]  # off by default: unchanged
    table, res = dr_table_rows(df, 0.9, n_boot=50, diffuseness=True)
    pd.testing.assert_frame_equal(table[plain.columns], plain)
    assert list(table.columns[6:]) == ["diffuseness: a", "diffuseness: b", "diffuseness: f"]
    assert table.iloc[0]["diffuseness: a"] == "8.00 (variance)" and table.iloc[0]["diffuseness: f"] == "–"
    notes = table_notes(df, res, selector="random")
    assert any(n.startswith("diffuseness: k*(random) / k* of the best column selector") and
               "m / f: random never reaches" in n for n in notes)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_a_one_line_error():
    df = pd.DataFrame(rows_for("random", step(16), seeds=(0, 1)) + rows_for("fscore", step(4)))
    one_seed = pd.DataFrame(rows_for("random", step(16)) + rows_for("fscore", step(4)))
    cases = [
        (DataError, "no rows with baseline selector 'randon'.*closest: random.*--selector randon",
         lambda: selector_gap(df, baseline="randon")),
        (ConfigError, "baseline 'all' is the full layer itself", lambda: selector_gap(df, baseline="all")),
        (DataError, "baseline 'random' has 1 seed in m/d/penultimate/ridge.*pass n_boot=0",
         lambda: selector_gap(one_seed)),
        (ConfigError, "selectors include the baseline 'random'", lambda: selector_gap(df, selectors=["random"])),
        (ConfigError, "selector 'all' is the full layer itself", lambda: selector_gap(df, selectors="all")),
        (DataError, "no rows with selector 'fscor'.*closest: fscore", lambda: selector_gap(df, selectors="fscor")),
        (DataError, "no selector besides 'random' and the full layer",
         lambda: selector_gap(df[df["selector"] == "random"])),
        (ConfigError, r"ci must be a confidence level in \(0, 1\)", lambda: selector_gap(df, ci=95)),
        (ConfigError, "n_boot must be a non-negative integer", lambda: selector_gap(df, n_boot=-1)),
        (DataError, "no subset size k was tested by both 'random' and fscore",
         lambda: selector_gap(pd.DataFrame(rows_for("random", {1: 0.5}, seeds=(0, 1)) + rows_for("fscore", {2: 0.6})))),
        (DataError, "results table must be a pandas DataFrame", lambda: selector_gap([1, 2])),
        (DataError, "has no full-layer \\('all'\\) rows", lambda: diffuseness(df)),
        (ConfigError, r"delta must be in \(0, 1\]", lambda: selector_critical_mass(df, 1.5)),
    ]
    for exc, pattern, call in cases:
        with pytest.raises(exc, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)
    gap = selector_gap(one_seed, n_boot=0)  # the documented way round a one-seed baseline: no CI
    assert gap["gap_ci_low"].isna().all() and np.allclose(gap["gap"], [step(4)[k] - step(16)[k] for k in SIZES])


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_gap_and_dr_diffuseness(tmp_path, capsys):
    diffuse_table().to_parquet(tmp_path / "results.parquet")
    assert main(["gap", str(tmp_path), "--n-boot", "50", "--selector", "fscore,variance,pca"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Gap to random: a selector's mean test accuracy at k neurons minus random's")
    assert "| model | dataset | k " in out and "Critical mass k*(0.9) per selector next to random's" in out
    assert "8.00 (variance)" in out and "≥ 8.00 (fscore)" in out and "note: m / f: diffuseness undefined" in out
    assert main(["gap", str(tmp_path), "--format", "csv", "--show", "gap", "--n-boot", "0"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    pd.testing.assert_frame_equal(csv, selector_gap(diffuse_table(), n_boot=0), check_dtype=False)
    assert main(["gap", str(tmp_path), "--format", "csv", "--show", "critical"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert {"k_ratio", "diffuseness", "best_selector", "diffuseness_reason"} <= set(csv.columns)
    assert main(["gap", str(tmp_path), "--format", "csv"]) == 2
    assert "--format csv prints one table; pass --show gap or --show critical" in capsys.readouterr().err
    assert main(["dr", str(tmp_path), "--diffuseness", "--n-boot", "0", "--spread", "none"]) == 0
    out = capsys.readouterr().out
    assert "| diffuseness: a" in out and "8.00 (variance)" in out and "note: diffuseness: k*(random)" in out


# ----------------------------------------------------------------------------------------------- report panel
@pytest.fixture(scope="module")
def gap_run(tmp_path_factory) -> Path:
    """One panel of the report tests' run plus a column selector: fscore = random's seed 0 curve + 0.05."""
    path = make_run(tmp_path_factory.mktemp("gap") / "run", per_class=False, cka=False)
    res = pd.read_parquet(path / "results.parquet")
    res = res[(res["model"] == "timm:resnet18") & (res["dataset"] == "cifar10")]
    fs = res[(res["selector"] == "random") & (res["seed"] == 0)].copy()
    fs["selector"] = "fscore"
    fs["test_accuracy"] = fs["test_accuracy"] + 0.05
    pd.concat([res, fs], ignore_index=True).to_parquet(path / "results.parquet")
    return path


def test_gap_figure_draws_the_metrics(gap_run):
    res = pd.read_parquet(gap_run / "results.parquet")
    fig = plot_gap(res, n_boot=100)
    gap = selector_gap(res, selectors=["pca", "fscore"], n_boot=100)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    assert list(panels) == ["timm:resnet18 | cifar10"]
    for title, ax in panels.items():
        model, dataset = title.split(" | ")
        lines = {ln.get_gid(): ln for ln in ax.get_lines()}
        assert set(lines) == {"mean:pca", "mean:fscore", "baseline"}  # randproj is random: not drawn
        assert lines["baseline"].get_ydata()[0] == 0
        for sel in ("pca", "fscore"):
            want = gap[(gap["model"] == model) & (gap["dataset"] == dataset) & (gap["selector"] == sel)]
            x, y = lines[f"mean:{sel}"].get_data()
            np.testing.assert_allclose(x, want["fraction"])
            np.testing.assert_allclose(y, want["gap"])
        assert sorted(c.get_gid() for c in ax.collections) == ["band:fscore", "band:pca"]
        assert ax.get_xscale() == "log"


def test_report_has_the_gap_panel_and_tables(gap_run, tmp_path):
    rep = build_report(gap_run, formats="png", n_boot=50, out=tmp_path / "rep")
    assert "gap_vs_fraction" in rep.figures and {"gap.csv", "gap_critical_mass.csv"} <= set(rep.tables)
    page = rep.html.read_text(encoding="utf-8")
    assert 'id="gap-critical-mass"' in page and 'id="sec-gap_vs_fraction"' in page
    assert "Largest gap to random: pca" in page and "fscore +0.0" in page and "Diffuseness at δ = 0.9:" in page
    cm = pd.read_csv(rep.tables["gap_critical_mass.csv"], keep_default_na=False)
    assert set(cm["selector"]) == {"pca", "fscore"} and "diffuseness" in cm.columns
    gap = pd.read_csv(rep.tables["gap.csv"])
    assert set(gap["selector"]) == {"pca", "fscore"} and gap["gap_ci_low"].notna().all()


def test_docstring_examples():
    import doctest

    import critmass.metrics._gap as m_gap

    failed, attempted = doctest.testmod(m_gap, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failed == 0
