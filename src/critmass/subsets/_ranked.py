"""Selectors that rank neurons by what they hold: the label-free ``variance`` and ``cluster`` orderings and the
supervised ``fscore``, ``probe-weight``, ``greedy`` and ``attribution`` orderings.

Every one is a column selector: ``order_`` is a permutation of the neurons, best first, so the k-subset is the
first k of one ordering (nested, like every selector). They are deterministic (no seed) and fitted on the
rows they are given: :func:`critmass.subsets.plan_subsets` passes the probes' fit rows and their labels,
never validation or test rows. ``scores_`` holds each neuron's score where the ordering has one (higher is
better).

The supervised criteria are computed from the statistics of one pass over the rows, in the probes'
standardised space (columns centred and scaled as the probes scale them): the correlation-like Gram matrix
``G = Z^T Z / n`` and ``B = Z^T Y / n`` with ``Y`` the centred one-hot labels. No criterion passes over the
samples per neuron or per step, and nothing here imports :mod:`critmass.probes`:

* ``fscore``: ANOVA F of each neuron (scikit-learn's ``f_classif``), from the class means and variances.
* ``probe-weight``: the order in which neurons enter the path of a multi-class group-lasso probe of the
  one-hot labels (least-squares loss, penalty ``lam * sum_j ||w_j||``, 30 values of lam from its largest
  useful value down to 1e-3 of it, warm-started), solved by accelerated proximal gradient on ``G``: NeuroX's "neurons by the weight mass of an L1 /
  elastic-net probe", with the least-squares surrogate of the logistic loss (so it is fitted on ``G`` in
  seconds) and the path replacing NeuroX's per-class mass threshold. Neurons that never enter follow by the
  norm of their ridge weights.
* ``greedy``: forward selection of the set minimising the ridge residual ``tr(Y^T Y) - tr(B_S^T (G_SS +
  lam I)^-1 B_S)``: each step adds the neuron with the largest decrease ``||B_j - V_j^T C||^2 / d_j``,
  updating one row of a Cholesky factor (``O(D k)`` per step). ``max_steps`` steps (default ``D // 4``);
  the rest follow by their last gain.
* ``attribution``: leave-one-neuron-out on the full ridge probe: removing neuron j raises the minimum of
  the ridge objective by exactly ``||w_j||^2 / [(G + lam I)^-1]_jj`` (a Schur complement), largest first.
* ``cluster``: average-linkage agglomerative clustering of the neurons on ``1 - |corr|``; the order walks
  the tree from the root: each split keeps its parent's representative in one branch and adds the other
  branch's medoid (the neuron with the largest summed |corr| to its cluster), so the first k neurons are one
  representative of each of the k clusters of the tree cut into k (NeuroX's redundancy-aware selection).
* ``variance``: the neurons' variance on the fit rows, highest first (no labels): the label-free baseline
  the gap credited to labels is measured against.
"""

from __future__ import annotations

import numpy as np

from .. import _blas
from .._standardize import RELATIVE_STD_FLOOR, scale_of
from ..exceptions import ConfigError
from ._selectors import SELECTORS, BaseSelector, covariance

__all__ = ["RankedSubset", "VarianceSubset", "FScoreSubset", "ProbeWeightSubset", "GreedySubset", "AttributionSubset",
           "ClusterSubset", "label_stats"]

#: The ridge penalty of ``greedy`` and ``attribution``, in the units of the standardised Gram matrix (whose
#: diagonal is 1): small enough to leave well-determined weights alone, large enough to keep collinear
#: neurons' weights finite.
DEFAULT_RIDGE = 1e-2


def _order(scores: np.ndarray, *, largest: bool = True) -> np.ndarray:
    """Neurons by score (NaN last; an infinite score, e.g. the F of a perfectly separating neuron, counts as
    the largest), ties by index."""
    s = np.where(np.isnan(scores), -np.inf if largest else np.inf, scores)
    return np.argsort(-s if largest else s, kind="stable").astype(np.int64)


def label_stats(X, y, *, chunk: int = 8192) -> dict:
    """One streamed pass (float64) over ``(X, y)``: what every supervised criterion needs.

    Returns ``mean``, ``scale`` (the probes' column scales), ``var`` (biased variance), ``G`` (standardised
    Gram / n, D x D), ``B`` (standardised ``Z^T Y / n`` with ``Y`` the centred one-hot labels, D x C),
    ``class_means`` (raw, C x D), ``within`` (the within-class sum of squares per neuron, summed around the
    class means in the second pass: no cancellation), ``counts`` (C,), ``classes`` and ``n``.
    """
    y = np.asarray(y)
    classes, codes = np.unique(y, return_inverse=True)
    n, d = X.shape
    C = len(classes)
    total, sums, counts = np.zeros(d), np.zeros((C, d)), np.bincount(codes, minlength=C).astype(np.float64)
    for s in range(0, n, chunk):
        block = np.asarray(X[s : s + chunk], dtype=np.float64)
        total += block.sum(0)
        np.add.at(sums, codes[s : s + chunk], block)
    mean = total / n
    class_means = sums / counts[:, None]
    gram, within = _blas.GramSum(d), np.zeros(d)
    for s in range(0, n, chunk):
        raw = np.asarray(X[s : s + chunk], dtype=np.float64)
        within += np.square(raw - class_means[codes[s : s + chunk]]).sum(0)
        gram.add(raw - mean)
    cov = gram.value() / n
    var = np.clip(np.diag(cov).copy(), 0.0, None)
    scale = scale_of(np.sqrt(var))
    G = cov / np.outer(scale, scale)
    # Z^T Y / n with Y centred one-hot: per class, n_c (mu_c - mu) / n, standardised
    B = ((class_means - mean) * (counts[:, None] / n)).T / scale[:, None]
    return {"mean": mean, "scale": scale, "var": var, "G": G, "B": B, "class_means": class_means,
            "within": within, "counts": counts, "classes": classes, "n": n}


def _check_y(y, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or len(arr) != n:
        raise ConfigError(f"the selector's labels must be 1-D with one entry per row ({n}); got shape {arr.shape}")
    if len(np.unique(arr)) < 2:
        raise ConfigError("the selector's labels hold one class only; a supervised ranking needs at least 2 classes")
    return arr


class RankedSubset(BaseSelector):
    """A column selector whose ``order_`` ranks the neurons (best first); deterministic."""

    requires_y = False

    def fit(self, X, y=None):
        from .._validation import check_features

        X = check_features(X, name="train features")
        self.n_features_in_ = int(X.shape[1])
        if self.requires_y:
            if y is None:
                raise ConfigError(
                    f"selector {self.name!r} ranks neurons by the task's labels and got none; pass the training "
                    "labels (fit(X, y); `critmass compress --fit-labels FILE`), or use a label-free selector "
                    "(variance, cluster, random, pca)")
            self._fit_labels(X, _check_y(y, X.shape[0]))
        else:
            self._fit(X)
        return self

    def _fit_labels(self, X, y) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@SELECTORS.register("variance", "neurons by their variance on the fit rows, highest first (label-free)")
class VarianceSubset(RankedSubset):
    name = "variance"

    def _fit(self, X):
        total, sq, n = np.zeros(X.shape[1]), np.zeros(X.shape[1]), X.shape[0]
        for s in range(0, n, 8192):
            block = np.asarray(X[s : s + 8192], dtype=np.float64)
            total += block.sum(0)
        mean = total / n
        for s in range(0, n, 8192):
            sq += np.square(np.asarray(X[s : s + 8192], dtype=np.float64) - mean).sum(0)
        self.scores_ = sq / n
        self.order_ = _order(self.scores_)


@SELECTORS.register("fscore", "neurons by their ANOVA F statistic for the labels (f_classif), highest first")
class FScoreSubset(RankedSubset):
    name = "fscore"
    requires_y = True

    def _fit_labels(self, X, y):
        st = label_stats(X, y)
        n, C = st["n"], len(st["counts"])
        between = (st["counts"][:, None] * (st["class_means"] - st["mean"]) ** 2).sum(0)
        within = st["within"]
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (between / (C - 1)) / (within / max(n - C, 1))
        self.scores_ = np.where(between > 0, f, np.where(within > 0, 0.0, np.nan))  # constant neurons: NaN, last
        self.order_ = _order(self.scores_)


def _ridge_weights(G: np.ndarray, B: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """``(W, diag((G + lam I)^-1))`` of the ridge probe on the standardised statistics."""
    from scipy.linalg import cho_factor, cho_solve

    A = G + lam * np.eye(len(G))
    factor = cho_factor(A, lower=True)
    W = cho_solve(factor, B)
    Ainv_diag = np.diag(cho_solve(factor, np.eye(len(G))))
    return W, Ainv_diag


@SELECTORS.register("attribution", "leave-one-neuron-out: how much the ridge probe's loss grows without each neuron")
class AttributionSubset(RankedSubset):
    """``scores_[j]``: the increase of the full ridge probe's minimum objective (per sample, standardised units)
    when neuron j is removed, ``||w_j||^2 / [(G + lam I)^-1]_jj``."""

    name = "attribution"
    requires_y = True
    ridge = DEFAULT_RIDGE

    def _fit_labels(self, X, y):
        st = label_stats(X, y)
        W, ainv = _ridge_weights(st["G"], st["B"], self.ridge)
        self.scores_ = np.square(W).sum(1) / ainv
        self.order_ = _order(self.scores_)


@SELECTORS.register("greedy", "forward selection: each step adds the neuron that most lowers the ridge residual")
class GreedySubset(RankedSubset):
    """Forward selection on the ridge residual of the centred one-hot labels (see the module docstring).

    ``scores_[j]``: the residual decrease when neuron j was added (the first ``max_steps`` neurons), or its
    gain at the last step (the rest). ``max_steps`` (default ``D // 4``, at least 1) bounds the greedy part.
    """

    name = "greedy"
    requires_y = True
    ridge = DEFAULT_RIDGE
    max_steps: int | None = None

    def _fit_labels(self, X, y):
        st = label_stats(X, y)
        G, B = st["G"], st["B"]
        self.scores_, self.order_ = greedy_order(G, B, self.ridge,
                                                 self.max_steps if self.max_steps else max(1, len(G) // 4))


def greedy_order(G: np.ndarray, B: np.ndarray, lam: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward selection minimising ``tr(B_S^T (G_SS + lam I)^-1 B_S)``'s complement; ``(scores, order)``.

    With ``L`` the Cholesky factor of ``G_SS + lam I``, ``V = L^-1 G_S:`` and ``Cm = L^-1 B_S``, the residual
    decrease of adding j is ``||B_j - V_j^T Cm||^2 / (G_jj + lam - ||V_j||^2)``; adding j* appends one row to
    ``V`` and ``Cm`` (``O(D k)`` per step)."""
    d = len(G)
    steps = int(min(max(steps, 1), d))
    V = np.zeros((steps, d))
    Cm = np.zeros((steps, B.shape[1]))
    diag = np.diag(G) + lam
    resid_var = diag.copy()  # G_jj + lam - ||V_j||^2
    U = B.copy()  # B_j - V_j^T Cm
    chosen = np.zeros(d, dtype=bool)
    order, scores = [], np.zeros(d)
    gain = np.zeros(d)
    for t in range(steps):
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(chosen, -np.inf, np.square(U).sum(1) / np.maximum(resid_var, 1e-12 * diag))
        j = int(np.argmax(gain))  # ties: the lowest index
        scores[j] = gain[j]
        order.append(j)
        chosen[j] = True
        pivot = np.sqrt(max(resid_var[j], 1e-12 * diag[j]))
        row = (G[j] - V[:t].T @ V[:t, j]) / pivot  # the new row of L^-1 G_S:
        crow = (B[j] - V[:t, j] @ Cm[:t]) / pivot  # the new row of L^-1 B_S
        V[t], Cm[t] = row, crow
        resid_var = resid_var - row ** 2
        U = U - np.outer(row, crow)
    rest = np.nonzero(~chosen)[0]
    if len(rest):
        with np.errstate(divide="ignore", invalid="ignore"):
            last = np.square(U[rest]).sum(1) / np.maximum(resid_var[rest], 1e-12 * diag[rest])
        scores[rest] = last
        rest = rest[_order(last)]
    return scores, np.concatenate([np.asarray(order, dtype=np.int64), rest.astype(np.int64)])


@SELECTORS.register("probe-weight", "neurons in the order they enter a group-lasso probe's path (NeuroX-style)")
class ProbeWeightSubset(RankedSubset):
    """See the module docstring. ``scores_[j]``: ``lam_entry / lam_max`` (the largest for the first to enter, 0 =
    never; ties within one path step are broken by the weight norm at entry, never-entering neurons by their
    ridge weight norm)."""

    name = "probe-weight"
    requires_y = True
    n_lambdas = 30
    lambda_ratio = 1e-3
    # Entry order, not the weights, is the output: on EfficientNet-Lite0 / Fashion-MNIST features (1,280
    # neurons) tol 1e-5 with 150 iterations per lam gives the top 128 of a 1e-6 / 1,000-iteration path (63 of
    # the top 64) at a fraction of its cost.
    tol = 1e-5
    max_iter = 150
    ridge = DEFAULT_RIDGE

    def _fit_labels(self, X, y):
        st = label_stats(X, y)
        self.scores_, self.order_ = group_lasso_entry_order(st["G"], st["B"], n_lambdas=self.n_lambdas,
                                                            ratio=self.lambda_ratio, tol=self.tol,
                                                            max_iter=self.max_iter, ridge=self.ridge)


def group_lasso(G, B, lam: float, *, W0=None, max_iter: int = 500, tol: float = 1e-6, step=None) -> np.ndarray:
    """``argmin_W 1/2 tr(W^T G W) - tr(W^T B) + lam sum_j ||w_j||`` by FISTA (accelerated proximal gradient, step
    ``1 / lambda_max(G)``, restarted when the objective's descent direction turns), from ``W0``. Every
    iteration is one ``G @ W`` product: no loop over neurons."""
    if step is None:
        step = 1.0 / max(_top_eigenvalue(G), 1e-12)
    W = np.zeros_like(B) if W0 is None else W0.copy()
    Z, t = W.copy(), 1.0
    for _ in range(max_iter):
        V = Z - step * (G @ Z - B)
        norms = np.linalg.norm(V, axis=1, keepdims=True)
        Wn = np.where(norms > step * lam, (1.0 - step * lam / np.maximum(norms, 1e-300)) * V, 0.0)
        change = float(np.abs(Wn - W).max())
        if float(np.sum((Z - Wn) * (Wn - W))) > 0:  # gradient restart (O'Donoghue & Candes)
            t = 1.0
        tn = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        Z = Wn + ((t - 1.0) / tn) * (Wn - W)
        W, t = Wn, tn
        if change <= tol * max(1.0, float(np.abs(W).max())):
            break
    return W


def _top_eigenvalue(G: np.ndarray) -> float:
    from scipy.linalg import eigh

    return float(eigh(G, eigvals_only=True, subset_by_index=[len(G) - 1, len(G) - 1])[0])


def group_lasso_entry_order(G, B, *, n_lambdas=30, ratio=1e-3, tol=1e-5, max_iter=150, ridge=DEFAULT_RIDGE):
    """The group-lasso path (:func:`group_lasso`) over ``n_lambdas`` log-spaced values of ``lam`` from
    ``max_j ||B_j||`` (nothing selected) down to ``ratio`` of it, warm-started; returns ``(scores, order)`` as
    :class:`ProbeWeightSubset` documents."""
    d, C = B.shape
    lam_max = float(np.linalg.norm(B, axis=1).max())
    if lam_max <= 0:  # no neuron says anything about the labels
        return np.zeros(d), np.arange(d, dtype=np.int64)
    step = 1.0 / max(_top_eigenvalue(G), 1e-12)
    W = np.zeros((d, C))
    entry = np.full(d, -1)
    entry_norm = np.zeros(d)
    # lam_max itself selects nothing (the entry test is strict): the path starts one step below it
    lams = lam_max * np.logspace(0, np.log10(ratio), n_lambdas + 1)[1:]
    for i, lam in enumerate(lams):
        W = group_lasso(G, B, lam, W0=W, max_iter=max_iter, tol=tol, step=step)
        wn = np.linalg.norm(W, axis=1)
        new_in = (entry < 0) & (wn > 0)
        entry[new_in] = i
        entry_norm[new_in] = wn[new_in]
    scores = np.where(entry >= 0, lams[np.maximum(entry, 0)] / lam_max, 0.0)
    ridge_w, _ = _ridge_weights(G, B, ridge)
    ridge_norm = np.linalg.norm(ridge_w, axis=1)
    # entered neurons: by entry step, then by the norm at entry; the others by their ridge weight norm
    key_step = np.where(entry >= 0, entry, n_lambdas)
    key_norm = np.where(entry >= 0, -entry_norm, -ridge_norm)
    order = np.lexsort((np.arange(d), key_norm, key_step)).astype(np.int64)
    return scores, order


@SELECTORS.register("cluster", "one representative per correlation cluster, nested along the hierarchy (label-free)")
class ClusterSubset(RankedSubset):
    """See the module docstring. ``scores_[j]``: the number of clusters at which neuron j became a
    representative, as ``1 - position / D`` (1 = the root's representative)."""

    name = "cluster"

    def _fit(self, X):
        from scipy.cluster.hierarchy import linkage
        from scipy.spatial.distance import squareform

        d = X.shape[1]
        _, cov = covariance(X)  # the scale (1/n) cancels in the correlations
        sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        ok = sd > RELATIVE_STD_FLOOR * (float(sd.max()) if d else 0.0)  # the probes' rule for constant columns
        corr = np.zeros((d, d))
        corr[np.ix_(ok, ok)] = np.abs(cov[np.ix_(ok, ok)] / np.outer(sd[ok], sd[ok]))
        np.fill_diagonal(corr, 1.0)
        corr = np.clip(corr, 0.0, 1.0)
        # Constant neurons correlate with nothing: as singleton clusters they would be split off first. They
        # say nothing, so they go last (by index), and the clustering is of the others.
        live = np.nonzero(ok)[0]
        order = live[:1]
        if len(live) > 1:
            sub = corr[np.ix_(live, live)]
            dist = 1.0 - sub
            np.fill_diagonal(dist, 0.0)
            Z = linkage(squareform(dist, checks=False), method="average")
            order = live[_tree_order(Z, sub, len(live))]
        self.order_ = np.concatenate([order, np.nonzero(~ok)[0]]).astype(np.int64)
        self.scores_ = np.empty(d)
        self.scores_[self.order_] = 1.0 - np.arange(d) / d


def _tree_order(Z: np.ndarray, corr: np.ndarray, d: int) -> np.ndarray:
    """Representatives in the order the tree splits, from the root down (see :class:`ClusterSubset`)."""
    members: dict[int, np.ndarray] = {i: np.array([i]) for i in range(d)}
    children: dict[int, tuple[int, int]] = {}
    for m, (a, b, _, _) in enumerate(Z):
        node = d + m
        a, b = int(a), int(b)
        children[node] = (a, b)
        members[node] = np.concatenate([members[a], members[b]])

    def medoid(node: int) -> int:
        idx = members[node]
        if len(idx) == 1:
            return int(idx[0])
        s = corr[np.ix_(idx, idx)].sum(1)
        return int(idx[np.argmax(s)])  # ties: the first member (scipy's deterministic member order)

    root = d + len(Z) - 1
    rep = {root: medoid(root)}
    order = [rep[root]]
    # the merges in reverse are the splits from the root down: split the latest-formed cluster first
    for m in range(len(Z) - 1, -1, -1):
        node = d + m
        a, b = children[node]
        r = rep[node]
        keep, other = (a, b) if r in set(members[a].tolist()) else (b, a)
        rep[keep] = r
        rep[other] = medoid(other)
        order.append(rep[other])
    return np.asarray(order, dtype=np.int64)
