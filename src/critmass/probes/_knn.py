"""k-nearest-neighbour probes on (subsets of) cached features, and the neighbour search they share with
the retrieval probes.

Search: FAISS (``faiss-cpu``; its GPU index when the installed faiss has GPUs and the device is CUDA),
exact by default (``IndexFlatIP`` for cosine, ``IndexFlatL2`` for L2), ``'ivf'`` (``IndexIVFFlat``) or
``'hnsw'`` (``IndexHNSWFlat``) for large galleries. ``backend='torch'`` (or a CUDA device when faiss has
no GPU) does the exact search with torch matrix products instead. FAISS runs with the torch thread count
(``faiss.omp_set_num_threads(torch.get_num_threads())`` for the call, restored afterwards).

Vectors of a subset ``S`` (``center`` subtracts the gallery's mean first):

* ``'truncate-renorm'`` (default for cosine): ``x[S] / ||x[S]||``, the cosine of the subset vectors
  (what Matryoshka users do after truncating);
* ``'normalize-truncate'``: ``(x / ||x||)[S]``, the full vector normalised, then truncated (its inner
  products are not cosines);
* ``'none'`` (default for L2): ``x[S]`` as is.

No standardisation: kNN evaluations use raw (or centred) features, and scaling each neuron by its spread
would change which neighbours are near.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if

from .._validation import check_features, check_positive_int, closest
from ..codecs import DEFAULT_CODEC, faiss_threads, make_codec, pair_scores
from ..data import train_val_indices
from ..exceptions import ConfigError, FeatureError
from ._choice import choose
from ._sklearn import ProbeNotFittedError, encode_labels, validate_fit, validate_predict

__all__ = ["KNNProbe", "DEFAULT_KNN_KS", "METRICS", "VOTES", "NORMALIZATIONS", "INDEXES", "BACKENDS"]

logger = logging.getLogger(__name__)

#: The default k grid, chosen on validation (DINO reports k = 20 of 10, 20, 100, 200).
DEFAULT_KNN_KS = (1, 5, 10, 20, 50)
METRICS = ("cosine", "l2")
VOTES = ("auto", "majority", "dino")
NORMALIZATIONS = ("auto", "truncate-renorm", "normalize-truncate", "none")
INDEXES = ("flat", "ivf", "hnsw")
BACKENDS = ("auto", "faiss", "torch")
_FAISS_FIX = "install it with `pip install 'critmass[knn]'` (faiss-cpu), or pass backend='torch' (exact search only)"


def _choice(value, valid, name: str) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {value!r}{closest(str(value), valid)}")
    return value


def check_metrics(metric) -> list[str]:
    """One metric name or a list of them (chosen on validation together with k)."""
    names = [metric] if isinstance(metric, str) else list(metric) if isinstance(metric, Sequence) else [metric]
    if not names:
        raise ConfigError("metric must name at least one of cosine, l2; got an empty list")
    out = [_choice(m, METRICS, "metric") for m in names]
    return list(dict.fromkeys(out))


def resolve_normalization(normalization: str, metric: str) -> str:
    """'auto' means truncate-renorm for cosine, none for L2; cosine without normalisation is refused."""
    norm = _choice(normalization, NORMALIZATIONS, "normalization")
    if norm == "auto":
        return "truncate-renorm" if metric == "cosine" else "none"
    if metric == "cosine" and norm == "none":
        raise ConfigError("metric 'cosine' needs normalised vectors but normalization='none'; pass "
                          "normalization='truncate-renorm' (or 'normalize-truncate'), or metric='l2'")
    return norm


def resolve_vote(vote: str, metric: str) -> str:
    """'auto' means DINO-weighted for cosine and majority for L2; DINO weights need cosine similarities."""
    v = _choice(vote, VOTES, "vote")
    if v == "auto":
        return "dino" if metric == "cosine" else "majority"
    if v == "dino" and metric != "cosine":
        raise ConfigError("vote='dino' weights neighbours by exp(cosine / temperature) and needs metric='cosine'; "
                          "use vote='majority' (or 'auto') with metric='l2'")
    return v


def check_ks(ks, *, name: str = "ks") -> list[int]:
    """A non-empty, sorted, duplicate-free list of positive neighbour counts."""
    vals = [ks] if isinstance(ks, numbers.Integral) else list(ks) if isinstance(ks, Sequence) else None
    if not vals:
        raise ConfigError(f"{name} must be a positive integer or a non-empty list of them; got {ks!r}")
    return sorted({check_positive_int(k, name=name) for k in vals})


def _import_faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def faiss_version() -> str | None:
    faiss = _import_faiss()
    return None if faiss is None else str(getattr(faiss, "__version__", "unknown"))


def resolve_backend(backend: str, index: str, device) -> str:
    """'faiss' or 'torch': what does the search. 'auto': faiss, except for an exact search on a CUDA device
    when the installed faiss has no GPUs (torch's products then run on the GPU) or when faiss is missing."""
    b = _choice(backend, BACKENDS, "backend")
    idx = _choice(index, INDEXES, "index")
    faiss = _import_faiss()
    if b == "auto":
        if faiss is None:
            if idx != "flat":
                raise ConfigError(f"index={idx!r} needs faiss, which is not installed; {_FAISS_FIX}")
            logger.info("faiss is not installed: exact neighbour search with torch")
            return "torch"
        cuda = str(device).startswith("cuda")
        if cuda and idx == "flat" and faiss.get_num_gpus() == 0:
            return "torch"
        return "faiss"
    if b == "faiss" and faiss is None:
        raise ConfigError(f"backend='faiss' but faiss is not installed; {_FAISS_FIX}")
    if b == "torch" and idx != "flat":
        raise ConfigError(f"backend='torch' does exact search only; pass index='flat' or backend='faiss' for {idx!r}")
    return b


class SubsetVectors:
    """The search vectors of column subsets of one set of rows, under one normalisation.

    ``X`` is (n, D); ``mean`` (D,) or None is subtracted first; for ``'normalize-truncate'`` the norms of
    the whole (centred) rows are computed once and shared by every subset.
    """

    def __init__(self, X, normalization: str, mean=None):
        self.X = X
        self.normalization = normalization
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self._full_norm = None
        if normalization == "normalize-truncate":
            sq = np.zeros(X.shape[0])
            for a in range(0, X.shape[0], 8192):
                block = self._centred(np.asarray(X[a : a + 8192], dtype=np.float64), None)
                sq[a : a + len(block)] = np.einsum("ij,ij->i", block, block)
            self._full_norm = np.sqrt(sq)

    def _centred(self, block, cols):
        if self.mean is None:
            return block
        return block - (self.mean if cols is None else self.mean[cols])

    def get(self, cols) -> np.ndarray:
        """(n, len(cols)) float32 C-contiguous vectors of the subset."""
        v = self._centred(np.take(np.asarray(self.X), cols, axis=1).astype(np.float64), cols)
        if self.normalization == "truncate-renorm":
            norm = np.linalg.norm(v, axis=1, keepdims=True)
        elif self.normalization == "normalize-truncate":
            norm = self._full_norm[:, None]
        else:
            norm = None
        if norm is not None:
            v = v / np.where(norm > 0, norm, 1.0)  # a zero vector stays zero: similarity 0 to everything
        return np.ascontiguousarray(v, dtype=np.float32)


class NeighbourIndex:
    """One searchable gallery: exact or approximate, FAISS or torch. Scores are similarities (larger is
    nearer): the inner product for cosine, minus the squared distance for L2."""

    def __init__(self, gallery: np.ndarray, metric: str, *, index: str = "flat", backend: str = "faiss",
                 device="cpu", nlist: int | None = None, nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128,
                 ef_construction: int = 40, seed: int = 0, codec=None):
        self.metric, self.index_kind, self.backend = metric, index, backend
        self.n, self.d = gallery.shape
        self.device = str(device)
        self._gallery = gallery  # float32 (n, d); exact similarities (full-ranking mAP) use it
        self.coded = None  # a fitted codec (critmass.codecs) searches its codes instead of the float vectors
        self.bytes_per_vector, self.codebook_bytes, self.codec_params = 4 * self.d, 0, {}
        if codec is not None and codec.name != DEFAULT_CODEC:
            self.coded = codec.fit(gallery, metric, seed=seed)  # trained on the gallery only
            self.bytes_per_vector = self.coded.bytes_per_vector
            self.codebook_bytes, self.codec_params = self.coded.codebook_bytes, self.coded.params
            return
        if backend == "torch":
            import torch

            self._g = torch.from_numpy(gallery).to(self.device)
            self._gsq = (self._g * self._g).sum(1) if metric == "l2" else None
            return
        faiss = _import_faiss()
        mt = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        if index == "flat":
            idx = faiss.IndexFlatIP(self.d) if metric == "cosine" else faiss.IndexFlatL2(self.d)
        elif index == "ivf":
            self.nlist = int(nlist) if nlist is not None else default_nlist(self.n)
            quantizer = faiss.IndexFlatIP(self.d) if metric == "cosine" else faiss.IndexFlatL2(self.d)
            idx = faiss.IndexIVFFlat(quantizer, self.d, self.nlist, mt)
            idx.cp.seed = int(seed)  # the k-means of the coarse quantizer (and its subsample) is seeded
            idx.train(gallery)
            idx.nprobe = min(int(nprobe), self.nlist)
            self._quantizer = quantizer  # keep it alive as long as the index
        else:
            idx = faiss.IndexHNSWFlat(self.d, int(hnsw_m), mt)
            idx.hnsw.efConstruction = int(ef_construction)
            idx.hnsw.efSearch = int(ef_search)
        if self.device.startswith("cuda") and faiss.get_num_gpus() > 0 and index != "hnsw":
            self._res = faiss.StandardGpuResources()
            dev = int(self.device.split(":")[1]) if ":" in self.device else 0
            idx = faiss.index_cpu_to_gpu(self._res, dev, idx)
        idx.add(gallery)
        self._index = idx

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids), each (n_queries, k), nearest first."""
        k = min(int(k), self.n)
        if self.coded is not None:
            return self.coded.search(queries, k)
        if self.backend == "torch":
            return self._torch_search(queries, k)
        scores, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        if self.metric == "l2":
            scores = -scores
        if (ids < 0).any():  # an approximate index can return fewer than k hits (IVF with few probes)
            scores = np.where(ids < 0, -np.inf, scores)
        return scores, ids

    def _torch_search(self, queries, k, chunk: int = 4096):
        import torch

        s_out = np.empty((len(queries), k), dtype=np.float32)
        i_out = np.empty((len(queries), k), dtype=np.int64)
        step = max(1, min(chunk, 2**26 // max(self.n, 1)))
        for a in range(0, len(queries), step):
            q = torch.from_numpy(np.ascontiguousarray(queries[a : a + step])).to(self.device)
            s = q @ self._g.T
            if self.metric == "l2":
                s = 2 * s - self._gsq[None, :] - (q * q).sum(1, keepdim=True)
            v, i = torch.topk(s, k, dim=1)
            s_out[a : a + len(q)] = v.cpu().numpy()
            i_out[a : a + len(q)] = i.cpu().numpy()
        return s_out, i_out

    def similarities(self, queries: np.ndarray, chunk: int = 2048):
        """Yield ``(offset, scores)`` of every query against the whole gallery, as torch tensors (exact)."""
        import torch

        metric = self.metric
        if self.coded is not None:  # the codec's view: its query vectors against its reconstructed gallery
            queries, metric = self.coded.query_vectors(queries), self.coded.score_metric
            g = torch.from_numpy(np.ascontiguousarray(self.coded.reconstruct(), dtype=np.float32))
        else:
            g = self._g if self.backend == "torch" else torch.from_numpy(self._gallery).to(
                self.device if self.device.startswith("cuda") else "cpu")
        gsq = (g * g).sum(1) if metric == "l2" else None
        step = max(1, min(chunk, 2**25 // max(self.n, 1)))
        for a in range(0, len(queries), step):
            q = torch.from_numpy(np.ascontiguousarray(queries[a : a + step])).to(g.device)
            s = q @ g.T
            if gsq is not None:
                s = 2 * s - gsq[None, :] - (q * q).sum(1, keepdim=True)
            yield a, s

    def pair_scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Similarities (n_queries, m) of each query to the gallery rows ``ids[i]``, as this index scores them."""
        if self.coded is not None:
            return self.coded.pair_scores(queries, ids)
        return pair_scores(queries, ids, lambda i: self._gallery[i], self.metric)


def _mean(X, chunk: int = 8192) -> np.ndarray:
    """Column means in float64, streamed over row chunks."""
    total = np.zeros(X.shape[1])
    for a in range(0, X.shape[0], chunk):
        total += np.asarray(X[a : a + chunk]).sum(0, dtype=np.float64)
    return total / X.shape[0]


def default_nlist(n: int) -> int:
    """IVF lists: about 4 sqrt(n), and at least 39 training points per list (FAISS's own minimum)."""
    return int(max(1, min(round(4 * np.sqrt(n)), n // 39)))


def vote(labels: np.ndarray, scores: np.ndarray, ks: Sequence[int], n_classes: int, how: str,
         temperature: float = 0.07) -> dict[int, np.ndarray]:
    """Predicted class positions for every k of ``ks`` from the sorted neighbours' labels and scores.

    ``'majority'``: the most frequent class among the k nearest; ``'dino'``: the class with the largest sum
    of ``exp(score / temperature)`` (DINO's weighted vote, scores = cosine similarities). Ties go to the
    smallest class label (as scikit-learn's ``KNeighborsClassifier``). Missing neighbours (``-inf`` score
    from an approximate index) do not vote.
    """
    n, kmax = labels.shape
    valid = np.isfinite(scores)
    if how == "dino":
        w = np.exp((scores.astype(np.float64) - np.where(valid, scores, 0).max(1, keepdims=True)) / temperature)
        w = np.where(valid, w, 0.0)  # shifting by the row max leaves the argmax unchanged and avoids overflow
    else:
        w = valid.astype(np.float64)
    votes = np.zeros((n, n_classes))
    rows = np.arange(n)
    out = {}
    want = set(int(k) for k in ks)
    for j in range(kmax):
        np.add.at(votes, (rows, np.where(valid[:, j], labels[:, j], 0)), w[:, j])
        if j + 1 in want:
            out[j + 1] = votes.argmax(1)
    for k in want:
        if k > kmax:
            out[k] = out[kmax] if kmax in out else votes.argmax(1)
    return out


def vote_weights(labels: np.ndarray, scores: np.ndarray, k: int, n_classes: int, how: str,
                 temperature: float = 0.07) -> np.ndarray:
    """The (n, n_classes) vote totals of the ``k`` nearest neighbours, summed in :func:`vote`'s order (so that
    their argmax is :func:`vote`'s prediction, ties included)."""
    n, kmax = labels.shape
    valid = np.isfinite(scores)
    if how == "dino":
        w = np.exp((scores.astype(np.float64) - np.where(valid, scores, 0).max(1, keepdims=True)) / temperature)
        w = np.where(valid, w, 0.0)
    else:
        w = valid.astype(np.float64)
    votes = np.zeros((n, n_classes))
    rows = np.arange(n)
    for j in range(min(int(k), kmax)):
        np.add.at(votes, (rows, np.where(valid[:, j], labels[:, j], 0)), w[:, j])
    return votes


class KNNProbe(ClassifierMixin, BaseEstimator):
    """k-nearest-neighbour classifier probe(s) on column subsets, k (and metric) chosen on validation.

    For each subset the gallery is the training rows (the fit rows: train minus the validation rows when
    those are carved from it); every value of ``ks`` (and of ``metric`` when several) is scored on the
    validation split and the choice follows the probes' one-standard-error rule: among the values whose
    validation accuracy is within one binomial standard error (at least one sample) of the best, the
    metric listed first, then the largest k (the smoothest vote). ``refit=True`` adds the validation rows
    to the gallery afterwards.

    A scikit-learn classifier: ``predict``, ``predict_proba`` (the vote shares of the chosen k: the weighted
    share of each class among the k nearest) and ``score`` answer for the first subset's probe (the full
    layer when ``subsets`` is None); the ``*_subsets`` methods for every subset. ``sample_weight`` is not
    taken.

    Parameters
    ----------
    ks : int or sequence of int, default (1, 5, 10, 20, 50)
        Neighbour counts compared on validation (values above the gallery size are clipped to it).
    metric : {'cosine', 'l2'} or a list of both, default 'cosine'
    vote : {'auto', 'majority', 'dino'}, default 'auto'
        'majority' (uniform weights, scikit-learn's ``weights='uniform'``) or 'dino' (weights
        ``exp(cos / temperature)``); 'auto' means dino for cosine, majority for L2.
    temperature : float, default 0.07
    normalization : {'auto', 'truncate-renorm', 'normalize-truncate', 'none'}, default 'auto'
        See the module docstring; 'auto' means truncate-renorm for cosine, none for L2.
    center : bool, default False
        Subtract the gallery's mean (of every neuron) before normalising.
    index : {'flat', 'ivf', 'hnsw'}, default 'flat'
        Exact search, or FAISS IVF (``nlist`` lists, ``nprobe`` probed) / HNSW (``hnsw_m``, ``ef_search``).
    backend : {'auto', 'faiss', 'torch'}, default 'auto'
    codec : str, default 'float32'
        How the gallery vectors are stored and searched (:mod:`critmass.codecs`: 'float16', 'int8', 'binary',
        'binary-rerank', 'pq', 'opq', ...); the quantiser is trained on the gallery of each subset only,
        queries are never used. Codecs other than float32 search exhaustively (``index='flat'``) with faiss.
    subsets : list of int arrays, optional
        Column subsets, one probe each; ``None``: one probe on all columns.
    val_fraction : float, default 0.1
        Share of the training rows carved (stratified, seeded by ``random_state``) for validation when no
        ``X_val`` is given and there is something to choose.
    refit : bool, default False
    device : str, default 'auto'
    random_state : int, default 0
        Seeds the validation split and the IVF k-means.

    Attributes
    ----------
    classes_ : ndarray
    k_ : ndarray (n_subsets,) of int
        The chosen k of every subset.
    metric_ : list of str
        The chosen metric of every subset.
    votes_, normalizations_ : list of str
        The vote and normalisation of every subset's chosen metric.
    val_scores_ : ndarray (n_subsets, n_metrics, n_ks)
        Validation accuracy of every grid value (NaN without validation).
    scores_ : ndarray (n_subsets,)
        Validation accuracy of the chosen value.
    choice_margins_ : ndarray (n_subsets,)
        How far each choice is from the rule's boundaries, in validation samples (NaN: nothing to choose).
    ks_ : list of int
        The grid actually searched (clipped to the gallery size).
    n_train_, n_val_ : int
        Gallery rows searched by the validation queries, and validation rows.
    bytes_per_vector_ : ndarray (n_subsets,) of int
        What the codec stores per gallery vector of each subset (``4 k`` for float32).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> probe = KNNProbe(ks=[1, 5], device="cpu").fit(X[:1500], y[:1500])
    >>> probe.score(X[1500:], y[1500:]) > 0.9
    True
    """

    _solver = "knn"
    _has_proba = True

    def __init__(self, ks=DEFAULT_KNN_KS, *, metric="cosine", vote: str = "auto", temperature: float = 0.07,
                 normalization: str = "auto", center: bool = False, index: str = "flat", nlist: int | None = None,
                 nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, backend: str = "auto",
                 codec: str = DEFAULT_CODEC, subsets=None, val_fraction: float = 0.1, refit: bool = False,
                 device: str = "auto", random_state: int | None = 0):
        self.ks = ks
        self.metric = metric
        self.vote = vote
        self.temperature = temperature
        self.normalization = normalization
        self.center = center
        self.index = index
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.backend = backend
        self.codec = codec
        self.subsets = subsets
        self.val_fraction = val_fraction
        self.refit = refit
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------------------------ settings
    def _settings(self) -> dict:
        """Validated options, resolved per metric; raises one-line ConfigErrors."""
        from ._base import resolve_device

        metrics = check_metrics(self.metric)
        check_ks(self.ks)
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not np.isfinite(t) or t <= 0:
            raise ConfigError(f"temperature must be a finite number > 0; got {t!r}")
        if not isinstance(self.center, (bool, np.bool_)):
            raise ConfigError(f"center must be True or False; got {self.center!r}")
        for name in ("nprobe", "hnsw_m", "ef_search"):
            check_positive_int(getattr(self, name), name=name)
        if self.nlist is not None:
            check_positive_int(self.nlist, name="nlist")
        device = resolve_device(self.device)
        index = _choice(self.index, INDEXES, "index")
        codec = make_codec(self.codec)
        codec.check()
        if codec.name != DEFAULT_CODEC:
            if index != "flat":
                raise ConfigError(f"codec {codec.spec!r} searches its codes exhaustively; pass index='flat' "
                                  f"(or codec 'float32' for index {index!r})")
            if self.backend == "torch":
                raise ConfigError(f"codec {codec.spec!r} searches its codes with faiss; pass backend='auto' or "
                                  "'faiss' (backend='torch' searches float32 vectors only)")
        return {
            "metrics": metrics,
            "votes": [resolve_vote(self.vote, m) for m in metrics],
            "normalizations": [resolve_normalization(self.normalization, m) for m in metrics],
            "index": index, "backend": resolve_backend(self.backend, index, device), "device": str(device),
            "codec": codec,
        }

    def _index_kwargs(self, s: dict) -> dict:
        return dict(index=s["index"], backend=s["backend"], device=s["device"], nlist=self.nlist, nprobe=self.nprobe,
                    hnsw_m=self.hnsw_m, ef_search=self.ef_search, seed=0 if self.random_state is None else
                    int(self.random_state), codec=s["codec"])

    def _record_codec(self, i: int, idx: "NeighbourIndex") -> None:
        """Remember the codec's resolved parameters and codebook size for subset ``i`` (its bytes per vector are
        known before training: ``bytes_per_vector_``, which the index agrees with)."""
        self.bytes_per_vector_[i] = idx.bytes_per_vector
        self.codec_params_[i] = {"params": idx.codec_params, "codebook_bytes": int(idx.codebook_bytes)}

    def _check_subsets(self, d: int) -> list[np.ndarray]:
        from ._base import BaseProbe

        return BaseProbe._check_subsets(self, d)  # the one subset check of every probe

    def _split(self, X, y, X_val, y_val, need_val: bool):
        """(gallery rows, validation (X, rows, y) or None) as BaseProbe.fit makes them."""
        fit_rows = np.arange(len(y))
        if X_val is not None or y_val is not None:
            if X_val is None or y_val is None:
                raise ConfigError("pass both X_val and y_val, or neither")
            xv = check_features(X_val, name="validation features")
            if xv.shape[1] != X.shape[1]:
                raise FeatureError(f"validation features have {xv.shape[1]} columns but training features have "
                                   f"{X.shape[1]}; both must come from the same layer")
            if len(y_val) != xv.shape[0]:
                raise FeatureError(f"validation labels have {len(y_val)} entries but the validation features have "
                                   f"{xv.shape[0]} rows; pass matching arrays")
            yv = encode_labels(self._fit_labels, y_val, "validation")
            return fit_rows, (xv, np.arange(len(yv)), yv)
        if need_val and self.val_fraction:
            seed = 0 if self.random_state is None else int(self.random_state)
            tr, va = train_val_indices(y, float(self.val_fraction), seed=seed)
            return tr, (X, va, y[va])
        return fit_rows, None

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, X, y, *, X_val=None, y_val=None):
        """Choose k (and metric) of every subset on validation; keep the gallery for prediction.

        Parameters
        ----------
        X : array (n_samples, n_features)
            Training features: the gallery.
        y : array (n_samples,)
        X_val, y_val : arrays, optional
            Validation split; without it and when the grid has several values, ``val_fraction`` of the
            training rows are carved out (and left out of the gallery).

        Returns
        -------
        self
        """
        self._fit(X, y, X_val=X_val, y_val=y_val)
        return self

    def _fit(self, X, y, *, X_val=None, y_val=None, X_test=None, progress=None):
        X, y = validate_fit(self, X, y)
        labels = self.classes_
        self._fit_labels = labels
        self.classes_ = np.arange(len(labels))  # the search works on label positions; the labels return below
        try:
            pred = self._fit_codes(X, y, X_val, y_val, X_test, progress)
        finally:
            self.classes_ = labels
            del self._fit_labels
        return None if pred is None else [labels[p] for p in pred]

    def _fit_codes(self, X, y, X_val, y_val, X_test, progress):
        s = self._settings()
        subsets = self._check_subsets(X.shape[1])
        grid = check_ks(self.ks)
        fit_rows, val = self._split(X, y, X_val, y_val, need_val=len(grid) * len(s["metrics"]) > 1)
        if val is None and len(grid) * len(s["metrics"]) > 1:
            raise ConfigError(f"{len(grid) * len(s['metrics'])} (metric, k) values need validation data to choose "
                              "from; pass X_val and y_val, set val_fraction > 0, or pass a single k and metric")
        n_gal = len(fit_rows)
        self.ks_ = sorted({min(k, n_gal) for k in grid})
        C = len(self.classes_)
        y_gal = np.searchsorted(self.classes_, y[fit_rows])
        G = np.asarray(X[fit_rows], dtype=np.float32) if len(fit_rows) != len(y) else X
        Xv = None if val is None else np.asarray(val[0][val[1]], dtype=np.float32)
        yv = None if val is None else np.searchsorted(self.classes_, val[2])
        nS, nM = len(subsets), len(s["metrics"])
        self.val_scores_ = np.full((nS, nM, len(self.ks_)), np.nan)
        self.bytes_per_vector_ = np.array([s["codec"].bytes_per_vector(len(c), n_gal) for c in subsets], dtype=np.int64)
        self.codec_params_ = [{"params": {}, "codebook_bytes": 0} for _ in subsets]
        choice = np.zeros((nS, 2), dtype=np.int64)  # (metric position, k position)
        margins = np.full(nS, np.nan)
        test_pred = [None] * nS if X_test is not None else None
        refit_now = self.refit and val is not None
        kmax = self.ks_[-1]
        with faiss_threads():
            per_metric = []
            mean = _mean(G) if self.center else None
            for m, metric in enumerate(s["metrics"]):
                norm = s["normalizations"][m]
                gv = SubsetVectors(G, norm, mean)
                vv = None if Xv is None else SubsetVectors(Xv, norm, mean)
                tv = SubsetVectors(X_test, norm, mean) if (X_test is not None and not refit_now) else None
                per_metric.append((gv, vv, tv))
            for i, cols in enumerate(subsets):
                test_nb = {}
                for m, metric in enumerate(s["metrics"]):
                    gv, vv, tv = per_metric[m]
                    idx = NeighbourIndex(gv.get(cols), metric, **self._index_kwargs(s))
                    self._record_codec(i, idx)
                    if vv is not None:
                        sc, ids = idx.search(vv.get(cols), kmax)
                        preds = vote(y_gal[ids.clip(0)], sc, self.ks_, C, s["votes"][m], self.temperature)
                        self.val_scores_[i, m] = [np.mean(preds[k] == yv) for k in self.ks_]
                    if tv is not None:
                        test_nb[m] = idx.search(tv.get(cols), kmax)
                    del idx
                m_pos, k_pos, margins[i] = _choose(self.val_scores_[i], len(yv) if yv is not None else 0)
                choice[i] = (m_pos, k_pos)
                if test_nb:
                    m, j = choice[i]
                    sc, ids = test_nb[int(m)]
                    k = self.ks_[int(j)]
                    test_pred[i] = self.classes_[vote(y_gal[ids.clip(0)], sc, [k], C, s["votes"][m],
                                                      self.temperature)[k]]
                if progress is not None:
                    progress(1)
        self.subsets_ = subsets
        self.metric_ = [s["metrics"][int(m)] for m, _ in choice]
        self.votes_ = [s["votes"][int(m)] for m, _ in choice]
        self.normalizations_ = [s["normalizations"][int(m)] for m, _ in choice]
        self.k_ = np.array([self.ks_[int(j)] for _, j in choice], dtype=np.int64)
        self.scores_ = np.array([self.val_scores_[i, m, j] for i, (m, j) in enumerate(choice)])
        self.choice_margins_ = margins
        self.n_train_ = int(n_gal)
        self.n_val_ = 0 if val is None else int(len(val[1]))
        self.settings_ = s
        # The gallery prediction searches: the fit rows, plus the validation rows with refit.
        if refit_now:
            self._gallery = np.concatenate([np.asarray(G, dtype=np.float32), Xv])
            self._gallery_y = np.concatenate([y_gal, yv])
            self.n_train_ = int(len(self._gallery_y))
        else:
            self._gallery, self._gallery_y = G, y_gal
        if X_test is not None and refit_now:
            test_pred = list(self._predict_positions(X_test))
        return test_pred

    # ---------------------------------------------------------------------------------- predict
    def _check_fitted(self, X):
        if not hasattr(self, "k_"):
            raise ProbeNotFittedError(f"this {type(self).__name__} instance is not fitted yet; call fit(X, y) first")
        return validate_predict(self, X)

    def kneighbors_subsets(self, X, k: int | None = None, *, first: bool = False):
        """Per subset (only the first with ``first``), the (scores, gallery positions) of the ``k`` (default:
        the chosen k) nearest rows."""
        X = self._check_fitted(X)
        s = self.settings_
        out = []
        with faiss_threads():
            cache = {}
            for i, cols in enumerate(self.subsets_[:1] if first else self.subsets_):
                metric, norm = self.metric_[i], self.normalizations_[i]
                if metric not in cache:
                    mean = _mean(self._gallery) if self.center else None
                    cache[metric] = (SubsetVectors(self._gallery, norm, mean), SubsetVectors(X, norm, mean))
                gv, qv = cache[metric]
                idx = NeighbourIndex(gv.get(cols), metric, **self._index_kwargs(s))
                out.append(idx.search(qv.get(cols), int(self.k_[i] if k is None else k)))
        return out

    def _predict_positions(self, X, first: bool = False) -> list[np.ndarray]:
        out = []
        for i, (sc, ids) in enumerate(self.kneighbors_subsets(X, first=first)):
            k = int(self.k_[i])
            out.append(vote(self._gallery_y[ids.clip(0)], sc, [k], len(self.classes_), self.votes_[i],
                            self.temperature)[k])
        return out

    def predict_subsets(self, X) -> np.ndarray:
        """Predicted labels of every subset's probe, shape (n_subsets, n_samples)."""
        pos = self._predict_positions(X)
        return np.stack([self.classes_[p] for p in pos])

    @available_if(lambda self: self._has_proba)
    def predict_proba_subsets(self, X) -> list[np.ndarray]:
        """Vote shares of every subset's probe at its chosen k, each (n_samples, n_classes): the (weighted)
        share of each class among the k nearest gallery rows; their argmax is the prediction."""
        return self._shares(X)

    def _shares(self, X, first: bool = False) -> list[np.ndarray]:
        out = []
        for i, (sc, ids) in enumerate(self.kneighbors_subsets(X, first=first)):
            v = vote_weights(self._gallery_y[ids.clip(0)], sc, int(self.k_[i]), len(self.classes_), self.votes_[i],
                             self.temperature)
            out.append(v / v.sum(axis=1, keepdims=True))
        return out

    def score_subsets(self, X, y) -> np.ndarray:
        """Accuracy of every subset's probe on ``(X, y)``, shape (n_subsets,)."""
        pred = self.predict_subsets(X)
        y = np.asarray(y).ravel()
        if len(y) != pred.shape[1]:
            raise FeatureError(f"labels have {len(y)} entries but the features have {pred.shape[1]} rows; "
                               "pass matching arrays")
        return (pred == y[None, :]).mean(axis=1)

    def predict(self, X) -> np.ndarray:
        """Predicted labels of the first subset's probe (the full layer when ``subsets`` is None)."""
        pos = self._predict_positions(X, first=True)[0]
        return self.classes_[pos]

    @available_if(lambda self: self._has_proba)
    def predict_proba(self, X) -> np.ndarray:
        """Vote shares of the first subset's probe (see :meth:`predict_proba_subsets`), (n_samples, n_classes)."""
        return self._shares(X, first=True)[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------------------- run_probes
    def _check_options(self) -> None:
        """Validate the parameters before any work (a run checks its solver options with this)."""
        self._settings()

    def _run_fit(self, x_fit, y_fit, x_val, y_val, x_test, y_test, progress=None) -> list[np.ndarray]:
        """Fit (on the run's validation split) and return, per subset, which test rows it got right."""
        pred = self._fit(x_fit, y_fit, X_val=x_val, y_val=y_val, X_test=x_test, progress=progress)
        return [p == np.asarray(y_test) for p in pred]

    def _row_values(self, i: int) -> dict:
        """The result-table columns of subset ``i`` (:mod:`critmass.probes._rows`): ``reg`` holds the chosen k."""
        return {"reg": float(self.k_[i]), "reg_applied": float(self.k_[i]),
                "choice_margin": float(self.choice_margins_[i]), "train_accuracy": np.nan,
                "val_accuracy": float(self.scores_[i]), "n_train": int(self.n_train_), "n_val": int(self.n_val_),
                "n_iter": 0, "knn_k": int(self.k_[i]), "knn_metric": self.metric_[i], "knn_vote": self.votes_[i],
                "normalization": self.normalizations_[i], **self._codec_values(i)}

    def _codec_values(self, i: int) -> dict:
        """``bytes_per_vector`` of subset ``i`` and the codec's resolved parameters (for the row's config)."""
        return {"bytes_per_vector": int(self.bytes_per_vector_[i]), "codec_params": self.codec_params_[i]}

    def _run_config(self) -> dict:
        """What a run records of its settings in ``config['neighbours']``."""
        s = self._settings()
        skip = ("subsets", "device", "refit", "random_state", "val_fraction", "codec")
        return {**{k: v for k, v in self.get_params().items() if k not in skip},
                **{k: s[k] for k in ("metrics", "votes", "normalizations", "index", "backend")}}


def _choose(val_scores: np.ndarray, n_val: int) -> tuple[int, int, float]:
    """(metric, k) positions of the choice on validation and its ``choice_margin``: the probe-wide rule
    (:func:`critmass.probes._choice.choose`) with the metric listed first, then the larger k, as the more
    regularised candidate. Without validation: the first metric, largest k (margin NaN)."""
    n_m, n_k = val_scores.shape
    if n_val == 0 or not np.isfinite(val_scores).any():
        return 0, n_k - 1, float("nan")
    correct = np.rint(val_scores * n_val).ravel()  # NaN (not evaluated) stays NaN: never chosen
    preference = [m * n_k + j for m in range(n_m) for j in range(n_k - 1, -1, -1)]
    pick, margin = choose(correct, preference, n_val)
    return pick // n_k, pick % n_k, margin
