"""Seeded, stratified train/validation split carved from a training set."""

from __future__ import annotations

import numpy as np

from .._validation import check_random_state
from ..exceptions import ConfigError

__all__ = ["train_val_indices"]


def train_val_indices(y, val_fraction: float = 0.1, seed: int = 0, *, stratify: bool = True):
    """Return ``(train_idx, val_idx)`` (sorted int64 arrays) partitioning ``range(len(y))``.

    Stratified per class where every class has at least 2 samples; each class keeps at least one
    training sample. The same ``(y, val_fraction, seed)`` always gives the same split, and the split of
    the dataset (``critmass.data``) and of cached train features (probes) is the same function.
    """
    y = np.asarray(y)
    n = len(y)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1); got {val_fraction!r}")
    rng = check_random_state(seed)
    val = []
    if stratify and n:
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2:
            for c in classes:
                idx = np.nonzero(y == c)[0]
                k = min(len(idx) - 1, max(1, int(round(val_fraction * len(idx)))))
                val.append(rng.permutation(idx)[:k])
            val_idx = np.sort(np.concatenate(val)).astype(np.int64)
            train_idx = np.setdiff1d(np.arange(n), val_idx).astype(np.int64)
            return train_idx, val_idx
    k = max(1, int(round(val_fraction * n)))
    perm = rng.permutation(n)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)
