"""Streaming accumulation of the centred Gram matrix ``X^T X`` of a layer, in float64.

Everything critmass needs to compute linear CKA of *any* column subset (or linear reduction) of a
layer against the full layer lives in two ``D x D`` matrices built in one pass over the samples:

* ``gram = Z^T Z`` with ``Z = X - mean`` (the centred features), for the biased estimator, and
* ``fourth = (Z∘Z)^T (Z∘Z)``, the matrix of summed products of squared centred activations, for the
  debiased (unbiased-HSIC) estimator: it gives ``sum_i ||z_i,S||^2 ||z_i,T||^2`` for any subsets
  ``S``, ``T`` as ``w_S^T fourth w_T``.

Rows are read in chunks, so a memory-mapped feature file larger than RAM works; each chunk is
converted to float64 before it is multiplied, because float32 sums over 10^5 samples lose the
digits CKA near 1 depends on. The products are ``syrk`` calls on the Gram backend of
:mod:`critmass._blas` (numpy unless torch measured faster), at torch's thread count.

Without the fourth moments one pass suffices: each chunk is centred at its own mean and the chunks'
centred Grams are merged with the pairwise update of Chan, Golub & LeVeque (1979),
``M = M_a + M_b + (n_a n_b / n) (m_b - m_a)(m_b - m_a)^T``, which stays exact however unlike the
chunks are (features sorted by class, say). The debiased statistics need the exact mean first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import _blas
from .._validation import check_positive_int
from ..exceptions import FeatureError

__all__ = ["GramStats", "GramAccumulator", "gram_stats"]

log = logging.getLogger(__name__)

#: Rows per chunk are chosen so one float64 chunk takes about this many bytes.
CHUNK_BYTES = 1 << 26  # 64 MiB
_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------- helpers
def check_matrix(x, *, name: str = "features") -> np.ndarray:
    """Return ``x`` as a 2-D numeric array without reading it (memmaps stay memmaps).

    Finiteness is checked later, chunk by chunk, during the first pass over the rows, so a file
    larger than RAM is read once for the check instead of twice.
    """
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.ndim != 2:
        raise FeatureError(
            f"{name} must be a 2-D array (n_samples, n_neurons); got shape {arr.shape}; reshape it first"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FeatureError(f"{name} is empty (shape={arr.shape}); at least 1 sample and 1 neuron are required")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FeatureError(f"{name} must hold numbers; got dtype {arr.dtype}; pass a float array")
    return arr


def chunk_rows(n_columns: int, chunk_size: int | None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else about :data:`CHUNK_BYTES` of float64."""
    if chunk_size is None:
        return max(1, CHUNK_BYTES // (8 * max(1, int(n_columns))))
    return check_positive_int(chunk_size, name="chunk_size")


def iter_rows(x: np.ndarray, rows: int):
    """Yield ``(start, block)`` with ``block`` a float64 copy of ``rows`` consecutive rows of ``x``."""
    for start in range(0, x.shape[0], rows):
        yield start, np.asarray(x[start : start + rows], dtype=np.float64)


def _raise_non_finite(block: np.ndarray, start: int, name: str) -> None:
    bad = np.nonzero(~np.isfinite(block).all(axis=1))[0]
    if not len(bad):  # finite values whose float64 sum overflows
        raise FeatureError(f"{name} hold values too large to sum in float64 (rows {start}..{start + len(block) - 1}); "
                           "rescale them")
    raise FeatureError(
        f"{name} contain NaN or inf (first at row {start + int(bad[0])}); re-extract them or check the model "
        "(e.g. fp16 overflow: use --dtype float32)"
    )


def column_sums(block: np.ndarray, start: int = 0, *, name: str = "features") -> np.ndarray:
    """Float64 column sums of a chunk (read once, no float64 copy), refusing NaN/inf: a non-finite entry
    makes its column's sum non-finite, so the sums are the check."""
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, as one error
        total = np.add.reduce(block, axis=0, dtype=np.float64)
    if not np.isfinite(total).all():
        _raise_non_finite(block, start, name)
    return total


def column_means(x: np.ndarray, rows: int, *, name: str = "features") -> np.ndarray:
    """Float64 column means of ``x`` in one chunked pass, refusing NaN/inf on the way."""
    total = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], rows):
        total += column_sums(x[start : start + rows], start, name=name)
    return total / x.shape[0]


def constant_columns(sumsq: np.ndarray, mean: np.ndarray, n_samples: int) -> np.ndarray:
    """Columns whose centred sum of squares is zero up to the rounding of their mean.

    A constant float32 column has an exactly representable float64 mean and centres to exact
    zeros, but a constant float64 column (0.1 repeated) can leave ~1e-17 residues, which would
    otherwise turn an undefined CKA into a confident-looking number computed from rounding noise.
    """
    resid = n_samples * _EPS * np.abs(mean)  # worst-case rounding of a summed mean, per sample
    return np.asarray(sumsq) <= n_samples * resid**2


def _no_room(shape, what: str) -> FeatureError:
    gib = 8 * int(np.prod(shape)) / 2**30
    return FeatureError(
        f"cannot allocate the {shape[0]} x {shape[1]} float64 {what} ({gib:.1f} GiB); the layer is too "
        "wide for feature-space CKA: pool it (e.g. channel pooling) or compare fewer neurons"
    )


def _alloc_plain(shape, what: str) -> np.ndarray:
    try:
        return np.zeros(shape)
    except MemoryError:
        raise _no_room(shape, what) from None


def _alloc(shape, what: str) -> _blas.GramSum:
    """A running ``Z^T Z`` sum of ``shape`` (d, d), or a one-line error when it does not fit in memory."""
    try:
        return _blas.GramSum(shape[0])
    except MemoryError:
        raise _no_room(shape, what) from None


# ------------------------------------------------------------------------------------------ GramStats
@dataclass(frozen=True, eq=False)
class GramStats:
    """Sufficient statistics of a layer for subset-vs-full linear CKA.

    Parameters
    ----------
    n_samples : int
        Number of samples ``n`` the statistics were accumulated over.
    mean : ndarray of shape (D,)
        Float64 column means.
    gram : ndarray of shape (D, D)
        Centred ``Z^T Z`` (``Z = X - mean``), float64.
    fourth : ndarray of shape (D, D) or None
        ``(Z∘Z)^T (Z∘Z)``; present when built with ``debiased=True``.
    constant : ndarray of shape (D,), bool
        Neurons with zero variance (their rows and columns of ``gram``/``fourth`` are exactly 0).
    """

    n_samples: int
    mean: np.ndarray
    gram: np.ndarray
    fourth: np.ndarray | None
    constant: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.gram.shape[0])

    @property
    def has_fourth(self) -> bool:
        return self.fourth is not None

    # The products below are reused by every subset query; cached_property writes to the instance
    # __dict__ directly, which a frozen dataclass allows.
    @cached_property
    def gram_sq(self) -> np.ndarray:
        """``gram ∘ gram``: ``||C[S, T]||_F^2 = w_S^T gram_sq w_T``."""
        return self.gram * self.gram

    @cached_property
    def gram_sq_rowsum(self) -> np.ndarray:
        return self.gram_sq.sum(axis=1)

    @cached_property
    def gram_sq_total(self) -> float:
        return float(self.gram_sq_rowsum.sum())

    @cached_property
    def fourth_rowsum(self) -> np.ndarray:
        """``sum_i z_id^2 ||z_i||^2`` per neuron ``d`` (needs ``fourth``)."""
        return self.fourth.sum(axis=1)

    @cached_property
    def fourth_total(self) -> float:
        """``sum_i ||z_i||^4`` (needs ``fourth``)."""
        return float(self.fourth_rowsum.sum())


# ------------------------------------------------------------------------------------ GramAccumulator
class GramAccumulator:
    """Accumulate :class:`GramStats` over row chunks in one pass (features never held whole).

    Parameters
    ----------
    debiased : bool, default False
        Also accumulate the fourth-moment matrix the debiased estimator needs (doubles the cost;
        triples it when ``mean`` is not given).
    mean : array-like of shape (D,), optional
        The exact column means of all the rows that will be passed (e.g. from a first pass). Without
        it, ``debiased=False`` centres each chunk at its own mean and merges the chunks exactly (Chan
        et al.); ``debiased=True`` uses the first chunk's mean as a provisional shift and corrects the
        result exactly at the end, which needs one more ``D x D`` product per chunk.

    Attributes
    ----------
    n_samples_seen_ : int
        Rows accumulated so far.
    n_features_in_ : int
        Width ``D`` (set by the first chunk).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 8))
    >>> acc = GramAccumulator()
    >>> for s in range(0, 100, 32):
    ...     _ = acc.partial_fit(x[s : s + 32])
    >>> stats = acc.stats()
    >>> bool(np.allclose(stats.gram, (x - x.mean(0)).T @ (x - x.mean(0))))
    True
    """

    def __init__(self, *, debiased: bool = False, mean=None):
        self.debiased = debiased
        self.mean = mean

    def partial_fit(self, chunk) -> GramAccumulator:
        """Add the rows of ``chunk`` (shape ``(b, D)``); returns ``self``."""
        arr = check_matrix(chunk, name="chunk")
        if hasattr(self, "n_features_in_") and arr.shape[1] != self.n_features_in_:
            raise FeatureError(
                f"chunk has {arr.shape[1]} columns but earlier chunks had {self.n_features_in_}; "
                "pass chunks of one layer"
            )
        sums = column_sums(arr, self.__dict__.get("n_samples_seen_", 0), name="chunk")
        if not hasattr(self, "n_features_in_"):
            self._start(arr, sums)
        self._update(arr, sums)
        return self

    def _start(self, block: np.ndarray, sums: np.ndarray) -> None:
        d = block.shape[1]
        self.n_features_in_ = d
        self.n_samples_seen_ = 0
        # Without a mean and without fourth moments: chunks centred at their own means, merged exactly
        # (Chan et al.). Otherwise one shift for all chunks: the exact mean, or the first chunk's mean.
        self._merge = self.mean is None and not self.debiased
        if self.mean is not None:
            shift = np.asarray(self.mean, dtype=np.float64)
            if shift.shape != (d,):
                raise FeatureError(f"mean has shape {shift.shape} but the chunks have {d} columns; pass a ({d},) array")
            self._exact_mean = True
        else:
            shift = sums / block.shape[0]
            self._exact_mean = False
        self._shift = shift
        self._s1 = np.zeros(d)
        self._t = _alloc((d, d), "Gram matrix")
        self._buf = None
        if self.debiased:
            self._s2 = np.zeros(d)
            self._p = _alloc((d, d), "fourth-moment matrix")
            # R_de = sum_i y_id^2 y_ie is needed only to correct a provisional shift exactly.
            self._r = None if self._exact_mean else _alloc_plain((d, d), "third-moment matrix")

    def _centred(self, block: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """``block - centre`` in float64, written into a buffer reused across chunks (one pass, no copy)."""
        if self._buf is None or self._buf.shape[0] < block.shape[0]:
            self._buf = np.empty(block.shape)
        y = self._buf[: block.shape[0]]
        np.subtract(block, centre, out=y)
        return y

    def _update(self, block: np.ndarray, sums: np.ndarray) -> None:
        b = block.shape[0]
        if self._merge:
            n_a = self.n_samples_seen_
            mean_b = sums / b
            y = self._centred(block, mean_b)
            self._t.add(y)
            if n_a:
                delta = mean_b - self._shift
                n = n_a + b
                self._t.add_outer(delta, n_a * b / n)
                self._shift = self._shift + delta * (b / n)
            self.n_samples_seen_ += b
            return
        y = self._centred(block, self._shift)
        self._t.add(y)
        self._s1 += y.sum(axis=0)  # from the centred rows: the shift's error to full precision
        if self.debiased:
            y2 = y * y
            self._p.add(y2)
            self._s2 += y2.sum(axis=0)
            if self._r is not None:
                _blas.cross(y2, y, out=self._r)
        self.n_samples_seen_ += b

    def stats(self) -> GramStats:
        """The accumulated :class:`GramStats` (centred at the mean of all rows seen)."""
        if not getattr(self, "n_samples_seen_", 0):
            raise FeatureError("no rows were accumulated; call partial_fit(chunk) with at least one chunk first")
        n = self.n_samples_seen_
        self._buf = None  # the chunk buffer is not kept with the statistics (another chunk makes a new one)
        if self._merge:
            return self._finish(n, self._shift, self._t.value(), None)
        delta = self._s1 / n  # mean of the shifted rows: the shift's error
        mean = self._shift + delta
        # sum (y - delta)(y - delta)^T = T - n delta delta^T, since sum y = n delta.
        t = self._t.value()
        gram = t - n * np.outer(delta, delta)
        fourth = None
        if self.debiased:
            if self._exact_mean:
                self._check_mean(delta, gram, mean, n)
            d2 = delta * delta
            # Expand sum_i (y_id - delta_d)^2 (y_ie - delta_e)^2 into the accumulated moments.
            fourth = (
                self._p.value()
                + np.outer(self._s2, d2)
                + np.outer(d2, self._s2)
                + 4.0 * np.outer(delta, delta) * t
                - 3.0 * n * np.outer(d2, d2)
            )
            if self._r is not None:
                fourth -= 2.0 * (self._r * delta[None, :] + self._r.T * delta[:, None])
            # (With an exact mean, delta is rounding noise and the R terms it multiplies vanish.)
            fourth = 0.5 * (fourth + fourth.T)
        return self._finish(n, mean, gram, fourth)

    def _finish(self, n, mean, gram, fourth) -> GramStats:
        const = constant_columns(np.diag(gram), mean, n)
        if const.any():
            # Make zero-variance neurons exactly zero so they add nothing to any subset's sums.
            gram[const, :] = 0.0
            gram[:, const] = 0.0
            if fourth is not None:
                fourth[const, :] = 0.0
                fourth[:, const] = 0.0
            log.info("%d of %d neurons are constant (zero variance)", int(const.sum()), len(const))
        return GramStats(n_samples=int(n), mean=mean, gram=gram, fourth=fourth, constant=const)

    def _check_mean(self, delta, gram, mean, n) -> None:
        std = np.sqrt(np.clip(np.diag(gram), 0.0, None) / n)
        # A mean summed in float64 is off by at most ~n * eps * (std + |mean|); anything beyond that
        # (plus a little slack) is a wrong mean, whose error the skipped third-moment terms would keep.
        tol = 1e-9 * std + 2.0 * n * _EPS * (std + np.abs(mean)) + 1e-300
        if np.any(np.abs(delta) > tol):
            worst = int(np.argmax(np.abs(delta) / tol))
            raise FeatureError(
                f"the mean passed to GramAccumulator is off by {abs(delta[worst]):.3g} at neuron {worst} "
                "(it must be the exact column mean of all chunks); pass mean=None to let it correct itself"
            )


def gram_stats(x, *, debiased: bool = False, chunk_size: int | None = None) -> GramStats:
    """Centred Gram statistics of a feature matrix, streamed over row chunks.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_neurons)
        Features; a ``numpy.memmap`` (``np.load(path, mmap_mode='r')``) is read chunk by chunk.
    debiased : bool, default False
        Also build the fourth-moment matrix the debiased estimator needs for column subsets.
    chunk_size : int, optional
        Rows per chunk (default: about 64 MiB of float64).

    Returns
    -------
    GramStats

    Notes
    -----
    Cost: ``n D^2 / 2`` multiply-adds (a ``syrk``; twice that with ``debiased``), memory ``O(D^2)``.
    The biased statistics read the rows once; the debiased ones read them twice (column means
    first: knowing the mean exactly saves the third-moment product :class:`GramAccumulator` needs
    in one-pass mode). NaN / inf are refused on the first read.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    >>> gram_stats(x).gram.shape
    (4, 4)
    """
    arr = check_matrix(x)
    rows = chunk_rows(arr.shape[1], chunk_size)
    # The biased statistics merge per-chunk Grams in one pass; the fourth moments need the exact mean first.
    acc = GramAccumulator(debiased=debiased, mean=column_means(arr, rows) if debiased else None)
    for start in range(0, arr.shape[0], rows):
        acc.partial_fit(arr[start : start + rows])
    return acc.stats()
