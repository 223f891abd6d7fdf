"""The probes' standardisation, shared by the probes and the selectors that fit in the probes' space
(``critmass.subsets``: PCA and random projections), so that both stages use one definition without the
selectors' stage importing the probes'."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["RELATIVE_STD_FLOOR", "standard_scale", "scale_of", "moments", "row_blocks"]

RELATIVE_STD_FLOOR = 1e-5  # below this share of the largest column std a column counts as constant


def row_blocks(X, rows, chunk: int):
    """Yield ``(offset, block)`` of ``X[rows]`` as tensors, in row chunks (memory-mapped arrays stay lazy)."""
    n = X.shape[0] if rows is None else len(rows)
    contiguous = rows is None or (len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1))
    first = 0 if rows is None or not len(rows) else int(rows[0])
    for a in range(0, n, chunk):
        block = X[first + a : first + min(n, a + chunk)] if contiguous else X[rows[a : a + chunk]]
        yield a, torch.from_numpy(np.ascontiguousarray(block))


def standard_scale(Xs: Sequence, rows_list: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales of the given rows, the probes' standardisation.

    Constant columns, and columns whose spread is float rounding (PCA directions beyond the data's rank
    when n < D), keep scale 1: dividing by ~1e-8 would blow rounding noise up into unit-variance junk.
    """
    mean, std, _ = moments(Xs, rows_list, Xs[0].shape[1])
    return mean, scale_of(std)


def scale_of(std: np.ndarray) -> np.ndarray:
    """The scale of each column: its standard deviation, or 1 where that is below the relative floor."""
    floor = RELATIVE_STD_FLOOR * (float(std.max()) if std.size else 0.0)
    return np.where(std > floor, std, 1.0)


def moments(Xs: Sequence, rows_list: Sequence, d: int, chunk: int = 8192):
    """Mean, standard deviation (float64 accumulators) and row count of the given rows of one or more
    arrays, in two streamed passes (numpy's float64-accumulating sums are much faster than torch's on a CPU)."""
    n, total = 0, np.zeros(d)
    for X, rows in zip(Xs, rows_list):
        for _, block in row_blocks(X, rows, chunk):
            total += block.numpy().sum(0, dtype=np.float64)
            n += block.shape[0]
    mean = total / n
    sq = np.zeros(d)
    for X, rows in zip(Xs, rows_list):
        for _, block in row_blocks(X, rows, chunk):
            b = block.numpy()
            b = b if b.dtype in (np.float32, np.float64) else b.astype(np.float32)
            sq += np.square(b - mean.astype(b.dtype)).sum(0, dtype=np.float64)
    return mean, np.sqrt(sq / n), n
