"""Tests of critmass.probes: parity with scikit-learn, batching, nesting, the runner, the CLI, errors."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from choice_oracle import assert_same_choice, count_shift, pick_penalty
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier

from critmass.cli._app import main
from critmass.exceptions import ConfigError, FeatureError, NotFittedError
from critmass.features import FeatureSet, FeatureSplit
from critmass.probes import (
    PER_CLASS_COLUMNS,
    RESULT_COLUMNS,
    LogisticProbe,
    RidgeProbe,
    SGDProbe,
    alpha_from_C,
    run_probes,
)
from critmass.probes import _logistic


pytestmark = pytest.mark.usefixtures("probe_threads")  # 1 torch thread, or CRITMASS_TEST_THREADS (conftest)


def standardized(Xtr, *others):
    mu, sd = Xtr.mean(0, dtype=np.float64), Xtr.std(0, dtype=np.float64)
    sd[sd == 0] = 1.0
    return [(X - mu) / sd for X in (Xtr, *others)]


def logistic_objective(Z, y, coef, intercept, alpha):
    """mean CE + alpha/2 ||W||^2, written independently of the library."""
    logits = Z @ coef.T + intercept
    logits = logits - logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits).sum(1))
    return float((lse - logits[np.arange(len(y)), y]).mean() + 0.5 * alpha * (coef**2).sum())


def objective_and_gradient(Z, y, coef, intercept, alpha):
    """mean CE + alpha/2 ||W||^2 and the squared norm of its gradient (in W and b), in float64 with numpy,
    written independently of the library."""
    logits = Z @ coef.T + intercept
    logits = logits - logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    rows = np.arange(len(y))
    f = float(-np.log(p[rows, y]).mean() + 0.5 * alpha * (coef**2).sum())
    p[rows, y] -= 1.0
    g_coef, g_icpt = p.T @ Z / len(y) + alpha * coef, p.mean(0)
    return f, float((g_coef**2).sum() + (g_icpt**2).sum())


def standardized_weights(probe, i):
    """Probe ``i``'s coefficients and intercept on the standardised features (the objective's units)."""
    s = probe.subsets_[i]
    return probe.coefs_[i] * probe.scale_[s], probe.intercepts_[i] + probe.coefs_[i] @ probe.mean_[s]


def logistic_hessian(Z, coef, intercept, alpha):
    """Hessian of mean CE + alpha/2 ||W||^2 in (W, b), class-major ``[W_c, b_c]`` blocks, float64 numpy."""
    logits = Z @ coef.T + intercept
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n, C = p.shape
    Xt = np.hstack([Z, np.ones((n, 1))])
    A = (p[:, :, None] * Xt[:, None, :]).reshape(n, -1)  # A[i, (c, j)] = p_ic x_ij
    H = -(A.T @ A) / n
    k1 = Xt.shape[1]
    for c in range(C):  # + blockdiag_c(X^T diag(p_c) X) / n
        H[c * k1 : (c + 1) * k1, c * k1 : (c + 1) * k1] += (Xt * p[:, c : c + 1]).T @ Xt / n
    return H + np.diag(np.tile(np.r_[np.full(k1 - 1, alpha), 0.0], C))


@pytest.fixture(scope="module")
def sklearn_optimum(digits):
    """scikit-learn's float64 optimum (C = 1 / (alpha n), tol 1e-12) of a subset's logistic problem on the
    standardised digits training rows (cached per set of columns and alpha; coefficients in the subset's
    column order), with ``mu_``: the objective's strong-convexity modulus there, the smallest eigenvalue
    of its Hessian beside the intercept shift (along which the objective is flat). The intercept is not
    penalised, so ``mu_`` can fall below alpha (on these features to ~alpha / 4)."""
    Ztr, = standardized(digits[0])
    cache = {}

    def get(s, alpha):
        cols = np.sort(s)
        key = (tuple(int(c) for c in cols), float(alpha))
        if key not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sk = LogisticRegression(C=1.0 / (alpha * len(digits[1])), tol=1e-12,
                                        max_iter=20000).fit(Ztr[:, cols], digits[1])
            eig = np.linalg.eigvalsh(logistic_hessian(Ztr[:, cols], sk.coef_, sk.intercept_, alpha))
            cache[key] = (sk.coef_, sk.intercept_, min(alpha, float(eig[1])))
        coef, icpt, mu = cache[key]
        return SimpleNamespace(coef_=coef[:, np.searchsorted(cols, s)], intercept_=icpt, mu_=mu)
    return get


def assert_at_optimum(probe, i, alpha, digits, ref, min_decided=0.5):
    """Probe ``i`` (fitted on all digits training rows with penalty ``alpha``) sits at the optimum up to
    what its stopping point allows, whatever order its float32 sums ran in.

    * Objective: ``f* <= f <= f* + ||g||^2 / (2 mu)``, with ``g`` the float64 gradient at the returned
      weights and ``f*``, ``mu`` scikit-learn's optimum and the strong-convexity modulus there (the gap
      bound of a mu-strongly convex function; the stopping rule is a bound on ``g``).
    * Predictions: strong convexity also gives ``||W - W*||_F^2 <= 2 (f - f*) / alpha``, so a test point's
      margin between two classes moves by at most ``sqrt(2) ||W - W*||_F ||x|| + range(b - b*)``; wherever
      the optimum's margin exceeds that, the prediction must be the optimum's (near-ties may flip).
    """
    Xtr, ytr, Xte, _ = digits
    Ztr, Zte = standardized(Xtr, Xte)
    s = probe.subsets_[i]
    coef, icpt = standardized_weights(probe, i)
    f, g2 = objective_and_gradient(Ztr[:, s], ytr, coef, icpt, alpha)
    f_ref, _ = objective_and_gradient(Ztr[:, s], ytr, ref.coef_, ref.intercept_, alpha)
    slack = 1e-9 * f_ref  # scikit-learn's own gap at tol 1e-12, and float64 evaluation
    bound = g2 / (2 * ref.mu_)
    assert f_ref - slack <= f <= f_ref + bound + slack, (len(s), alpha, f, f_ref, bound)
    assert f - f_ref <= 1e-4 * f_ref, (len(s), alpha, f, f_ref)  # converged (loose: a fit that stopped early)
    radius = np.sqrt(2 * max(f - f_ref, 0.0) / alpha)
    db = icpt - ref.intercept_
    Zs = Zte[:, s]
    z_ref = Zs @ ref.coef_.T + ref.intercept_
    top2 = np.sort(z_ref, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > np.sqrt(2) * radius * np.linalg.norm(Zs, axis=1) + (db.max() - db.min())
    ours = np.argmax(Zs @ coef.T + icpt, axis=1)
    np.testing.assert_array_equal(ours[decided], np.argmax(z_ref, axis=1)[decided])
    assert decided.mean() >= min_decided, decided.mean()  # the check is not vacuous
    return f, bound


def feature_set(Xtr, ytr, Xte, yte, **extra):
    splits = {"train": FeatureSplit(Xtr, ytr), "test": FeatureSplit(Xte, yte)}
    splits.update(extra)
    return FeatureSet(splits, {"model": "toy", "dataset": "digits", "layer": "pixels"})


# ------------------------------------------------------------------------------------- logistic
@pytest.mark.numeric
@pytest.mark.parametrize("C", [0.05, 1.0])
def test_logistic_matches_sklearn(digits, C):
    Xtr, ytr, Xte, yte = digits
    Ztr, Zte = standardized(Xtr, Xte)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(Ztr, ytr)
    alpha = alpha_from_C(C, len(ytr))
    probe = LogisticProbe(alphas=alpha, device="cpu", max_iter=500, tol=1e-7).fit(Xtr, ytr)
    assert abs(probe.score(Xte, yte) - sk.score(Zte, yte)) <= 0.01
    # Same objective, same minimum: our weights (folded back to standardised units) reach sklearn's value.
    ours = logistic_objective(Ztr, ytr, probe.coef_ * probe.scale_, probe.intercept_ + probe.coef_ @ probe.mean_, alpha)
    theirs = logistic_objective(Ztr, ytr, sk.coef_, sk.intercept_, alpha)
    assert ours == pytest.approx(theirs, abs=1e-4), (ours, theirs)
    assert probe.reg_ == alpha and probe.n_val_ == 0


@pytest.mark.numeric
def test_logistic_default_tolerance_close_to_sklearn_defaults(digits):
    Xtr, ytr, Xte, yte = digits
    Ztr, Zte = standardized(Xtr, Xte)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(C=1.0).fit(Ztr, ytr)
    probe = LogisticProbe(alphas=alpha_from_C(1.0, len(ytr)), device="cpu").fit(Xtr, ytr)
    assert abs(probe.score(Xte, yte) - sk.score(Zte, yte)) <= 0.01


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", [1e-3, 1e-2])
def test_logistic_batched_equals_separate(digits, alpha, sklearn_optimum):
    """Batched and separate fits run the same algorithm (same preconditioner, per-problem L-BFGS), but
    their float32 products sum in different orders (as do other BLAS kernels and thread counts), so their
    iterates part near the optimum: compare what the stopping rule guarantees (objectives within the gap
    bound of the float64 optimum, predictions where the margin is decided), not coefficients."""
    Xtr, ytr, _, _ = digits
    order = np.random.default_rng(3).permutation(Xtr.shape[1])
    subsets = [order[:k] for k in (4, 16, 40, 64)]
    kw = dict(alphas=alpha, device="cpu", max_iter=500, tol=1e-7)
    batched = LogisticProbe(subsets=subsets, **kw).fit(Xtr, ytr)
    for i, s in enumerate(subsets):
        alone = LogisticProbe(subsets=[s], **kw).fit(Xtr, ytr)
        ref = sklearn_optimum(s, alpha)
        f_b, bound_b = assert_at_optimum(batched, i, alpha, digits, ref)
        f_a, bound_a = assert_at_optimum(alone, 0, alpha, digits, ref)
        assert abs(f_b - f_a) <= max(bound_a, bound_b) + 1e-9 * f_a


@pytest.mark.numeric
def test_logistic_batched_selection_equals_separate(digits):
    Xtr, ytr, Xte, _ = digits
    order = np.random.default_rng(3).permutation(Xtr.shape[1])
    subsets = [order[:k] for k in (4, 16, 40, 64)]
    kw = dict(alphas=[1e-3, 1e-2], device="cpu", max_iter=400, tol=1e-7, val_fraction=0.2, random_state=1)
    batched = LogisticProbe(subsets=subsets, **kw).fit(Xtr, ytr)
    for i, s in enumerate(subsets):
        alone = LogisticProbe(subsets=[s], **kw).fit(Xtr, ytr)
        # Validation accuracies agree up to a sample on a decision boundary; the chosen penalty may differ
        # only where such a flip can cross the rule's boundary (choice_margin; see choice_oracle).
        n_val = alone.n_val_
        np.testing.assert_allclose(alone.val_scores_[0], batched.val_scores_[i], atol=1.01 / n_val)
        shift = count_shift(alone.val_scores_[0], batched.val_scores_[i], n_val)
        if assert_same_choice(alone.regs_[0], batched.regs_[i], alone.choice_margins_[0], batched.choice_margins_[i],
                              shift=shift, val_a=alone.scores_[0], val_b=batched.scores_[i], n_val=n_val):
            assert (alone.predict(Xte) == batched.predict_subsets(Xte)[i]).mean() >= 0.97


@pytest.mark.numeric
@pytest.mark.parametrize("blocked", [True, False])
def test_objective_equals_direct_computation(blocked):
    """The preconditioned problems (W = L_k^{-T} V) give the loss and gradient of the direct model, in the
    chain-by-chain (blocked) layout and in the dense layout that serves problems of several chains at once."""
    rng = np.random.default_rng(0)
    n, d, C = 300, 12, 4
    X = torch.tensor(rng.standard_normal((n, d)), dtype=torch.float64)
    y = torch.tensor(rng.integers(C, size=n))
    G = X.T @ X / n
    mus = {1e-2: 0.5, 0.3: 2.0}
    if blocked:  # one chain: the columns in their own order
        heads = {0: torch.arange(d)}
        probs = [(0, 3, 1e-2), (0, 3, 0.3), (0, 7, 1e-2), (0, 12, 0.3)]
    else:  # two chains (two column orders) of the union's columns
        heads = {0: torch.arange(d), 1: torch.from_numpy(rng.permutation(d))}
        probs = [(0, 3, 1e-2), (1, 3, 0.3), (1, 7, 1e-2), (0, 9, 0.3), (1, 12, 0.3)]
    factors = {(c, a): (h, _logistic._cholesky(G[h][:, h], mus[a])) for c, h in heads.items() for a in mus}
    # The leading block of the factor is the factor of the leading block (nested prefixes share it).
    lo = factors[(0, 1e-2)][1]
    torch.testing.assert_close(lo[:7, :7], torch.linalg.cholesky(G[:7, :7] + 0.5 * torch.eye(7, dtype=G.dtype)))
    sizes, alphas, keys = [k for _, k, _ in probs], [a for _, _, a in probs], [(c, a) for c, _, a in probs]
    obj = _logistic._Objective(X.T.contiguous(), y, C, sizes, alphas, keys, factors, blocked=blocked)
    P = len(probs)
    theta = torch.tensor(rng.standard_normal((P, obj.M)) * 0.3)
    for p, k in enumerate(sizes):  # rows beyond a problem's size are not parameters
        theta[p, k * C : d * C] = 0
    idx = np.arange(P) if blocked else np.array([0, 2, 3, 4])  # a subset of active problems, too
    loss, grad, gmax = obj(theta[idx], idx)
    for i, p in enumerate(idx):
        c, k, a = probs[p]
        h, lower = factors[(c, a)]
        V = theta[p, : d * C].view(d, C)[:k].clone().requires_grad_(True)
        b = theta[p, d * C :].clone().requires_grad_(True)
        W = torch.linalg.solve_triangular(lower[:k, :k].T, V, upper=True)
        direct = torch.nn.functional.cross_entropy(X[:, h[:k]] @ W + b, y) + 0.5 * a * (W**2).sum()
        direct.backward()
        torch.testing.assert_close(loss[i], direct.detach())
        torch.testing.assert_close(grad[i, : d * C].view(d, C)[:k], V.grad)
        torch.testing.assert_close(grad[i, d * C :], b.grad)
        assert torch.all(grad[i, k * C : d * C] == 0)
        gW = torch.autograd.functional.jacobian(  # max-abs gradient in W (the stopping rule's measure)
            lambda w: torch.nn.functional.cross_entropy(X[:, h[:k]] @ w + b.detach(), y) + 0.5 * a * (w**2).sum(),
            W.detach())
        torch.testing.assert_close(gmax[i], torch.maximum(gW.abs().max(), b.grad.abs().max()))
        z = X[:, h[:k]] @ W.detach() + b.detach()
        acc, ce = obj.evaluate(theta, X.T.contiguous(), y)
        assert acc[p] == (z.argmax(1) == y).double().mean().item()
        np.testing.assert_allclose(ce[p], torch.nn.functional.cross_entropy(z, y).item(), rtol=1e-10)


@pytest.mark.numeric
def test_fused_chains_equal_chain_by_chain_fits(digits, monkeypatch, sklearn_optimum):
    """Problems of several chains fitted together (dense layout) reach the optimum as the fits made chain
    by chain do (they sum in another order, so they are compared at the optimum, not to each other)."""
    Xtr, ytr, Xte, _ = digits
    subsets = []
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(64)
        subsets += [order[:k] for k in (3, 10, 32, 50, 64)]
    alpha = 1e-2
    kw = dict(alphas=alpha, subsets=subsets, device="cpu", max_iter=400, tol=1e-7, random_state=0)
    monkeypatch.setattr(_logistic, "_DENSE_ALL", False)
    monkeypatch.setattr(_logistic, "_FUSE_MIN_CHAINS", 10**9)
    fits = [LogisticProbe(**kw).fit(Xtr, ytr)]
    for dense_all in (False, True):  # CPU policy (large subsets fused), GPU policy (all fused)
        monkeypatch.setattr(_logistic, "_DENSE_ALL", dense_all)
        monkeypatch.setattr(_logistic, "_FUSE_MIN_CHAINS", 2)
        fits.append(LogisticProbe(**kw).fit(Xtr, ytr))
    for i, s in enumerate(subsets):
        for probe in fits:
            assert_at_optimum(probe, i, alpha, digits, sklearn_optimum(s, alpha))


@pytest.mark.numeric
def test_logistic_selects_alpha_on_validation(digits):
    Xtr, ytr, _, _ = digits
    grid = [1e-4, 1e-2, 10.0]
    probe = LogisticProbe(alphas=grid, device="cpu").fit(Xtr, ytr)
    assert probe.n_val_ > 0 and probe.val_scores_.shape == (1, 3)
    assert probe.reg_ == pick_penalty(probe.val_scores_[0], grid, probe.n_val_)  # the one-standard-error rule
    assert probe.scores_[0] == probe.val_scores_[0, grid.index(probe.reg_)]
    assert probe.val_scores_[0, 2] < probe.val_scores_[0].max()  # a huge penalty is worse


# ---------------------------------------------------------------------------------------- ridge
@pytest.mark.numeric
def test_ridge_matches_sklearn_ridgeclassifier(digits):
    Xtr, ytr, Xte, _ = digits
    Ztr, Zte = standardized(Xtr, Xte)
    n = len(ytr)
    order = np.random.default_rng(0).permutation(64)
    subsets = [order[:k] for k in (5, 20, 41, 64)] + [np.array([60, 2, 33])]  # a nested chain + a loner
    probe = RidgeProbe(alphas=0.05, subsets=subsets, device="cpu").fit(Xtr, ytr)
    for s, coef, icpt in zip(subsets, probe.coefs_, probe.intercepts_):
        sk = RidgeClassifier(alpha=0.05 * n).fit(Ztr[:, s], ytr)
        # Our coefficients act on raw features: express them in standardised units to compare.
        np.testing.assert_allclose(coef * probe.scale_[s], sk.coef_, atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(icpt + coef @ probe.mean_[s], sk.intercept_, atol=1e-6)
    # Predictions of the batched probes equal sklearn's on the raw test features.
    for s, pred in zip(subsets, probe.predict_subsets(Xte)):
        np.testing.assert_array_equal(pred, RidgeClassifier(alpha=0.05 * n).fit(Ztr[:, s], ytr).predict(Zte[:, s]))


@pytest.mark.numeric
def test_ridge_without_standardization_matches_sklearn_ridge():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 15)) * rng.uniform(0.1, 10, 15) + 5
    y = rng.integers(3, size=200)
    probe = RidgeProbe(alphas=0.3, standardize=False, device="cpu").fit(X, y)
    Y = np.where(y[:, None] == np.arange(3), 1.0, -1.0)
    sk = Ridge(alpha=0.3 * len(y)).fit(X, Y)  # sklearn centres X and Y for the intercept, as we do
    np.testing.assert_allclose(probe.coef_, sk.coef_, atol=1e-8)
    np.testing.assert_allclose(probe.intercept_, sk.intercept_, atol=1e-8)


@pytest.mark.numeric
def test_ridge_nested_cholesky_equals_separate_eigh(digits):
    Xtr, ytr, _, _ = digits
    order = np.random.default_rng(5).permutation(64)
    subsets = [order[:k] for k in (3, 9, 27, 64)]
    kw = dict(alphas=[1e-3, 0.1, 10.0], device="cpu", val_fraction=0.25, random_state=2)
    chain = RidgeProbe(subsets=subsets, **kw).fit(Xtr, ytr)  # one Cholesky per alpha for all prefixes
    for i, s in enumerate(subsets):
        alone = RidgeProbe(subsets=[s], **kw).fit(Xtr, ytr)  # one eigendecomposition, every alpha
        np.testing.assert_allclose(alone.val_scores_, chain.val_scores_[[i]])
        np.testing.assert_allclose(alone.coefs_[0], chain.coefs_[i], atol=1e-9)


# ------------------------------------------------------------------------------------------ SGD
def test_sgd_reaches_reasonable_accuracy_on_digits(digits):
    Xtr, ytr, Xte, yte = digits
    probe = SGDProbe(epochs=20, lr_step=8, device="cpu").fit(Xtr, ytr)
    assert probe.score(Xte, yte) > 0.85
    assert 1 <= probe.n_iter_[0] <= 20 and probe.n_val_ > 0


@pytest.mark.numeric
def test_sgd_views_and_batching(digits):
    Xtr, ytr, Xte, yte = digits
    rng = np.random.default_rng(0)
    views = np.stack([Xtr, Xtr + rng.normal(0, 1.0, Xtr.shape).astype(np.float32)])
    order = rng.permutation(64)
    subsets = [order[:k] for k in (8, 32, 64)]
    kw = dict(alphas=[1e-4, 5e-4], epochs=6, lr_step=3, device="cpu", random_state=4)
    batched = SGDProbe(subsets=subsets, **kw).fit(views, ytr)
    for i, s in enumerate(subsets):
        alone = SGDProbe(subsets=[s], **kw).fit(list(views), ytr)  # a list of views works too
        np.testing.assert_allclose(alone.coefs_[0], batched.coefs_[i], atol=1e-4)
    assert batched.score_subsets(Xte, yte)[-1] > 0.8


# ---------------------------------------------------------------------------------------- runner
@pytest.mark.numeric
def test_run_probes_writes_tables(digits, tmp_path):
    Xtr, ytr, Xte, yte = digits
    res = run_probes(feature_set(Xtr, ytr, Xte, yte), selectors=("random", "pca"), fractions=(0.05, 0.5, 1.0),
                     seeds=(0, 1), solver="ridge", out=tmp_path, csv=True)
    for name in ("results", "per_class"):
        assert (tmp_path / f"{name}.parquet").exists() and (tmp_path / f"{name}.csv").exists()
    table = pd.read_parquet(tmp_path / "results.parquet")
    per_class = pd.read_parquet(tmp_path / "per_class.parquet")
    assert list(table.columns) == RESULT_COLUMNS and list(per_class.columns) == PER_CLASS_COLUMNS
    required = {"model", "dataset", "layer", "selector", "fraction", "n_neurons", "n_features", "seed", "solver",
                "reg", "train_accuracy", "val_accuracy", "test_accuracy", "mean_per_class_recall", "n_train", "n_val",
                "n_test", "versions", "config"}
    assert required <= set(table.columns)
    full = table[table.selector == "all"]
    assert len(full) == 1 and full.fraction.item() == 1.0 and full.n_neurons.item() == 64
    assert res.out == tmp_path and len(res.results) == len(table)
    assert res.full_accuracy() == pytest.approx(full.test_accuracy.item())
    assert len(table[table.selector == "random"]) == 6  # 3 fractions x 2 seeds
    assert set(table[table.selector == "pca"].seed) == {0}  # deterministic: once
    assert (table.n_train + table.n_val == len(ytr)).all() and (table.n_test == len(yte)).all()
    assert table.test_accuracy.between(0, 1).all() and (table.n_features == 64).all()
    assert json.loads(table.config[0])["solver"] == "ridge" and "numpy" in json.loads(table.versions[0])
    # Per-class rows: one per class per result row, supports add up to the test set.
    assert len(per_class) == 10 * len(table)
    sizes = per_class.groupby(["selector", "fraction", "seed"]).support.sum()
    assert (sizes == len(yte)).all()
    row = table[(table.selector == "random") & (table.fraction == 0.5) & (table.seed == 1)].iloc[0]
    recalls = per_class[(per_class.selector == "random") & (per_class.fraction == 0.5) & (per_class.seed == 1)]
    assert row.mean_per_class_recall == pytest.approx(recalls.accuracy.mean())
    # Weights: indices, coefficients on raw features, reproducing the recorded test accuracy.
    with np.load(tmp_path / row.weights_file) as w:
        idx, coef, icpt = w["indices_32"], w["coef_32"], w["intercept_32"]
        pred = w["classes"][np.argmax(Xte[:, idx] @ coef.T + icpt, 1)]
    assert len(idx) == 32 and coef.shape == (10, 32)
    assert (pred == yte).mean() == pytest.approx(row.test_accuracy, abs=1e-9)
    with np.load(tmp_path / table[table.selector == "pca"].weights_file.iloc[0]) as w:
        assert w["components"].shape == (64, 64) and "coef_3" in w


def test_run_probes_seeds_reproduce(digits, tmp_path):
    Xtr, ytr, Xte, yte = digits
    fs = feature_set(Xtr, ytr, Xte, yte)
    kw = dict(selectors=("random",), fractions=(0.1, 0.3), solver="logistic", alphas=1e-3)
    a = run_probes(fs, seeds=(0, 7), out=tmp_path / "a", **kw).results
    b = run_probes(fs, seeds=(0, 7), out=tmp_path / "b", **kw).results
    cols = ["selector", "fraction", "seed", "reg", "train_accuracy", "val_accuracy", "test_accuracy"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    idx = {}
    for run in ("a", "b"):
        for seed in (0, 7):
            with np.load(tmp_path / run / "weights" / f"random-seed{seed}.npz") as w:
                idx[run, seed] = w["indices_19"]
    np.testing.assert_array_equal(idx["a", 0], idx["b", 0])
    assert not np.array_equal(idx["a", 0], idx["a", 7])


def test_run_probes_never_uses_test_data_for_fitting(digits):
    Xtr, ytr, Xte, yte = digits
    kw = dict(selectors=("random", "pca"), fractions=(0.2, 1.0), seeds=(0,), solver="logistic",
              alphas=[1e-3, 1e-1], save_weights=False)
    a = run_probes(feature_set(Xtr, ytr, Xte, yte), **kw).results
    rng = np.random.default_rng(0)
    b = run_probes(feature_set(Xtr, ytr, Xte * 100 + rng.normal(size=Xte.shape).astype(np.float32),
                               rng.permutation(yte)), **kw).results
    cols = ["selector", "fraction", "reg", "train_accuracy", "val_accuracy"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_run_probes_val_split_and_refit(digits):
    Xtr, ytr, Xte, yte = digits
    fs = feature_set(Xtr[:1200], ytr[:1200], Xte, yte, val=FeatureSplit(Xtr[1200:], ytr[1200:]))
    kw = dict(selectors=(), fractions=(1.0,), seeds=(0,), solver="ridge", save_weights=False)
    plain = run_probes(fs, **kw).results
    assert (plain.n_train == 1200).all() and (plain.n_val == 200).all()
    refit = run_probes(fs, refit=True, **kw).results
    assert (refit.n_train == 1400).all() and refit.refit.all()
    assert (refit.reg == plain.reg).all()  # chosen on validation before refitting


def test_run_probes_sgd_and_absolute_sizes(digits):
    Xtr, ytr, Xte, yte = digits
    res = run_probes(feature_set(Xtr, ytr, Xte, yte), fractions=(0.5,), n_neurons=(3,), seeds=(0,), solver="sgd",
                     solver_options={"epochs": 4, "lr_step": 2}, save_weights=False).results
    rnd = res[res.selector == "random"]
    assert sorted(rnd.n_neurons) == [3, 32] and rnd.fraction.min() == pytest.approx(3 / 64)
    assert (res.n_iter >= 1).all()


def test_fractions_sharing_a_size_share_the_fit(digits):
    Xtr, ytr, Xte, yte = digits
    res = run_probes(feature_set(Xtr, ytr, Xte, yte), fractions=(0.001, 0.002), seeds=(0,), solver="ridge",
                     save_weights=False).results
    rnd = res[res.selector == "random"]
    assert list(rnd.n_neurons) == [1, 1] and rnd.test_accuracy.nunique() == 1


# ------------------------------------------------------------------------------------------- CLI
def test_cli_probe(digits, tmp_path):
    Xtr, ytr, Xte, yte = digits
    path = tmp_path / "feats.npz"
    np.savez(path, x_train=Xtr, y_train=ytr, x_test=Xte, y_test=yte)
    code = main(["probe", str(path), "--fractions", "0.1,1", "--seeds", "1,3", "--selector", "random,prefix",
                 "--solver", "ridge", "--out", str(tmp_path / "out"), "--csv", "--device", "cpu", "--no-progress",
                 "--threads", "1"])
    assert code == 0
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(table[table.selector == "random"].seed) == {1, 3}
    assert {"all", "random", "prefix"} == set(table.selector)
    assert main(["probe", str(path), "--seeds", "2", "--fractions", "0.5", "--solver", "ridge", "--no-progress",
                 "--out", str(tmp_path / "out2")]) == 0
    assert set(pd.read_parquet(tmp_path / "out2" / "results.parquet").seed) == {0, 1}


def test_cli_errors_are_one_line(digits, tmp_path, capsys):
    Xtr, ytr, Xte, yte = digits
    path = tmp_path / "feats.npz"
    np.savez(path, x_train=Xtr, y_train=ytr, x_test=Xte, y_test=yte)
    assert main(["probe", str(path), "--fractions", "0,0.5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("critmass: error:") and "(0, 1]" in err and "\n" not in err
    assert main(["probe", str(path), "--seeds", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------- errors
def test_error_nan_features(digits):
    Xtr, ytr, Xte, yte = digits
    bad = Xtr.copy()
    bad[5, 3] = np.nan
    with pytest.raises(FeatureError, match="NaN"):
        run_probes(feature_set(bad, ytr, Xte, yte), fractions=(0.5,), seeds=1)
    with pytest.raises(FeatureError, match="NaN"):
        LogisticProbe(alphas=1e-3).fit(bad, ytr)


@pytest.mark.parametrize("fraction", [0, 0.0, 1.5, -0.1])
def test_error_bad_fraction(digits, fraction):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        run_probes(feature_set(*digits), fractions=(0.1, fraction), seeds=1)


def test_error_subset_larger_than_layer(digits):
    Xtr, ytr, Xte, yte = digits
    with pytest.raises(ConfigError, match="outside"):
        run_probes(feature_set(Xtr, ytr, Xte, yte), n_neurons=(65,), fractions=(), seeds=1)
    with pytest.raises(ConfigError, match="only 64"):
        RidgeProbe(alphas=1.0, subsets=[np.arange(70) % 64]).fit(Xtr, ytr)
    with pytest.raises(ConfigError, match="outside"):
        RidgeProbe(alphas=1.0, subsets=[np.array([0, 64])]).fit(Xtr, ytr)


def test_error_unseen_test_classes(digits):
    Xtr, ytr, Xte, yte = digits
    keep = ytr != 9
    with pytest.raises(FeatureError, match="never seen"):
        run_probes(feature_set(Xtr[keep], ytr[keep], Xte, yte), fractions=(0.5,), seeds=1)


def test_error_mismatched_widths(digits):
    Xtr, ytr, Xte, yte = digits
    with pytest.raises(FeatureError, match="columns"):
        run_probes(feature_set(Xtr, ytr, Xte[:, :60], yte), fractions=(0.5,), seeds=1)
    probe = RidgeProbe(alphas=1.0).fit(Xtr, ytr)
    with pytest.raises(FeatureError, match="columns"):
        probe.predict(Xte[:, :60])


def test_error_bad_options(digits):
    Xtr, ytr, Xte, yte = digits
    with pytest.raises(ConfigError, match="solver"):
        run_probes(feature_set(Xtr, ytr, Xte, yte), solver="svm")
    with pytest.raises(ConfigError, match="alphas"):
        RidgeProbe(alphas=[0.0, 1.0]).fit(Xtr, ytr)
    with pytest.raises(ConfigError, match="validation"):
        LogisticProbe(alphas=[1e-3, 1e-2], val_fraction=0).fit(Xtr, ytr)
    with pytest.raises(ConfigError, match="seeds"):
        run_probes(feature_set(Xtr, ytr, Xte, yte), seeds=[])
    with pytest.raises(ConfigError, match="max_iter"):
        LogisticProbe(alphas=1e-3, max_iter=0).fit(Xtr, ytr)
    with pytest.raises(NotFittedError, match="not fitted"):
        LogisticProbe().predict(Xte)


@pytest.mark.numeric
def test_logistic_state_budget_splits_batches(digits, monkeypatch, sklearn_optimum):
    Xtr, ytr, Xte, _ = digits
    order = np.random.default_rng(3).permutation(64)
    subsets = [order[:k] for k in (4, 16, 40, 64)]
    alpha = 1e-2
    kw = dict(alphas=alpha, subsets=subsets, device="cpu", tol=1e-7, max_iter=400, random_state=0)
    whole = LogisticProbe(**kw).fit(Xtr, ytr)
    monkeypatch.setattr(_logistic, "_STATE_BUDGET", 30_000)  # forces several L-BFGS batches per chain
    assert len(_logistic._groups([4, 4, 16, 16, 40, 40, 64, 64], 10, 10)) > 1
    split = LogisticProbe(**kw).fit(Xtr, ytr)
    for i, s in enumerate(subsets):
        for probe in (whole, split):
            assert_at_optimum(probe, i, alpha, digits, sklearn_optimum(s, alpha))


@pytest.mark.numeric
@pytest.mark.parametrize("solver", ["ridge", "logistic"])
def test_projection_onto_every_direction_probes_like_the_full_layer(solver):
    # n < D: PCA directions beyond the data's rank carry only rounding noise. Projections act on the
    # standardised features without rescaling again, so pca / randproj at fraction 1 are rotations (or
    # invertible maps) of the full layer's probe input and must not fall apart.
    rng = np.random.default_rng(0)
    n, d = 120, 200
    y = rng.integers(0, 3, size=n + 60)
    X = (rng.normal(size=(n + 60, 8)) + np.eye(3, 8)[y] * 4.0) @ rng.normal(size=(8, d)) + 0.1 * rng.normal(size=(n + 60, d))
    X = X.astype(np.float32)
    fs = feature_set(X[:n], y[:n], X[n:], y[n:])
    res = run_probes(fs, selectors=["pca"], fractions=[1.0], seeds=[0], solver=solver, alphas=1e-2).results
    full = res.loc[res.selector == "all", "test_accuracy"].item()
    pca = res.loc[res.selector == "pca", "test_accuracy"].item()
    assert full > 0.8
    assert abs(pca - full) <= 1 / 60 + 1e-9  # at most one test sample apart (float rounding)
