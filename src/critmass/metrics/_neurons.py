"""Which neurons a selector picks, and whether they are the same ones.

A probe run saves the subsets of every column selector (``weights/<selector>-seed<seed>.npz``: ``indices_<k>``
per probed size, nested: each is the first k of one ordering). Here they are read back and judged:

* :func:`top_neurons`: the run's top-k neurons with their rank and the selector's score. The score is not
  saved by the probes, so the selector is refitted on the run's fit rows (its feature entry, the
  validation rows carved as the run carved them): the same rows and labels the run's ordering came from.
* :func:`neuron_stability`: refits on bootstrap resamples of those fit rows (rows drawn with replacement,
  seeded) and the Jaccard overlap ``|A & B| / |A | B|`` of each resample's top-k with the run's top-k, and
  between the resamples, with their 2.5 / 97.5 percentiles over the resamples.
* :func:`neuron_overlap`: the Jaccard overlap of the top-k sets of runs of one model and layer (different
  datasets: are the useful neurons of Fashion-MNIST those of digits?), next to the overlap of two random
  k-subsets (:func:`chance_jaccard`).

Only rankings of neurons are judged: projections (``pca``, ``randproj``) mix every neuron into each
dimension, and ``random``, ``prefix`` and ``all`` do not look at the data, so their "stability" would be that
of a seed or of the neuron numbering.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from .._defaults import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED
from .._validation import closest
from ..exceptions import CacheError, ConfigError, DataError
from ._common import group_rng, read_results

__all__ = ["DEFAULT_KS", "DEFAULT_TOP_K", "chance_jaccard", "neuron_overlap", "neuron_stability", "top_neurons"]

#: The default k of :func:`top_neurons`: capped at the run's largest probed size. 32 neurons is a list a reader
#: can still scan, and the top 32 can be read off any larger probed subset because the subsets are nested.
DEFAULT_TOP_K = 32
#: The default sizes of :func:`neuron_stability` and :func:`neuron_overlap`, capped at the largest probed size.
DEFAULT_KS = (8, 32)
#: Column selectors whose order does not come from the data: nothing to be stable or to match.
NOT_RANKINGS = {
    "all": "keeps every neuron",
    "prefix": "takes neurons in index order",
    "random": "is a seeded permutation that ignores the data",
}
#: What tells one probed feature set from another inside a run (a sweep holds several).
UNIT_KEYS = ("model", "weights", "dataset", "layer", "pooling")
#: The percentiles of the stability intervals: the middle 95% of the resamples.
QUANTILES = (0.025, 0.975)


@dataclass
class _Unit:
    """One feature set's subsets of one selector in a run: where its indices and its features are."""

    run: Path
    key: dict
    selector: str
    seed: int
    n_features: int
    weights_path: Path
    config: dict
    _indices: dict = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.key['model']} / {self.key['dataset']} / {self.key['layer']}"

    def columns(self) -> dict:
        return {"run": str(self.run), **self.key, "selector": self.selector, "n_features": self.n_features}

    def indices(self) -> dict:
        """``{k: saved indices}`` of every probed size, read once."""
        if not self._indices:
            try:
                with np.load(self.weights_path, allow_pickle=False) as data:
                    self._indices = {int(name[len("indices_"):]): np.asarray(data[name], dtype=np.int64)
                                     for name in data.files if name.startswith("indices_")}
            except Exception as exc:  # noqa: BLE001 - zipfile / OSError / ValueError: a torn file is one line
                raise DataError(f"cannot read {self.weights_path} ({type(exc).__name__}: {exc}); re-run the probe of "
                                f"{self.label} in {self.run}") from None
            if not self._indices:
                raise DataError(f"{self.weights_path} holds no indices_<k> arrays; it is not a column selector's "
                                f"subsets: re-run the probe of {self.label} in {self.run}")
        return self._indices

    @property
    def max_k(self) -> int:
        return max(self.indices())

    def top(self, k: int) -> np.ndarray:
        """The run's top-k neurons: the first k of the smallest probed subset holding k (subsets are nested)."""
        sizes = [s for s in sorted(self.indices()) if s >= k]
        if not sizes:
            raise ConfigError(f"run {self.run} probed {self.selector!r} subsets of at most {self.max_k} neurons "
                              f"({self.label}); pass k up to {self.max_k}")
        return self.indices()[sizes[0]][:k]

    def fit_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's fit rows of its feature entry, as the probes loaded them (float32) and their labels."""
        from ..features import load_features
        from ..subsets import probe_fit_rows

        source = self.config.get("source")
        fix = ("the selector's scores and the bootstrap stability refit it on the cached features: re-extract them "
               "(critmass extract), or pass scores=False and no stability (CLI: --no-scores --n-boot 0) for the "
               "saved indices alone")
        if not source:
            raise CacheError(f"run {self.run} did not record the feature entry of {self.label} (no 'source' in its "
                             f"config); {fix}")
        if not Path(source).exists():
            raise CacheError(f"the feature entry {source!r} of run {self.run} ({self.label}) is not there; {fix}")
        fs = load_features(source)
        train = fs["train"]
        if train.n_features != self.n_features:
            raise DataError(f"the feature entry {source!r} has {train.n_features} neurons but run {self.run} probed "
                            f"{self.n_features} ({self.label}); the entry changed since the run: re-run the probe")
        val_source = self.config.get("val_source")
        has_val = val_source == "split" if val_source else "val" in fs
        y = np.asarray(train.y)
        rows, _ = probe_fit_rows(y, has_val=has_val, val_fraction=self.config.get("val_fraction", DEFAULT_VAL_FRACTION),
                                 val_seed=self.config.get("val_seed", DEFAULT_VAL_SEED))
        if rows is None:
            return np.asarray(train.x, dtype=np.float32), y
        return np.asarray(train.x[rows], dtype=np.float32), y[rows]

    def refit(self, X, y):
        """The selector fitted as the run fitted it (on the fit rows; supervised ones with their labels)."""
        from ..subsets import make_selector

        sel = make_selector(self.selector, random_state=self.seed)
        return sel.fit(X, y) if sel.requires_y else sel.fit(X)


def _check_selector(selector) -> str:
    from ..subsets import list_selectors, make_selector

    if not isinstance(selector, str):
        raise ConfigError(f"selector must be one selector name; got {selector!r}")
    proto = make_selector(selector)  # unknown names: a SpecError listing the valid ones
    rankings = [n for n in list_selectors() if n not in NOT_RANKINGS and not make_selector(n).is_projection]
    if proto.is_projection:
        raise ConfigError(f"selector {selector!r} is a projection: each of its dimensions mixes every neuron, so it "
                          f"picks no neurons; pass a neuron ranking: {', '.join(rankings)}")
    if selector in NOT_RANKINGS:
        raise ConfigError(f"selector {selector!r} {NOT_RANKINGS[selector]}: it ranks no neurons by the data; pass "
                          f"a neuron ranking: {', '.join(rankings)}")
    return selector


def _text(value) -> str:
    return "" if value is None or (not isinstance(value, str) and bool(pd.isna(value))) else str(value)


def _read_units(run_dir, selector: str) -> list[_Unit]:
    """The selector's subsets in a probe or sweep run directory, one per feature set (model, weights, dataset,
    layer, pooling; the first solver's where several probed one feature set: their subsets are the same)."""
    run = Path(run_dir)
    df = read_results(run)
    missing = [c for c in ("selector", "model", "dataset", "layer", "n_features", "seed", "weights_file", "config")
               if c not in df.columns]
    if missing:
        raise DataError(f"{run / 'results.parquet'} lacks column(s) {', '.join(missing)}; pass a run directory "
                        "written by `critmass probe` or `critmass sweep`")
    have = sorted(map(str, df["selector"].unique()))
    rows = df[df["selector"] == selector]
    if rows.empty:
        raise DataError(f"run {run} has no {selector!r} subsets{closest(selector, have)}; it has: {', '.join(have)}; "
                        f"probe with --selector {selector}")
    rows = rows.assign(**{k: [_text(v) for v in rows[k]] if k in rows.columns else "" for k in UNIT_KEYS})
    sort = [*UNIT_KEYS, *(["solver"] if "solver" in rows.columns else []), "seed"]
    units = []
    for _, r in rows.sort_values(sort, kind="stable").drop_duplicates(list(UNIT_KEYS)).iterrows():
        key = {k: r[k] for k in UNIT_KEYS}
        label = f"{key['model']} / {key['dataset']} / {key['layer']}"
        wf = _text(r["weights_file"])
        if not wf or not (run / wf).is_file():
            where = f" ({run / wf} is not there)" if wf else ""
            raise DataError(f"run {run} saved no {selector!r} subsets for {label}{where}; the neurons are read from "
                            f"weights/{selector}-seed<seed>.npz: re-run the probe without --no-weights")
        try:
            config = json.loads(r["config"]) if isinstance(r["config"], str) else {}
        except ValueError:
            config = {}
        units.append(_Unit(run, key, selector, int(r["seed"]), int(r["n_features"]), run / wf, config))
    return units


def _as_ks(k, units: Sequence[_Unit], default) -> list[int]:
    """Sizes to judge: ``k`` (an int or ints), or ``default`` capped at the smallest largest probed size."""
    if k is None:
        cap = min(u.max_k for u in units)
        return sorted({min(int(d), cap) for d in default})
    ks = [k] if isinstance(k, (numbers.Integral, np.integer)) else list(k) if isinstance(k, Sequence) else None
    if (ks is None or not ks or any(isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer))
                                    or v < 1 for v in ks)):
        raise ConfigError(f"k must be a positive number of neurons or a list of them (e.g. [8, 32]); got {k!r}")
    return sorted({int(v) for v in ks})


def _jaccard(a, b) -> float:
    a, b = set(map(int, a)), set(map(int, b))
    return len(a & b) / len(a | b) if a or b else 1.0


def chance_jaccard(k: int, n_features: int) -> float:
    """The mean Jaccard overlap of two independent, uniformly random k-subsets of ``n_features`` neurons.

    Exact: the shared count ``X`` is hypergeometric (``n_features`` neurons, k marked, k drawn) and the Jaccard
    overlap is ``X / (2k - X)``; this is ``E[X / (2k - X)]``, not the ratio of means ``k / (2 D - k)``
    (``E[X] = k^2 / D``), which is close to it for large D.

    Parameters
    ----------
    k : int
        Subset size, in [1, n_features].
    n_features : int
        The layer's width D.

    Returns
    -------
    float

    Examples
    --------
    >>> round(chance_jaccard(1, 4), 4)
    0.25
    >>> chance_jaccard(5, 5)
    1.0
    """
    from scipy.stats import hypergeom

    k, d = int(k), int(n_features)
    if not 1 <= k <= d:
        raise ConfigError(f"k must be in [1, {d}] for a layer of {d} neurons; got {k}")
    x = np.arange(max(0, 2 * k - d), k + 1)
    return float(np.sum(hypergeom.pmf(x, d, k, k) * x / (2 * k - x)))


def top_neurons(run_dir, selector: str, k: int | None = None, *, scores: bool = True) -> pd.DataFrame:
    """The run's top-k neurons of a column selector, best first, with the selector's score.

    Parameters
    ----------
    run_dir : str or path-like
        A ``critmass probe`` or ``critmass sweep`` output directory (a sweep gives one list per feature set).
    selector : str
        A neuron ranking the run probed (``greedy``, ``fscore``, ``probe-weight``, ``attribution``,
        ``variance``, ``cluster``, ``norm-max``, ...); projections, ``random``, ``prefix`` and ``all`` are refused.
    k : int, optional
        How many neurons; default :data:`DEFAULT_TOP_K` (32) or the largest probed size when smaller. Any k up
        to the largest probed size works (subsets are nested).
    scores : bool, default True
        Refit the selector on the run's fit rows for its ``scores_`` (this needs the run's cached features;
        False lists the saved indices with NaN scores and reads no features).

    Returns
    -------
    pandas.DataFrame
        One row per neuron: ``run``, ``model``, ``weights``, ``dataset``, ``layer``, ``pooling``, ``selector``,
        ``n_features``, ``rank`` (1 = best), ``neuron`` (its index in the layer) and ``score`` (the selector's
        ``scores_``, higher is better; NaN for a selector without scores, or with ``scores=False``).

    Raises
    ------
    ConfigError
        A projection or a data-blind selector, or k above the largest probed size.
    DataError
        The run lacks the selector or its saved subsets.
    CacheError
        ``scores=True`` and the run's feature entry is gone.

    Warns
    -----
    UserWarning
        When the refitted selector's top-k is not the saved one (the feature entry changed since the run,
        or ties broken differently by another machine's float arithmetic): the neurons listed are the
        run's, the scores the refit's.
    """
    _check_selector(selector)
    if k is not None and (isinstance(k, bool) or not isinstance(k, (numbers.Integral, np.integer)) or k < 1):
        raise ConfigError(f"k must be a positive number of neurons (e.g. 32); got {k!r}")
    units = _read_units(run_dir, selector)
    tables = []
    for u in units:
        kk = min(DEFAULT_TOP_K, u.max_k) if k is None else int(k)
        idx = u.top(kk)
        score = np.full(len(idx), np.nan)
        if scores:
            sel = u.refit(*u.fit_data())
            if hasattr(sel, "scores_"):
                score = np.asarray(sel.scores_, dtype=np.float64)[idx]
            agree = _jaccard(sel.order_[:kk], idx)
            if agree < 1.0:
                warnings.warn(f"{selector!r} refitted on {u.config.get('source')} does not give run {u.run}'s top "
                              f"{kk} neurons of {u.label} (Jaccard {agree:.2f}); the neurons listed are the run's, the "
                              "scores the refit's: the entry may have changed since the run", stacklevel=2)
        tables.append(pd.DataFrame({**u.columns(), "rank": np.arange(1, len(idx) + 1), "neuron": idx,
                                    "score": score}))
    return pd.concat(tables, ignore_index=True)


def _check_n_boot(n_boot) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (numbers.Integral, np.integer)) or n_boot < 1:
        raise ConfigError(f"n_boot must be a positive number of bootstrap resamples (e.g. 20); got {n_boot!r}")
    return int(n_boot)


def _interval(values) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.nan, np.nan, np.nan
    lo, hi = np.quantile(v, QUANTILES)
    return float(v.mean()), float(lo), float(hi)


def neuron_stability(run_dir, selector: str, k=None, n_boot: int = 20, random_state=0) -> pd.DataFrame:
    """How much of the run's top-k a selector finds again on bootstrap resamples of the run's fit rows.

    Each resample draws as many rows as the run's fit rows, with replacement, from those rows (the feature
    entry's train split minus the validation rows the run carved; all of train when the entry has its own
    validation split), refits the selector on them and takes its top-k. A resample's overlap with the run is
    the Jaccard ``|A & B| / |A | B|`` of its top-k and the run's saved top-k; the pairwise overlap is that of
    two resamples' top-k sets, over every pair.

    Parameters
    ----------
    run_dir : str or path-like
        A ``critmass probe`` or ``critmass sweep`` output directory (a sweep gives rows per feature set).
    selector : str
        A neuron ranking the run probed (see :func:`top_neurons`).
    k : int or sequence of int, optional
        Subset sizes, each at most the run's largest probed size; default :data:`DEFAULT_KS` (8 and 32)
        capped at it.
    n_boot : int, default 20
        Bootstrap resamples (each one refit of the selector).
    random_state : int, numpy.random.Generator or None, default 0
        With an int, each feature set's resamples come from their own stream derived from (seed, run, feature
        set), so adding a feature set to a run does not change the others' numbers; a Generator is drawn from
        in the order of the rows, ``rng.integers(0, n_fit, n_fit)`` per resample.

    Returns
    -------
    pandas.DataFrame
        One row per feature set and k: the :func:`top_neurons` key columns, ``k``, ``n_fit`` (fit rows),
        ``n_boot``, ``jaccard`` (mean overlap of a resample with the run), ``jaccard_low`` / ``jaccard_high``
        (its 2.5 / 97.5 percentiles over the resamples), ``pairwise``, ``pairwise_low``, ``pairwise_high`` (the
        same between resamples; NaN with one resample), ``n_core`` (neurons of the run's top-k in every
        resample's top-k) and ``chance`` (:func:`chance_jaccard`: two random k-subsets).

    Raises
    ------
    ConfigError
        A projection or data-blind selector, a bad k or n_boot.
    DataError, CacheError
        The run lacks the selector or its subsets; its feature entry is gone (the refits need it).
    """
    _check_selector(selector)
    n_boot = _check_n_boot(n_boot)
    units = _read_units(run_dir, selector)
    ks = _as_ks(k, units, DEFAULT_KS)
    rows = []
    for u in units:
        refs = {kk: u.top(kk) for kk in ks}  # k above the probed sizes fails before any refit
        X, y = u.fit_data()
        # keyed by what the rows are (model, weights, dataset, layer, pooling), not where the run lives: a copied
        # or moved run directory gives the same resamples
        rng = group_rng(random_state, (*map(str, u.key.values()), selector))
        n = len(y)
        tops = []
        for _ in range(n_boot):
            b = rng.integers(0, n, n)
            tops.append(np.asarray(u.refit(X[b], y[b]).order_[: max(ks)]))
        for kk in ks:
            ref = refs[kk]
            to_run = [_jaccard(t[:kk], ref) for t in tops]
            pairs = [_jaccard(a[:kk], b[:kk]) for a, b in combinations(tops, 2)]
            core = set(map(int, ref)).intersection(*(set(map(int, t[:kk])) for t in tops))
            j, j_lo, j_hi = _interval(to_run)
            p, p_lo, p_hi = _interval(pairs)
            rows.append({**u.columns(), "k": kk, "n_fit": n, "n_boot": n_boot, "jaccard": j, "jaccard_low": j_lo,
                         "jaccard_high": j_hi, "pairwise": p, "pairwise_low": p_lo, "pairwise_high": p_hi,
                         "n_core": len(core), "chance": chance_jaccard(kk, u.n_features)})
    return pd.DataFrame(rows)


def neuron_overlap(run_dirs, selector: str, k=None) -> pd.DataFrame:
    """The Jaccard overlap of the top-k neurons of runs of one model and layer, pairwise.

    Feature sets of the same model, weights and layer (and width) are compared; typically one layer probed on
    several datasets, in several run directories or in one sweep. Pooling may differ (neuron j is the same
    unit of the layer), the width may not.

    Parameters
    ----------
    run_dirs : str, path-like or sequence of them
        ``critmass probe`` / ``critmass sweep`` output directories.
    selector : str
        A neuron ranking every run probed (see :func:`top_neurons`).
    k : int or sequence of int, optional
        Subset sizes; default :data:`DEFAULT_KS` capped at the smallest largest probed size among the runs.

    Returns
    -------
    pandas.DataFrame
        One row per pair and k: ``model``, ``weights``, ``layer``, ``n_features``, ``selector``, ``k``,
        ``run_a``, ``dataset_a``, ``pooling_a``, ``run_b``, ``dataset_b``, ``pooling_b``, ``n_shared`` (neurons in
        both top-k sets), ``jaccard`` and ``chance`` (the mean Jaccard of two random k-subsets of the layer,
        :func:`chance_jaccard`): an overlap near ``chance`` means the two tasks use unrelated neurons.

    Raises
    ------
    DataError
        Fewer than two feature sets of one model and layer, or such feature sets of different widths.
    """
    _check_selector(selector)
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    runs: dict = {}
    for r in run_dirs:
        runs.setdefault(Path(r).resolve(), r)  # one run given twice counts once
    units = [u for r in runs.values() for u in _read_units(r, selector)]
    groups: dict[tuple, list[_Unit]] = {}
    for u in units:
        groups.setdefault((u.key["model"], u.key["weights"], u.key["layer"]), []).append(u)
    for (model, _, layer), members in groups.items():
        widths = sorted({u.n_features for u in members})
        if len(widths) > 1:
            got = ", ".join(f"{u.run} {u.key['dataset']}: {u.n_features}" for u in members)
            raise DataError(f"the runs of {model} / {layer} differ in width ({got} neurons), so their neurons cannot "
                            "be matched; pass runs of the same layer and feature width")
    pairs = [(a, b) for members in groups.values() for a, b in combinations(members, 2)]
    if not pairs:
        got = "; ".join(f"{u.run}: {u.label} ({u.n_features} neurons)" for u in units)
        raise DataError(f"the overlap compares runs of one model and layer and these share none ({got}); pass two or "
                        "more runs of the same model and layer (e.g. on different datasets)")
    ks = _as_ks(k, [u for pair in pairs for u in pair], DEFAULT_KS)
    rows = []
    for a, b in pairs:
        for kk in ks:
            ta, tb = a.top(kk), b.top(kk)
            rows.append({"model": a.key["model"], "weights": a.key["weights"], "layer": a.key["layer"],
                         "n_features": a.n_features, "selector": selector, "k": kk, "run_a": str(a.run),
                         "dataset_a": a.key["dataset"], "pooling_a": a.key["pooling"], "run_b": str(b.run),
                         "dataset_b": b.key["dataset"], "pooling_b": b.key["pooling"],
                         "n_shared": len(set(map(int, ta)) & set(map(int, tb))), "jaccard": _jaccard(ta, tb),
                         "chance": chance_jaccard(kk, a.n_features)})
    return pd.DataFrame(rows)
