"""The :class:`LabeledDataset` every data source returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .._validation import check_random_state

__all__ = ["LabeledDataset", "stratified_subset"]


class LabeledDataset:
    """Raw samples (PIL images or strings) with integer labels, in a fixed order.

    A map-style dataset (``__getitem__`` / ``__len__``) that torch's DataLoader takes as is; it does not
    subclass ``torch.utils.data.Dataset`` so that reading datasets never imports torch.

    ``targets`` (int64, one per sample) is known without decoding samples, so splits and subsets are
    cheap. ``info`` records what the cache key needs (spec, split, root, subset).
    """

    def __init__(self, get: Callable[[int], object], targets, *, classes: Sequence[str] | None, modality: str,
                 info: dict, indices=None):
        self._get = get
        self._all_targets = np.asarray(targets, dtype=np.int64)
        self.indices = np.arange(len(self._all_targets)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.classes = list(classes) if classes is not None else [str(c) for c in np.unique(self._all_targets)]
        self.modality = modality
        self.info = dict(info)

    @property
    def targets(self) -> np.ndarray:
        return self._all_targets[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        return self._get(j), int(self._all_targets[j])

    def subset(self, indices, **info) -> LabeledDataset:
        """A view on some of this dataset's samples (indices relative to this dataset)."""
        return LabeledDataset(self._get, self._all_targets, classes=self.classes, modality=self.modality,
                              info={**self.info, **info}, indices=self.indices[np.asarray(indices, dtype=np.int64)])

    def __repr__(self):
        return f"LabeledDataset({self.info.get('spec')!r}, split={self.info.get('split')!r}, n={len(self)}, classes={len(self.classes)})"


def stratified_subset(targets, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` samples drawn per class in proportion to its frequency (at least 1 each)."""
    targets = np.asarray(targets)
    if n >= len(targets):
        return np.arange(len(targets))
    rng = check_random_state(seed)
    classes, counts = np.unique(targets, return_counts=True)
    quota = np.maximum(1, np.floor(counts / counts.sum() * n)).astype(int)
    # Hand out the remainder to the classes with the largest fractional parts.
    short = n - quota.sum()
    if short > 0:
        frac = counts / counts.sum() * n - quota
        for c in np.argsort(-frac)[:short]:
            quota[c] += 1
    picked = [rng.permutation(np.nonzero(targets == c)[0])[: min(q, cnt)] for c, q, cnt in zip(classes, quota, counts)]
    return np.sort(np.concatenate(picked)).astype(np.int64)
