"""``cka_matrix``: linear CKA between every pair of several representations of the same samples (e.g. the
layers of one model), with each representation's own Gram statistics as a by-product.

Two ways, chosen by memory: ``features`` builds one joint centred Gram ``C`` of the column-concatenated
representations in one pass (its diagonal blocks are each representation's own :class:`GramStats`, which
:func:`critmass.similarity.cka_curve` then reuses) and reads CKA(i, j) = ||C_ij||_F^2 / (||C_ii||_F
||C_jj||_F); ``samples`` (too many columns for that) uses centred ``n x n`` sample Grams ``K_i``,
CKA(i, j) = <K_i, K_j> / (||K_i|| ||K_j||).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..exceptions import ConfigError, FeatureError
from ._estimators import _sample_gram
from ._gram import GramAccumulator, GramStats, check_matrix

__all__ = ["CKAMatrix", "cka_matrix", "GRAM_BYTES"]

log = logging.getLogger(__name__)

#: The joint feature-space Gram of all representations is used while it takes at most this many bytes; beyond
#: it the CKA matrix comes from per-representation ``n x n`` sample Grams (at most twice this in all).
GRAM_BYTES = 2 << 30
_CHUNK_ROWS = 4096


@dataclass(frozen=True, eq=False)
class CKAMatrix:
    """What :func:`cka_matrix` returns.

    Attributes
    ----------
    matrix : ndarray of shape (L, L)
        Linear CKA of every pair (1 on the diagonal, symmetric; NaN for a zero-variance representation).
    method : {"features", "samples"}
        How it was computed (see the module docstring).
    stats : list of GramStats or None
        Per representation, its own :class:`GramStats` (the diagonal block of the joint Gram; without the
        fourth moments) with ``method="features"``, else None each.
    """

    matrix: np.ndarray
    method: str
    stats: list


def _joint_stats(xs: list, chunk_rows: int = _CHUNK_ROWS) -> GramStats:
    """GramStats of the column-concatenated representations, in one pass over their rows (float64)."""
    n = xs[0].shape[0]
    acc = GramAccumulator()  # one pass: chunks centred at their own means and merged exactly
    for s in range(0, n, chunk_rows):
        acc.partial_fit(np.concatenate([x[s : s + chunk_rows] for x in xs], axis=1, dtype=np.float64))
    return acc.stats()


def _block_stats(stats: GramStats, lo: int, hi: int) -> GramStats:
    """The GramStats of columns ``lo:hi`` of a joint GramStats (a diagonal block: that representation alone)."""
    return GramStats(n_samples=stats.n_samples, mean=stats.mean[lo:hi],
                     gram=np.ascontiguousarray(stats.gram[lo:hi, lo:hi]), fourth=None, constant=stats.constant[lo:hi])


def cka_matrix(xs: Sequence, *, names: Sequence[str] | None = None, max_bytes: int = GRAM_BYTES) -> CKAMatrix:
    """Linear CKA between every pair of representations of the same samples, in one pass over them.

    Parameters
    ----------
    xs : sequence of array-like of shape (n_samples, n_i)
        The representations, row ``r`` of each being the same sample (memmaps are streamed).
    names : sequence of str, optional
        Names of the representations in messages (default ``0, 1, ...``).
    max_bytes : int, default :data:`GRAM_BYTES` (2 GiB)
        Memory the joint ``sum(n_i) x sum(n_i)`` float64 Gram may take; beyond it the ``n x n`` sample
        Grams are used (while they take at most ``2 * max_bytes``), else a :class:`FeatureError`.

    Returns
    -------
    CKAMatrix
        The ``L x L`` matrix, the method and (``features``) each representation's own :class:`GramStats`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> res = cka_matrix([x, 3 * x, x[:, :3]])
    >>> res.method, np.round(res.matrix[0], 3).tolist()
    ('features', [1.0, 1.0, 0.712])
    """
    if isinstance(xs, np.ndarray) or not isinstance(xs, Sequence) or len(xs) == 0:
        raise ConfigError(f"xs must be a non-empty list of feature matrices; got {type(xs).__name__}")
    names = [str(i) for i in range(len(xs))] if names is None else [str(n) for n in names]
    if len(names) != len(xs):
        raise ConfigError(f"names has {len(names)} entries for {len(xs)} feature matrices; give one name each")
    xs = [check_matrix(x, name=f"{name!r} features") for x, name in zip(xs, names)]
    n = int(xs[0].shape[0])
    bad = next((i for i, x in enumerate(xs) if x.shape[0] != n), None)
    if bad is not None:
        raise ConfigError(f"{names[bad]!r} has {xs[bad].shape[0]} rows but {names[0]!r} has {n}; CKA compares "
                          "representations of the same samples")
    widths = [int(x.shape[1]) for x in xs]
    total = sum(widths)
    L = len(xs)
    if 8 * total * total <= max_bytes:
        stats = _joint_stats(xs)
        bounds = np.cumsum([0, *widths])
        blocks = [_block_stats(stats, bounds[i], bounds[i + 1]) for i in range(L)]
        sq = stats.gram * stats.gram
        cross = np.array([[sq[bounds[i]:bounds[i + 1], bounds[j]:bounds[j + 1]].sum() for j in range(L)]
                          for i in range(L)])
        method = "features"
    elif 8 * n * n * L <= 2 * max_bytes:
        grams = []
        for x, name in zip(xs, names):
            k, _ = _sample_gram(x, f"layer {name!r} features", None)
            grams.append(k)
        cross = np.array([[float(np.vdot(grams[i], grams[j])) for j in range(L)] for i in range(L)])
        blocks = [None] * L
        method = "samples"
    else:
        raise FeatureError(
            f"layer x layer CKA of {L} layers ({total} features in all) on {n} samples does not fit in "
            f"{max_bytes / 2**30:.0f} GiB either way; lower --max-width or pass --max-samples")
    diag = np.sqrt(np.clip(np.diag(cross), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        mat = cross / np.outer(diag, diag)
    dead = [names[i] for i in range(L) if not diag[i] > 0]
    if dead:
        log.warning("layer(s) %s have zero variance on these samples: their CKA is NaN", ", ".join(dead))
    return CKAMatrix(matrix=mat, method=method, stats=blocks)
