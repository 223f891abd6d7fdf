"""Neuron selectors: which k neurons (or which k-dimensional reduction) of a layer a probe sees.

Every selector is fitted once on the train features and then answers every size k, nested: the
k-subset is the first k entries of one ordering (``order_``, a permutation of the neurons) or the
first k columns of one basis (``components_``). That is the paper's protocol for random subsets
(``randperm(D, seed)[:k]``) and what lets probes and CKA share one factorization across sizes.
"""

from __future__ import annotations

import numpy as np

from .. import _blas
from .._registry import Registry
from .._validation import check_features, check_random_state
from ..exceptions import ConfigError, NotFittedError

__all__ = [
    "BaseSelector",
    "AllNeurons",
    "RandomSubset",
    "PrefixSubset",
    "NormSubset",
    "PCASubset",
    "GaussianProjection",
    "UniformProjection",
    "SELECTORS",
    "make_selector",
    "list_selectors",
    "supervised_selectors",
    "covariance",
]

SELECTORS: Registry[type] = Registry("selector")


def covariance(X, *, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased, 1/n) covariance of ``X`` in float64, streamed over row chunks (works on memmaps)."""
    n, d = X.shape
    mean = np.zeros(d)
    for s in range(0, n, chunk):
        mean += np.add.reduce(X[s : s + chunk], axis=0, dtype=np.float64)
    mean /= n
    cov = _blas.GramSum(d)
    for s in range(0, n, chunk):
        cov.add(np.subtract(X[s : s + chunk], mean, dtype=np.float64))
    return mean, cov.value() / n


class BaseSelector:
    """Fit on train features; ``subset(k)`` gives the k-subset; ``transform(X, k)`` applies it.

    Column selectors set ``order_`` (int64 permutation of the ``n_features_in_`` neurons); projection
    selectors set ``components_`` (float64, ``(n_features_in_, n_components)``) and ``mean_``.
    """

    name = "base"
    is_projection = False
    #: True when the fitted subsets do not depend on ``random_state`` (fit once, not once per seed).
    deterministic = True
    #: True when ``fit`` needs the training labels (the supervised rankings of :mod:`critmass.subsets._ranked`).
    requires_y = False

    def __init__(self, random_state=None):
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit on the train features (``y``, the labels, is used by the supervised selectors only)."""
        X = check_features(X, name="train features")
        self.n_features_in_ = int(X.shape[1])
        self._fit(X)
        return self

    def _fit(self, X) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def max_size(self) -> int:
        self._check_fitted()
        return int(self.components_.shape[1] if self.is_projection else len(self.order_))

    def _check_fitted(self):
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X_train) first")

    def _check_k(self, k: int) -> int:
        self._check_fitted()
        k = int(k)
        if not 1 <= k <= self.max_size:
            raise ConfigError(
                f"subset size k={k} is outside [1, {self.max_size}] for selector {self.name!r} on a layer of "
                f"{self.n_features_in_} neurons; pass a smaller size"
            )
        return k

    def subset(self, k: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(indices, None)`` for column selectors, ``(None, projection (D, k))`` for projections."""
        k = self._check_k(k)
        if self.is_projection:
            return None, self.components_[:, :k]
        return self.order_[:k], None

    def transform(self, X, k: int) -> np.ndarray:
        """The k-dimensional view of ``X`` a probe sees (float32)."""
        idx, proj = self.subset(k)
        if idx is not None:
            return np.asarray(X[:, idx], dtype=np.float32)
        return ((np.asarray(X, dtype=np.float64) - self.mean_) @ proj).astype(np.float32)

    def __repr__(self):
        return f"{type(self).__name__}(random_state={self.random_state!r})"


@SELECTORS.register("all", "the full layer: the reference every fraction is compared with")
class AllNeurons(BaseSelector):
    name = "all"

    def _fit(self, X):
        self.order_ = np.arange(self.n_features_in_, dtype=np.int64)


@SELECTORS.register("random", "k neurons drawn uniformly; nested per seed (prefix of one permutation)")
class RandomSubset(BaseSelector):
    name = "random"
    deterministic = False

    def _fit(self, X):
        self.order_ = check_random_state(self.random_state).permutation(self.n_features_in_).astype(np.int64)


@SELECTORS.register("prefix", "the first k neurons (Matryoshka-style models)")
class PrefixSubset(BaseSelector):
    name = "prefix"

    def _fit(self, X):
        self.order_ = np.arange(self.n_features_in_, dtype=np.int64)


class NormSubset(BaseSelector):
    """Neurons ranked by the L2 norm of their train activations (ties broken by index)."""

    largest = True

    def _fit(self, X):
        sq = np.zeros(self.n_features_in_)
        for s in range(0, X.shape[0], 8192):
            sq += np.square(np.asarray(X[s : s + 8192], dtype=np.float64)).sum(0)
        self.scores_ = np.sqrt(sq)
        key = -self.scores_ if self.largest else self.scores_
        self.order_ = np.argsort(key, kind="stable").astype(np.int64)


@SELECTORS.register("norm-max", "the k neurons with the largest activation norm")
class NormMaxSubset(NormSubset):
    name = "norm-max"
    largest = True


@SELECTORS.register("norm-min", "the k neurons with the smallest activation norm")
class NormMinSubset(NormSubset):
    name = "norm-min"
    largest = False


@SELECTORS.register("pca", "top-k principal components of the train features")
class PCASubset(BaseSelector):
    """Principal components from the eigendecomposition of the train covariance, largest first."""

    name = "pca"
    is_projection = True
    least = False

    def _fit(self, X):
        self.mean_, cov = covariance(X)
        evals, evecs = np.linalg.eigh(cov)  # ascending
        order = np.arange(len(evals)) if self.least else np.arange(len(evals))[::-1]
        vecs = evecs[:, order]
        # Deterministic signs (largest-magnitude entry positive), as sklearn's svd_flip does.
        signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
        signs[signs == 0] = 1.0
        self.components_ = vecs * signs
        self.explained_variance_ = np.clip(evals[order], 0.0, None)


@SELECTORS.register("pca-least", "bottom-k principal components (least variance first)")
class PCALeastSubset(PCASubset):
    name = "pca-least"
    least = True


@SELECTORS.register("randproj", "Gaussian random projection to k dimensions")
class GaussianProjection(BaseSelector):
    """``R`` with i.i.d. N(0, 1/D) entries; the k-projection is its first k columns (nested)."""

    name = "randproj"
    is_projection = True
    deterministic = False

    def _fit(self, X):
        d = self.n_features_in_
        rng = check_random_state(self.random_state)
        self.components_ = rng.standard_normal((d, d)) / np.sqrt(d)
        self.mean_ = np.zeros(d)


@SELECTORS.register("randproj-uniform", "the paper's random projection: uniform [0, 1) entries, unit-norm columns")
class UniformProjection(BaseSelector):
    name = "randproj-uniform"
    is_projection = True
    deterministic = False

    def _fit(self, X):
        d = self.n_features_in_
        r = check_random_state(self.random_state).random((d, d))
        self.components_ = r / np.linalg.norm(r, axis=0, keepdims=True)
        self.mean_ = np.zeros(d)


def make_selector(name: str, random_state=None) -> BaseSelector:
    """Build a selector by registry name (``critmass.subsets.list_selectors()`` lists them)."""
    return SELECTORS.get(name)(random_state=random_state)


def supervised_selectors() -> list[str]:
    """Names of the registered selectors that need the training labels (``requires_y``)."""
    return [n for n in SELECTORS.names() if getattr(SELECTORS.get(n), "requires_y", False)]


def list_selectors() -> dict[str, str]:
    """Registered selector names and one-line descriptions."""
    return SELECTORS.describe()
