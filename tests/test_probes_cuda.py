"""The probes on a CUDA device give the CPU's answers (skipped without a GPU; run on a lent GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critmass.features import FeatureSet, FeatureSplit
from critmass.probes import LogisticProbe, RidgeProbe, run_probes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _subsets():
    out = []
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(64)
        out += [order[:k] for k in (3, 10, 32, 50, 64)]
    return out


def _same_choice(cpu, gpu):
    """Same penalties, or (where float summation order broke a near-tie) equally good ones on validation."""
    differ = cpu.regs_ != gpu.regs_
    assert np.all(np.abs(cpu.scores_[differ] - gpu.scores_[differ]) <= 1.0 / cpu.n_val_ + 1e-12), (cpu.regs_, gpu.regs_)
    assert differ.mean() <= 0.2, differ


def test_logistic_on_cuda_equals_cpu(digits):
    Xtr, ytr, Xte, _ = digits
    kw = dict(alphas=[1e-3, 1e-2], subsets=_subsets(), max_iter=400, tol=1e-7, random_state=0)
    cpu = LogisticProbe(device="cpu", **kw).fit(Xtr, ytr)
    gpu = LogisticProbe(device="cuda", **kw).fit(Xtr, ytr)
    _same_choice(cpu, gpu)
    agree = (cpu.predict_subsets(Xte) == gpu.predict_subsets(Xte)).mean(axis=1)
    assert (agree >= 0.99).all(), agree


def test_ridge_on_cuda_equals_cpu(digits):
    Xtr, ytr, _, _ = digits
    kw = dict(alphas=[1e-3, 1e-1], subsets=_subsets(), random_state=0)
    cpu = RidgeProbe(device="cpu", **kw).fit(Xtr, ytr)
    gpu = RidgeProbe(device="cuda", **kw).fit(Xtr, ytr)
    _same_choice(cpu, gpu)
    for a, b in [(a, b) for a, b, ra, rb in zip(cpu.coefs_, gpu.coefs_, cpu.regs_, gpu.regs_) if ra == rb]:
        np.testing.assert_allclose(a, b, atol=1e-3 * np.abs(a).max())


def test_run_probes_on_cuda_equals_cpu(digits):
    Xtr, ytr, Xte, yte = digits
    fs = FeatureSet({"train": FeatureSplit(Xtr, ytr), "test": FeatureSplit(Xte, yte)},
                    {"model": "toy", "dataset": "digits", "layer": "pixels"})
    kw = dict(selectors=["random", "pca", "randproj"], fractions=(0.1, 0.5, 1.0), seeds=2, save_weights=False)
    cpu = run_probes(fs, device="cpu", **kw).results
    gpu = run_probes(fs, device="cuda", **kw).results
    assert len(cpu) == len(gpu)
    # float32 on both, different summation orders: a test sample or two may flip.
    assert np.abs(cpu.test_accuracy.to_numpy() - gpu.test_accuracy.to_numpy()).max() <= 3 / len(yte)
