"""The logistic probes' regularisation path (warm starts, strongest penalty first, early stop on
validation) and their convergence: each probe's objective against a tightly converged scikit-learn fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from choice_oracle import pick_penalty
from sklearn.linear_model import LogisticRegression

from critmass.data._splits import train_val_indices
from critmass.exceptions import ConfigError
from critmass.probes import LogisticProbe

pytestmark = pytest.mark.numeric  # float results compared across code paths: make test-numerics


@pytest.fixture(scope="module")
def split(digits):
    X, y = digits[0], digits[1]  # the 1,400 training rows
    tr, va = train_val_indices(y, 0.2, seed=0)
    perm = np.random.default_rng(0).permutation(X.shape[1])
    subsets = [np.sort(perm[:k]) for k in (4, 8, 16, 32, 64)]
    return X[tr], y[tr], X[va], y[va], subsets


def _objective(probe, i, X, y):
    """Mean cross-entropy + alpha/2 ||W||^2 on the standardised columns, in float64 (the documented
    objective), of subset ``i``'s chosen probe."""
    s = probe.subsets_[i]
    Z = ((X[:, s] - probe.mean_[s]) / probe.scale_[s]).astype(np.float64)
    W = (probe.coefs_[i] * probe.scale_[s][None, :]).T
    b = probe.intercepts_[i] + probe.mean_[s] @ probe.coefs_[i].T
    return _ce_l2(Z, y, W, b, probe.regs_[i]), Z


def _ce_l2(Z, y, W, b, alpha):
    L = Z @ W + b
    L -= L.max(1, keepdims=True)
    ce = -(L[np.arange(len(y)), y] - np.log(np.exp(L).sum(1))).mean()
    return ce + 0.5 * alpha * float((W**2).sum())


@pytest.mark.parametrize("path", [True, False])
def test_each_probe_objective_is_within_1e4_of_a_tightly_converged_fit(split, probe_threads, path):
    Xf, yf, Xv, yv, subsets = split
    probe = LogisticProbe(subsets=subsets, device="cpu", path=path).fit(Xf, yf, X_val=Xv, y_val=yv)
    n = len(yf)
    for i in range(len(subsets)):
        obj, Z = _objective(probe, i, Xf, yf)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = LogisticRegression(C=1.0 / (probe.regs_[i] * n), tol=1e-12, max_iter=50_000).fit(Z, yf)
        ref_obj = _ce_l2(Z, yf, ref.coef_.T, ref.intercept_, probe.regs_[i])
        # The reference is the minimum up to its own (much tighter) tolerance; ours may not be below it
        # by more than float rounding, and must be above it by less than 1e-4 relative.
        assert obj >= ref_obj * (1 - 1e-7)
        assert (obj - ref_obj) / ref_obj < 1e-4, (len(subsets[i]), probe.regs_[i], obj, ref_obj)


def test_path_stops_past_the_validation_peak_and_chooses_among_what_it_fitted(split, digits, probe_threads):
    Xf, yf, Xv, yv, subsets = split
    Xf, yf = Xf[:200], yf[:200]  # few fit rows: the weakest penalties overfit, so some paths stop early
    alphas = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    path = LogisticProbe(alphas=alphas, subsets=subsets, device="cpu").fit(Xf, yf, X_val=Xv, y_val=yv)
    grid = LogisticProbe(alphas=alphas, subsets=subsets, device="cpu", path=False).fit(Xf, yf, X_val=Xv, y_val=yv)
    assert np.isfinite(grid.val_scores_).all()  # the exhaustive search fits every penalty
    n_val = len(yv)
    stopped = 0
    for i in range(len(subsets)):
        scores = path.val_scores_[i]
        fitted = np.isfinite(scores)
        # Strongest penalty first: what was fitted is a suffix of the (ascending) grid, never empty.
        first = int(np.argmax(fitted))
        assert fitted[-1] and fitted[first:].all() and not fitted[:first].any()
        if first > 0:  # stopped early: the weakest fitted penalty trails the best by more than the margin
            stopped += 1
            best = np.nanmax(scores) * n_val
            margin = max(1.0, 0.5 * np.sqrt(best * (1 - best / n_val)))
            assert scores[first] * n_val < best - margin + 1e-9
        # The chosen penalty is one that was fitted, chosen among them by the one-standard-error rule.
        chosen = int(np.searchsorted(path.alphas_, path.regs_[i]))
        assert fitted[chosen]
        assert path.regs_[i] == pick_penalty(scores, alphas, n_val)
    assert stopped >= 1
    # Warm starts and early stops change little: test accuracy close to the exhaustive grid's (on 200
    # rows, 360 validation rows choose among near-equal penalties; the bound is a dozen test samples).
    Xt, yt = digits[2], digits[3]
    diff = path.score_subsets(Xt, yt) - grid.score_subsets(Xt, yt)
    assert np.abs(diff).max() <= 0.03 and abs(diff.mean()) <= 0.01


def test_path_patience_minus_one_fits_every_penalty_warm_started(split, probe_threads):
    Xf, yf, Xv, yv, subsets = split
    full = LogisticProbe(subsets=subsets, device="cpu", path_patience=-1).fit(Xf, yf, X_val=Xv, y_val=yv)
    assert np.isfinite(full.val_scores_).all()


def test_path_without_several_penalties_is_a_plain_fit(split, probe_threads):
    Xf, yf, _, _, subsets = split
    a = LogisticProbe(alphas=1e-3, subsets=subsets, device="cpu").fit(Xf, yf)
    b = LogisticProbe(alphas=1e-3, subsets=subsets, device="cpu", path=False).fit(Xf, yf)
    for ca, cb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(ca, cb)  # one stage, nothing to warm-start from: the same fit


@pytest.mark.parametrize("kwargs", [{"path": "yes"}, {"path_patience": -2}, {"path_patience": 1.5},
                                    {"ftol": -1.0}, {"ftol": float("nan")}])
def test_bad_path_options_are_one_line_errors(split, kwargs):
    Xf, yf, _, _, _ = split
    with pytest.raises(ConfigError) as err:
        LogisticProbe(device="cpu", **kwargs).fit(Xf[:200], yf[:200])
    assert "\n" not in str(err.value)


def test_cli_no_path_fits_the_whole_grid_and_is_refused_for_other_solvers(split, tmp_path, capsys):
    from critmass.cli._app import main
    import pandas as pd

    Xf, yf, Xv, yv, _ = split
    npz = tmp_path / "feats.npz"
    np.savez(npz, x_train=Xf, y_train=yf, x_test=Xv, y_test=yv)
    args = ["probe", str(npz), "--fractions", "0.5", "--seeds", "1", "--no-progress", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "grid"), "--no-path"]) == 0
    rows = pd.read_parquet(tmp_path / "grid" / "results.parquet")
    assert json_options(rows)["path"] is False
    assert main([*args, "--out", str(tmp_path / "ridge"), "--solver", "ridge", "--no-path"]) == 2
    assert "--path applies to --solver logistic" in capsys.readouterr().err


def json_options(rows):
    import json

    return json.loads(rows["config"].iloc[0])["solver_options"]
