"""``cka_curve``: subset-vs-full CKA of a layer for every selector, fraction and seed, as a tidy table.

The subsets are those of the probes: both come from :func:`critmass.subsets.plan_subsets`, fitted on
the same fit rows (train minus the carved validation rows) in the same space, so a ``cka.parquet`` row
and a ``results.parquet`` row with the same selector and seed describe the same subset.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from .._defaults import (
    DEFAULT_FRACTIONS,
    DEFAULT_ON_CONSTANT,
    DEFAULT_SEEDS,
    DEFAULT_VAL_FRACTION,
    DEFAULT_VAL_SEED,
    check_on_constant,
    parse_seeds,
)
from ..exceptions import ConfigError
from ..features import FeatureSet, FeatureSplit
from ._estimators import _check_basis, _check_n, _check_stats, _projection_values, _subset_values, _subset_weights
from ._gram import GramStats, check_matrix, gram_stats
from ._sets import _as_feature_set

__all__ = ["CKA_COLUMNS", "cka_curve"]

log = logging.getLogger(__name__)

#: Columns of the table :func:`cka_curve` returns, keys first. ``n_fit``, ``val_fraction`` and
#: ``val_seed`` record the rows the selectors were fitted on: train minus the seeded, stratified
#: ``val_fraction`` carved with ``val_seed`` (``val_fraction`` 0: every row of train, as when the
#: feature set has its own val split), i.e. the probes' fit rows.
CKA_COLUMNS = (
    "model", "dataset", "layer", "split", "selector", "fraction", "n_neurons", "n_features", "seed",
    "cka", "cka_debiased", "n_fit", "val_fraction", "val_seed",
)


def _resolve_selectors(selectors) -> list[str]:
    names = [s.strip() for s in selectors.split(",")] if isinstance(selectors, str) else list(selectors)
    names = [s for s in names if s]
    if not names or not all(isinstance(s, str) for s in names):
        raise ConfigError(
            f"selectors must be a non-empty list of selector names (e.g. ['random', 'pca']); got {selectors!r}"
        )
    return list(dict.fromkeys(names))


def _fit_rows(x, rows):
    """The fit rows as the probes hold them (float32 in memory); all rows of ``x`` stay as they are."""
    return x if rows is None else np.asarray(x[rows], dtype=np.float32)


def _resolve_input(features, split: str, val_fraction, val_seed):
    """(x to compare, x to fit the selectors on (None: x itself), its labels (None: unknown), key columns, share
    carved from train)."""
    keys = {"model": None, "dataset": None, "layer": None, "split": None}
    if isinstance(features, FeatureSplit):
        m = features.manifest
        keys.update({k: m.get(k) for k in ("model", "dataset", "layer")}, split=m.get("split", split))
        # the selectors are fitted on the compared rows: their labels only when those are training rows
        return features.x, None, features.y if keys["split"] == "train" else None, keys, 0.0
    if isinstance(features, (FeatureSet, str, os.PathLike)):
        from ..subsets import probe_fit_rows

        fs = _as_feature_set(features, list(dict.fromkeys([split, "train", "val"])))
        x = fs[split].x
        keys.update({k: fs.meta.get(k) for k in ("model", "dataset", "layer")}, split=split)
        if "train" not in fs:  # fitted on the compared split: never on validation or test labels
            return x, None, fs[split].y if split == "train" else None, keys, 0.0
        # The probes' fit rows: train minus the carved validation rows (all of train next to a val split).
        train = fs["train"]
        rows, carved = probe_fit_rows(train.y, has_val="val" in fs, val_fraction=val_fraction, val_seed=val_seed)
        y_fit = np.asarray(train.y) if rows is None else np.asarray(train.y)[rows]  # the fit rows' labels only
        return x, _fit_rows(train.x, rows), y_fit, keys, carved
    return features, None, None, keys, 0.0


def _check_given_stats(stats, n: int, d: int, need_fourth: bool) -> None:
    """Refuse ``stats`` that are not of these ``n x d`` features, or lack the fourth moments ``debiased`` needs."""
    if not isinstance(stats, GramStats):
        raise ConfigError(f"stats must be a GramStats (critmass.similarity.gram_stats or cka_matrix); "
                          f"got {type(stats).__name__}")
    if (stats.n_samples, stats.n_features) != (n, d):
        raise ConfigError(f"stats are of {stats.n_samples} x {stats.n_features} features but the features compared "
                          f"are {n} x {d}; pass the GramStats of these features (or none)")
    if need_fourth and stats.fourth is None:
        raise ConfigError("debiased CKA of column subsets needs the fourth moments, which these stats lack; build "
                          "them with gram_stats(x, debiased=True) or pass no stats")


def cka_curve(features, *, selectors=("random",), fractions=DEFAULT_FRACTIONS, seeds=DEFAULT_SEEDS,
              debiased: bool = False, split: str = "train", on_constant: str = DEFAULT_ON_CONSTANT,
              val_fraction: float = DEFAULT_VAL_FRACTION, val_seed: int = DEFAULT_VAL_SEED,
              chunk_size: int | None = None, stats: GramStats | None = None, y=None) -> pd.DataFrame:
    """Subset-vs-full linear CKA of a layer for every selector, fraction and seed (a tidy table).

    One pass over the samples builds the layer's Gram statistics; every subset after that costs
    ``O(k D)`` and reads no samples (debiased projections read them once per distinct basis).

    What is compared: the subsets are the probes' own (:func:`critmass.subsets.plan_subsets`), fitted on
    the probes' fit rows, and CKA compares each, in raw feature units, with the full raw layer ``X`` of
    ``split``:

    * a column selector gives ``CKA(X[:, S], X)`` for the indices ``S`` the probe of that size uses
      (the probe's per-column standardisation of ``X[:, S]`` is not applied: CKA is not invariant to
      rescaling single neurons, and the subset is a set of the layer's own neurons);
    * a projection gives ``CKA((X - mean) @ P_k, X)`` with ``P = V / sigma`` and ``mean`` exactly the
      arrays ``weights/<selector>-seed<seed>.npz`` holds: the selector fitted on the standardised fit
      rows, written back in raw units, so this is the probe's projected input itself (centring does not
      change CKA, so ``mean`` drops out).

    Parameters
    ----------
    features : path, FeatureSet, FeatureSplit or array-like of shape (n_samples, n_neurons)
        A cache entry directory or ``.npz`` (see :func:`critmass.features.load_features`), a loaded
        feature set, or a feature matrix (memmaps are streamed). Selectors are fitted on the probes'
        fit rows of a feature set's ``train`` split; a feature matrix or a single split carries no
        train / validation split, so its selectors are fitted on all of its rows (``val_fraction`` 0).
    selectors : str or sequence of str, default ("random",)
        Names from :func:`critmass.subsets.list_selectors` (a comma-separated string works too);
        ``'all'`` gives one row at fraction 1.
    fractions : sequence, default :data:`critmass._defaults.DEFAULT_FRACTIONS`
        Fractions in (0, 1] (``k = max(1, round(f D))``) or integer neuron counts.
    seeds : int, str or sequence of int, default :data:`critmass._defaults.DEFAULT_SEEDS` (5)
        A count (5 means seeds 0..4) or explicit seeds, read by :func:`critmass._defaults.parse_seeds`;
        each fits the selector with that ``random_state`` (deterministic selectors are fitted once and
        give the same row under every seed).
    debiased : bool, default False
        Also compute the debiased estimator (column ``cka_debiased``; NaN otherwise).
    split : str, default "train"
        Split of a feature set to compute CKA on; the selectors are fitted on train's fit rows.
    on_constant : {"raise", "nan"}, default :data:`critmass._defaults.DEFAULT_ON_CONSTANT` ("nan")
        What a subset of only zero-variance neurons (undefined CKA) gives: NaN (with one logged
        warning counting them) or a :class:`~critmass.exceptions.FeatureError`.
    val_fraction, val_seed : float, int, default 0.1, 0
        The validation share carved from train (as ``run_probes`` carves it) before the selectors are
        fitted; ignored when the feature set has a ``val`` split. Recorded in the table.
    chunk_size : int, optional
        Rows per chunk of the passes over the samples.
    stats : GramStats, optional
        The Gram statistics of ``split``'s features when they are built already (e.g. by
        :func:`cka_matrix`, which builds those of several layers in one pass): the pass that builds
        them is skipped. They must be of the same rows and columns (checked by shape), and hold the
        fourth moments (``gram_stats(x, debiased=True)``) when ``debiased`` needs them.
    y : array-like, optional
        Labels of the rows the selectors are fitted on, for the supervised selectors (``fscore``, ``greedy``,
        ...) when ``features`` is an array; a feature set's own train labels (of the fit rows) are used
        otherwise.

    Returns
    -------
    pandas.DataFrame
        One row per (selector, fraction, seed) with columns :data:`CKA_COLUMNS`: ``model, dataset, layer,
        split, selector, fraction, n_neurons, n_features, seed, cka, cka_debiased, n_fit, val_fraction,
        val_seed``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32)
    >>> df = cka_curve(x, fractions=[0.5, 1.0], seeds=2)
    >>> df[["fraction", "n_neurons", "seed"]].to_dict("list")
    {'fraction': [0.5, 1.0, 0.5, 1.0], 'n_neurons': [10, 20, 10, 20], 'seed': [0, 0, 1, 1]}
    """
    from ..subsets import make_selector, plan_subsets, size_fractions

    names = _resolve_selectors(selectors)
    seed_list = parse_seeds(seeds)
    check_on_constant(on_constant)
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__len__") or len(fractions) == 0:
        raise ConfigError(f"fractions must be a non-empty list of numbers in (0, 1]; got {fractions!r}")
    for name in names:
        make_selector(name)  # unknown names fail here, before any work (the registry lists the valid ones)
    x, x_fit, y_fit, keys, carved = _resolve_input(features, split, val_fraction, val_seed)
    if y is not None:  # labels given with an array: they label the rows the selectors are fitted on
        y_fit = np.asarray(y)
    x = check_matrix(x)
    n, d = x.shape
    _check_n(n, debiased)
    if x_fit is None:
        x_fit = x
    elif x_fit.shape[1] != d:
        raise ConfigError(f"the {split} features have {d} columns but train has {x_fit.shape[1]}; "
                          "all splits must come from the same layer")
    size_fracs = size_fractions(list(fractions), d)
    fitted = plan_subsets(names, seed_list, size_fracs, x_fit, y_fit)
    n_fit = int(x_fit.shape[0])
    del x_fit
    need_fourth = debiased and any(not f.is_projection for f in fitted)
    if stats is None:
        stats = gram_stats(x, debiased=need_fourth, chunk_size=chunk_size)
        log.info("Gram statistics of %d x %d features accumulated", n, d)
    else:
        _check_given_stats(stats, n, d, need_fourth)
    _check_stats(stats, False)

    rows = []
    fit_cols = {"n_fit": n_fit, "val_fraction": float(carved), "val_seed": int(val_seed)}
    for f in fitted:
        if f.is_projection:
            biased, deb = _projection_values(stats, _check_basis(f.components, d), list(f.sizes), debiased=debiased,
                                             x=x, on_constant=on_constant, chunk_size=chunk_size)
        else:
            weights = _subset_weights(f.indices, d)
            biased, deb = _subset_values(stats, weights, debiased=debiased, on_constant=on_constant)
        # A deterministic selector is fitted once; its subsets are the same under every seed.
        for seed in (seed_list if f.deterministic else [f.seed]):
            for j, (k, fracs) in enumerate(zip(f.sizes, f.fractions)):
                for frac in fracs:
                    rows.append({
                        **keys, "selector": f.selector, "fraction": float(frac), "n_neurons": int(k),
                        "n_features": int(d), "seed": int(seed), "cka": float(biased[j]),
                        "cka_debiased": float(deb[j]) if deb is not None else np.nan, **fit_cols,
                    })
    df = pd.DataFrame(rows, columns=list(CKA_COLUMNS))
    for col in ("model", "dataset", "layer", "split", "selector"):
        df[col] = df[col].astype("string")
    df = df.astype({"fraction": "float64", "n_neurons": "int64", "n_features": "int64", "seed": "int64",
                    "cka": "float64", "cka_debiased": "float64", "n_fit": "int64", "val_fraction": "float64",
                    "val_seed": "int64"})
    undefined = int(df["cka"].isna().sum() + (df["cka_debiased"].isna().sum() if debiased else 0))
    if undefined:
        log.warning("%d CKA values are undefined (subsets of only zero-variance neurons, or a non-positive "
                    "debiased HSIC) and were set to NaN; "
                    "on_constant='raise' names the first", undefined)
    return df
