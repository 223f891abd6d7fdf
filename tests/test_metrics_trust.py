"""Issue 11 (trust in DR): paired seed bootstrap, validation-curve f*, duplicate sizes, several runs, class names.

Every expectation is recomputed independently (plain loops, exact enumeration of seed resamples).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest

from critmass.cli._app import main
from critmass.exceptions import ConfigError, DataError
from critmass.metrics import class_drops, dr, dr_table, per_class_summary

KEYS = dict(model="m", dataset="d", layer="penultimate", solver="ridge")


def table(curves, full, *, fractions, n_features, val=None, full_val=None, seeds=None):
    """Results rows: ``curves[s][j]`` test accuracy of seed s at fractions[j]; ``full`` one value or one per seed."""
    seeds = list(range(len(curves))) if seeds is None else seeds
    full = np.atleast_1d(full)
    full_val = full if full_val is None else np.atleast_1d(full_val)
    rows = []
    for i, a in enumerate(full):
        rows.append(dict(KEYS, selector="all", fraction=1.0, n_neurons=n_features, n_features=n_features,
                         seed=seeds[i], test_accuracy=float(a), val_accuracy=float(full_val[i])))
    for s, curve in zip(seeds, curves):
        for j, (f, a) in enumerate(zip(fractions, curve)):
            rows.append(dict(KEYS, selector="random", fraction=f, n_neurons=max(1, round(f * n_features)),
                             n_features=n_features, seed=s, test_accuracy=float(a),
                             val_accuracy=float(a if val is None else val[seeds.index(s)][j])))
    return pd.DataFrame(rows)


def brute_dr_of(draw, curves, full, fractions, n_features, delta):
    """DR of one resample ``draw`` (seed indices, with repeats) of whole seed curves and their full-layer fits."""
    full = np.atleast_1d(full)
    full_mean = full[0] if len(full) == 1 else sum(full[i] for i in draw) / len(draw)
    ks = [max(1, round(f * n_features)) for f in fractions]
    for k in sorted(set(ks)):
        cols = [j for j, kk in enumerate(ks) if kk == k]
        mean = sum(sum(curves[i][j] for j in cols) / len(cols) for i in draw) / len(draw)
        if mean >= delta * full_mean - 1e-9:
            return 1 - k / n_features
    return 0.0


def exact_distribution(curves, full, fractions, n_features, delta):
    """DR under whole-curve resampling: every ordered draw of n seeds with replacement, equally likely."""
    n = len(curves)
    vals = [brute_dr_of(d, curves, full, fractions, n_features, delta)
            for d in itertools.product(range(n), repeat=n)]
    return np.array(vals)


def exact_quantile(vals, p):
    """Smallest v with P(DR <= v) >= p."""
    v = np.sort(np.unique(vals))
    cdf = np.array([(vals <= x).mean() for x in v])
    return float(v[np.argmax(cdf >= p - 1e-12)]), cdf


# ------------------------------------------------------------------------------------------ item 3: bootstrap
FR = [0.01, 0.05, 0.1, 0.2, 0.5, 0.8]


def test_paired_seeds_give_a_degenerate_ci():
    # Seed s is a shifted copy of one curve, and so is its full-layer fit: every whole-seed resample moves
    # the curve and the threshold together, so f* never changes. Resampling each fraction (or the full layer)
    # separately would break the pairing and widen the interval.
    shift = np.array([-0.1, 0.0, 0.1])
    base = np.array([0.4, 0.6, 0.68, 0.75, 0.79, 0.8])
    curves = [base + c for c in shift]
    full = 0.8 + shift
    df = table(curves, full, fractions=FR, n_features=1000)
    exact = exact_distribution(curves, full, FR, 1000, 0.9)
    assert np.unique(exact).size == 1  # the brute-force enumeration: one value
    out = dr(df, 0.9, n_boot=4000, random_state=1).iloc[0]
    assert out.dr == pytest.approx(exact[0]) == pytest.approx(0.8)
    assert out.dr_ci_low == pytest.approx(exact[0]) and out.dr_ci_high == pytest.approx(exact[0])
    assert out.n_seeds == 3


@pytest.mark.parametrize("case", range(4))
def test_ci_matches_exact_enumeration_of_whole_seed_resamples(case):
    rng = np.random.default_rng(100 + case)
    n_seeds, d = 3, 1000
    fr = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
    base = np.linspace(0.55, 0.85, len(fr))
    # Seeds with an idiosyncratic curve (not a shift): the joint over fractions matters.
    curves = [np.clip(base + rng.normal(0, 0.05, len(fr)), 0, 1) for _ in range(n_seeds)]
    full = 0.85 if case % 2 == 0 else 0.85 + rng.normal(0, 0.02, n_seeds)  # one shared fit, or one per seed
    df = table(curves, full, fractions=fr, n_features=d)
    exact = exact_distribution(curves, full, fr, d, 0.9)
    for ci in (0.5, 0.8, 0.95):
        lo_p, hi_p = (1 - ci) / 2, (1 + ci) / 2
        lo, cdf = exact_quantile(exact, lo_p)
        hi, _ = exact_quantile(exact, hi_p)
        # Only compare where the exact CDF is not within sampling noise of the level.
        if np.min(np.abs(cdf - lo_p)) < 0.02 or np.min(np.abs(cdf - hi_p)) < 0.02:
            continue
        out = dr(df, 0.9, n_boot=20000, ci=ci, random_state=case).iloc[0]
        assert out.dr_ci_low == pytest.approx(lo), (case, ci)
        assert out.dr_ci_high == pytest.approx(hi), (case, ci)


def test_independent_resampling_would_differ_from_the_exact_distribution():
    """A case where the exact (paired) interval is narrow but per-fraction resampling spreads it."""
    # Seed 0 is high at every fraction below the crossing, seeds 1 and 2 low: under pairing, the small
    # fractions are crossed together or not at all; per-fraction resampling crosses at any of them.
    fr = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    curves = [[0.95, 0.95, 0.95, 0.95, 0.95, 0.95], [0.8, 0.8, 0.8, 0.8, 0.8, 0.95], [0.8, 0.8, 0.8, 0.8, 0.8, 0.95]]
    df = table(curves, 1.0, fractions=fr, n_features=1000)
    exact = exact_distribution(curves, 1.0, fr, 1000, 0.9)
    assert set(np.round(exact, 9)) == {0.99, 0.5}  # paired: first fraction or the crossing, nothing between
    # P(DR = 0.99) = P(seed 0 drawn at least twice) = 7/27, so the central 40% interval is exactly [0.5, 0.5];
    # resampled fraction by fraction, the curve would stay below until 0.5 with probability (20/27)^5 = 0.22 only.
    out = dr(df, 0.9, n_boot=20000, ci=0.4, random_state=0).iloc[0]
    lo, _ = exact_quantile(exact, 0.3)
    hi, _ = exact_quantile(exact, 0.7)
    assert (lo, hi) == pytest.approx((0.5, 0.5))
    assert (out.dr_ci_low, out.dr_ci_high) == pytest.approx((lo, hi))


def test_n_seeds_column_and_cli_note(tmp_path, capsys):
    curves = [np.linspace(0.5, 0.8, len(FR)) + c for c in (-0.01, 0, 0.01)]
    df = table(curves, 0.8, fractions=FR, n_features=1000)
    assert dr(df, 0.9, n_boot=10).iloc[0].n_seeds == 3
    t = dr_table(df, 0.9, n_boot=50)
    assert list(t.columns) == ["model", "n_features", "n_seeds", "d"] and t["n_seeds"].iloc[0] == "3"
    df.to_parquet(tmp_path / "results.parquet")
    assert main(["dr", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"3 seed\(s\): a bootstrap CI over seeds takes at most 10 distinct values", out)
    assert "f* read off the test curve" in out


# ------------------------------------------------------------------------------------ item 3: --select-on val
def test_select_on_val_reads_f_star_off_the_validation_curve(tmp_path, capsys):
    fr = [0.05, 0.1, 0.2, 0.5]
    test = [[0.60, 0.78, 0.79, 0.80], [0.60, 0.70, 0.79, 0.80]]  # test mean crosses 0.72 at 0.1 (0.74)
    val = [[0.60, 0.70, 0.80, 0.82], [0.60, 0.71, 0.81, 0.82]]   # val mean crosses 0.9 * 0.82 at 0.2
    df = table(test, 0.8, fractions=fr, n_features=100, val=val, full_val=0.82)
    t_row = dr(df, 0.9, n_boot=0).iloc[0]
    v_row = dr(df, 0.9, n_boot=0, select_on="val").iloc[0]
    # brute force, both readings
    for row, curves, full, sel in ((t_row, test, 0.8, "test"), (v_row, val, 0.82, "val")):
        mean = np.mean(curves, axis=0)
        j = int(np.argmax(mean >= 0.9 * full - 1e-12))
        assert row.select_on == sel and row.critical_fraction == pytest.approx(fr[j])
        assert row.dr == pytest.approx(1 - fr[j]) and row.threshold == pytest.approx(0.9 * full)
        assert row.test_accuracy_at_critical == pytest.approx(np.mean(test, axis=0)[j])
        assert row.full_accuracy == pytest.approx(0.8)
    assert t_row.dr > v_row.dr
    with pytest.raises(ConfigError, match="select_on must be one of test, val"):
        dr(df, select_on="valid")
    with pytest.raises(DataError, match="lacks required column.*val_accuracy"):
        dr(df.drop(columns="val_accuracy"), select_on="val")
    df.to_parquet(tmp_path / "results.parquet")
    assert main(["dr", str(tmp_path), "--select-on", "val", "--format", "csv", "--spread", "none"]) == 0
    got = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert got["d"].iloc[0] == pytest.approx(v_row.dr, abs=0.005)
    assert main(["dr", str(tmp_path), "--select-on", "x"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --------------------------------------------------------------------------------------- item 5: duplicates
def test_duplicate_sizes_use_k_over_d_and_count_once(tmp_path, capsys):
    d = 512
    fr = [0.0005, 0.001, 0.002, 0.01, 0.1, 0.5]  # the first three all give k = 1
    # The same fit reported at every fraction of one k, as run_probes writes it.
    acc_by_k = {1: 0.75, 5: 0.78, 51: 0.79, 256: 0.8}
    curve = [acc_by_k[max(1, round(f * d))] for f in fr]
    df = table([curve, curve], 0.8, fractions=fr, n_features=d)
    out = dr(df, 0.9, n_boot=0).iloc[0]
    assert out.critical_n_neurons == 1
    assert out.critical_fraction == pytest.approx(1 / d) and out.dr == pytest.approx(1 - 1 / d)
    assert out.critical_fraction_nominal == pytest.approx(0.0005)
    assert out.collapsed_fractions == 2 and out.n_sizes == 4
    # k / D above the nominal fraction (D = 384: 0.001 -> k = 1 = 0.0026 of the layer)
    d2 = 384
    df2 = table([[0.75, 0.75, 0.8]], 0.8, fractions=[0.001, 0.002, 0.1], n_features=d2)
    assert dr(df2, 0.9, n_boot=0).iloc[0].critical_fraction == pytest.approx(1 / d2)
    df.to_parquet(tmp_path / "results.parquet")
    assert main(["dr", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "0.0005, 0.001, 0.002 give k = 1 of 512" in text


# ---------------------------------------------------------------------------------- item 16: several runs
def _run(path, weights, offset, *, with_keys=True):
    curves = [np.array([0.3, 0.5, 0.7, 0.75, 0.79, 0.8]) + offset + c for c in (-0.01, 0.0, 0.01)]
    df = table(curves, 0.8 + offset, fractions=FR, n_features=1000)
    if with_keys:
        df["weights"] = weights
        df["pooling"] = "avg"
    path.mkdir(parents=True)
    df.to_parquet(path / "results.parquet")
    return df


def test_cli_dr_concatenates_runs_and_splits_checkpoints(tmp_path, capsys):
    a = _run(tmp_path / "runs" / "a", "ckpt-a", 0.0)
    b = _run(tmp_path / "runs" / "b", "ckpt-b", -0.2)  # lower curve: a different DR
    assert main(["dr", str(tmp_path / "runs" / "*"), "--format", "csv", "--spread", "none"]) == 0
    got = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert list(got["weights"]) == ["ckpt-a", "ckpt-b"]
    for w, df in (("ckpt-a", a), ("ckpt-b", b)):
        assert got.loc[got["weights"] == w, "d"].iloc[0] == pytest.approx(dr(df.drop(columns=["weights", "pooling"]),
                                                                              n_boot=0).iloc[0].dr, abs=0.005)
    # the same directory twice (pattern and path): counted once
    assert main(["dr", str(tmp_path / "runs" / "*"), str(tmp_path / "runs" / "a"), "--spread", "none",
                 "--format", "csv"]) == 0
    assert len(pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))) == 2
    # an old file without the columns joins as its own row
    _run(tmp_path / "old", None, -0.1, with_keys=False)
    assert main(["dr", str(tmp_path / "runs" / "a"), str(tmp_path / "old"), "--format", "csv",
                 "--spread", "none"]) == 0
    assert len(pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))) == 2
    # the same probes with different results: one-line error
    _run(tmp_path / "clash", "ckpt-a", 0.05)
    assert main(["dr", str(tmp_path / "runs" / "a"), str(tmp_path / "clash")]) == 2
    err = capsys.readouterr().err
    assert "appears with different results" in err and err.count("\n") == 1
    assert main(["dr", str(tmp_path / "nothing*")]) == 2
    assert "no file or directory matches" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- item 20: names
def _per_class(named=True):
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
    rows = []
    for sel, f, k, seed in [("all", 1.0, 10, 0), ("random", 0.1, 1, 0), ("random", 0.5, 5, 0)]:
        for c in range(5):
            acc = 0.9 if sel == "all" else 0.9 - (0.5 if c == 4 else 0.05) * (1 - f)
            rows.append(dict(KEYS, selector=sel, fraction=f, n_neurons=k, seed=seed, **{"class": c},
                             accuracy=acc, support=100, **({"class_name": names[c]} if named else {})))
    return pd.DataFrame(rows)


def test_class_names_in_per_class_tables():
    drops = class_drops(_per_class())
    assert set(drops["class_name"]) == {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"}
    assert (drops.groupby("class")["class_name"].nunique() == 1).all()
    summ = per_class_summary(_per_class())
    assert (summ["max_drop_class"] == 4).all() and (summ["max_drop_class_name"] == "Coat").all()
    assert "class_name" not in class_drops(_per_class(named=False)).columns


def test_report_names_classes(tmp_path):
    from critmass.report import build_report, plot_class_drops

    fig = plot_class_drops(_per_class())
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "Coat" in texts and "class 4" not in texts
    fig = plot_class_drops(_per_class(named=False))
    assert "class 4" in [t.get_text() for ax in fig.axes for t in ax.texts]

    run = tmp_path / "run"
    res = table([[0.5, 0.85]], 0.9, fractions=[0.1, 0.5], n_features=10)
    run.mkdir()
    res.to_parquet(run / "results.parquet")
    _per_class().to_parquet(run / "per_class.parquet")
    rep = build_report(run, formats="png", n_boot=0)
    page = rep.html.read_text()
    assert "Coat the most" in page and "class 4" not in page
    pc = pd.read_csv(rep.tables["per_class.csv"])
    assert pc["max_drop_class_name"].iloc[0] == "Coat"
    rep = build_report(run, formats="png", n_boot=0, select_on="val", out=tmp_path / "v")
    assert "validation" in rep.html.read_text()
