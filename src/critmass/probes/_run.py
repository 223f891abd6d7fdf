"""``run_probes``: accuracy of probes on neuron subsets of one feature set, as tidy tables.

A run is three steps: :func:`_prepare` checks the request and the feature set and plans the subsets
(:func:`critmass.subsets.size_fractions`, :func:`~critmass.subsets.probe_fit_rows`,
:func:`~critmass.subsets.plan_subsets`: one definition each, shared with CKA); :func:`_fit` groups them into
estimator fits (:mod:`critmass.probes._jobs`) and runs them, in worker processes where the solver allows;
:func:`critmass.probes._rows.result_rows` turns every fitted estimator into rows, whatever the solver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._defaults import CHOICE_RULE, DEFAULT_FRACTIONS, DEFAULT_SEEDS, DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED
from .._defaults import parse_seeds
from .._env import versions
from .._io import atomic_path
from .._validation import check_features, check_fraction, check_labels, check_positive_int, closest
from ..exceptions import ConfigError, FeatureError
from ..features import FeatureSet, load_features, sample_ids
from ..subsets import make_selector, probe_fit_rows, size_fractions
from ..codecs import DEFAULT_CODEC, make_codec, parse_codecs
from ._base import check_alphas, resolve_device
from ._jobs import count_weights, fit_phases, plan_jobs, save_weights, split_jobs
from ._parallel import check_n_jobs, resolve_n_jobs
from ._rows import PER_CLASS_COLUMNS, RESULT_COLUMNS, result_rows
from ._solvers import SOLVERS, solver_spec

__all__ = ["run_probes", "ProbeRequest", "ProbeResults", "torch_threads", "PENALTY_RULES"]

logger = logging.getLogger(__name__)

#: How the penalty of each probe is chosen (``run_probes(penalty_rule=...)``): 'per-probe' searches the
#: grid for every probe; 'first-seed' searches it for the first seed of each seed-dependent selector and
#: fits the other seeds only at the penalty that seed chose at the same subset size.
PENALTY_RULES = ("per-probe", "first-seed")


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
        """Mean test accuracy of the full layer (``selector == 'all'`` rows; of float32, or the first codec, when
        there are several)."""
        rows = self.results[self.results["selector"] == "all"]
        if "codec" in rows and len(rows):
            rows = rows[rows["codec"] == ("float32" if (rows["codec"] == "float32").any() else rows["codec"].iloc[0])]
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
class ProbeRequest:
    """What :func:`run_probes` computes: every argument but the features and ``n_threads`` (see there)."""

    selectors: Sequence[str] = ("random",)
    fractions: Sequence[float] = DEFAULT_FRACTIONS
    seeds: int | Sequence[int] = DEFAULT_SEEDS
    solver: str = "logistic"
    out: str | Path | None = None
    n_neurons: Sequence[int] | None = None
    alphas: float | Sequence[float] | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    val_seed: int = DEFAULT_VAL_SEED
    refit: bool = False
    device: str = "auto"
    csv: bool = False
    save_weights: bool = True
    progress: bool = False
    solver_options: dict | None = None
    penalty_rule: str = "per-probe"
    n_jobs: int | str | None = "auto"
    full_layer: bool = True
    codecs: str | Sequence[str] | None = None


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads (None: leave them), restoring the previous count after."""
    if n is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(check_positive_int(n, name="n_threads"))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_probes(features, request: ProbeRequest | None = None, *, n_threads: int | None = None,
               **options) -> ProbeResults:
    """Fit linear probes on neuron subsets of a layer for every selector, seed and fraction.

    For each selector and seed the selector is fitted on the training rows, the subsets of every size are
    probed, and one row per (selector, fraction, seed) records train / validation / test accuracy, the
    test mean per-class recall and the chosen regularisation. The full layer (``selector='all'``,
    fraction 1.0) is included once (unless ``full_layer=False``), as the reference of the metrics stage.

    Protocol: features are centred and scaled with the statistics of the rows the probe is fitted on; the
    validation split is the feature set's ``'val'`` split when present, else ``val_fraction`` of train
    carved by :func:`critmass.data.train_val_indices` (stratified, ``val_seed``), the same for every
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
    solver : str
        A registered solver (:func:`critmass.probes.list_solvers`: the built-in 'logistic', 'ridge', 'sgd', 'knn',
        'retrieval', and any registered with :func:`critmass.probes.register_solver`). The neighbour
        solvers (:class:`KNNProbe`, :class:`RetrievalProbe`) fill the ``knn_*`` / ``recall_at_*`` / ``map``
        columns: ``reg`` holds a kNN probe's chosen k (NaN for retrieval), ``train_accuracy`` is NaN,
        ``n_iter`` 0, there are no weight files, and ``test_accuracy`` is the kNN accuracy or recall@1.
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
        Extra estimator parameters (e.g. ``{'max_iter': 50}`` or ``{'epochs': 100, 'lr_step': 20}``); the
        ones a solver takes are ``critmass.probes.solver_spec(name).options``.
    n_threads : int, optional
        CPU threads for torch during the call (restored afterwards, :func:`torch_threads`). On a machine
        shared with other jobs, 1 can be several times faster than oversubscribed threads.
    penalty_rule : {'per-probe', 'first-seed'}
        'per-probe' (default): every probe chooses its penalty on validation. 'first-seed': the other seeds
        of the random selectors reuse the first seed's choice per subset size (see above). The SGD solver
        follows the same rule (each seed's fit is its own already).
    n_jobs : int or 'auto', default 'auto'
        Processes for the fits of a forkable solver (logistic) on a CPU (Linux; forked, one torch thread
        each, the problems split into nearly equal shares of whole chains or consecutive sizes; see
        :mod:`critmass.probes._parallel`). 'auto': one per usable core when the run is large enough to pay
        for it (rows x sizes x classes x penalties >= ``AUTO_MIN_WORK``), else 1. Other solvers, GPUs and
        non-Linux systems use one process (their work is BLAS-bound or on the device).
        A rerun with another ``n_jobs`` fits the same problems, fused differently: results agree to the
        solver's tolerance, as across thread counts.
    full_layer : bool, default True
        Also fit the full layer (``selector='all'``), the metrics' reference. A sweep fits it in one probe
        unit per (model, dataset, layer, solver) and passes False to the others (``'all'`` named in
        ``selectors`` is fitted either way).

    codecs : str or sequence of str, optional
        How the neighbour solvers (knn, retrieval) store and search the gallery vectors
        (:mod:`critmass.codecs`: 'float32', 'float16', 'int8', 'binary', 'binary-rerank', 'pq', 'opq', ...;
        default float32 only). Every probe is run once per codec: the ``codec`` column tells the rows apart
        and ``bytes_per_vector`` records what the codec stores per vector (the row's ``config`` holds its
        resolved parameters and codebook size). Quantisers are trained on each subset's gallery only. The
        linear solvers fit float32 features (their rows say codec float32, ``4 k`` bytes).

    request : ProbeRequest, optional
        All of the above in one object (keyword arguments given as well override its fields).

    Returns
    -------
    ProbeResults
    """
    fields = {f.name for f in dataclasses.fields(ProbeRequest)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"run_probes got unknown argument(s) {', '.join(map(repr, unknown))}"
                          f"{closest(unknown[0], fields)}; valid: {', '.join(sorted(fields))}, n_threads")
    request = ProbeRequest(**options) if request is None else dataclasses.replace(request, **options)
    with torch_threads(n_threads):
        t0 = time.perf_counter()
        plan = _prepare(features, request)
        rows, per_class = [], []
        for codec in plan.codecs:  # one pass per codec: its rows carry it in the codec key
            plan.key["codec"] = codec
            if plan.spec.family == "neighbours":
                plan.options["codec"] = codec
            r, pc = _fit(plan, request)
            rows += r
            per_class += pc
        results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        order = {s: i for i, s in enumerate(plan.selectors)}
        codec_order = {c: i for i, c in enumerate(plan.codecs)}
        results = results.sort_values(["codec", "selector", "seed", "fraction"],
                                      key=lambda c: c.map(order) if c.name == "selector" else
                                      c.map(codec_order) if c.name == "codec" else c,
                                      kind="stable").reset_index(drop=True)
        res = ProbeResults(results, pd.DataFrame(per_class, columns=PER_CLASS_COLUMNS))
        if request.out is not None:
            res.save(request.out, csv=request.csv)
        res.seconds = time.perf_counter() - t0
        logger.info("%d probe rows in %.1f s", len(results), res.seconds)
        return res


@dataclass
class _Plan:
    """A checked request on its feature set: what :func:`_fit` needs."""

    spec: object  # SolverSpec
    options: dict  # estimator parameters of every fit (solver options, alphas, device)
    selectors: list
    seeds: list
    size_fracs: dict
    d: int
    X_fit: np.ndarray
    y_fit: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray
    n_alphas: int
    key: dict  # row keys every row shares
    common: dict  # columns every row shares
    class_names: list | None
    codecs: list = field(default_factory=lambda: [DEFAULT_CODEC])


def _check_options(spec, request: ProbeRequest):
    """``(parameters, estimator)``: the estimator parameters of the run's fits and an estimator built with them
    (checked); options the solver does not take are refused (one line)."""
    opts = dict(request.solver_options or {})
    name = spec.name
    if not spec.has_penalty:
        if "alphas" in opts or request.alphas is not None:
            raise ConfigError(f"alphas is the penalty grid of the linear solvers; solver {name!r} has none "
                              f"({'its k grid is solver_options ks / --k' if 'ks' in spec.options else 'drop --alphas'})")
        if request.penalty_rule != "per-probe":
            raise ConfigError(f"penalty_rule={request.penalty_rule!r} applies to the linear solvers (a penalty grid); "
                              f"solver {name!r} scores its whole grid in one search: drop --penalty-rule")
    fixed = getattr(spec.estimator, "_run_fixed", ())
    if "ks" in opts and "ks" in fixed:
        raise ConfigError("the retrieval table reports recall_at_1, recall_at_5 and recall_at_10; drop the ks option "
                          "(use RetrievalProbe(ks=...).evaluate_subsets for other cutoffs)")
    valid = [o for o in spec.options if o not in fixed] + (["alphas"] if spec.has_penalty else [])
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for solver {name!r}"
                          f"{closest(unknown[0], valid)}; valid: {', '.join(valid)}")
    if request.alphas is not None:
        check_alphas(request.alphas, strictly_positive=getattr(spec.estimator, "_alpha_strictly_positive", False))
        opts["alphas"] = request.alphas
    opts["device"] = str(resolve_device(request.device))
    try:
        est = spec.estimator(**opts)
    except TypeError as err:
        raise ConfigError(f"solver {name!r} rejects its options {sorted(opts)}: {err}") from None
    est._check_options()
    return opts, est


def _check_codecs(spec, req: ProbeRequest, size_fracs: dict, n_gallery: int) -> list[str]:
    """The run's codec specs, checked against the installed faiss and every subset size before any work."""
    codecs = parse_codecs(req.codecs)
    if spec.family != "neighbours":
        if codecs != [DEFAULT_CODEC]:
            raise ConfigError(f"codecs {', '.join(c for c in codecs if c != DEFAULT_CODEC)} apply to the neighbour "
                              f"solvers (knn, retrieval); solver {spec.name!r} fits float32 features: drop --codec")
        return codecs
    if "codec" in (req.solver_options or {}):
        raise ConfigError("pass codecs with codecs=[...] (--codec), not as a solver option")
    for c in codecs:
        codec = make_codec(c)
        for k in sorted(size_fracs):
            codec.check_width(int(k), n_gallery)
    return codecs


def _prepare(features, req: ProbeRequest) -> _Plan:
    """Check everything that can be checked before any work, load the splits, carve validation, size the
    subsets and write the config every row records."""
    if req.solver not in SOLVERS:
        raise ConfigError(f"unknown solver {req.solver!r}{closest(str(req.solver), SOLVERS)}; "
                          f"valid: {', '.join(SOLVERS)}")
    spec = solver_spec(req.solver)
    if not isinstance(req.penalty_rule, str) or req.penalty_rule not in PENALTY_RULES:
        raise ConfigError(f"unknown penalty_rule {req.penalty_rule!r}{closest(str(req.penalty_rule), PENALTY_RULES)}; "
                          f"valid: {', '.join(PENALTY_RULES)}")
    check_n_jobs(req.n_jobs)
    fs = features if isinstance(features, FeatureSet) else load_features(features)
    x_train, y_train = _check_split(fs, "train", None)
    d = int(x_train.shape[1])
    classes = np.unique(y_train)
    x_test, y_test = _check_split(fs, "test", d, classes)

    seeds = parse_seeds(req.seeds)
    selectors = [req.selectors] if isinstance(req.selectors, str) else list(req.selectors)
    selectors = list(dict.fromkeys(["all", *selectors] if req.full_layer else selectors))
    if not selectors:
        raise ConfigError("no selectors: pass at least one, or full_layer=True")
    for name in selectors:
        make_selector(name)  # unknown names fail here, before any work
    if isinstance(req.fractions, (str, bytes)):
        raise ConfigError(f"fractions must be a list of numbers in (0, 1]; got {req.fractions!r}")
    fracs = [check_fraction(f) for f in req.fractions]  # floats: an int 1 here is the whole layer, not 1 neuron
    n_neurons = None if req.n_neurons is None else [int(k) for k in req.n_neurons]
    size_fracs = size_fractions(fracs, d, n_neurons)
    opts, probe = _check_options(spec, req)

    # Validation split: the feature set's own, else carved from train (the same for every probe).
    if "val" in fs:
        _check_disjoint(fs, "train", "val")
        x_val, y_val = _check_split(fs, "val", d, classes)
        fit_rows, val_rows, val_source = None, None, "split"
    else:
        fit_rows, _ = probe_fit_rows(y_train, has_val=False, val_fraction=req.val_fraction, val_seed=req.val_seed)
        if fit_rows is None:
            x_val = y_val = val_rows = None
            val_source = "none"
        else:
            val_rows = np.setdiff1d(np.arange(len(y_train)), fit_rows)
            x_val, y_val, val_source = x_train, y_train[val_rows], "carved"
    y_fit = y_train if fit_rows is None else y_train[fit_rows]
    codecs = _check_codecs(spec, req, size_fracs, len(y_fit))

    config = {
        "selectors": selectors, "fractions": fracs, "n_neurons": n_neurons, "seeds": seeds, "solver": req.solver,
        "alphas": None if req.alphas is None else np.atleast_1d(req.alphas).tolist(),
        "val_fraction": float(req.val_fraction), "val_seed": int(req.val_seed), "val_source": val_source,
        "refit": bool(req.refit), "device": opts["device"], "solver_options": req.solver_options or {},
        "source": fs.meta.get("source"), "penalty_rule": req.penalty_rule, "choice_rule": CHOICE_RULE,
        "codecs": codecs,
    }
    vers = versions()
    if hasattr(probe, "_run_config"):  # the neighbour solvers record their resolved settings
        config["neighbours"] = probe._run_config()
    if spec.family == "neighbours":
        from ._knn import faiss_version

        if faiss_version() is not None:
            vers["faiss"] = faiss_version()
    train_manifest = fs["train"].manifest
    key = dict(model=str(fs.meta.get("model")),
               weights=str(train_manifest.get("weights") or fs.meta.get("weights") or ""),
               dataset=str(fs.meta.get("dataset")), layer=str(fs.meta.get("layer")),
               pooling=str(fs.meta.get("pooling") or train_manifest.get("pooling") or ""), solver=req.solver,
               codec=codecs[0])
    common = {"n_features": d, "penalty_rule": req.penalty_rule, "refit": bool(req.refit), "n_test": int(len(y_test)),
              "config": json.dumps(config, sort_keys=True, default=str), "versions": json.dumps(vers, sort_keys=True)}
    n_alphas = len(check_alphas(probe.alphas)) if spec.has_penalty else 0
    return _Plan(spec, opts, selectors, seeds, size_fracs, d, _load_rows(x_train, fit_rows), y_fit,
                 None if x_val is None else _load_rows(x_val, val_rows), y_val, _load_rows(x_test, None), y_test, n_alphas, key,
                 common, train_manifest.get("classes"), codecs)


def _fit(plan: _Plan, req: ProbeRequest) -> tuple[list, list]:
    """Fit every planned subset and return the result rows and per-class rows."""
    spec, seeds = plan.spec, plan.seeds
    # 'first-seed': the other seeds of the seed-dependent selectors wait for the first seed's choices
    # (a one-penalty grid has nothing to choose: the plan is then the per-probe one).
    defer = req.penalty_rule == "first-seed" and plan.n_alphas > 1
    jobs, deferred = plan_jobs(plan.selectors, seeds, bool(getattr(spec.estimator, "_seeded_fit", False)),
                               plan.size_fracs, plan.X_fit, plan.X_val, plan.X_test, plan.d, defer=defer,
                               y_fit=plan.y_fit)
    total = sum(len(j.subsets) for j in jobs + deferred)
    # Data-pass work (rows x sizes x classes x penalties) decides whether n_jobs='auto' forks workers.
    n_classes = len(np.unique(plan.y_fit))
    work = len(plan.y_fit) * n_classes * plan.n_alphas * sum(len(s) for j in jobs + deferred for s in j.subsets)
    workers = resolve_n_jobs(req.n_jobs, solver=spec.name, device=_device_type(plan.options["device"]),
                             work=work, pieces=sum(len(j.subsets) for j in jobs))
    jobs = split_jobs(jobs, workers)
    weights_dir = Path(req.out) / "weights" if (req.out is not None and req.save_weights
                                                 and spec.family == "linear") else None
    pending: dict = {}  # weights of (selector, seed) whose probes are spread over several fits
    count_weights(pending, jobs)
    chosen: dict = {}  # (selector, k) -> the penalty the first seed chose
    chosen_margin: dict = {}  # (selector, k) -> that choice's margin, which the other seeds' rows carry
    rows, per_class = [], []
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=f"probes ({spec.name})", unit="probe", file=sys.stderr,
              disable=not req.progress) as bar:
        def fit(job):
            params = {**plan.options, "subsets": job.subsets, "random_state": job.random_state,
                      "val_fraction": float(req.val_fraction), "refit": bool(req.refit)}
            if job.projection is not None and "standardize" in spec.options:
                params["standardize"] = False  # projected columns are not rescaled again
            if job.alphas is not None:
                params["alphas"] = job.alphas
            est = spec.estimator(**params)
            if getattr(est, "agreement", False):  # rank agreement is with the full layer, whatever the job sees
                est._full_layer = (plan.X_fit, plan.X_val, plan.X_test)
            x_fit, x_val, x_test = job.arrays()
            correct = est._run_fit(x_fit, plan.y_fit, x_val, plan.y_val, x_test, plan.y_test,
                                   progress=bar.update if workers == 1 else None)
            return est, correct

        for job, est, correct in fit_phases(jobs, deferred, chosen, pending, seeds, fit, workers, bar):
            files = save_weights(weights_dir, est, job, pending) if weights_dir is not None else {}
            margins = {}
            for i, (sel, seed, k, _) in enumerate(job.meta):
                if defer and seed == seeds[0]:
                    chosen[(sel, int(k))] = float(est.regs_[i])
                    chosen_margin[(sel, int(k))] = float(est.choice_margins_[i])
                elif defer and (sel, int(k)) in chosen_margin:  # a follower: fitted at the first seed's choice
                    margins[i] = chosen_margin[(sel, int(k))]
            r, pc = result_rows(est, job.meta, correct, plan.y_test, key=plan.key, common=plan.common,
                                class_names=plan.class_names, margins=margins, weights_files=files)
            rows += r
            per_class += pc
    return rows, per_class


def _device_type(device: str) -> str:
    import torch

    return torch.device(device).type


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


def _load_rows(x, rows):
    """Rows of a (possibly memory-mapped) array as float32 in memory."""
    return np.asarray(x[rows] if rows is not None else x, dtype=np.float32)


