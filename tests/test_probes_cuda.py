"""The probes on a CUDA device give the CPU's answers (skipped without a GPU; run on a lent GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from choice_oracle import assert_same_choice, count_shift

from critmass.features import FeatureSet, FeatureSplit
from critmass.probes import LogisticProbe, RidgeProbe, run_probes

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"), pytest.mark.numeric]


def _subsets():
    out = []
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(64)
        out += [order[:k] for k in (3, 10, 32, 50, 64)]
    return out


def _same_choice(cpu, gpu):
    """Same penalties where a choice's margin exceeds what the shift of validation counts between the devices
    can cross; knife-edge choices within the tie band (choice_oracle). Returns which subsets chose alike."""
    same = []
    for i in range(len(cpu.regs_)):
        shift = count_shift(cpu.val_scores_[i], gpu.val_scores_[i], cpu.n_val_)
        same.append(assert_same_choice(cpu.regs_[i], gpu.regs_[i], cpu.choice_margins_[i], gpu.choice_margins_[i],
                                       shift=shift, val_a=cpu.scores_[i], val_b=gpu.scores_[i], n_val=cpu.n_val_))
    return np.array(same)


def test_logistic_on_cuda_equals_cpu(digits):
    Xtr, ytr, Xte, _ = digits
    kw = dict(alphas=[1e-3, 1e-2], subsets=_subsets(), max_iter=400, tol=1e-7, random_state=0)
    cpu = LogisticProbe(device="cpu", **kw).fit(Xtr, ytr)
    gpu = LogisticProbe(device="cuda", **kw).fit(Xtr, ytr)
    same = _same_choice(cpu, gpu)
    agree = (cpu.predict_subsets(Xte) == gpu.predict_subsets(Xte)).mean(axis=1)
    assert (agree[same] >= 0.99).all(), agree


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
    n_val = int(cpu.n_val.iloc[0])
    same = np.array([assert_same_choice(a.reg, b.reg, a.choice_margin, b.choice_margin, shift=2, val_a=a.val_accuracy,
                                        val_b=b.val_accuracy, n_val=n_val)
                     for a, b in zip(cpu.itertuples(), gpu.itertuples())])
    # float32 on both, different summation orders: a test sample or two may flip.
    diff = np.abs(cpu.test_accuracy.to_numpy() - gpu.test_accuracy.to_numpy())
    assert diff[same].max() <= 3 / len(yte)
