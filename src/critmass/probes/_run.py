"""``run_probes``: accuracy of linear probes on neuron subsets of one feature set, as tidy tables."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._defaults import CHOICE_RULE, DEFAULT_FRACTIONS, DEFAULT_SEEDS, parse_seeds  # defined once
from .._env import versions
from .._io import atomic_path
from .._validation import check_features, check_fraction, check_labels, closest, resolve_sizes
from ..data._splits import train_val_indices
from ..exceptions import ConfigError, FeatureError
from ..features import FeatureSet, load_features, sample_ids
from ..subsets import make_selector
from ._base import _distinct_sets, check_alphas, resolve_device
from ._knn import KNNProbe
from ._logistic import LogisticProbe
from ._parallel import check_n_jobs, fit_in_order, resolve_n_jobs, split_even
from ._neighbours_run import NEIGHBOUR_COLUMNS, NEIGHBOUR_SOLVERS, check_neighbour_options, neighbour_rows
from ._retrieval import RetrievalProbe
from ._ridge import RidgeProbe
from ._sgd import SGDProbe

__all__ = ["run_probes", "ProbeResults", "SOLVERS", "DEFAULT_FRACTIONS", "RESULT_COLUMNS", "PER_CLASS_COLUMNS",
           "PENALTY_RULES"]

logger = logging.getLogger(__name__)

SOLVERS = {"logistic": LogisticProbe, "ridge": RidgeProbe, "sgd": SGDProbe, "knn": KNNProbe, "retrieval": RetrievalProbe}

#: How the penalty of each probe is chosen (``run_probes(penalty_rule=...)``): 'per-probe' searches the
#: grid for every probe; 'first-seed' searches it for the first seed of each seed-dependent selector and
#: fits the other seeds only at the penalty that seed chose at the same subset size.
PENALTY_RULES = ("per-probe", "first-seed")

# weights (the backbone's weights id: file hash, checkpoint or hub revision) and pooling tell two
# checkpoints, or two poolings, of one architecture and layer apart.
KEYS = ["model", "weights", "dataset", "layer", "pooling", "selector", "fraction", "n_neurons", "seed", "solver"]
RESULT_COLUMNS = KEYS + [
    "n_features", "reg", "reg_applied", "penalty_rule", "choice_margin", "train_accuracy", "val_accuracy",
    "test_accuracy", "mean_per_class_recall",
    "n_train", "n_val", "n_test", "n_classes", "n_iter", "refit", "weights_file", "config", "versions",
] + NEIGHBOUR_COLUMNS  # kNN / retrieval columns (critmass.probes._neighbours_run); NaN for linear solvers
PER_CLASS_COLUMNS = KEYS + ["class", "class_name", "accuracy", "support"]


@dataclass
class ProbeResults:
    """The tables written by :func:`run_probes`.

    ``results``: one row per (model, dataset, layer, selector, fraction, n_neurons, seed, solver) with the
    columns of ``RESULT_COLUMNS``. ``per_class``: the same keys plus ``class``, ``accuracy`` (test recall of
    that class) and ``support`` (its test samples). ``out``: the directory written, if any.
    """

    results: pd.DataFrame
    per_class: pd.DataFrame
    out: Path | None = None
    seconds: float = field(default=float("nan"))

    def full_accuracy(self) -> float:
        """Mean test accuracy of the full layer (``selector == 'all'`` rows)."""
        rows = self.results[self.results["selector"] == "all"]
        return float(rows["test_accuracy"].mean()) if len(rows) else float("nan")

    def save(self, out, *, csv: bool = False) -> Path:
        """Write ``results.parquet`` and ``per_class.parquet`` (and ``.csv`` copies) atomically into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, df in (("results", self.results), ("per_class", self.per_class)):
            with atomic_path(out / f"{name}.parquet", suffix=".parquet") as tmp:
                df.to_parquet(tmp, index=False)
            if csv:
                with atomic_path(out / f"{name}.csv", suffix=".csv") as tmp:
                    df.to_csv(tmp, index=False)
        self.out = out
        return out


@dataclass
class _Job:
    """One estimator fit: subsets of (possibly projected) features and what each subset's rows are."""

    x_fit: np.ndarray
    x_val: np.ndarray | None
    x_test: np.ndarray
    subsets: list
    meta: list  # per subset: (selector, seed, k, [fractions])
    random_state: int
    weights: list = field(default_factory=list)  # (selector, seed, projection dict or None)
    projection: dict | None = None  # the probes see (X - mean) @ components
    alphas: list | None = None  # the penalty grid of this fit; None: the run's
    group: tuple = ()  # which fit a deferred (penalty_rule='first-seed') subset joins, with its penalty

    def arrays(self):
        """(fit, val, test) features as the probes see them."""
        if self.projection is None:
            return self.x_fit, self.x_val, self.x_test
        m, c = self.projection["mean"], self.projection["components"]
        return tuple(None if X is None else _project(X, m, c) for X in (self.x_fit, self.x_val, self.x_test))


def _parse_seeds(seeds) -> list[int]:
    """The one seed rule of every command (:func:`critmass._defaults.parse_seeds`)."""
    return parse_seeds(seeds)


def _check_split(fs: FeatureSet, split: str, d: int | None, classes=None):
    x = check_features(fs[split].x, name=f"{split} features")
    y = check_labels(fs[split].y, x.shape[0], name=f"{split} labels")
    if d is not None and x.shape[1] != d:
        raise FeatureError(f"{split} features have {x.shape[1]} columns but train features have {d}; "
                           "all splits must come from the same layer")
    if classes is not None:
        unseen = np.setdiff1d(np.unique(y), classes)
        if len(unseen):
            raise FeatureError(f"{split} labels contain classes never seen in train: {unseen[:10].tolist()}; "
                               "every class must have training samples")
    return x, y


def _class_name(names, c) -> str:
    """The dataset's own name of integer class ``c`` where the manifest recorded it, else its index."""
    c = int(c)
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def _check_disjoint(fs: FeatureSet, fit: str, held_out: str) -> None:
    """Refuse a feature set whose ``held_out`` rows are also ``fit`` rows (compared by sample identity).

    A validation split that shares samples with train turns validation accuracy into training accuracy and
    picks the weakest penalty; the check uses the sample ids recorded at extraction, never feature values.
    """
    a, b = sample_ids(fs, fit), sample_ids(fs, held_out)
    fix = (f"re-extract with `critmass extract ... --split train,val,test` (train then holds val out), or drop "
           f"the {held_out} split so the probes carve one from train")
    source = fs.meta.get("source")
    if a is not None and b is not None:
        shared = np.intersect1d(a[1], b[1]).size if a[0] == b[0] else 0
        if shared:
            raise FeatureError(f"feature set {source}: {shared} of its {len(b[1])} {held_out} samples are also "
                               f"{fit} samples; {fix}")
        return
    # Entries written before sample ids were recorded: a val carved from train overlaps a train kept whole.
    fit_info = fs[fit].manifest.get("dataset_info") or {}
    held_info = fs[held_out].manifest.get("dataset_info") or {}
    if held_info.get("val_carved_from") == fit and not fit_info.get("val_held_out"):
        raise FeatureError(f"feature set {source}: its {held_out} split was carved from {fit} but {fit} was "
                           f"kept whole, so every {held_out} sample is also a {fit} sample; {fix}")


def _rows(x, rows):
    """Rows of a (possibly memory-mapped) array as float32 in memory."""
    return np.asarray(x[rows] if rows is not None else x, dtype=np.float32)


def run_probes(features, *, selectors: Sequence[str] = ("random",), fractions: Sequence[float] = DEFAULT_FRACTIONS,
               seeds=DEFAULT_SEEDS, solver: str = "logistic", out=None, n_neurons: Sequence[int] | None = None,
               alphas=None, val_fraction: float = 0.1, val_seed: int = 0, refit: bool = False,
               device: str = "auto", csv: bool = False, save_weights: bool = True, progress: bool = False,
               solver_options: dict | None = None, n_threads: int | None = None,
               penalty_rule: str = "per-probe", n_jobs: int | str | None = "auto",
               full_layer: bool = True) -> ProbeResults:
    """Fit linear probes on neuron subsets of a layer for every selector, seed and fraction.

    For each selector and seed the selector is fitted on the training rows, the subsets of every size are
    probed, and one row per (selector, fraction, seed) records train / validation / test accuracy, the
    test mean per-class recall and the chosen regularisation. The full layer (``selector='all'``,
    fraction 1.0) is included once (unless ``full_layer=False``), as the reference of the metrics stage.

    Protocol: features are centred and scaled with the statistics of the rows the probe is fitted on; the
    validation split is the feature set's ``'val'`` split when present, else ``val_fraction`` of train
    carved by :func:`critmass.data._splits.train_val_indices` (stratified, ``val_seed``), the same for every
    selector and seed. The regularisation is chosen per probe on validation accuracy; by default the probe
    fitted on the training part is the one tested (the paper's protocol; ``refit=True`` refits on
    train + validation, DINOv2's). Test data are used for nothing but the test columns. A feature set
    whose ``val`` split shares samples with ``train`` (by the sample ids recorded at extraction) is
    refused: its validation accuracy would be training accuracy.

    Deterministic selectors (all, prefix, pca, pca-least, norm-max, norm-min) run once, recorded with the
    first seed; random ones (random, randproj, randproj-uniform) once per seed. Fractions that give the
    same number of neurons share one fit (one row each).

    ``penalty_rule='first-seed'`` trades the per-probe search for speed: for the random selectors the
    first seed's probes search the whole penalty grid, and every other seed's probe of size ``k`` is fitted
    only at the penalty the first seed chose at ``k`` (same selector). Deterministic selectors and the full
    layer keep the full search; with a single penalty in the grid the rule changes nothing. The rule is
    recorded in the ``penalty_rule`` column and in ``config``.

    Parameters
    ----------
    features : FeatureSet or path
        A :class:`~critmass.features.FeatureSet`, a cache entry directory or a ``.npz`` with
        ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``).
    selectors : sequence of str
        Selector names (``critmass.subsets.list_selectors()``).
    fractions : sequence of float
        Fractions of the layer's neurons in (0, 1]; ``k = max(1, round(f * D))``.
    seeds : int or sequence of int
        Seeds of the random selectors; an int ``N`` means ``0 .. N-1`` (default 5: seeds 0..4, as the paper).
    solver : {'logistic', 'ridge', 'sgd', 'knn', 'retrieval'}
        The neighbour solvers (:class:`KNNProbe`, :class:`RetrievalProbe`) take their options in
        ``solver_options`` and fill the ``knn_*`` / ``recall_at_*`` / ``map`` columns; ``test_accuracy`` is
        the kNN accuracy or recall@1 (see :mod:`critmass.probes._neighbours_run`).
    out : path, optional
        Directory for ``results.parquet``, ``per_class.parquet`` (``.csv`` too with ``csv``) and, with
        ``save_weights``, ``weights/<selector>-seed<seed>.npz`` (per size: ``indices_<k>`` or, for
        projections, ``components`` and ``mean``; ``coef_<k>`` (n_classes, k) and ``intercept_<k>`` on the
        raw (projected) features; ``reg_<k>``; ``classes``).
    n_neurons : sequence of int, optional
        Absolute subset sizes, probed in addition to ``fractions`` (recorded with fraction ``k / D``).
    alphas : float or sequence, optional
        Penalty grid; default the solver's (see :class:`LogisticProbe`, :class:`RidgeProbe`,
        :class:`SGDProbe` for how each scales its penalty).
    val_fraction, val_seed : float, int
        The carved validation split (ignored when the feature set has a ``'val'`` split). ``val_fraction=0``
        uses no validation (then ``alphas`` must be a single value).
    refit : bool
        Refit on train + validation after choosing the penalty.
    device : str
        'auto' (CUDA if available), 'cpu', 'cuda'.
    csv, save_weights, progress : bool
        Also write CSV; write the probe weights; show a tqdm bar on stderr.
    solver_options : dict, optional
        Extra estimator parameters (e.g. ``{'max_iter': 50}`` or ``{'epochs': 100, 'lr_step': 20}``).
    n_threads : int, optional
        CPU threads for torch during the call (restored afterwards). On a machine shared with other jobs,
        1 can be several times faster than oversubscribed threads.
    penalty_rule : {'per-probe', 'first-seed'}
        'per-probe' (default): every probe chooses its penalty on validation. 'first-seed': the other seeds
        of the random selectors reuse the first seed's choice per subset size (see above). The SGD solver
        follows the same rule (each seed's fit is its own already).
    n_jobs : int or 'auto', default 'auto'
        Processes for the logistic fits on a CPU (Linux; forked, one torch thread each, the problems split
        into nearly equal shares of whole chains or consecutive sizes; see :mod:`critmass.probes._parallel`).
        'auto': one per usable core when the run is large enough to pay for it (rows x sizes x classes x
        penalties >= ``AUTO_MIN_WORK``), else 1. Measured on the Fashion-MNIST benchmark curve (4,500 x 1,280,
        12 fractions x 3 seeds, 2 cores): 18.3 s in one process (2 threads), see the README for 2 processes.
        Other solvers, GPUs and non-Linux systems use one process (their work is BLAS-bound or on the device).
        A rerun with another ``n_jobs`` fits the same problems, fused differently: results agree to the
        solver's tolerance, as across thread counts.
    full_layer : bool, default True
        Also fit the full layer (``selector='all'``), the metrics' reference. A sweep fits it in one probe
        unit per (model, dataset, layer, solver) and passes False to the others (``'all'`` named in
        ``selectors`` is fitted either way).

    Returns
    -------
    ProbeResults
    """
    kwargs = dict(selectors=selectors, fractions=fractions, seeds=seeds, solver=solver, out=out, n_neurons=n_neurons,
                  alphas=alphas, val_fraction=val_fraction, val_seed=val_seed, refit=refit, device=device, csv=csv,
                  save_weights=save_weights, progress=progress, solver_options=solver_options,
                  penalty_rule=penalty_rule, n_jobs=n_jobs, full_layer=full_layer)
    if n_threads is None:
        return _run_probes(features, **kwargs)
    import torch

    from .._validation import check_positive_int

    previous = torch.get_num_threads()
    torch.set_num_threads(check_positive_int(n_threads, name="n_threads"))
    try:
        return _run_probes(features, **kwargs)
    finally:
        torch.set_num_threads(previous)


def _run_probes(features, *, selectors, fractions, seeds, solver, out, n_neurons, alphas, val_fraction, val_seed,
                refit, device, csv, save_weights, progress, solver_options, penalty_rule, n_jobs,
                full_layer) -> ProbeResults:
    t0 = time.perf_counter()
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}{closest(solver, SOLVERS)}; valid: {', '.join(SOLVERS)}")
    if not isinstance(penalty_rule, str) or penalty_rule not in PENALTY_RULES:
        raise ConfigError(f"unknown penalty_rule {penalty_rule!r}{closest(str(penalty_rule), PENALTY_RULES)}; "
                          f"valid: {', '.join(PENALTY_RULES)}")
    check_n_jobs(n_jobs)
    fs = features if isinstance(features, FeatureSet) else load_features(features)
    x_train, y_train = _check_split(fs, "train", None)
    d = int(x_train.shape[1])
    classes = np.unique(y_train)
    x_test, y_test = _check_split(fs, "test", d, classes)

    seeds = _parse_seeds(seeds)
    if isinstance(selectors, str):
        selectors = [selectors]
    selectors = list(dict.fromkeys(["all", *selectors] if full_layer else selectors))
    if not selectors:
        raise ConfigError("no selectors: pass at least one, or full_layer=True")
    for name in selectors:
        make_selector(name)  # unknown names fail here, before any work
    fracs = [check_fraction(f) for f in fractions]
    sizes = resolve_sizes(fracs, d)
    size_fracs: dict[int, list[float]] = {}
    for f, k in zip(fracs, sizes):
        size_fracs.setdefault(k, [])
        if f not in size_fracs[k]:
            size_fracs[k].append(f)
    if n_neurons is not None:
        for k in resolve_sizes([int(k) for k in n_neurons], d):
            size_fracs.setdefault(k, [])
            if k / d not in size_fracs[k]:
                size_fracs[k].append(k / d)
    if not size_fracs:
        raise ConfigError("no subset sizes: pass at least one fraction in (0, 1] or n_neurons")
    est_cls = SOLVERS[solver]
    opts = dict(solver_options or {})
    if alphas is not None:
        check_alphas(alphas, strictly_positive=solver == "ridge")
        opts["alphas"] = alphas
    dev = resolve_device(device)
    opts["device"] = str(dev)
    if solver in NEIGHBOUR_SOLVERS:
        check_neighbour_options(solver, opts, penalty_rule)  # before any selector is fitted

    # Validation split: the feature set's own, else carved from train (the same for every probe).
    if "val" in fs:
        _check_disjoint(fs, "train", "val")
        x_val, y_val = _check_split(fs, "val", d, classes)
        fit_rows, val_rows, val_source = None, None, "split"
    elif val_fraction:
        fit_rows, val_rows = train_val_indices(y_train, float(val_fraction), seed=int(val_seed))
        x_val, y_val, val_source = x_train, y_train[val_rows], "carved"
    else:
        fit_rows, val_rows, x_val, y_val, val_source = None, None, None, None, "none"
    y_fit = y_train if fit_rows is None else y_train[fit_rows]
    X_fit = _rows(x_train, fit_rows)
    X_val = None if x_val is None else _rows(x_val, val_rows)
    X_test = _rows(x_test, None)

    config = {
        "selectors": selectors, "fractions": fracs, "n_neurons": None if n_neurons is None else list(map(int, n_neurons)),
        "seeds": seeds, "solver": solver, "alphas": None if alphas is None else np.atleast_1d(alphas).tolist(),
        "val_fraction": float(val_fraction), "val_seed": int(val_seed), "val_source": val_source,
        "refit": bool(refit), "device": str(dev), "solver_options": solver_options or {},
        "source": fs.meta.get("source"), "penalty_rule": penalty_rule, "choice_rule": CHOICE_RULE,
    }
    config_json = json.dumps(config, sort_keys=True, default=str)
    versions_json = json.dumps(versions(), sort_keys=True)

    train_manifest = fs["train"].manifest
    weights_id = str(train_manifest.get("weights") or fs.meta.get("weights") or "")
    pooling = str(fs.meta.get("pooling") or train_manifest.get("pooling") or "")
    class_names = train_manifest.get("classes")

    # 'first-seed': the other seeds of the seed-dependent selectors wait for the first seed's choices
    # (a one-penalty grid has nothing to choose: the plan is then the per-probe one).
    n_alphas = 0 if solver in NEIGHBOUR_SOLVERS else len(check_alphas(est_cls(**opts).alphas))
    defer = penalty_rule == "first-seed" and n_alphas > 1
    jobs, deferred = _plan(selectors, seeds, solver, size_fracs, X_fit, X_val, X_test, d, defer=defer)
    total = sum(len(j.subsets) for j in jobs + deferred)
    # Data-pass work (rows x sizes x classes x penalties) decides whether n_jobs='auto' forks workers.
    work = len(y_fit) * len(classes) * n_alphas * sum(len(s) for j in jobs + deferred for s in j.subsets)
    workers = resolve_n_jobs(n_jobs, solver=solver, device=dev.type, work=work,
                             pieces=sum(len(j.subsets) for j in jobs))
    jobs = _split_jobs(jobs, workers)
    rows, per_class = [], []
    weights_dir = Path(out) / "weights" if (out is not None and save_weights) else None
    pending: dict = {}  # weights of (selector, seed) whose probes are spread over several fits
    _count_weights(pending, jobs)
    chosen: dict = {}  # (selector, k) -> the penalty the first seed chose
    chosen_margin: dict = {}  # (selector, k) -> that choice's margin, which the other seeds' rows carry
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=f"probes ({solver})", unit="probe", file=sys.stderr, disable=not progress) as bar:
        if solver in NEIGHBOUR_SOLVERS:  # no penalty, no weights: their own rows, the same columns
            rows, per_class = neighbour_rows(
                jobs, solver=solver, opts=opts, y_fit=y_fit, y_val=y_val, y_test=y_test, class_names=class_names,
                key=dict(model=str(fs.meta.get("model")), weights=weights_id, dataset=str(fs.meta.get("dataset")),
                         layer=str(fs.meta.get("layer")), pooling=pooling, solver=solver),
                common={"n_features": d, "config": config_json, "versions": versions_json},
                penalty_rule=penalty_rule, refit=refit, progress=bar.update)
            jobs = []
        def fit(job):
            est = est_cls(**{**opts, "subsets": job.subsets, "random_state": job.random_state,
                             "val_fraction": float(val_fraction), "refit": bool(refit),
                             **({"standardize": False} if job.projection is not None else {}),
                             **({"alphas": job.alphas} if job.alphas is not None else {})})
            if workers == 1:
                est._progress = bar.update
            x_fit, x_val, x_test = job.arrays()
            if x_val is not None:
                est.fit(x_fit, y_fit, X_val=x_val, y_val=y_val)
            else:
                est.fit(x_fit, y_fit)
            est._progress = None  # a bound method of the bar: a worker's estimator goes back pickled
            return est, est.predict_subsets(x_test)

        for job, est, pred in _fit_phases(jobs, deferred, chosen, pending, seeds, fit, workers, bar):
            files = _save_weights(weights_dir, est, job, pending) if weights_dir is not None else {}
            for i, (sel, seed, k, frs) in enumerate(job.meta):
                margin = float(est.choice_margins_[i])
                if defer and seed == seeds[0]:
                    chosen[(sel, int(k))] = float(est.regs_[i])
                    chosen_margin[(sel, int(k))] = margin
                elif defer and (sel, int(k)) in chosen_margin:  # a follower: fitted at the first seed's choice
                    margin = chosen_margin[(sel, int(k))]
                correct = pred[i] == y_test
                recalls, supports = [], []
                for c in est.classes_:
                    in_c = y_test == c
                    supports.append(int(in_c.sum()))
                    recalls.append(float(correct[in_c].mean()) if in_c.any() else float("nan"))
                for f in frs:
                    key = dict(model=str(fs.meta.get("model")), weights=weights_id, dataset=str(fs.meta.get("dataset")),
                               layer=str(fs.meta.get("layer")), pooling=pooling, selector=sel, fraction=float(f),
                               n_neurons=int(k), seed=int(seed), solver=solver)
                    rows.append({
                        **key, "n_features": d, "reg": float(est.regs_[i]), "reg_applied": float(est.regs_applied_[i]),
                        "penalty_rule": penalty_rule, "choice_margin": margin,
                        "train_accuracy": float(est.train_scores_[i]), "val_accuracy": float(est.scores_[i]),
                        "test_accuracy": float(correct.mean()), "mean_per_class_recall": float(np.nanmean(recalls)),
                        "n_train": int(est.n_train_), "n_val": int(est.n_val_), "n_test": int(len(y_test)),
                        "n_classes": int(len(est.classes_)), "n_iter": int(est.n_iter_[i]), "refit": bool(refit),
                        "weights_file": files.get((sel, seed)), "config": config_json, "versions": versions_json,
                    })
                    per_class += [{**key, "class": int(c), "class_name": _class_name(class_names, c), "accuracy": r,
                                   "support": s}
                                  for c, r, s in zip(est.classes_, recalls, supports)]
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    order = {s: i for i, s in enumerate(selectors)}
    results = results.sort_values(["selector", "seed", "fraction"], key=lambda c: c.map(order) if c.name == "selector" else c,
                                  kind="stable").reset_index(drop=True)
    res = ProbeResults(results, pd.DataFrame(per_class, columns=PER_CLASS_COLUMNS))
    if out is not None:
        res.save(out, csv=csv)
    res.seconds = time.perf_counter() - t0
    logger.info("%d probe rows in %.1f s", len(results), res.seconds)
    return res


def _plan(selectors, seeds, solver, size_fracs, X_fit, X_val, X_test, d, *, defer: bool = False):
    """Group the probes into estimator fits that share work; returns ``(jobs, deferred)``.

    The subsets come from :func:`critmass.subsets.plan_subsets`, the one definition shared with CKA:
    selectors fitted on the fit rows, projections fitted in the probes' standardised space and expressed
    in raw units as ``(X - mean) @ components``. Column selectors of all seeds go into one fit (one Gram
    matrix; each seed's nested subsets form one chain); SGD is split per seed because the seed also
    orders its minibatches. Projections change the features, so each (projection, seed) is its own fit
    on the projected features (projected lazily, one projected copy at a time, and not rescaled again).

    With ``defer`` (``penalty_rule='first-seed'``) the seed-dependent selectors' subsets of every seed but
    the first are not planned into ``jobs`` but returned in ``deferred`` (one job each per (selector,
    seed), its ``group`` the fit it joins): :func:`_follow_jobs` regroups them by the penalty the first
    seed chose once that is known.
    """
    from ..subsets import plan_subsets

    column_jobs: dict[int, _Job] = {}
    jobs: list[_Job] = []
    deferred: list[_Job] = []
    for fitted in plan_subsets(selectors, seeds, size_fracs, X_fit):
        name, seed = fitted.selector, fitted.seed
        meta = [(name, seed, k, frs) for k, frs in zip(fitted.sizes, fitted.fractions)]
        follows = defer and not fitted.deterministic and seed != seeds[0]
        if fitted.is_projection:
            proj = {"components": fitted.components, "mean": fitted.mean}
            job = _Job(X_fit, X_val, X_test, [np.arange(k) for k in fitted.sizes], meta, seed, projection=proj,
                       group=("projection", name, seed))
            job.weights.append((name, seed, proj))
            (deferred if follows else jobs).append(job)
            continue
        group = seed if solver == "sgd" else 0
        if follows:
            job = _Job(X_fit, X_val, X_test, [idx.copy() for idx in fitted.indices], meta,
                       seed if solver == "sgd" else seeds[0], group=("columns", group))
            job.weights.append((name, seed, None))
            deferred.append(job)
            continue
        if group not in column_jobs:
            column_jobs[group] = _Job(X_fit, X_val, X_test, [], [], seed if solver == "sgd" else seeds[0])
            jobs.append(column_jobs[group])
        job = column_jobs[group]
        job.subsets += [idx.copy() for idx in fitted.indices]
        job.meta += meta
        job.weights.append((name, seed, None))
    return jobs, deferred


def _split_jobs(jobs: list[_Job], n: int) -> list[_Job]:
    """Cut the column fits into about ``n`` fits of nearly equal data-pass work (sum of subset sizes) for
    ``n`` worker processes: contiguous runs of each fit's planned subsets, so a piece holds whole chains or
    consecutive sizes of one (nested still). Projection fits stay whole (each piece would project again)."""
    if n <= 1:
        return jobs
    cost = lambda job: [len(s) + 32 for s in job.subsets]  # noqa: E731 - +32: a problem's fixed overhead
    total = sum(sum(cost(j)) for j in jobs)
    out = []
    for job in jobs:
        if job.projection is not None or len(job.subsets) < 2:
            out.append(job)
            continue
        pieces = max(1, round(n * sum(cost(job)) / total))
        # A subset with the columns of an earlier one is fitted once (BaseProbe.fit): it costs nothing and goes
        # with the piece of its first copy.
        fit_index, same = _distinct_sets(job.subsets)
        first = np.asarray(fit_index)[same]
        costs = [c if first[i] == i else 0 for i, c in enumerate(cost(job))]
        piece_of = np.empty(len(costs), dtype=np.int64)
        for p, (a, b) in enumerate(split_even(costs, pieces)):
            piece_of[a:b] = p
        piece_of = piece_of[first]
        for p in np.unique(piece_of):
            idx = np.nonzero(piece_of == p)[0]
            meta = [job.meta[i] for i in idx]
            owners = {(m[0], m[1]) for m in meta}
            out.append(_Job(job.x_fit, job.x_val, job.x_test, [job.subsets[i] for i in idx], meta, job.random_state,
                            weights=[w for w in job.weights if (w[0], w[1]) in owners], projection=job.projection,
                            alphas=job.alphas, group=job.group))
    return out


def _fit_phases(jobs, deferred, chosen, pending, seeds, fit, workers, bar):
    """``(job, estimator, test predictions)`` of the planned fits, then of the deferred ones (which need the
    first seed's choices, recorded in ``chosen`` by the caller as the first phase's results arrive); each
    phase's fits in ``workers`` processes, yielded in order."""
    for job, (est, pred) in zip(jobs, fit_in_order(jobs, fit, workers)):
        if workers > 1:
            bar.update(len(job.subsets))
        yield job, est, pred
    if deferred:
        follow = _split_jobs(_follow_jobs(deferred, chosen), workers)
        _count_weights(pending, follow)
        logger.info("penalty_rule='first-seed': %d subsets of seeds %s in %d fits at the first seed's penalties",
                    sum(len(j.subsets) for j in follow), seeds[1:], len(follow))
        for job, (est, pred) in zip(follow, fit_in_order(follow, fit, workers)):
            if workers > 1:
                bar.update(len(job.subsets))
            yield job, est, pred


def _follow_jobs(deferred: list[_Job], chosen: dict) -> list[_Job]:
    """The fits of the deferred subsets: one per (group, penalty the first seed chose at that size).

    Column subsets of all the remaining seeds share one fit per penalty (per seed for SGD, whose
    ``group`` holds the seed); a projection's subsets stay with their own projected features. A size
    the first seed has no choice for (none in practice: every seed probes the same sizes) keeps the
    run's whole grid.
    """
    fits: dict = {}
    out: list[_Job] = []
    for d in deferred:
        for idx, m in zip(d.subsets, d.meta):
            alpha = chosen.get((m[0], int(m[2])))
            key = (d.group, alpha)
            if key not in fits:
                fits[key] = _Job(d.x_fit, d.x_val, d.x_test, [], [], d.random_state, projection=d.projection,
                                 alphas=None if alpha is None else [alpha], group=d.group)
                out.append(fits[key])
            job = fits[key]
            job.subsets.append(idx)
            job.meta.append(m)
            if not any((n, s) == (m[0], m[1]) for n, s, _ in job.weights):
                job.weights.append((m[0], m[1], d.projection))
    return out


def _count_weights(pending: dict, jobs) -> None:
    """Count the fits holding each (selector, seed): its weights file is written after the last one."""
    for job in jobs:
        for name, seed, _ in job.weights:
            pending.setdefault((name, seed), {"left": 0, "arrays": None, "ks": []})["left"] += 1


def _project(X, mean, components) -> np.ndarray:
    """The probe's view of a projection selector: ``(X - mean) @ components`` (float32)."""
    return ((X.astype(np.float64) - mean) @ components).astype(np.float32)


def _save_weights(weights_dir: Path, est, job: _Job, pending: dict) -> dict:
    """One ``.npz`` per (selector, seed), written once the last fit holding its probes is done (one fit,
    except under ``penalty_rule='first-seed'``); returns {(selector, seed): path relative to the output dir}."""
    files = {}
    for name, seed, projection in job.weights:
        entry = pending[(name, seed)]
        arrays = entry["arrays"]
        if arrays is None:
            arrays = {"classes": est.classes_}
            if projection is not None:
                arrays.update(projection)
        for i, (sel, s, k, _) in enumerate(job.meta):
            if (sel, s) != (name, seed):
                continue
            if projection is None:
                arrays[f"indices_{k}"] = job.subsets[i]
            arrays[f"coef_{k}"] = est.coefs_[i].astype(np.float32)
            arrays[f"intercept_{k}"] = est.intercepts_[i].astype(np.float32)
            arrays[f"reg_{k}"] = np.float64(est.regs_[i])
            arrays[f"reg_applied_{k}"] = np.float64(est.regs_applied_[i])
            entry["ks"].append(int(k))
        rel = Path("weights") / f"{name}-seed{seed}.npz"
        files[(name, seed)] = rel.as_posix()
        entry["left"] -= 1
        if entry["left"] > 0:
            entry["arrays"] = arrays
            continue
        del pending[(name, seed)]
        arrays["n_neurons"] = np.array(sorted(entry["ks"]))
        path = weights_dir.parent / rel
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # a file handle: savez would append '.npz' to the temporary name
    return files
