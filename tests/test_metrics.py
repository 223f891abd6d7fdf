"""critmass.metrics and `critmass dr`, checked against independent (brute-force) computations."""

from __future__ import annotations

import doctest
import io
import math

import numpy as np
import pandas as pd
import pytest

from critmass.cli._app import main
from critmass.exceptions import ConfigError, DataError
from critmass.metrics import (
    class_drops,
    dr,
    dr_curve,
    dr_table,
    format_table,
    gini,
    pareto_frontier,
    per_class_summary,
    read_results,
)

FRACTIONS = [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0]


def make_results(rng, *, models=(("m1", 200),), datasets=("d1",), layers=("penultimate",), n_seeds=4,
                 n_full_seeds=2, selectors=("random",), noise=0.03, fractions=FRACTIONS):
    """A synthetic results table: a saturating accuracy curve plus seed noise."""
    rows = []
    for model, n_features in models:
        for dataset in datasets:
            for layer in layers:
                full = rng.uniform(0.6, 0.95)
                for seed in range(n_full_seeds):
                    rows.append(dict(model=model, dataset=dataset, layer=layer, solver="ridge", selector="all",
                                     fraction=1.0, n_neurons=n_features, n_features=n_features, seed=seed,
                                     test_accuracy=full + rng.normal(0, 0.003)))
                for sel in selectors:
                    scale = rng.uniform(5, 40)
                    for f in fractions:
                        k = max(1, round(f * n_features))
                        for seed in range(n_seeds):
                            acc = full * (1 - np.exp(-k / scale)) + rng.normal(0, noise)
                            rows.append(dict(model=model, dataset=dataset, layer=layer, solver="ridge",
                                             selector=sel, fraction=f, n_neurons=k, n_features=n_features,
                                             seed=seed, test_accuracy=float(np.clip(acc, 0, 1))))
    return pd.DataFrame(rows)


def brute_dr(df, delta, *, selector="random", per_seed=False):
    """Paper's DR read off the grid, by plain loops. Returns {(model, dataset, layer): (...)}.

    Fractions that round to the same k are one fit: the curve is over sizes k, f* = k* / n_features
    (a seed's rows of one k averaged, then the mean over seeds).
    """
    out = {}
    for key in {(r.model, r.dataset, r.layer) for r in df.itertuples()}:
        g = [r for r in df.itertuples() if (r.model, r.dataset, r.layer) == key]
        full_accs = [r.test_accuracy for r in g if r.selector == "all"]
        full = sum(full_accs) / len(full_accs)
        n_features = g[0].n_features
        sub = [r for r in g if r.selector == selector]
        seeds = sorted({r.seed for r in sub}) if per_seed else [None]
        res = []
        for seed in seeds:
            by_k = {}
            for r in sub:
                if seed is None or r.seed == seed:
                    by_k.setdefault(r.n_neurons, {}).setdefault(r.seed, []).append(r.test_accuracy)
            fstar, kstar, reached = 1.0, n_features, False
            for k in sorted(by_k):
                per = [sum(a) / len(a) for a in by_k[k].values()]
                mean = sum(per) / len(per)
                if mean >= delta * full - 1e-12:
                    fstar, kstar, reached = k / n_features, k, True
                    break
            res.append((1 - fstar, fstar, kstar, reached, full))
        out[key] = res if per_seed else res[0]
    return out


def naive_gini(x):
    x = [float(v) for v in x]
    n, mean = len(x), sum(x) / len(x)
    return sum(abs(a - b) for a in x for b in x) / (2 * n * n * mean) if mean else 0.0


# ---------------------------------------------------------------- DR on the grid


@pytest.mark.numeric
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dr_matches_brute_force_over_deltas(seed):
    rng = np.random.default_rng(seed)
    df = make_results(rng, models=(("m1", 200), ("m2", 64)), datasets=("d1", "d2"))
    deltas = np.linspace(0.5, 1.0, 11)
    got = dr_curve(df, deltas, n_boot=0)
    assert len(got) == 4 * len(deltas)
    for delta in deltas:
        expected = brute_dr(df, delta)
        for r in got[np.isclose(got["delta"], delta)].itertuples():
            want_dr, want_f, want_k, want_reached, full = expected[(r.model, r.dataset, r.layer)]
            assert r.dr == pytest.approx(want_dr), (r.model, r.dataset, delta)
            assert r.critical_fraction == pytest.approx(want_f)
            assert r.critical_n_neurons == want_k
            assert r.reached == want_reached
            assert r.full_accuracy == pytest.approx(full)
            assert r.method == "grid"


def test_dr_not_reached_gives_zero_and_full_layer():
    # Subsets always 0.1 below the full layer: delta = 1 is never reached.
    rows = [dict(model="m", dataset="d", layer="l", solver="s", selector="all", fraction=1.0, n_neurons=50,
                 n_features=50, seed=0, test_accuracy=0.8)]
    rows += [dict(rows[0], selector="random", fraction=f, n_neurons=int(f * 50), test_accuracy=0.7)
             for f in (0.1, 0.5)]
    out = dr(pd.DataFrame(rows), 1.0, n_boot=0).iloc[0]
    assert (out.dr, out.critical_fraction, out.critical_n_neurons, out.reached) == (0.0, 1.0, 50, False)
    # ... while 0.7 / 0.8 = 0.875 is reached at the first fraction.
    out = dr(pd.DataFrame(rows), 0.875, n_boot=0).iloc[0]
    assert out.reached and out.critical_fraction == 0.1 and out.dr == pytest.approx(0.9)


def test_dr_seed_std_matches_per_seed_brute_force():
    rng = np.random.default_rng(3)
    df = make_results(rng, n_seeds=5, noise=0.05)
    got = dr(df, 0.9, n_boot=0).iloc[0]
    per_seed = brute_dr(df, 0.9, per_seed=True)[("m1", "d1", "penultimate")]
    assert got.dr_seed_std == pytest.approx(np.std([p[0] for p in per_seed], ddof=1))
    one_seed = dr(df[df["seed"] == 0], 0.9, n_boot=0).iloc[0]
    assert math.isnan(one_seed.dr_seed_std)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(4)
    df = make_results(rng, models=(("m1", 200), ("m2", 100)), datasets=("d1", "d2", "d3"), n_seeds=5)
    a = dr(df, 0.9, random_state=7)
    b = dr(df, 0.9, random_state=7)
    pd.testing.assert_frame_equal(a, b)
    assert (a["dr_ci_low"] <= a["dr"]).all() and (a["dr"] <= a["dr_ci_high"]).all()
    # CI endpoints are DRs of resampled curves, hence 1 - a tested size k / D (or 0).
    grid = {round(1 - max(1, round(f * d)) / d, 12) for f in FRACTIONS for d in (200, 100)}
    assert set(a["dr_ci_low"].round(12)) | set(a["dr_ci_high"].round(12)) <= grid
    # A group's interval does not depend on which other groups are in the table.
    only = dr(df[df["dataset"] == "d2"], 0.9, random_state=7)
    pd.testing.assert_frame_equal(only.reset_index(drop=True),
                                  a[a["dataset"] == "d2"].reset_index(drop=True))


def test_bootstrap_collapses_without_seed_variation_and_can_be_skipped():
    rng = np.random.default_rng(5)
    df = make_results(rng, n_seeds=1, n_full_seeds=1)
    out = dr(df, 0.9).iloc[0]
    assert out.dr_ci_low == out.dr == out.dr_ci_high  # resampling one value returns it
    skipped = dr(df, 0.9, n_boot=0).iloc[0]
    assert math.isnan(skipped.dr_ci_low) and math.isnan(skipped.dr_ci_high)


# ---------------------------------------------------------------- interpolation


@pytest.mark.numeric
def test_interpolated_dr_is_log_linear_crossing():
    rows = [dict(model="m", dataset="d", layer="l", solver="s", selector="all", fraction=1.0, n_neurons=1000,
                 n_features=1000, seed=0, test_accuracy=1.0)]
    curve = [(0.05, 0.3), (0.1, 0.5), (0.4, 0.9), (1.0, 1.0)]
    rows += [dict(rows[0], selector="random", fraction=f, n_neurons=int(f * 1000), test_accuracy=a) for f, a in curve]
    df = pd.DataFrame(rows)
    # delta = 0.75 puts k* at 237.84 neurons: ceil() is 0.16 from an integer boundary, far beyond float rounding
    # (at 0.7, k* is 200 exactly and ceil() of 199.99999... or 200.00...1 depends on libm's pow).
    out = dr(df, 0.75, interpolate=True, n_boot=0).iloc[0]
    t = (0.75 - 0.5) / (0.9 - 0.5)
    f_star = math.exp(math.log(0.1) + t * (math.log(0.4) - math.log(0.1)))
    k_star = 100 * (400 / 100) ** t
    assert abs(k_star - round(k_star)) > 1e-6  # the margin of the discrete outcome exceeds the float noise
    assert out.method == "interpolated"
    assert out.critical_fraction == pytest.approx(f_star)
    assert out.dr == pytest.approx(1 - f_star)
    assert out.critical_n_neurons == math.ceil(k_star)
    # Reached at the first tested fraction: nothing below it to interpolate from.
    first = dr(df, 0.2, interpolate=True, n_boot=0).iloc[0]
    assert first.critical_fraction == pytest.approx(0.05) and first.reached


def test_interpolated_never_later_than_grid():
    rng = np.random.default_rng(6)
    df = make_results(rng, models=(("m1", 300),), datasets=("a", "b", "c", "d"))
    deltas = np.linspace(0.5, 1, 26)
    grid = dr_curve(df, deltas, n_boot=0)
    interp = dr_curve(df, deltas, interpolate=True, n_boot=0)
    assert (interp["critical_fraction"].to_numpy() <= grid["critical_fraction"].to_numpy() + 1e-12).all()
    assert (interp["reached"] == grid["reached"]).all()


# ---------------------------------------------------------------- gini


def test_gini_known_values_and_naive_definition():
    assert gini([0.3] * 7) == 0.0
    assert gini([0, 0, 0]) == 0.0
    for n in (2, 5, 10):
        x = np.zeros(n)
        x[n // 2] = 0.4
        assert gini(x) == pytest.approx((n - 1) / n)
    rng = np.random.default_rng(7)
    for n in (1, 3, 17, 100):
        x = rng.uniform(0, 1, n)
        assert gini(x) == pytest.approx(naive_gini(x))


@pytest.mark.parametrize("bad", [[], [0.5, -0.1], [np.nan, 1.0]])
def test_gini_rejects_bad_input(bad):
    with pytest.raises(ConfigError, match="gini needs"):
        gini(bad)


# ---------------------------------------------------------------- pareto


def test_pareto_frontier_matches_brute_force_dominance():
    rng = np.random.default_rng(8)
    df = make_results(rng, models=(("m1", 120),), datasets=("d1", "d2"), selectors=("random", "pca", "proj"),
                      noise=0.05)
    # Coarse accuracies create ties between selectors at equal neuron counts.
    df["test_accuracy"] = (df["test_accuracy"] * 20).round() / 20
    got = pareto_frontier(df)
    for dataset, g in df.groupby("dataset"):
        pts = {}
        for r in g.itertuples():
            pts.setdefault((r.selector, r.n_neurons), []).append(r.test_accuracy)
        pts = {k: sum(v) / len(v) for k, v in pts.items()}
        keep = set()
        for (s, n), a in pts.items():
            # Means summed in another order differ in the last bits: equal within 1e-9 is a tie.
            dominated = any(n2 <= n and a2 >= a - 1e-9 and not (n2 == n and abs(a2 - a) <= 1e-9)
                            for (s2, n2), a2 in pts.items())
            if not dominated:
                keep.add((s, n))
        mine = got[got["dataset"] == dataset]
        assert set(zip(mine["selector"], mine["n_neurons"])) == keep
        for r in mine.itertuples():
            assert r.accuracy == pytest.approx(pts[(r.selector, r.n_neurons)])
    for _, g in got.groupby("dataset"):  # along the frontier more neurons buy more accuracy
        assert (np.diff(g["accuracy"].to_numpy()) >= -1e-9).all() and g["n_neurons"].is_monotonic_increasing


# ---------------------------------------------------------------- per-class


def make_per_class(rng, n_classes=5, fractions=(0.1, 0.5), n_seeds=3):
    rows = []
    base = dict(model="m", dataset="d", layer="l", solver="s")
    for seed in range(2):
        for c in range(n_classes):
            rows.append(dict(base, selector="all", fraction=1.0, n_neurons=40, seed=seed, **{"class": c},
                             accuracy=rng.uniform(0.6, 1.0), support=10))
    for f in fractions:
        for seed in range(n_seeds):
            for c in range(n_classes):
                rows.append(dict(base, selector="random", fraction=f, n_neurons=int(40 * f), seed=seed,
                                 **{"class": c}, accuracy=rng.uniform(0.0, 1.0), support=10))
    return pd.DataFrame(rows)


def test_per_class_drop_and_summary_match_hand_computation():
    rng = np.random.default_rng(9)
    pc = make_per_class(rng)
    drops = class_drops(pc)
    summary = per_class_summary(pc)
    cls = pc["class"]
    full = {c: pc.loc[(pc["selector"] == "all") & (cls == c), "accuracy"].mean() for c in range(5)}
    assert len(summary) == 2
    for f in (0.1, 0.5):
        acc = {c: pc.loc[(pc["fraction"] == f) & (cls == c), "accuracy"].mean() for c in range(5)}
        drop = {c: full[c] - acc[c] for c in range(5)}
        mine = drops[drops["fraction"] == f].set_index("class")
        for c in range(5):
            assert mine.loc[c, "drop"] == pytest.approx(drop[c])
            assert mine.loc[c, "full_accuracy"] == pytest.approx(full[c])
        s = summary[summary["fraction"] == f].iloc[0]
        assert s.mean_drop == pytest.approx(np.mean(list(drop.values())))
        assert s.drop_std == pytest.approx(np.std(list(drop.values())))
        assert s.max_drop == pytest.approx(max(drop.values()))
        assert s.max_drop_class == max(drop, key=drop.get)
        assert s.worst_class == min(acc, key=acc.get)
        assert s.worst_class_accuracy == pytest.approx(min(acc.values()))
        assert s.gini == pytest.approx(naive_gini(acc.values()))
        assert s.full_gini == pytest.approx(naive_gini(full.values()))
        assert s.n_neurons == int(40 * f) and s.n_classes == 5


def test_per_class_missing_full_class_is_an_error():
    pc = make_per_class(np.random.default_rng(10))
    pc = pc[~((pc["selector"] == "all") & (pc["class"] == 3))]
    with pytest.raises(DataError, match=r"class 3 of m/d/l/s has no full-layer \('all'\) row"):
        class_drops(pc)


# ---------------------------------------------------------------- errors


@pytest.fixture
def small():
    return make_results(np.random.default_rng(11), models=(("m1", 50),), datasets=("d1", "d2"))


def test_group_without_full_rows(small):
    df = small[~((small["selector"] == "all") & (small["dataset"] == "d2"))]
    with pytest.raises(DataError, match=r"m1/d2/penultimate/ridge has no full-layer \('all'\) rows; "
                                        r"run the probe with selector 'all' included"):
        dr(df)


def test_missing_columns(small):
    with pytest.raises(DataError, match="lacks required column.*test_accuracy"):
        dr(small.drop(columns="test_accuracy"))
    with pytest.raises(DataError, match="lacks required column.*class"):
        class_drops(small)


def test_empty_table_and_non_dataframe(small):
    with pytest.raises(DataError, match="results table is empty"):
        dr(small.iloc[:0])
    with pytest.raises(DataError, match="must be a pandas DataFrame"):
        dr(small.to_dict("records"))


def test_missing_values(small):
    df = small.copy()
    df.loc[5, "test_accuracy"] = np.nan
    with pytest.raises(DataError, match="1 row.*missing values in test_accuracy.*first at row 5"):
        dr(df)


@pytest.mark.parametrize("delta", [0, -0.1, 1.5, "x", float("nan")])
def test_delta_outside_unit_interval(small, delta):
    with pytest.raises(ConfigError, match="delta must be"):
        dr(small, delta)
    with pytest.raises(ConfigError, match="delta must be"):
        dr_curve(small, [0.9, delta])


def test_bad_options(small):
    with pytest.raises(DataError, match="no rows with selector 'rnd' \\(closest: random\\)"):
        dr(small, selector="rnd")
    with pytest.raises(ConfigError, match="selector 'all' is the full layer"):
        dr(small, selector="all")
    with pytest.raises(ConfigError, match="n_boot must be"):
        dr(small, n_boot=-1)
    with pytest.raises(ConfigError, match="ci must be"):
        dr(small, ci=95)
    with pytest.raises(ConfigError, match="deltas is empty"):
        dr_curve(small, [])
    with pytest.raises(ConfigError, match="format must be one of.*closest: latex"):
        format_table(pd.DataFrame({"a": [1]}), "latx")
    with pytest.raises(ConfigError, match="spread must be one of"):
        dr_table(small, spread="sd")


def test_read_results_errors(tmp_path):
    with pytest.raises(DataError, match="no results file at .*results.parquet"):
        read_results(tmp_path)
    bad = tmp_path / "results.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="cannot read .* as Parquet"):
        read_results(tmp_path)


# ---------------------------------------------------------------- table and CLI


def test_dr_table_layout(small):
    two_layers = pd.concat([small, small.assign(layer="block3")])
    table = dr_table(two_layers, 0.9, spread="none")
    assert list(table.columns) == ["model", "layer", "n_features", "n_seeds", "d1", "d2"]
    expected = brute_dr(two_layers, 0.9)
    for r in table.itertuples(index=False):
        for ds in ("d1", "d2"):
            assert getattr(r, ds) == f"{expected[(r.model, ds, r.layer)][0]:.2f}"
    assert "layer" not in dr_table(small, spread="none").columns


def test_format_table_renderers():
    t = pd.DataFrame({"model": ["a_b"], "x|y": ["0.70 ± 0.05"]})
    md = format_table(t).splitlines()
    assert md[0].startswith("| model") and "x\\|y" in md[0] and set(md[1]) <= {"|", "-"}
    assert len({len(line) for line in md}) == 1  # columns aligned
    tex = format_table(t, "latex")
    assert r"a\_b & 0.70 $\pm$ 0.05 \\" in tex and tex.startswith(r"\begin{tabular}{ll}")
    assert pd.read_csv(io.StringIO(format_table(t, "csv"))).equals(t)


def test_cli_dr_prints_table(tmp_path, capsys):
    rng = np.random.default_rng(12)
    df = make_results(rng, models=(("vit_s16", 384), ("resnet18", 512)), datasets=("cifar10", "pets"))
    df.to_parquet(tmp_path / "results.parquet")
    expected = brute_dr(df, 0.9)

    assert main(["dr", str(tmp_path), "--delta", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "DR at delta=0.9" in out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["model", "n_features", "n_seeds", "cifar10", "pets"]
    assert len(lines) == 4  # header, rule, two models
    for line in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        for ds in ("cifar10", "pets"):
            assert cells[ds].startswith(f"{expected[(cells['model'], ds, 'penultimate')][0]:.2f} [")

    assert main(["dr", str(tmp_path / "results.parquet"), "--format", "csv", "--spread", "none"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    for r in csv.itertuples(index=False):
        assert r.n_features == {"vit_s16": 384, "resnet18": 512}[r.model]
        for ds in ("cifar10", "pets"):
            # cells are shown with 2 digits; DR = 1 - k/D is not a 2-digit number in general
            assert getattr(r, ds) == pytest.approx(expected[(r.model, ds, "penultimate")][0], abs=0.005)

    assert main(["dr", str(tmp_path), "--format", "latex", "--interpolate"]) == 0
    assert r"\begin{tabular}" in capsys.readouterr().out


def test_cli_dr_errors_are_one_line(tmp_path, capsys):
    assert main(["dr", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("critmass: error: no results file") and err.count("\n") == 1
    make_results(np.random.default_rng(13)).to_parquet(tmp_path / "results.parquet")
    assert main(["dr", str(tmp_path), "--delta", "2"]) == 2
    assert "delta must be in (0, 1]" in capsys.readouterr().err


def test_docstring_examples():
    import critmass.metrics._dr as m_dr
    import critmass.metrics._perclass as m_pc
    import critmass.metrics._table as m_tab

    for mod in (m_dr, m_pc, m_tab):
        failed, attempted = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert attempted > 0 and failed == 0, mod.__name__
