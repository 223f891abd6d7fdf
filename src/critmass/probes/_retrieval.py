"""Retrieval probes: recall@k and mean average precision of same-label neighbours, queries against a gallery.

A query's relevant items are the gallery rows with its label. ``recall@k`` is the share of queries with at
least one relevant item among their ``k`` nearest gallery rows (the metric-learning Recall@K; recall@1 is
the 1-NN accuracy). ``AP@c`` of a query with ``R`` relevant gallery rows is
``sum_{i <= c} P(i) rel(i) / min(R, c)``, ``P(i)`` the share of relevant rows among the ``i`` nearest;
``map`` is its mean over the queries. ``map_at=None`` ranks the whole gallery (exact, the usual full mAP,
``O(n_queries n_gallery log n_gallery)``); an int cutoff ``c`` (default 100) uses the same neighbour search
as recall@k. Queries are never gallery rows (test queries search the train gallery), so nothing is excluded.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import check_positive_int
from ..codecs import DEFAULT_CODEC
from ..exceptions import ConfigError, FeatureError
from ._sklearn import ProbeNotFittedError, encode_labels, validate_fit, validate_predict
from ._knn import KNNProbe, NeighbourIndex, SubsetVectors, _mean, check_ks, faiss_threads

__all__ = ["RetrievalProbe", "DEFAULT_RECALL_KS", "DEFAULT_MAP_AT", "recall_hits", "average_precision", "rank_agreement",
           "AGREEMENT_OVERLAP", "AGREEMENT_DEPTH"]

DEFAULT_RECALL_KS = (1, 5, 10)
DEFAULT_MAP_AT = 100
#: Rank agreement with the full float32 vector: overlap of the top-10 lists, Spearman over the top-100.
AGREEMENT_OVERLAP, AGREEMENT_DEPTH = 10, 100


def recall_hits(rel: np.ndarray, ks) -> np.ndarray:
    """(n_queries, len(ks)) bool: does a relevant item appear among the first k of each ranked list?"""
    first = np.where(rel.any(1), rel.argmax(1), rel.shape[1])  # position of the first relevant item
    return first[:, None] < np.asarray(ks)[None, :]


def average_precision(rel: np.ndarray, n_relevant: np.ndarray, cutoff: int | None = None) -> np.ndarray:
    """AP@cutoff of ranked relevance lists ``rel`` (n_queries, n_ranked), nearest first.

    ``sum_{i <= c} P(i) rel(i) / min(R, c)`` with ``R = n_relevant`` (relevant items in the whole gallery)
    and ``c = cutoff`` (None: the whole list, which must then rank the whole gallery).
    """
    c = rel.shape[1] if cutoff is None else min(int(cutoff), rel.shape[1])
    r = rel[:, :c].astype(np.float64)
    prec = np.cumsum(r, axis=1) / np.arange(1, c + 1)[None, :]
    denom = np.minimum(np.asarray(n_relevant, dtype=np.float64), c if cutoff is not None else np.inf)
    return np.where(denom > 0, (prec * r).sum(1) / np.maximum(denom, 1), 0.0)


def rank_agreement(reference, ids: np.ndarray, ref_scores_here: np.ndarray) -> dict:
    """Per query: overlap@10 of the top-10 lists and Spearman correlation over the full layer's top-100.

    ``reference`` is the full float32 vector's (scores, ids), nearest first, at least 100 deep (fewer when the
    gallery is smaller); ``ids`` this subset / codec's ranked ids; ``ref_scores_here`` its similarities to the
    reference's ids. overlap@10 = |top10 here & top10 full| / 10; the Spearman correlation is that of the two
    similarity vectors over the reference's top-100 items (Takeshita et al. 2025); a query whose scores are
    all tied in either vector (no order to correlate) counts 0.
    """
    from scipy.stats import rankdata

    ref_scores, ref_ids = reference
    c = min(AGREEMENT_OVERLAP, ref_ids.shape[1], ids.shape[1])
    top_ref, top_here = ref_ids[:, :c], ids[:, :c]
    overlap = (top_here[:, :, None] == top_ref[:, None, :]).any(2).sum(1) / c
    a = rankdata(np.asarray(ref_scores, dtype=np.float64), axis=1)
    b = rankdata(np.asarray(ref_scores_here, dtype=np.float64), axis=1)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    rho = np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), 0.0)
    return {"overlap": overlap.astype(np.float64), "spearman": rho}


def _agreement_values(agreement: dict | None) -> dict:
    """The rows' rank-agreement columns: means over the test queries and their standard errors."""
    if agreement is None:
        return {}
    out = {}
    for name, col in (("overlap", f"overlap_at_{AGREEMENT_OVERLAP}"), ("spearman", f"spearman_top{AGREEMENT_DEPTH}")):
        v = agreement[name]
        out[col] = float(v.mean())
        out[f"{col}_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return out


class RetrievalProbe(KNNProbe):
    """Retrieval probe(s) on column subsets: recall@k and mAP of same-label gallery rows (FAISS search).

    The gallery is the training rows given to ``fit`` (``refit=True`` adds the validation rows); queries
    are the rows passed to :meth:`evaluate_subsets`. Validation data, when given, only report
    ``scores_`` (validation recall@1): retrieval has nothing to choose.

    As a scikit-learn estimator it is the 1-NN classifier whose accuracy is recall@1: ``predict`` gives the
    label of the nearest gallery row (first subset; the full layer when ``subsets`` is None) and ``score``
    its accuracy, recall@1 of the queries. It has no ``predict_proba`` (a nearest row is no distribution).

    Parameters
    ----------
    ks : sequence of int, default (1, 5, 10)
        Cutoffs of recall@k.
    map_at : int or None, default 100
        Cutoff of the mean average precision; None ranks the whole gallery (exact, slower).
    metric : {'cosine', 'l2'}, default 'cosine'
    agreement : bool, default True
        In a run (:func:`~critmass.probes.run_probes`), also measure rank agreement with the full layer's float32
        vectors: overlap@10 of the top-10 lists and the Spearman correlation over the full vector's top-100
        (:func:`rank_agreement`), per test query, averaged (with standard errors).
    normalization, center, index, nlist, nprobe, hnsw_m, ef_search, backend, codec, subsets, refit, device, random_state
        As in :class:`~critmass.probes.KNNProbe`.

    Attributes
    ----------
    classes_, ks_, metric_, normalizations_, n_train_, n_val_
    k_ : ndarray (n_subsets,) of int
        Ones: ``predict`` is the 1-NN label.
    scores_ : ndarray (n_subsets,)
        Validation recall@1 (NaN without validation data).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> probe = RetrievalProbe(device="cpu").fit(X[:1500], y[:1500])
    >>> table = probe.evaluate_subsets(X[1500:], y[1500:])
    >>> bool(table["recall_at_10"][0] >= table["recall_at_1"][0] > 0.9)
    True
    """

    _solver = "retrieval"
    _run_fixed = ("ks",)  # run_probes reports recall_at_1/5/10: the cutoffs are the table's, not an option
    _has_proba = False  # a nearest row is no class distribution: no predict_proba (use KNNProbe's vote shares)
    vote, temperature = "majority", 1.0  # not parameters: KNNProbe's prediction reads them (1-NN: no vote)

    def __init__(self, ks=DEFAULT_RECALL_KS, *, map_at: int | None = DEFAULT_MAP_AT, metric: str = "cosine",
                 normalization: str = "auto", center: bool = False, index: str = "flat", nlist: int | None = None,
                 nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, backend: str = "auto",
                 codec: str = DEFAULT_CODEC, agreement: bool = True, subsets=None, val_fraction: float = 0.0,
                 refit: bool = False, device: str = "auto", random_state: int | None = 0):
        self.ks = ks
        self.map_at = map_at
        self.metric = metric
        self.normalization = normalization
        self.center = center
        self.index = index
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.backend = backend
        self.codec = codec
        self.agreement = agreement
        self.subsets = subsets
        self.val_fraction = val_fraction
        self.refit = refit
        self.device = device
        self.random_state = random_state

    def _settings(self) -> dict:
        if not isinstance(self.metric, str):
            raise ConfigError(f"a retrieval probe takes one metric (cosine or l2); got {self.metric!r}")
        if self.map_at is not None and (isinstance(self.map_at, bool) or not isinstance(self.map_at, numbers.Integral)):
            raise ConfigError(f"map_at must be a positive integer or None (the whole gallery); got {self.map_at!r}")
        if self.map_at is not None:
            check_positive_int(self.map_at, name="map_at")
        if not isinstance(self.agreement, (bool, np.bool_)):
            raise ConfigError(f"agreement must be True or False; got {self.agreement!r}")
        s = super()._settings()
        if self.map_at is None and s["codec"].name == "binary-rerank":
            raise ConfigError("map_at=None ranks the whole gallery, which binary-rerank only re-ranks near the top; "
                              "pass an integer map_at (e.g. 100) or codec 'binary'")
        return s

    def fit(self, X, y, *, X_val=None, y_val=None):
        """Keep the gallery; with validation data, record validation recall@1 in ``scores_``.

        Returns
        -------
        self
        """
        self._fit(X, y, X_val=X_val, y_val=y_val)
        return self

    def _fit(self, X, y, *, X_val=None, y_val=None, X_test=None, y_test=None, progress=None):
        X, y = validate_fit(self, X, y)
        self._fit_labels = self.classes_
        try:
            return self._fit_positions(X, y, X_val, y_val, X_test, y_test, progress)
        finally:
            del self._fit_labels

    def _fit_positions(self, X, y, X_val, y_val, X_test, y_test, progress):
        s = self._settings()
        self.subsets_ = self._check_subsets(X.shape[1])
        self.ks_ = check_ks(self.ks)
        fit_rows, val = self._split(X, y, X_val, y_val, need_val=False)
        self.settings_ = s
        metric, norm = s["metrics"][0], s["normalizations"][0]
        self.metric_ = [metric] * len(self.subsets_)
        self.normalizations_ = [norm] * len(self.subsets_)
        self.k_ = np.ones(len(self.subsets_), dtype=np.int64)
        self.votes_ = ["majority"] * len(self.subsets_)
        self.choice_margins_ = np.full(len(self.subsets_), np.nan)  # retrieval chooses nothing
        self.bytes_per_vector_ = np.array([s["codec"].bytes_per_vector(len(c), len(fit_rows)) for c in self.subsets_],
                                          dtype=np.int64)
        self.codec_params_ = [{"params": {}, "codebook_bytes": 0} for _ in self.subsets_]
        G = np.asarray(X[fit_rows], dtype=np.float32) if len(fit_rows) != len(y) else X
        y_gal = y[fit_rows]
        self.n_train_, self.n_val_ = int(len(fit_rows)), 0 if val is None else int(len(val[1]))
        self.scores_ = np.full(len(self.subsets_), np.nan)
        refit_now = self.refit and val is not None
        if val is not None:
            Xv, yv = np.asarray(val[0][val[1]], dtype=np.float32), val[2]
            # validation recall@1 against the fit rows (the test queries also search them unless refit)
            queries = {"val": (Xv, yv, [1], False)}
            if X_test is not None and not refit_now:
                queries["test"] = self._queries(X_test, y_test)
            results = self._search_all(G, y_gal, queries, progress=None if refit_now else progress,
                                       reference=self._reference_inputs(G, None, X_test))
            self.scores_ = np.array([r["val"][0][:, 0].mean() for r in results])
            if refit_now:
                G, y_gal = np.concatenate([np.asarray(G, dtype=np.float32), Xv]), np.concatenate([y_gal, yv])
                self.n_train_ = int(len(y_gal))
        else:
            results = None
        self._gallery, self._gallery_y = G, y_gal
        if X_test is None:
            return None
        if results is None or refit_now:
            results = self._search_all(G, y_gal, {"test": self._queries(X_test, y_test)}, progress=progress,
                                       reference=self._reference_inputs(G, Xv if refit_now else None, X_test))
        return [(*r["test"], r.get("agreement")) for r in results]  # per subset: hits, AP, rank agreement

    def _reference_inputs(self, G, refit_val, X_test):
        """(gallery, test queries) of the full vectors rank agreement compares with: the full layer's float32
        features when :func:`~critmass.probes.run_probes` passed them (a projection selector's probe sees
        projected coordinates, not the layer), else this probe's own inputs."""
        raw = self.__dict__.get("_full_layer")  # (fit rows, validation rows, test rows) of the raw layer
        if raw is None:
            gallery = G if refit_val is None else np.concatenate([np.asarray(G, dtype=np.float32), refit_val])
            return gallery, X_test
        gallery = raw[0] if refit_val is None else np.concatenate([raw[0], raw[1]])
        return gallery, raw[2]

    def _queries(self, X, y):
        X = validate_predict(self, X)
        y = np.asarray(y)
        if len(y) != X.shape[0]:
            raise FeatureError(f"query labels have {len(y)} entries but the queries have {X.shape[0]} rows; "
                              "pass matching arrays")
        return X, encode_labels(self.__dict__.get("_fit_labels", self.classes_), y, "query"), self.ks_, True

    def _search_all(self, G, y_gal, queries: dict, progress=None, agree_on: str = "test",
                    reference=None) -> list[dict]:
        """Per subset: {name: (hits (n_q, len(ks)) bool, AP (n_q,) or None)} for every query set
        ``name: (X, label positions, recall cutoffs, whether to compute AP)``, and with ``agreement`` the rank
        agreement of the ``agree_on`` queries with the full vectors ``reference = (gallery, queries)`` (default:
        ``G`` and the queries themselves)."""
        s = self.settings_
        metric, norm = self.metric_[0], self.normalizations_[0]
        n_rel = np.bincount(y_gal, minlength=len(self.classes_))
        mean = _mean(G) if self.center else None
        gv = SubsetVectors(G, norm, mean)
        qvs = {name: SubsetVectors(q[0], norm, mean) for name, q in queries.items()}
        out = []
        with faiss_threads():
            if agree_on in queries and self.agreement:
                ref_g, ref_q = reference if reference is not None else (G, queries[agree_on][0])
                reference = self._reference(ref_g, ref_q, metric, norm, s)
            else:
                reference = None
            for i, cols in enumerate(self.subsets_):
                idx = NeighbourIndex(gv.get(cols), metric, **self._index_kwargs(s))
                self._record_codec(i, idx)
                res = {}
                for name, (_, yq, ks, want_map) in queries.items():
                    qv = qvs[name].get(cols)
                    cutoff = self.map_at if want_map else None
                    depth = max(max(ks), cutoff or 0, AGREEMENT_OVERLAP if name == agree_on and reference is not None else 0)
                    sc, ids = idx.search(qv, depth)
                    rel = (y_gal[ids.clip(0)] == yq[:, None]) & np.isfinite(sc)
                    ap = None
                    if want_map and cutoff is not None:
                        ap = average_precision(rel, n_rel[yq], cutoff)
                    elif want_map:
                        ap = self._full_ap(idx, qv, yq, y_gal, n_rel)
                    res[name] = (recall_hits(rel, ks), ap)
                    if name == agree_on and reference is not None:
                        res["agreement"] = rank_agreement(reference, ids, idx.pair_scores(qv, reference[1]))
                out.append(res)
                if progress is not None:
                    progress(1)
        return out

    def _reference(self, G, Q, metric, norm, s):
        """The full vectors' exact float32 top-:data:`AGREEMENT_DEPTH` (scores, ids) of the queries ``Q`` in the
        gallery ``G`` (same normalisation and centring as the probe): what rank agreement compares every
        subset and codec with."""
        mean = _mean(G) if self.center else None
        cols = np.arange(G.shape[1])
        idx = NeighbourIndex(SubsetVectors(G, norm, mean).get(cols), metric,
                             **{**self._index_kwargs(s), "codec": None, "index": "flat"})
        return idx.search(SubsetVectors(Q, norm, mean).get(cols), AGREEMENT_DEPTH)

    @staticmethod
    def _full_ap(idx: NeighbourIndex, qv, yq, y_gal, n_rel) -> np.ndarray:
        """Exact AP over the whole gallery ranking (torch products and sort, in query chunks)."""
        import torch

        ap = np.empty(len(yq))
        yg = torch.from_numpy(y_gal)
        for a, sims in idx.similarities(qv):
            order = torch.argsort(sims, dim=1, descending=True, stable=True).cpu()
            rel = (yg[order] == torch.from_numpy(yq[a : a + len(order)])[:, None]).numpy()
            ap[a : a + len(order)] = average_precision(rel, n_rel[yq[a : a + len(order)]], None)
        return ap

    def evaluate_subsets(self, X, y, *, per_query: bool = False) -> dict:
        """recall@k of every cutoff and mAP for every subset: {'recall_at_<k>': (n_subsets,), 'map': ...}, and with
        ``agreement`` the rank agreement with the full layer's float32 vectors ('overlap_at_10', 'spearman_top100').

        ``X`` are the queries, ``y`` their labels (every label must occur in the gallery). With
        ``per_query`` the arrays are (n_subsets, n_queries): hits (0/1) and average precisions.
        """
        if not hasattr(self, "_gallery"):
            raise ProbeNotFittedError(f"this {type(self).__name__} instance is not fitted yet; call fit(X, y) first")
        results = self._search_all(self._gallery, self._gallery_y, {"q": self._queries(X, y)}, agree_on="q")
        agree = {}
        if self.agreement:
            agree = {f"overlap_at_{AGREEMENT_OVERLAP}": [r["agreement"]["overlap"] for r in results],
                     f"spearman_top{AGREEMENT_DEPTH}": [r["agreement"]["spearman"] for r in results]}
        if per_query:
            out = {f"recall_at_{k}": np.stack([r["q"][0][:, j].astype(np.float64) for r in results])
                   for j, k in enumerate(self.ks_)}
            out["map"] = np.stack([r["q"][1] for r in results])
            return {**out, **{name: np.stack(v) for name, v in agree.items()}}
        out = {f"recall_at_{k}": np.array([r["q"][0][:, j].mean() for r in results]) for j, k in enumerate(self.ks_)}
        out["map"] = np.array([r["q"][1].mean() for r in results])
        return {**out, **{name: np.array([a.mean() for a in v]) for name, v in agree.items()}}

    def score_subsets(self, X, y) -> np.ndarray:
        """Recall@1 of every subset (its 1-NN accuracy), shape (n_subsets,)."""
        if not hasattr(self, "_gallery"):
            return super().score_subsets(X, y)  # raises NotFittedError
        results = self._search_all(self._gallery, self._gallery_y, {"q": (*self._queries(X, y)[:2], [1], False)})
        return np.array([r["q"][0][:, 0].mean() for r in results])

    def predict_subsets(self, X) -> np.ndarray:
        """The label of the nearest gallery row (1-NN) for every subset, shape (n_subsets, n_samples)."""
        return super().predict_subsets(X)

    # ------------------------------------------------------------------------------- run_probes
    def _run_fit(self, x_fit, y_fit, x_val, y_val, x_test, y_test, progress=None) -> list[np.ndarray]:
        """Fit and search the test queries; per subset, which queries' nearest row shares their label."""
        out = self._fit(x_fit, y_fit, X_val=x_val, y_val=y_val, X_test=x_test, y_test=y_test, progress=progress)
        self._test_values = [{**{f"recall_at_{c}": float(hits[:, j].mean()) for j, c in enumerate(self.ks_)},
                              "map": float(ap.mean()), **_agreement_values(agree)} for hits, ap, agree in out]
        return [hits[:, 0] for hits, _, _ in out]

    def _row_values(self, i: int) -> dict:
        """The result-table columns of subset ``i`` (:mod:`critmass.probes._rows`): recall@k and mAP of the test
        queries; nothing chosen (``reg`` and ``choice_margin`` NaN)."""
        return {"reg": np.nan, "reg_applied": np.nan, "choice_margin": np.nan, "train_accuracy": np.nan,
                "val_accuracy": float(self.scores_[i]), "n_train": int(self.n_train_), "n_val": int(self.n_val_),
                "n_iter": 0, "knn_metric": self.metric_[i], "knn_vote": None, "normalization": self.normalizations_[i],
                **self._test_values[i], **self._codec_values(i)}

    def _run_config(self) -> dict:
        config = super()._run_config()
        config.pop("votes")
        return config
