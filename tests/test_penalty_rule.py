"""``run_probes(penalty_rule=...)``: 'per-probe' (default, unchanged) and 'first-seed' (the other seeds of the
random selectors are fitted only at the penalty the first seed chose at the same subset size)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from critmass.cli._app import main
from critmass.exceptions import ConfigError
from critmass.features import FeatureSet, FeatureSplit
from critmass.probes import RESULT_COLUMNS, LogisticProbe, run_probes
from critmass.probes._run import PENALTY_RULES

from choice_oracle import assert_same_choice, chosen_shift

SELECTORS = ["random", "randproj", "pca"]
FRACTIONS = [0.1, 0.25, 0.5, 1.0]
SEEDS = [3, 0, 7]  # the first seed is 3: 'first' means first in the list, not the smallest
KEYS = ["selector", "fraction", "seed"]
#: L-BFGS run to (near) the optimum. At the default tol=1e-5 the penalty a probe chooses depends on the batch
#: layout it was fitted in (measured here: random k=16 of seed 3 chose 1e-5 fitted with the other seeds and
#: 1e-4 alone; the weakly penalised problem stops at another iterate and gains one validation sample), and
#: 'first-seed' fits the first seed without the others. Near the optimum every layout chooses the same. ftol=0:
#: the relative-decrease rule (default 1e-7) would otherwise stop each layout at its own iterate before tol.
SOLVER = {"tol": 1e-9, "ftol": 0.0, "max_iter": 2000}


pytestmark = [pytest.mark.usefixtures("probe_threads"), pytest.mark.numeric]  # 1 torch thread, or CRITMASS_TEST_THREADS (conftest)


@pytest.fixture(scope="module")
def fs():
    """Digits with an explicit validation split (train 1000, val 400, test 397)."""
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    splits = {"train": FeatureSplit(X[:1000], y[:1000]), "val": FeatureSplit(X[1000:1400], y[1000:1400]),
              "test": FeatureSplit(X[1400:], y[1400:])}
    return FeatureSet(splits, {"model": "toy", "dataset": "digits", "layer": "pixels"})


def _run(fs, **kw):
    args = dict(selectors=SELECTORS, fractions=FRACTIONS, seeds=SEEDS, device="cpu", solver_options=SOLVER)
    return run_probes(fs, **{**args, **kw})


@pytest.fixture(scope="module")
def default(fs, tmp_path_factory):
    return _run(fs, out=tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def first(fs, tmp_path_factory):
    return _run(fs, penalty_rule="first-seed", out=tmp_path_factory.mktemp("first"))


def _indexed(res):
    return res.results.set_index(KEYS).sort_index()


# ---------------------------------------------------------------------------------------- (1) default
@pytest.mark.slow  # ~20 s: four curves with a tight solver
def test_default_is_per_probe_and_unchanged(fs, default):
    small = dict(selectors=["random", "randproj"], fractions=[0.25, 1.0], seeds=[3, 0], device="cpu",
                 save_weights=False)
    implicit, explicit = run_probes(fs, **small), run_probes(fs, penalty_rule="per-probe", **small)
    pd.testing.assert_frame_equal(implicit.results, explicit.results, check_exact=True)
    pd.testing.assert_frame_equal(implicit.per_class, explicit.per_class, check_exact=True)
    table = default.results
    assert list(table.columns) == RESULT_COLUMNS
    assert RESULT_COLUMNS[RESULT_COLUMNS.index("reg_applied") + 1] == "penalty_rule"
    assert (table.penalty_rule == "per-probe").all()
    assert json.loads(table.config.iloc[0])["penalty_rule"] == "per-probe"
    # Every seed still chose its own penalty: independently, one LogisticProbe per subset on the full grid.
    X_fit, y_fit = fs["train"].x, fs["train"].y
    X_val, y_val = fs["val"].x, fs["val"].y
    for seed in SEEDS[1:]:
        weights = np.load(default.out / "weights" / f"random-seed{seed}.npz")
        rows = table[(table.selector == "random") & (table.seed == seed)]
        subsets = [weights[f"indices_{k}"] for k in rows.n_neurons]
        est = LogisticProbe(subsets=subsets, device="cpu", **SOLVER).fit(X_fit, y_fit, X_val=X_val, y_val=y_val)
        # Batched with the other seeds vs alone: another float order. Equal where the choice's margin exceeds
        # what the observed shift of validation counts can cross (choice_oracle); else within the tie band.
        shift = chosen_shift(rows.val_accuracy.to_numpy(), est.scores_, rows.reg.to_numpy() == est.regs_, len(y_val))
        equal = [assert_same_choice(r.reg, est.regs_[i], r.choice_margin, est.choice_margins_[i], shift=shift,
                                    val_a=r.val_accuracy, val_b=est.scores_[i], n_val=len(y_val), what=f"seed {seed}")
                 for i, r in enumerate(rows.itertuples())]
        acc = np.array([(p == fs["test"].y).mean() for p in est.predict_subsets(fs["test"].x)])
        np.testing.assert_allclose(rows.test_accuracy.to_numpy()[equal], acc[equal], atol=1.01 / len(fs["test"].y))


# ------------------------------------------------------------------------------------- (2) first-seed
def test_other_seeds_use_the_first_seeds_penalty(first):
    t = first.results
    lead = t[t.seed == SEEDS[0]].set_index(["selector", "n_neurons"])
    others = t[(t.seed != SEEDS[0]) & t.selector.isin(["random", "randproj"])]
    assert set(others.seed) == set(SEEDS[1:]) and len(others) == 2 * 2 * len(FRACTIONS)
    for _, row in others.iterrows():
        assert row.reg == lead.reg[(row.selector, row.n_neurons)], row
        # a follower chose nothing itself: it carries the margin of the choice it follows
        assert row.choice_margin == lead.choice_margin[(row.selector, row.n_neurons)], row
    # Deterministic selectors and the full layer are recorded once, with the first seed.
    assert set(t[t.selector.isin(["all", "pca"])].seed) == {SEEDS[0]}


def test_other_seeds_match_single_penalty_runs(fs, first):
    """Each other-seed probe equals a separate run of that seed with ``alphas=[the chosen penalty]``."""
    t = first.results
    n_test, n_val = len(fs["test"].y), len(fs["val"].y)
    others = t[(t.seed != SEEDS[0]) & t.selector.isin(["random", "randproj"])]
    checked = 0
    for (seed, reg), group in others.groupby(["seed", "reg"]):
        alone = _run(fs, selectors=sorted(set(group.selector)), seeds=[int(seed)], alphas=[float(reg)],
                     save_weights=False).results.set_index(KEYS)
        for _, row in group.iterrows():
            ref = alone.loc[(row.selector, row.fraction, row.seed)]
            assert ref.reg == row.reg and ref.n_neurons == row.n_neurons
            assert abs(ref.test_accuracy - row.test_accuracy) <= 1.01 / n_test, row
            assert abs(ref.val_accuracy - row.val_accuracy) <= 1.01 / n_val, row
            checked += 1
    assert checked == len(others)


def test_first_seed_weights_files_hold_every_size(first):
    t = first.results
    for sel in ("random", "randproj"):
        for seed in SEEDS:
            rows = t[(t.selector == sel) & (t.seed == seed)]
            w = np.load(first.out / rows.weights_file.iloc[0])
            assert w["n_neurons"].tolist() == sorted(rows.n_neurons)
            for _, row in rows.iterrows():
                assert float(w[f"reg_{row.n_neurons}"]) == row.reg
                assert w[f"coef_{row.n_neurons}"].shape == (10, row.n_neurons)


# -------------------------------------------------------------------------------- (3) what is unchanged
def test_searched_rows_equal_per_probe_rows(fs, default, first):
    a, b = _indexed(default), _indexed(first)
    assert a.index.equals(b.index)
    searched = (b.index.get_level_values("seed") == SEEDS[0])
    n_test = len(fs["test"].y)
    # Seed 3 batched with seeds 0 and 7 vs alone: equal choices where the margin allows (see choice_oracle).
    n_val = len(fs["val"].y)
    sa, sb = a[searched], b[searched]
    shift = chosen_shift(sa.val_accuracy.to_numpy(), sb.val_accuracy.to_numpy(), (sa.reg == sb.reg).to_numpy(), n_val)
    equal = np.array([assert_same_choice(ra.reg, rb.reg, ra.choice_margin, rb.choice_margin, shift=shift,
                                         val_a=ra.val_accuracy, val_b=rb.val_accuracy, n_val=n_val, what=str(key))
                      for key, ra, rb in zip(sa.index, sa.itertuples(), sb.itertuples())])
    assert equal.mean() >= 0.75  # knife edges are the exception
    np.testing.assert_allclose(sa.test_accuracy[equal], sb.test_accuracy[equal], atol=1.01 / n_test)
    # Projections are fitted alone in both runs: the first seed's rows are bit for bit the same.
    proj = searched & (b.index.get_level_values("selector") == "randproj")
    for col in ("reg", "val_accuracy", "test_accuracy", "train_accuracy", "n_iter"):
        np.testing.assert_array_equal(a[col][proj], b[col][proj])
    assert (first.results.penalty_rule == "first-seed").all()
    cfg_a, cfg_b = json.loads(a.config.iloc[0]), json.loads(b.config.iloc[0])
    assert cfg_b.pop("penalty_rule") == "first-seed" and cfg_a.pop("penalty_rule") == "per-probe"
    assert cfg_a == cfg_b


def test_single_alpha_grid_changes_nothing(fs):
    a = _run(fs, alphas=[1e-3], save_weights=False, solver_options=None).results
    b = _run(fs, alphas=[1e-3], penalty_rule="first-seed", save_weights=False, solver_options=None).results
    assert (b.penalty_rule == "first-seed").all()
    cols = [c for c in RESULT_COLUMNS if c not in ("penalty_rule", "config")]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)


@pytest.mark.parametrize("solver, kw", [("ridge", {"solver_options": None}),
                                         ("sgd", {"alphas": [1e-4, 1e-1], "solver_options": {"epochs": 2}})])
def test_other_solvers_follow_the_rule(fs, solver, kw):
    t = _run(fs, selectors=["random"], fractions=[0.25, 1.0], solver=solver, penalty_rule="first-seed",
             save_weights=False, **kw).results
    lead = t[(t.seed == SEEDS[0]) & (t.selector == "random")].set_index("n_neurons").reg
    rest = t[(t.seed != SEEDS[0]) & (t.selector == "random")]
    assert len(rest) == 4 and all(r.reg == lead[r.n_neurons] for _, r in rest.iterrows())


# --------------------------------------------------------------------------------------- (4) interface
@pytest.mark.parametrize("bad", ["first_seed", "", None, 1])
def test_bad_rule_is_refused(fs, bad):
    with pytest.raises(ConfigError) as info:
        run_probes(fs, penalty_rule=bad, seeds=1, fractions=[0.5], device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and all(rule in msg for rule in PENALTY_RULES)


def test_cli_penalty_rule(fs, tmp_path, capsys):
    path = tmp_path / "feats.npz"
    np.savez(path, x_train=fs["train"].x, y_train=fs["train"].y, x_val=fs["val"].x, y_val=fs["val"].y,
             x_test=fs["test"].x, y_test=fs["test"].y)
    args = ["probe", str(path), "--fractions", "0.25,1", "--seeds", "2", "--solver", "ridge", "--device", "cpu",
            "--no-progress", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "a"), "--penalty-rule", "first-seed"]) == 0
    table = pd.read_parquet(tmp_path / "a" / "results.parquet")
    assert (table.penalty_rule == "first-seed").all()
    assert json.loads(table.config.iloc[0])["penalty_rule"] == "first-seed"
    lead = table[(table.seed == 0) & (table.selector == "random")].set_index("n_neurons").reg
    rest = table[table.seed == 1]
    assert len(rest) == 2 and all(r.reg == lead[r.n_neurons] for _, r in rest.iterrows())
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert (pd.read_parquet(tmp_path / "b" / "results.parquet").penalty_rule == "per-probe").all()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "c"), "--penalty-rule", "fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("critmass: error:") and "per-probe, first-seed" in err and "\n" not in err
    assert not (tmp_path / "c").exists()
