"""Linear CKA, biased (Kornblith et al. 2019) and debiased (unbiased HSIC: Song et al. 2012,
Nguyen et al. 2021), between two representations or between parts of a layer and the layer.

Both estimators are written in *feature space*. With centred features ``A`` (n x p) and ``B``
(n x q), per-sample squared norms ``a_i = ||A_i||^2``, ``b_i = ||B_i||^2``:

* biased:   ``HSIC(A, B) ∝ ||A^T B||_F^2``  (the ``1/(n-1)^2`` cancels in CKA);
* debiased: ``HSIC_u(A, B) ∝ ||A^T B||_F^2 + tr(A^T A) tr(B^T B) / ((n-1)(n-2)) - n/(n-2) sum_i a_i b_i``
  (Song et al.'s U-statistic with ``K = A A^T``, ``L = B B^T``, after the common ``1/(n(n-3))``;
  centring does not change it, so the centred form is exact);

and ``CKA = HSIC(A, B) / sqrt(HSIC(A, A) HSIC(B, B))``. For ``A = X_S`` (a column subset) against
``B = X`` every term is a linear or quadratic form of two ``D x D`` matrices accumulated once
(:mod:`critmass.similarity._gram`), so a subset costs ``O(k D)``-ish and never touches the samples.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .. import _blas
from .._defaults import check_on_constant
from ..exceptions import ConfigError, FeatureError
from ._gram import (
    GramStats,
    _raise_non_finite,
    check_matrix,
    chunk_rows,
    column_means,
    constant_columns,
    gram_stats,  # noqa: F401 - the doctests below use it
    iter_rows,
)

__all__ = ["cka", "projection_cka", "subset_cka"]

_METHODS = ("auto", "features", "samples")
_EPS = np.finfo(np.float64).eps
_CONSTANT_FIX = "drop constant neurons first (x[:, x.std(0) > 0]) or pass on_constant='nan' (CLI: --on-constant nan)"


# ----------------------------------------------------------------------------------- the estimators
def _debiased_hsic(cross, tr_a, tr_b, ab, n):
    """Unbiased HSIC times ``n (n - 3)``, from feature-space sums (vectorised over subsets)."""
    return cross + tr_a * tr_b / ((n - 1.0) * (n - 2.0)) - (n / (n - 2.0)) * ab


def _check_n(n: int, debiased: bool) -> None:
    if debiased and n < 4:
        raise FeatureError(
            f"debiased CKA needs at least 4 samples (its unbiased HSIC divides by n - 3); got n={n}; "
            "pass more samples or use the biased estimator (debiased=False)"
        )
    if n < 2:
        raise FeatureError(f"CKA needs at least 2 samples to centre the features; got n={n}; pass more samples")

def _check_on_constant(on_constant: str) -> str:
    return check_on_constant(on_constant)


def _check_stats(stats: GramStats, debiased: bool, *, need_fourth: bool = True) -> None:
    if not isinstance(stats, GramStats):
        raise ConfigError(
            f"stats must be a GramStats from critmass.similarity.gram_stats(x); got {type(stats).__name__}"
        )
    _check_n(stats.n_samples, debiased)
    if debiased and need_fourth and stats.fourth is None:
        raise ConfigError(
            "these GramStats hold no fourth-moment matrix, which the debiased estimator needs; "
            "build them with gram_stats(x, debiased=True)"
        )
    if stats.constant.all():
        raise FeatureError(
            f"the features have zero variance (all {stats.n_features} neurons are constant over the "
            f"{stats.n_samples} samples), so CKA is undefined; check the layer and the extraction"
        )


def _resolve_undefined(values: list[np.ndarray | None], undefined: np.ndarray, reasons: list[str],
                       on_constant: str) -> None:
    """Set undefined entries to NaN, or raise for the first one (``reasons[i]`` says why)."""
    if not undefined.any():
        return
    if on_constant == "raise":
        first = int(np.nonzero(undefined)[0][0])
        raise FeatureError(reasons[first])
    for v in values:
        if v is not None:
            v[undefined] = np.nan


# ------------------------------------------------------------------------------------ subsets
def _subset_weights(subsets, n_features: int) -> np.ndarray:
    """``(K, D)`` float64 weights: a 2-D bool array is masks; otherwise a sequence of index arrays.

    An index that appears twice gets weight 2, which is exactly what duplicating the column does to
    every sum below, so ``X[:, S]`` with repeats is handled exactly.
    """
    if isinstance(subsets, np.ndarray) and subsets.dtype == bool:
        if subsets.ndim != 2 or subsets.shape[1] != n_features:
            raise ConfigError(
                f"boolean subset masks must have shape (n_subsets, {n_features}); got {subsets.shape}"
            )
        return subsets.astype(np.float64)
    if isinstance(subsets, (str, bytes)) or not isinstance(subsets, (Sequence, np.ndarray)):
        raise ConfigError(
            f"subsets must be a list of neuron index arrays or a 2-D boolean mask array; got {type(subsets).__name__}"
        )
    if len(subsets) == 0:
        raise ConfigError("subsets is empty; pass at least one array of neuron indices")
    out = np.zeros((len(subsets), n_features))
    for i, s in enumerate(subsets):
        idx = np.asarray(s)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ConfigError(
                f"subset {i} must be a non-empty 1-D array of integer neuron indices; got shape {idx.shape}, "
                f"dtype {idx.dtype} (to pass one subset, wrap it in a list: [indices])"
            )
        if idx.min() < 0 or idx.max() >= n_features:
            raise ConfigError(
                f"subset {i} holds neuron index {int(idx.min() if idx.min() < 0 else idx.max())}, outside "
                f"[0, {n_features - 1}] for a layer of {n_features} neurons"
            )
        out[i] = np.bincount(idx, minlength=n_features)
    return out


def _subset_values(stats: GramStats, weights: np.ndarray, *, debiased: bool, on_constant: str,
                   block: int = 256):
    """Biased and (optionally) debiased CKA of weighted column subsets against the full layer."""
    n = stats.n_samples
    k_total = weights.shape[0]
    biased = np.empty(k_total)
    deb = np.empty(k_total) if debiased else None
    h_aa = np.empty(k_total) if debiased else None
    q, r, full = stats.gram_sq, stats.gram_sq_rowsum, stats.gram_sq_total
    diag_c = np.diag(stats.gram)
    if debiased:
        tr_b = float(diag_c.sum())
        h_bb = _debiased_hsic(full, tr_b, tr_b, stats.fourth_total, n)
        if not h_bb > 0:
            raise FeatureError(
                f"the debiased HSIC of the full layer with itself is {h_bb:.3g} (not positive) on n={n} samples, "
                "so debiased CKA is undefined; use more samples or the biased estimator"
            )
    with np.errstate(divide="ignore", invalid="ignore"):
        # Blocks of subsets bound the (block, D) temporaries; each block is one BLAS product.
        for s in range(0, k_total, block):
            w = weights[s : s + block]
            cross = w @ r  # ||C[S, :]||_F^2
            self_a = np.einsum("kd,kd->k", w @ q, w)  # ||C[S, S]||_F^2
            biased[s : s + block] = cross / np.sqrt(self_a * full)
            if debiased:
                tr_a = w @ diag_c
                ab = w @ stats.fourth_rowsum  # sum_i ||z_i,S||^2 ||z_i||^2
                aa = np.einsum("kd,kd->k", w @ stats.fourth, w)  # sum_i ||z_i,S||^4
                h_ab = _debiased_hsic(cross, tr_a, tr_b, ab, n)
                h_aa[s : s + block] = _debiased_hsic(self_a, tr_a, tr_a, aa, n)
                deb[s : s + block] = h_ab / np.sqrt(h_aa[s : s + block] * h_bb)
    # A subset of only zero-variance neurons has no similarity structure: CKA is 0/0.
    constant = ~(weights[:, ~stats.constant] != 0).any(axis=1)
    undefined = constant.copy()
    if debiased:
        undefined |= ~(h_aa > 0)
    if undefined.any():
        n_const = int(stats.constant.sum())
        reasons = []
        for i in range(k_total):
            k = int(weights[i].sum())
            if constant[i]:
                reasons.append(
                    f"subset {i} ({k} neurons) holds only constant (zero-variance) neurons of the layer's "
                    f"{n_const}, so its CKA is undefined; {_CONSTANT_FIX}"
                )
            else:
                reasons.append(
                    f"the debiased HSIC of subset {i} ({k} neurons) with itself is not positive on n={n} samples, "
                    "so its debiased CKA is undefined; use more samples or the biased estimator"
                )
        _resolve_undefined([biased, deb], undefined, reasons, on_constant)
    return biased, deb


def subset_cka(stats: GramStats, subsets, *, debiased: bool = False, on_constant: str = "raise") -> np.ndarray:
    """Linear CKA of many column subsets of a layer against the full layer, from its Gram statistics.

    Parameters
    ----------
    stats : GramStats
        From :func:`gram_stats` (with ``debiased=True`` for the debiased estimator).
    subsets : sequence of int arrays, or bool ndarray of shape (n_subsets, D)
        Neuron indices of each subset (repeats allowed), or one boolean mask per row.
    debiased : bool, default False
        Use the unbiased HSIC estimator instead of the biased one.
    on_constant : {"raise", "nan"}, default "raise"
        What a subset of only zero-variance neurons (undefined CKA) gives: a
        :class:`~critmass.exceptions.FeatureError`, or NaN.

    Returns
    -------
    ndarray of shape (n_subsets,)
        ``CKA(X[:, S], X)`` per subset.

    Notes
    -----
    With ``C`` the centred Gram matrix, ``Q = C∘C`` and ``w`` a subset's 0/1 (count) vector,
    biased CKA is ``w·(Q 1) / sqrt(w^T Q w · 1^T Q 1)``: a batch of subsets is one ``(K, D) @ (D, D)``
    product. No pass over the samples.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> stats = gram_stats(x)
    >>> subset_cka(stats, [np.arange(6)]).round(12).tolist()
    [1.0]
    """
    _check_stats(stats, debiased)
    _check_on_constant(on_constant)
    weights = _subset_weights(subsets, stats.n_features)
    biased, deb = _subset_values(stats, weights, debiased=debiased, on_constant=on_constant)
    return deb if debiased else biased


# -------------------------------------------------------------------------------- projections
def _check_sizes(sizes, max_size: int) -> list[int]:
    if isinstance(sizes, numbers.Integral):
        sizes = [sizes]
    out = []
    for k in sizes:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= int(k) <= max_size:
            raise ConfigError(f"projection size {k!r} is outside [1, {max_size}] (the number of components); "
                              "pass integer sizes within it")
        out.append(int(k))
    if not out:
        raise ConfigError("sizes is empty; pass at least one projection size")
    return out


def _projection_norm_sums(x, stats: GramStats, basis: np.ndarray, sizes: list[int], chunk_size):
    """One pass over the samples for ``sum_i a_i(k) b_i``, ``sum_i a_i(k)^2`` and ``sum_i b_i^2``.

    ``a_i(k) = ||z_i R[:, :k]||^2`` is a fourth-order function of the data that no ``D x D`` matrix
    holds for a general ``R``, so the debiased estimator of a projection reads the samples once more
    (one ``n x D x k`` product for all prefix sizes at once).
    """
    arr = check_matrix(x, name="x")
    d = stats.n_features
    if arr.shape != (stats.n_samples, d):
        raise FeatureError(
            f"x has shape {arr.shape} but the Gram statistics were built from ({stats.n_samples}, {d}) features; "
            "pass the same features to both"
        )
    order = sorted(set(sizes))
    starts = np.array([0] + order[:-1])
    ab = np.zeros(len(order))
    aa = np.zeros(len(order))
    bb = 0.0
    colsum = np.zeros(d)
    for _, block in iter_rows(arr, chunk_rows(d + basis.shape[1], chunk_size)):
        z = block - stats.mean
        colsum += z.sum(axis=0)
        b = np.einsum("ij,ij->i", z, z)
        zp = z @ basis
        # Squared norms of each prefix: segment sums between consecutive sizes, then a running sum.
        a = np.cumsum(np.add.reduceat(zp * zp, starts, axis=1), axis=1)
        ab += b @ a
        aa += np.einsum("ij,ij->j", a, a)
        bb += float(b @ b)
    # Cheap guard that x is the data the statistics came from (its centred mean must vanish).
    std = np.sqrt(np.diag(stats.gram) / stats.n_samples)
    if np.any(np.abs(colsum / stats.n_samples) > 1e-6 * (std + np.abs(stats.mean)) + 1e-300):
        raise FeatureError("x is not the data these Gram statistics were built from (its column means differ); "
                           "pass the same features to gram_stats and projection_cka")
    pos = {k: j for j, k in enumerate(order)}
    sel = [pos[k] for k in sizes]
    return ab[sel], aa[sel], bb


def _projection_values(stats: GramStats, basis: np.ndarray, sizes: list[int], *, debiased: bool, x,
                       on_constant: str, chunk_size=None):
    n, d = stats.n_samples, stats.n_features
    kmax = max(sizes)
    rk = np.ascontiguousarray(basis[:, :kmax])
    c = stats.gram
    full = stats.gram_sq_total
    a_mat = rk.T @ c  # rows: R_j^T C
    m = a_mat @ rk  # R^T C R, the Gram matrix of the projected features
    m = 0.5 * (m + m.T)
    idx = np.asarray(sizes) - 1
    cross = np.cumsum(np.einsum("kd,kd->k", a_mat, a_mat))[idx]  # ||R_k^T C||_F^2
    e = m * m
    self_a = np.array([e[:k, :k].sum() for k in sizes])  # ||R_k^T C R_k||_F^2
    tr_a = np.cumsum(np.diag(m))[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        biased = cross / np.sqrt(self_a * full)
    # A reduction whose variance is below the numerical-rank threshold of C (numpy's matrix_rank
    # rule: D * eps * ||C||) spans only the layer's null space: constant, CKA undefined.
    colnorm = np.cumsum(np.einsum("dk,dk->k", rk, rk))[idx]
    constant = tr_a <= d * _EPS * np.sqrt(full) * colnorm
    undefined = constant.copy()
    deb = None
    if debiased:
        if x is None:
            raise ConfigError(
                "the debiased CKA of a projection needs the features (its per-sample norms are not in the Gram "
                "matrix): pass x=features"
            )
        ab, aa, bb = _projection_norm_sums(x, stats, rk, sizes, chunk_size)
        tr_b = float(np.trace(c))
        h_bb = _debiased_hsic(full, tr_b, tr_b, bb, n)
        h_ab = _debiased_hsic(cross, tr_a, tr_b, ab, n)
        h_aa = _debiased_hsic(self_a, tr_a, tr_a, aa, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            deb = h_ab / np.sqrt(h_aa * h_bb)
        undefined |= ~(h_aa > 0)
    if undefined.any():
        reasons = [
            (f"the {k}-dimensional projection has zero variance (it lies in the null space of the features), "
             f"so its CKA is undefined; {_CONSTANT_FIX}") if constant[i] else
            (f"the debiased HSIC of the {k}-dimensional projection with itself is not positive on n={n} samples, "
             "so its debiased CKA is undefined; use more samples or the biased estimator")
            for i, k in enumerate(sizes)
        ]
        _resolve_undefined([biased, deb], undefined, reasons, on_constant)
    return biased, deb


def _check_basis(components, n_features: int) -> np.ndarray:
    basis = np.asarray(components, dtype=np.float64)
    if basis.ndim != 2 or basis.shape[0] != n_features or basis.shape[1] == 0:
        raise ConfigError(
            f"components must have shape ({n_features}, n_components) for a layer of {n_features} neurons; "
            f"got {basis.shape}"
        )
    if not np.isfinite(basis).all():
        raise ConfigError("components contain NaN or inf; refit the selector")
    return basis


def projection_cka(stats: GramStats, components, sizes=None, *, debiased: bool = False, x=None,
                   on_constant: str = "raise", chunk_size: int | None = None) -> np.ndarray:
    """Linear CKA of linear reductions ``X @ components[:, :k]`` against the full layer.

    Parameters
    ----------
    stats : GramStats
        From :func:`gram_stats` (the fourth-moment matrix is not needed here).
    components : array-like of shape (D, n_components)
        The reduction basis (PCA components, a random projection...); the k-dimensional reduction
        is its first ``k`` columns. Centring is implied: CKA centres the reduced features.
    sizes : int or sequence of int, optional
        Prefix sizes ``k`` (default: all ``n_components`` columns at once).
    debiased : bool, default False
        Use the unbiased HSIC estimator; needs ``x``.
    x : array-like of shape (n_samples, D), optional
        The features the statistics were built from; the debiased estimator reads them once (for
        all sizes together), because a projection's per-sample norms are not in the Gram matrix.
    on_constant : {"raise", "nan"}, default "raise"
        What a zero-variance reduction (undefined CKA) gives.
    chunk_size : int, optional
        Rows per chunk of the pass over ``x``.

    Returns
    -------
    ndarray of shape (len(sizes),)

    Notes
    -----
    Biased CKA is ``||R_k^T C||_F^2 / (||R_k^T C R_k||_F ||C||_F)``; all prefixes share the two
    products ``R^T C`` and ``R^T C R`` (``O(k_max D^2)``), with no pass over the samples.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    >>> projection_cka(gram_stats(x), q, [6]).round(12).tolist()  # a rotation of the whole layer
    [1.0]
    """
    _check_stats(stats, debiased, need_fourth=False)  # a projection's fourth moments come from x
    _check_on_constant(on_constant)
    basis = _check_basis(components, stats.n_features)
    sizes = _check_sizes(basis.shape[1] if sizes is None else sizes, basis.shape[1])
    biased, deb = _projection_values(stats, basis, sizes, debiased=debiased, x=x, on_constant=on_constant,
                                     chunk_size=chunk_size)
    return deb if debiased else biased


# ------------------------------------------------------------------------- two representations
def _sample_gram(arr: np.ndarray, name: str, chunk_size) -> tuple[np.ndarray, bool]:
    """Centred ``n x n`` Gram matrix ``Z Z^T``, accumulated over column blocks, and 'all constant?'."""
    n, p = arr.shape
    cols = chunk_rows(n, chunk_size)  # same byte budget, counted in columns
    try:
        gram = _blas.GramSum(n)
    except MemoryError:
        raise FeatureError(f"cannot allocate the {n} x {n} sample Gram matrix; use method='features'") from None
    all_constant = True
    for j in range(0, p, cols):
        blk = np.asarray(arr[:, j : j + cols], dtype=np.float64)
        if not np.isfinite(blk).all():
            _raise_non_finite(blk, 0, name)  # a block of columns holds every row
        mean = blk.mean(axis=0)  # each column block holds whole columns, so its mean is final
        blk -= mean
        all_constant &= bool(constant_columns((blk * blk).sum(axis=0), mean, n).all())
        gram.add(blk.T)  # Z Z^T as the syrk of Z^T
    return gram.value(), all_constant


def _pair_sums_samples(x, y, same: bool, chunk_size):
    k, kc = _sample_gram(x, "x", chunk_size)
    l_, lc = (k, kc) if same else _sample_gram(y, "y", chunk_size)
    a, b = np.diag(k).copy(), np.diag(l_).copy()
    return dict(
        cross=float(np.vdot(k, l_)), self_a=float(np.vdot(k, k)), self_b=float(np.vdot(l_, l_)),
        tr_a=float(a.sum()), tr_b=float(b.sum()), ab=float(a @ b), aa=float(a @ a), bb=float(b @ b),
        const_a=kc, const_b=lc,
    )


def _pair_sums_features(x, y, same: bool, chunk_size):
    n, p = x.shape
    q = y.shape[1]
    rows = chunk_rows(p + (0 if same else q), chunk_size)
    mx = column_means(x, rows, name="x")
    my = mx if same else column_means(y, rows, name="y")
    try:
        sxx = _blas.GramSum(p)
        syy = sxx if same else _blas.GramSum(q)
        cxy = None if same else np.zeros((p, q))
    except MemoryError:
        raise FeatureError(f"cannot allocate {p} x {q} float64 Gram matrices; use method='samples'") from None
    ab = aa = bb = 0.0
    for start in range(0, n, rows):
        xa = np.asarray(x[start : start + rows], dtype=np.float64) - mx
        a = np.einsum("ij,ij->i", xa, xa)
        sxx.add(xa)
        aa += float(a @ a)
        if same:
            continue
        yb = np.asarray(y[start : start + rows], dtype=np.float64) - my
        b = np.einsum("ij,ij->i", yb, yb)
        syy.add(yb)
        _blas.cross(xa, yb, out=cxy)
        ab += float(a @ b)
        bb += float(b @ b)
    cxx = sxx.value()
    cyy = cxx if same else syy.value()
    if same:
        ab = bb = aa
    self_a = float(np.vdot(cxx, cxx))
    self_b = self_a if same else float(np.vdot(cyy, cyy))
    return dict(
        cross=self_a if same else float(np.vdot(cxy, cxy)), self_a=self_a, self_b=self_b,
        tr_a=float(np.trace(cxx)), tr_b=float(np.trace(cyy)), ab=ab, aa=aa, bb=bb,
        const_a=bool(constant_columns(np.diag(cxx), mx, n).all()),
        const_b=bool(constant_columns(np.diag(cyy), my, n).all()),
    )


def cka(x, y, *, debiased: bool = False, method: str = "auto", chunk_size: int | None = None) -> float:
    """Linear CKA between two representations of the same samples (any widths).

    Parameters
    ----------
    x : array-like of shape (n_samples, p)
    y : array-like of shape (n_samples, q)
        Features of the same samples in the same order (two layers, two models); memmaps are read
        in chunks.
    debiased : bool, default False
        Use the unbiased HSIC estimator (Song et al. 2012) instead of the biased one (Kornblith et
        al. 2019). Needs at least 4 samples; its value can be slightly negative for unrelated features.
    method : {"auto", "features", "samples"}, default "auto"
        Compute from ``p x q`` feature-space Grams (streams over rows; best when ``p + q <= n``) or
        from ``n x n`` sample Grams (streams over columns; best for very wide layers). Same value.
    chunk_size : int, optional
        Rows (or columns) per chunk.

    Returns
    -------
    float

    Raises
    ------
    FeatureError
        Different sample counts, NaN/inf, zero-variance (constant) features, or ``n < 4`` for the
        debiased estimator.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 10))
    >>> round(cka(x, 3.0 * x), 12)
    1.0
    """
    xa, ya = check_matrix(x, name="x"), check_matrix(y, name="y")
    if xa.shape[0] != ya.shape[0]:
        raise FeatureError(
            f"x has {xa.shape[0]} samples but y has {ya.shape[0]}; CKA compares two representations of the same "
            "samples: pass features of the same inputs in the same order"
        )
    if method not in _METHODS:
        raise ConfigError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
    n = xa.shape[0]
    _check_n(n, debiased)
    same = xa is ya
    if method == "auto":
        # Feature space costs n (p + q)^2 and (p + q)^2 memory, sample space n^2 (p + q) and n^2.
        method = "features" if xa.shape[1] + ya.shape[1] <= n else "samples"
    s = (_pair_sums_features if method == "features" else _pair_sums_samples)(xa, ya, same, chunk_size)
    for which, flag in (("x", s["const_a"]), ("y", s["const_b"])):
        if flag:
            raise FeatureError(
                f"{which} has zero variance (every neuron is constant over the {n} samples), so CKA is undefined; "
                "check the layer and the extraction (a dead or frozen layer?)"
            )
    if not debiased:
        return float(s["cross"] / np.sqrt(s["self_a"] * s["self_b"]))
    h_ab = _debiased_hsic(s["cross"], s["tr_a"], s["tr_b"], s["ab"], n)
    h_aa = _debiased_hsic(s["self_a"], s["tr_a"], s["tr_a"], s["aa"], n)
    h_bb = _debiased_hsic(s["self_b"], s["tr_b"], s["tr_b"], s["bb"], n)
    if not (h_aa > 0 and h_bb > 0):
        raise FeatureError(
            f"the debiased HSIC of {'x' if not h_aa > 0 else 'y'} with itself is not positive on n={n} samples, "
            "so debiased CKA is undefined; use more samples or the biased estimator"
        )
    return float(h_ab / np.sqrt(h_aa * h_bb))
