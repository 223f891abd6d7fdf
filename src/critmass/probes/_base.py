"""What every probe shares: input checks, label encoding, standardisation, the validation split, grouping
of subsets into nested chains, choosing the regularisation on validation, refitting and prediction.

A solver only implements ``_prepare`` (statistics shared by all subsets, e.g. one Gram matrix) and
``_fit_chain`` (fit every (size, alpha) problem of one nested chain of subsets at once), or ``_fit_chains``
to fit problems of several chains together.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sklearn.base import BaseEstimator, ClassifierMixin

from .. import _blas as blas
from .._standardize import moments, row_blocks, scale_of, standard_scale
from .._validation import check_features
from ..data import train_val_indices
from ..exceptions import ConfigError, FeatureError
from ._choice import choose
from ._sklearn import ProbeNotFittedError, encode_labels, softmax, validate_fit, validate_predict

__all__ = ["BaseProbe", "resolve_device", "check_alphas", "ConstantSubsetWarning", "standard_scale"]

logger = logging.getLogger(__name__)

_EPS = float(np.finfo(np.float64).eps)
_CONSTANT_FIX = "drop constant neurons first (x[:, x.std(0) > 0])"


class ConstantSubsetWarning(UserWarning):
    """A probe's subset holds only zero-variance neurons: it can learn nothing but the class prior."""


def resolve_device(device) -> torch.device:
    """``'auto'`` (or None) means CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def check_alphas(alphas, *, name: str = "alphas", strictly_positive: bool = False) -> np.ndarray:
    """A non-empty 1-D array of finite regularisation strengths (>= 0, or > 0 when ``strictly_positive``)."""
    try:
        arr = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a float or a list of floats; got {alphas!r}") from None
    bound = "> 0" if strictly_positive else ">= 0"
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or (
            strictly_positive and np.any(arr == 0)):
        raise ConfigError(f"{name} must be finite floats {bound}; got {alphas!r}")
    return np.unique(arr)  # sorted, duplicates dropped


@dataclass
class Chain:
    """Subsets that are nested as sets: every member is the first ``k`` columns of ``head``.

    ``head`` indexes the union of all subsets' columns; ``members`` holds ``(subset id, k, rows)``
    where ``rows`` maps the subset's own column order to positions in ``head[:k]``.
    """

    head: np.ndarray
    members: list

    @property
    def sizes(self) -> list[int]:
        return sorted({k for _, k, _ in self.members})


def _distinct_sets(subsets: Sequence[np.ndarray]) -> tuple[list[int], np.ndarray]:
    """``(fit_index, same)``: the first subset of each distinct column set, and for every subset the position
    in ``fit_index`` of the one with its set."""
    first: dict[bytes, int] = {}
    fit_index, same = [], np.empty(len(subsets), dtype=np.int64)
    for i, s in enumerate(subsets):
        key = np.sort(s).tobytes()
        if key not in first:
            first[key] = len(fit_index)
            fit_index.append(i)
        same[i] = first[key]
    return fit_index, same


def _reorder(W: np.ndarray, fitted: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows of ``W`` (one per column of ``fitted``) in the column order of ``wanted`` (the same set)."""
    if np.array_equal(fitted, wanted):
        return W
    pos = {int(c): r for r, c in enumerate(fitted)}
    return W[np.fromiter((pos[int(c)] for c in wanted), dtype=np.int64, count=len(wanted))]


def nested_chains(subsets: Sequence[np.ndarray], n_union: int) -> list[Chain]:
    """Group subsets (index arrays into ``range(n_union)``) into chains nested as sets.

    Greedy: subsets are visited by size; each joins the chain with the largest top that it contains,
    else starts a new chain. Random subsets of one seed (``order[:k]``) form one chain, so all their
    probes share one factorisation and one pass over the data.
    """
    visit = sorted(range(len(subsets)), key=lambda i: (len(subsets[i]), i))
    chains: list[dict] = []
    for i in visit:
        s = subsets[i]
        in_s = np.zeros(n_union, dtype=bool)
        in_s[s] = True
        best = None
        for c in chains:
            if c["size"] <= len(s) and in_s[c["top"]].all() and (best is None or c["size"] > best["size"]):
                best = c
        if best is None:
            best = {"parts": [], "top": np.empty(0, dtype=np.int64), "in_top": np.zeros(n_union, dtype=bool),
                    "size": 0, "members": []}
            chains.append(best)
        new = s[~best["in_top"][s]]
        if len(new):
            best["parts"].append(new)
            best["in_top"][new] = True
            best["top"] = np.concatenate([best["top"], new])
            best["size"] = len(best["top"])
        best["members"].append((i, len(s)))
    out = []
    for c in chains:
        head = c["top"].astype(np.int64)
        pos = np.full(n_union, -1, dtype=np.int64)
        pos[head] = np.arange(len(head))
        members = [(i, k, pos[subsets[i]]) for i, k in c["members"]]
        out.append(Chain(head, members))
    return out


@dataclass
class ChainFit:
    """What a solver returns for the problems ``(k, alpha)`` of one chain (same order as given).

    ``W[p]`` is (k_p, n_classes) in standardised units over ``head[:k_p]``; ``b`` is (P, n_classes).
    """

    W: list
    b: np.ndarray
    train_accuracy: np.ndarray | Callable  # or a function of problem indices, called for the chosen ones
    val_accuracy: np.ndarray
    n_iter: np.ndarray
    reg_applied: np.ndarray | None = None  # penalty actually applied per problem (None: the nominal alpha)


@dataclass
class Data:
    """Standardised work arrays on the solver's device."""

    X: torch.Tensor  # (n, U); (U, n) for solvers with _transposed; (n_views, n, U) for SGD
    y: torch.Tensor  # (n,) int64 class positions
    X_val: torch.Tensor | None  # laid out like X (single view)
    y_val: torch.Tensor | None
    n_classes: int


def constant_columns(std: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Columns with zero variance up to the rounding of their float64 mean (the rule CKA uses,
    critmass.similarity): a constant float32 column centres to exact zeros, a constant float64 one
    (0.1 repeated) can leave ~1e-17 residues."""
    resid = n * _EPS * np.abs(mean)
    return std <= resid


def _standardize(X, rows, cols, mean, scale, *, dtype, device, transpose: bool = False,
                 chunk: int = 4096) -> torch.Tensor:
    """``(X[rows][:, cols] - mean[cols]) / scale[cols]`` as a (n, len(cols)) tensor, or its transpose."""
    n = X.shape[0] if rows is None else len(rows)
    full = len(cols) == X.shape[1] and np.array_equal(cols, np.arange(X.shape[1]))
    m = torch.from_numpy(mean[cols]).to(device=device, dtype=dtype)
    s = torch.from_numpy(scale[cols]).to(device=device, dtype=dtype)
    tcols = None if full else torch.from_numpy(np.asarray(cols)).to(device)
    shape = (len(cols), n) if transpose else (n, len(cols))
    out = torch.empty(shape, dtype=dtype, device=device)
    for a, block in row_blocks(X, rows, chunk):
        block = block.to(device=device, dtype=dtype)
        if tcols is not None:
            block = block.index_select(1, tcols)  # much faster than advanced indexing on columns
        block = (block - m) / s
        if transpose:
            out[:, a : a + block.shape[0]] = block.T
        else:
            out[a : a + block.shape[0]] = block
    return out


def _select(cand, val_accuracy, alphas, n_val: int) -> tuple[int, float]:
    """The chosen problem among ``cand`` (one subset's penalties) and its ``choice_margin``: the strongest
    penalty whose validation accuracy is within the tie band of the best (:mod:`critmass.probes._choice`)."""
    correct = np.rint(np.array([val_accuracy[j] for j in cand], dtype=np.float64) * max(int(n_val), 1))
    strongest_first = sorted(range(len(cand)), key=lambda i: (-alphas[i], i))
    pick, margin = choose(correct, strongest_first, n_val)
    return cand[pick], margin


def _is_views(X) -> bool:
    """Whether ``X`` is several training views: a 3-D array or a list of 2-D arrays (not a 2-D nested list)."""
    if isinstance(X, np.ndarray):
        return X.ndim == 3
    return (isinstance(X, (list, tuple)) and len(X) > 0
            and all(isinstance(v, np.ndarray) and v.ndim == 2 for v in X))


class BaseProbe(ClassifierMixin, BaseEstimator):
    """Base class of the linear probes (see :class:`~critmass.probes.LogisticProbe`): a scikit-learn classifier
    that fits one probe per column subset at once.

    ``predict``, ``decision_function``, ``predict_proba`` (where the solver has probabilities) and ``score``
    answer for one fit: the first subset's probe (the full layer when ``subsets`` is None); the
    ``*_subsets`` methods answer for every subset. Labels may be any that scikit-learn accepts (ints,
    strings); ``sample_weight`` is not taken (the batched solvers have no per-sample weights).

    Subclasses set ``_dtype`` and implement ``_prepare`` and ``_fit_chain``; they register with
    :func:`critmass.probes.register_solver` to be a ``run_probes`` solver.
    """

    _solver = "base"
    _dtype = torch.float32
    _alpha_strictly_positive = False
    _views = False  # SGD accepts (n_views, n, d) training arrays
    _val_always = False  # SGD keeps the best-validation checkpoint even with one alpha
    _transposed = False  # Data.X as (n_columns, n_samples): row gathers of column subsets are cheap

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, X, y, *, X_val=None, y_val=None):
        """Fit one probe per subset; choose each subset's regularisation on validation data.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Training features (SGDProbe also accepts (n_views, n_samples, n_features) or a list of
            views: augmented copies of each training row).
        y : array of shape (n_samples,)
            Class labels (at least 2 classes).
        X_val, y_val : arrays, optional
            Validation split used to choose ``alpha`` (and, for SGD, the best epoch). Without them and
            when needed (several alphas, or SGD), ``val_fraction`` of the training rows are carved out
            with :func:`critmass.data.train_val_indices` (stratified, seeded by
            ``random_state``); the probe is fitted on the remaining rows.

        Returns
        -------
        self
        """
        views, y = self._check_X(X, y)
        d = views[0].shape[1]
        alphas = check_alphas(self.alphas, strictly_positive=self._alpha_strictly_positive)
        device = resolve_device(getattr(self, "device", "auto"))
        subsets = self._check_subsets(d)
        labels = self.classes_
        self.classes_ = np.arange(len(labels))  # the fit works on label positions; the labels return below
        self.alphas_ = alphas
        try:
            with blas.products():
                self._fit_codes(views, y, X_val, y_val, labels, alphas, device, subsets, d)
        finally:
            self.classes_ = labels
        return self

    def _fit_codes(self, views, y, X_val, y_val, labels, alphas, device, subsets, d) -> None:

        fit_rows = np.arange(len(y))
        val = None  # (arrays, rows, labels)
        if X_val is not None or y_val is not None:
            if X_val is None or y_val is None:
                raise ConfigError("pass both X_val and y_val, or neither")
            xv = check_features(X_val, name="validation features")
            if xv.shape[1] != d:
                raise FeatureError(f"validation features have {xv.shape[1]} columns but training features have {d}; "
                                   "both must come from the same layer")
            if len(y_val) != xv.shape[0]:
                raise FeatureError(f"validation labels have {len(y_val)} entries but the validation features have "
                                   f"{xv.shape[0]} rows; pass matching arrays")
            yv = encode_labels(labels, y_val, "validation")
            val = (xv, np.arange(len(yv)), yv)
        elif (len(alphas) > 1 or self._val_always) and self.val_fraction:
            tr, va = train_val_indices(y, float(self.val_fraction), seed=self._split_seed())
            fit_rows = tr
            val = (views[0], va, y[va])

        if len(alphas) > 1 and val is None:
            raise ConfigError(f"{len(alphas)} alphas need validation data to choose from; pass X_val and y_val, "
                              "set val_fraction > 0, or pass a single alpha")

        # Subsets with the same columns (random at fraction 1 of every seed and the full layer, in other orders)
        # are one problem: fitted once, the others get its weights in their own column order.
        fit_index, same = _distinct_sets(subsets)
        fit_subsets = [subsets[i] for i in fit_index]
        chosen = self._fit_select(views, fit_rows, y, val, fit_subsets, alphas, device)
        W, b, train_acc, n_iter, reg, applied, val_scores, val_best, margin, mean, scale = chosen
        n_train = len(fit_rows)
        if self.refit and val is not None:
            # Refit on train + validation with each subset's chosen alpha (DINOv2's protocol).
            if val[0] is views[0]:  # validation rows were carved from X: refit on all of X
                y_all, arrays = y, views
            else:
                if len(views) > 1:
                    raise ConfigError("refit=True with several training views needs the validation rows carved "
                                      "from X; pass X_val=None")
                y_all = np.concatenate([y, val[2]])
                arrays = [np.concatenate([np.asarray(views[0]), np.asarray(val[0])])]
            rows = np.arange(len(y_all))
            mean, scale = self._stats(arrays, [rows] * len(arrays))
            data = self._data(arrays, rows, y_all, None, fit_subsets, mean, scale, device)
            W, b, train_acc, n_iter, _, applied, _, _, _ = self._fit_all(data, fit_subsets,
                                                                       [np.array([r]) for r in reg])
            n_train = len(rows)
        self._fit_index, self._same = fit_index, same
        if len(fit_index) < len(subsets):
            if self._progress is not None:
                self._progress(len(subsets) - len(fit_index))
            W = [_reorder(W[same[i]], fit_subsets[same[i]], s) for i, s in enumerate(subsets)]
            b, train_acc, n_iter, reg, applied, val_scores, val_best, margin = (
                np.asarray(a)[same] for a in (b, train_acc, n_iter, reg, applied, val_scores, val_best, margin))

        self.mean_, self.scale_ = mean, scale
        self.subsets_ = [np.asarray(s) for s in subsets]
        self.coefs_, self.intercepts_ = [], np.zeros((len(subsets), len(self.classes_)))
        for i, s in enumerate(subsets):
            w = W[i] / scale[s][:, None]  # fold the standardisation into raw-feature weights
            self.coefs_.append(w.T.copy())
            self.intercepts_[i] = b[i] - mean[s] @ w
        self.regs_ = np.asarray(reg, dtype=np.float64)
        self.regs_applied_ = np.asarray(applied, dtype=np.float64)
        self.val_scores_ = val_scores
        self.scores_ = val_best
        self.choice_margins_ = np.asarray(margin, dtype=np.float64)
        self.train_scores_ = train_acc
        self.n_iter_ = n_iter
        self.n_train_ = int(n_train)
        self.n_val_ = 0 if val is None else int(len(val[1]))
        if self.subsets is None:
            self.coef_, self.intercept_, self.reg_ = self.coefs_[0], self.intercepts_[0], float(self.regs_[0])
            self.reg_applied_ = float(self.regs_applied_[0])

    def _split_seed(self) -> int:
        rs = getattr(self, "random_state", 0)
        return 0 if rs is None else int(rs)

    def _stats(self, arrays, rows_list, *, check_constant: bool = False, subsets=None):
        # Always centre (the unpenalised intercept absorbs it); scale only when asked.
        mean, std, n = moments(arrays, rows_list, arrays[0].shape[1])
        if check_constant:
            self._check_constant(constant_columns(std, mean, n), n, subsets)
        scale = scale_of(std)
        return mean, (scale if self.standardize else np.ones_like(scale))

    @staticmethod
    def _check_constant(constant: np.ndarray, n: int, subsets) -> None:
        """Refuse training rows on which every neuron is constant; warn (once) about subsets of only
        constant neurons, whose probes can learn nothing but the class prior."""
        if constant.all():
            raise FeatureError(
                f"the training features have zero variance (all {constant.size} neurons are constant over the "
                f"{n} rows the probe is fitted on), so a probe cannot learn from them; check the layer and the "
                "extraction")
        if constant.any() and subsets is not None:
            dead = [i for i, s in enumerate(subsets) if constant[s].all()]
            if dead:
                sizes = ", ".join(str(len(subsets[i])) for i in dead[:5]) + (", ..." if len(dead) > 5 else "")
                warnings.warn(
                    f"{len(dead)} of {len(subsets)} subsets (first: subset {dead[0]}; sizes {sizes}) hold only "
                    f"constant (zero-variance) neurons ({int(constant.sum())} of the layer's {constant.size} are "
                    "constant), so their probes can "
                    f"learn only the class prior; {_CONSTANT_FIX}", ConstantSubsetWarning, stacklevel=5)

    def _fit_select(self, views, fit_rows, y, val, subsets, alphas, device):
        mean, scale = self._stats(views, [fit_rows] * len(views), check_constant=True, subsets=subsets)
        data = self._data(views, fit_rows, y, val, subsets, mean, scale, device)
        W, b, train_acc, n_iter, reg, applied, val_scores, val_best, margin = self._fit_all(
            data, subsets, [alphas] * len(subsets))
        return W, b, train_acc, n_iter, reg, applied, val_scores, val_best, margin, mean, scale

    def _data(self, views, rows, y, val, subsets, mean, scale, device) -> Data:
        union = np.unique(np.concatenate(subsets))
        self._union = union

        def mk(X, r):
            return _standardize(X, r, union, mean, scale, dtype=self._dtype, device=device,
                                transpose=self._transposed)

        def enc(labels):
            return torch.from_numpy(np.searchsorted(self.classes_, labels)).to(device)

        Xs = torch.stack([mk(v, rows) for v in views]) if self._views else mk(views[0], rows)
        Xv = yv = None
        if val is not None:
            Xv, yv = mk(val[0], val[1]), enc(val[2])
        return Data(Xs, enc(y[rows]), Xv, yv, len(self.classes_))

    def _fit_all(self, data: Data, subsets, alphas_per_subset):
        """Fit every (subset, alpha), chain by chain; pick each subset's alpha on validation."""
        pos = np.full(self.n_features_in_, -1, dtype=np.int64)
        pos[self._union] = np.arange(len(self._union))
        chains = nested_chains([pos[s] for s in subsets], len(self._union))
        self._chains = [(self._union[c.head], c.members) for c in chains]  # for fast prediction
        grid = self.alphas_
        n = len(subsets)
        W = [None] * n
        b = np.zeros((n, data.n_classes))
        train_acc, n_iter, reg, applied = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
        val_scores = np.full((n, len(grid)), np.nan)
        val_best = np.full(n, np.nan)
        margin = np.full(n, np.nan)  # choice_margin: NaN where nothing was chosen (one penalty, no validation)
        ctx = self._prepare(data)
        problems_list = [sorted({(k, float(a)) for i, k, _ in chain.members for a in alphas_per_subset[i]})
                         for chain in chains]
        fits = self._fit_chains(ctx, data, chains, problems_list)
        for chain, problems, fitted in zip(chains, problems_list, fits, strict=True):
            index = {p: j for j, p in enumerate(problems)}
            chosen = {}
            for i, k, rows in chain.members:
                cand = [index[(k, float(a))] for a in alphas_per_subset[i]]
                # A regularisation path that stopped past its validation peak leaves weaker penalties unfitted.
                cand = [j for j in cand if fitted.W[j] is not None] or cand
                if data.X_val is not None:
                    best, margin[i] = _select(cand, fitted.val_accuracy, [problems[j][1] for j in cand],
                                              len(data.y_val))
                    for j in cand:
                        g = np.searchsorted(grid, problems[j][1])
                        if g < len(grid) and grid[g] == problems[j][1]:
                            val_scores[i, g] = fitted.val_accuracy[j]
                    val_best[i] = fitted.val_accuracy[best]
                else:
                    best = cand[0]
                W[i] = np.asarray(fitted.W[best], dtype=np.float64)[rows]
                b[i] = fitted.b[best]
                n_iter[i], reg[i] = fitted.n_iter[best], problems[best][1]
                applied[i] = reg[i] if fitted.reg_applied is None else fitted.reg_applied[best]
                chosen[i] = best
            if callable(fitted.train_accuracy):  # evaluated for the chosen problems only
                js = sorted(set(chosen.values()))
                acc = dict(zip(js, fitted.train_accuracy(js)))
            else:
                acc = fitted.train_accuracy
            for i, best in chosen.items():
                train_acc[i] = acc[best]
            if self._progress is not None:
                self._progress(len(chain.members))
        return W, b, train_acc, n_iter, reg, applied, val_scores, val_best, margin

    _progress: Callable[[int], None] | None = None  # set by run_probes to drive its progress bar

    def _prepare(self, data: Data):  # pragma: no cover - abstract
        return None

    def _fit_chain(self, ctx, data: Data, chain: Chain, problems) -> ChainFit:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit_chains(self, ctx, data: Data, chains, problems_list):
        """Fits of every chain (a solver may fit problems of several chains together); lazily, chain by chain,
        unless overridden."""
        for chain, problems in zip(chains, problems_list):
            yield self._fit_chain(ctx, data, chain, problems)

    # ------------------------------------------------------------------------------------- checks
    def _check_X(self, X, y) -> tuple[list, np.ndarray]:
        """``(views, label positions)``; sets ``classes_`` (the labels), ``n_features_in_`` and, for frames,
        ``feature_names_in_``."""
        if self._views and _is_views(X):
            views = [check_features(v, name=f"training features (view {i})") for i, v in enumerate(X)]
            if not views:
                raise FeatureError("got an empty list of training views; pass at least one (n, d) array")
            shapes = {v.shape for v in views}
            if len(shapes) > 1:
                raise FeatureError(f"all training views must have the same shape; got {sorted(shapes)}")
            _, codes = validate_fit(self, views[0], y)
            return views, codes
        X, codes = validate_fit(self, X, y)
        return [X], codes

    def _check_subsets(self, d: int) -> list[np.ndarray]:
        if self.subsets is None:
            return [np.arange(d, dtype=np.int64)]
        if isinstance(self.subsets, np.ndarray) and self.subsets.ndim == 1:
            raise ConfigError("subsets must be a list of index arrays (one per probe); wrap a single subset in a list")
        out = []
        for i, s in enumerate(self.subsets):
            arr = np.asarray(s)
            if arr.dtype == bool and arr.ndim == 1 and len(arr) == d:
                arr = np.nonzero(arr)[0]
            if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
                raise ConfigError(f"subset {i} must be a non-empty 1-D array of column indices; got {np.asarray(s)!r:.80}")
            if arr.size > d:
                raise ConfigError(f"subset {i} has k={arr.size} neurons but the layer has only {d}; pass k <= {d}")
            if arr.min() < 0 or arr.max() >= d:
                raise ConfigError(f"subset {i} indexes column {int(arr.max() if arr.max() >= d else arr.min())} "
                                  f"outside [0, {d}); indices must address the {d} features")
            if len(np.unique(arr)) != arr.size:
                raise ConfigError(f"subset {i} repeats a column; each neuron may appear once")
            out.append(arr.astype(np.int64))
        if not out:
            raise ConfigError("subsets is an empty list; pass None for the full layer or at least one subset")
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def _check_fitted(self) -> None:
        if not hasattr(self, "coefs_"):
            raise ProbeNotFittedError(f"this {type(self).__name__} instance is not fitted yet; call fit(X, y) first")

    # ---------------------------------------------------------------------------------- predict
    def decision_function_subsets(self, X) -> list[np.ndarray]:
        """Class scores ``X[:, S] @ coef.T + intercept`` of every subset's probe, each (n_samples, n_classes)."""
        self._check_fitted()
        X = validate_predict(self, X)
        return self._scores_subsets(X)

    def _scores_subsets(self, X) -> list[np.ndarray]:
        with blas.products():
            return self._scores_subsets_of(X)

    def _scores_subsets_of(self, X) -> list[np.ndarray]:
        fit_index = getattr(self, "_fit_index", range(len(self.subsets_)))  # the distinct subsets fitted
        out = [None] * len(fit_index)
        C = len(self.classes_)
        for head, members in self._chains:  # members index the fitted (distinct) subsets
            # One gather per chain; each member uses a leading block of it. Members sorted by size share
            # one product per block of columns between consecutive sizes (no wasted flops, wide products).
            Xh = torch.from_numpy(np.take(np.asarray(X), head, axis=1).astype(np.float64, copy=False))
            members = sorted(members, key=lambda m: m[1])
            ks = np.array([k for _, k, _ in members])
            Wh = torch.zeros((int(ks.max()), len(members) * C), dtype=torch.float64)
            for j, (i, k, rows) in enumerate(members):
                Wh[torch.from_numpy(rows), j * C : (j + 1) * C] = torch.from_numpy(self.coefs_[fit_index[i]].T)
            Z = torch.zeros((X.shape[0], len(members) * C), dtype=torch.float64)
            lo = 0
            for k in np.unique(ks):
                a = int(np.searchsorted(ks, k)) * C
                Z[:, a:] += blas.matmul(Xh[:, lo:k], Wh[lo:k, a:])
                lo = int(k)
            Z = Z.numpy()
            for j, (i, _, _) in enumerate(members):
                out[i] = Z[:, j * C : (j + 1) * C] + self.intercepts_[fit_index[i]]
        same = getattr(self, "_same", None)
        return out if same is None else [out[u] for u in same]  # a repeated set scores as its first copy

    def predict_subsets(self, X) -> np.ndarray:
        """Predicted labels of every subset's probe, shape (n_subsets, n_samples)."""
        return np.stack([self.classes_[np.argmax(z, axis=1)] for z in self.decision_function_subsets(X)])

    def score_subsets(self, X, y) -> np.ndarray:
        """Accuracy of every subset's probe on ``(X, y)``, shape (n_subsets,)."""
        pred = self.predict_subsets(X)
        y = np.asarray(y).ravel()
        if len(y) != pred.shape[1]:
            raise FeatureError(f"labels have {len(y)} entries but the features have {pred.shape[1]} rows; "
                               "pass matching arrays")
        return (pred == y[None, :]).mean(axis=1)

    def decision_function(self, X) -> np.ndarray:
        """Class scores of the first subset's probe (the full layer when ``subsets`` is None): (n_samples,
        n_classes), or (n_samples,) with two classes (scikit-learn's convention: the second class's score minus
        the first's)."""
        z = self.decision_function_subsets(X)[0]
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict(self, X) -> np.ndarray:
        """Predicted labels of the first subset's probe (the full layer when ``subsets`` is None)."""
        z = self.decision_function_subsets(X)[0]
        return self.classes_[np.argmax(z, axis=1)]

    # ------------------------------------------------------------------------------- run_probes
    def _run_fit(self, x_fit, y_fit, x_val, y_val, x_test, y_test, progress=None) -> list[np.ndarray]:
        """Fit (on the run's validation split) and return, per subset, which test rows it got right."""
        self._progress = progress
        try:
            if x_val is not None:
                self.fit(x_fit, y_fit, X_val=x_val, y_val=y_val)
            else:
                self.fit(x_fit, y_fit)
        finally:
            self._progress = None  # a bound method of a progress bar: a worker's estimator goes back pickled
        return list(self.predict_subsets(x_test) == np.asarray(y_test)[None, :])

    def _row_values(self, i: int) -> dict:
        """The result-table columns of subset ``i`` that this solver decides (:mod:`critmass.probes._rows`)."""
        return {"reg": float(self.regs_[i]), "reg_applied": float(self.regs_applied_[i]),
                "choice_margin": float(self.choice_margins_[i]), "train_accuracy": float(self.train_scores_[i]),
                "val_accuracy": float(self.scores_[i]), "n_train": int(self.n_train_), "n_val": int(self.n_val_),
                "n_iter": int(self.n_iter_[i])}

    def _check_options(self) -> None:
        """Validate the parameters before any work (a run checks its solver options with this)."""
        check_alphas(self.alphas, strictly_positive=self._alpha_strictly_positive)


class ProbabilisticProbe(BaseProbe):
    """A linear probe trained with cross-entropy: its softmax scores are class probabilities."""

    def predict_proba_subsets(self, X) -> list[np.ndarray]:
        """Class probabilities (softmax of the scores) of every subset's probe, each (n_samples, n_classes)."""
        return [softmax(z) for z in self.decision_function_subsets(X)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of the first subset's probe (the full layer when ``subsets`` is None),
        (n_samples, n_classes) in the order of ``classes_``."""
        return softmax(self.decision_function_subsets(X)[0])

    def predict_log_proba(self, X) -> np.ndarray:
        """Log of :meth:`predict_proba`, computed as a log-softmax (no log of underflowed zeros)."""
        z = np.asarray(self.decision_function_subsets(X)[0], dtype=np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
