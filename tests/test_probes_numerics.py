"""Numerics of the probes (issue 11, items 6, 18, 19): float64 accumulation, the penalty actually applied,
penalty selection that float summation order cannot flip, and refusing zero-variance features.

Every expectation is an independent computation (numpy float64, scikit-learn), not a recorded output.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from choice_oracle import TableProbe, assert_fits_choose_alike

from critmass.cli._app import main
from critmass.exceptions import FeatureError
from critmass.probes import LogisticProbe, RidgeProbe, SGDProbe, _logistic
from critmass.probes._base import ConstantSubsetWarning, Data

pytestmark = [pytest.mark.usefixtures("probe_threads"), pytest.mark.numeric]  # 1 torch thread, or CRITMASS_TEST_THREADS (conftest)


def _fit_quietly(probe, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantSubsetWarning)  # digits has a few all-zero pixels
        return probe.fit(*args, **kwargs)


# ------------------------------------------------------------------------- item 6: float64 accumulation
def test_logistic_gram_accumulates_in_float64():
    """The preconditioner's Gram matrix keeps float64 accuracy over many samples (a single float32 product
    of 2,000,000 samples errs by ~1e-6 relative)."""
    rng = np.random.default_rng(0)
    U, n = 8, 2_000_000
    XT = rng.standard_normal((U, n), dtype=np.float32)
    X64 = XT.astype(np.float64)
    ref = X64 @ X64.T / n
    del X64
    data = Data(torch.from_numpy(XT), torch.zeros(n, dtype=torch.long), None, None, 2)
    G = LogisticProbe(alphas=1e-3, device="cpu")._prepare(data)
    assert G.dtype == torch.float64
    assert np.abs(G.numpy() - ref).max() <= 1e-7 * np.abs(ref).max()


def test_logistic_loss_sums_in_float64(monkeypatch):
    """The loss that drives the line search is the float64 sum of the per-sample cross-entropies, also
    over many logits chunks (many classes or problems make chunks small)."""
    rng = np.random.default_rng(0)
    n, k, C, alpha = 400_000, 6, 3, 1e-3
    X = rng.standard_normal((n, k)).astype(np.float32)
    y = rng.integers(0, C, n)
    XT = torch.from_numpy(X.T.copy())
    monkeypatch.setattr(_logistic, "_LOGIT_BUDGET", 256 * C)  # 256-sample chunks: ~1,600 partial sums
    factors = {(0, alpha): (torch.arange(k), torch.eye(k, dtype=torch.float32))}
    obj = _logistic._Objective(XT, torch.from_numpy(y), C, [k], [alpha], [(0, alpha)], factors, blocked=True)
    theta = torch.from_numpy(rng.standard_normal((1, obj.M)).astype(np.float32) * 0.3)
    loss, _, _ = obj(theta, np.arange(1))
    W, b = obj.weights(theta, np.arange(1))
    W, b = W[0].double().numpy(), b[0].double().numpy()
    Z = X.astype(np.float64) @ W + b
    Z -= Z.max(1, keepdims=True)
    ce = float((np.log(np.exp(Z).sum(1)) - Z[np.arange(n), y]).mean())
    ref = ce + 0.5 * alpha * float((W**2).sum())
    assert loss.dtype == torch.float64
    assert abs(float(loss[0]) - ref) <= 1e-8 * ref
    _, val_ce = obj.evaluate(theta, XT, torch.from_numpy(y))
    assert abs(val_ce[0] - ce) <= 1e-8 * ce


def test_ridge_records_the_penalty_it_applied(caplog):
    """When G + alpha I cannot be factorised (alpha below the rounding of an exactly singular G), the jitter
    that made it work is recorded as the applied penalty, and a warning says so."""
    rng = np.random.default_rng(0)
    n = 40
    X = np.repeat(rng.standard_normal((n, 6)), 5, axis=1)  # 30 columns, rank 6: G is exactly singular
    y = rng.integers(0, 3, n)
    subsets = [np.arange(10), np.arange(30)]  # nested: one Cholesky factor per alpha for both
    with caplog.at_level(logging.WARNING, logger="critmass.probes"):
        tiny = RidgeProbe(alphas=1e-20, subsets=subsets, device="cpu").fit(X, y)
    assert (tiny.regs_ == 1e-20).all()
    applied = tiny.regs_applied_
    assert (applied > 1e-20).all() and (applied < 1e-10).all()
    assert any("numerically singular" in r.getMessage() and "alpha=1e-20" in r.getMessage() for r in caplog.records)
    # The applied penalty is one numpy factorises (independently) where the nominal one was not...
    Z = (X - X.mean(0)) / X.std(0)
    G = Z.T @ Z / n
    np.linalg.cholesky(G + applied[1] * np.eye(30))
    # ... and the jitter is small: the fitted training scores are the least-squares fit's (unique, though
    # the coefficients are not: duplicated columns).
    Y = np.where(y[:, None] == np.arange(3), 1.0, -1.0)
    for i, s in enumerate(subsets):
        coef, *_ = np.linalg.lstsq(Z[:, s], Y - Y.mean(0), rcond=None)
        fitted = Z[:, s] @ coef + Y.mean(0)
        np.testing.assert_allclose(tiny.decision_function_subsets(X)[i], fitted, atol=1e-6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="critmass.probes"):
        fine = RidgeProbe(alphas=[1e-2, 1.0], subsets=subsets, device="cpu").fit(X, y)
    np.testing.assert_array_equal(fine.regs_applied_, fine.regs_)
    assert not caplog.records


def test_regs_applied_equal_nominal_for_logistic_and_sgd(digits):
    Xtr, ytr, _, _ = digits
    subsets = [np.arange(8), np.arange(32)]
    for probe in (LogisticProbe(alphas=[1e-3, 1e-2], subsets=subsets, device="cpu"),
                  SGDProbe(alphas=[1e-4, 5e-4], subsets=subsets, epochs=2, lr_step=1, device="cpu"),
                  RidgeProbe(alphas=[1e-2, 1.0], subsets=subsets, device="cpu")):
        _fit_quietly(probe, Xtr, ytr)
        assert probe.regs_applied_.shape == probe.regs_.shape
        np.testing.assert_array_equal(probe.regs_applied_, probe.regs_)
    single = _fit_quietly(LogisticProbe(alphas=1e-3, device="cpu"), Xtr, ytr)
    assert single.reg_applied_ == single.reg_ == 1e-3


# --------------------------------------------------------------- item 18: selection robust to rounding
@pytest.mark.parametrize("eps", [1e-15, -1e-15])
def test_penalty_choice_is_the_strongest_within_one_standard_error(eps):
    """50 validation samples, best 45 correct: the band is sqrt(50 x 0.9 x 0.1) = 2.12 samples. The strongest
    penalty within it wins, whatever float rounding did to the accuracies; one more sample outside it loses."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 4)), np.repeat(np.arange(2), 100)

    def acc(correct_less=0, noise=0.0):
        return lambda n_val: (n_val - 5 - correct_less) / n_val + noise

    def fit(table):
        return TableProbe(sorted(table), table).fit(X, y)

    assert fit({0.1: acc(), 1.0: acc(noise=eps), 10.0: acc(noise=-eps)}).reg_ == 10.0  # equal: the strongest
    within = fit({0.1: acc(), 1.0: acc(2), 10.0: acc(2, noise=eps)})
    assert within.reg_ == 10.0 and within.choice_margins_[0] == pytest.approx(2.12132 - 2, abs=1e-4)
    outside = fit({0.1: acc(), 1.0: acc(2), 10.0: acc(3)})
    assert outside.reg_ == 1.0 and outside.choice_margins_[0] == pytest.approx(2.12132 - 2, abs=1e-4)
    best = fit({0.1: acc(), 1.0: acc(3), 10.0: acc(4)})
    assert best.reg_ == 0.1 and best.choice_margins_[0] == pytest.approx(3 - 2.12132, abs=1e-4)


def test_logistic_fit_does_not_depend_on_the_thread_count(digits):
    """1 and 2 torch threads: the same chosen penalties (unless one validation sample on a decision
    boundary separates them) and predictions."""
    Xtr, ytr, Xte, _ = digits
    order = np.random.default_rng(1).permutation(64)
    subsets = [order[:k] for k in (8, 64)]
    kw = dict(alphas=[1e-3, 1e-2], subsets=subsets, device="cpu", tol=1e-7, max_iter=300, random_state=0)
    previous = torch.get_num_threads()
    fits = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fits.append(_fit_quietly(LogisticProbe(**kw), Xtr, ytr))
    finally:
        torch.set_num_threads(previous)
    one, two = fits
    assert_fits_choose_alike(one, two, Xte)


# ---------------------------------------------------------------------- item 19: zero-variance features
@pytest.mark.parametrize("make", [
    lambda: LogisticProbe(alphas=1e-3, device="cpu"),
    lambda: RidgeProbe(alphas=1.0, device="cpu"),
    lambda: SGDProbe(epochs=1, device="cpu"),
    lambda: LogisticProbe(alphas=[1e-3, 1e-2], subsets=[np.arange(3), np.arange(6)], device="cpu"),
])
@pytest.mark.parametrize("value", [np.float32(3.0), 0.1])  # 0.1 in float64: its mean does not round to 0.1
def test_probes_refuse_constant_features(make, value):
    rng = np.random.default_rng(0)
    X = np.full((120, 6), value)
    y = rng.integers(0, 3, 120)
    with pytest.raises(FeatureError, match="zero variance") as err:
        make().fit(X, y)
    msg = str(err.value)
    assert "\n" not in msg and "all 6 neurons are constant" in msg and "check the layer" in msg


def test_constant_only_subsets_warn_once(digits):
    Xtr, ytr, _, _ = digits
    constant = np.nonzero(Xtr.std(0) == 0)[0]  # all-zero pixels of the digits
    assert len(constant) >= 2
    live = np.nonzero(Xtr.std(0) > 0)[0]
    subsets = [constant[:1], constant[:2], live[:5], np.concatenate([constant, live[:3]])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe = LogisticProbe(alphas=1e-2, subsets=subsets, device="cpu").fit(Xtr, ytr)
    mine = [w for w in caught if issubclass(w.category, ConstantSubsetWarning)]
    assert len(mine) == 1, [str(w.message) for w in mine]
    msg = str(mine[0].message)
    assert "2 of 4 subsets" in msg and "sizes 1, 2" in msg and "\n" not in msg
    # Those probes learned only the class prior: the most frequent training class everywhere.
    majority = np.bincount(ytr).argmax()
    assert (probe.predict_subsets(Xtr)[:2] == majority).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConstantSubsetWarning)
        LogisticProbe(alphas=1e-2, subsets=subsets[2:], device="cpu").fit(Xtr, ytr)  # no warning


def test_cli_probe_refuses_constant_features(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    path = tmp_path / "constant.npz"
    np.savez(path, x_train=np.full((300, 16), 0.5, dtype=np.float32), y_train=y,
             x_test=rng.standard_normal((100, 16)).astype(np.float32), y_test=y[:100])
    out = tmp_path / "out"
    assert main(["probe", str(path), "--out", str(out), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("critmass: error:") and "zero variance" in err and "\n" not in err
    assert not out.exists()
