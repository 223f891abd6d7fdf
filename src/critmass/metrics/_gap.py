"""The gap to random: chosen minus random accuracy per subset size, critical mass per selector, diffuseness."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._validation import closest
from ..exceptions import ConfigError, DataError, SpecError
from ._common import (
    FULL_SELECTOR,
    RESULT_COLUMNS,
    check_delta,
    check_n_boot,
    check_table,
    group_keys,
    group_rng,
)
from ._dr import _nanmean_rows, _seed_matrix, check_select_on, dr

__all__ = ["selector_gap", "selector_critical_mass", "diffuseness", "join_diffuseness", "selector_kinds", "gap_table",
           "critical_mass_table", "GAP_BASELINE"]

logger = logging.getLogger(__name__)

#: The default baseline of the gap: random neurons, the paper's selector.
GAP_BASELINE = "random"

GAP_TAIL = ["n_features", "selector", "baseline", "n_neurons", "fraction", "accuracy", "baseline_accuracy", "gap",
            "gap_ci_low", "gap_ci_high", "n_seeds", "baseline_n_seeds"]
CRITICAL_TAIL = ["n_features", "delta", "select_on", "baseline", "selector", "is_column", "critical_n_neurons",
                 "critical_fraction", "reached", "smallest_n_neurons", "n_seeds", "baseline_critical_n_neurons",
                 "baseline_critical_fraction", "baseline_reached", "baseline_smallest_n_neurons", "baseline_n_seeds",
                 "k_ratio", "reason"]
DIFFUSENESS_TAIL = ["n_features", "delta", "select_on", "baseline", "baseline_critical_n_neurons", "best_selector",
                    "best_critical_n_neurons", "diffuseness", "bound", "candidates", "reason"]


def selector_kinds(results: pd.DataFrame) -> pd.DataFrame:
    """Whether each selector of a results table picks neurons (a column selector) and whether it is random.

    Registered selectors answer from :mod:`critmass.subsets` (``is_projection``, ``deterministic``): pca,
    pca-least, randproj and randproj-uniform are projections, not neurons; random, randproj and
    randproj-uniform depend on the seed. A name the registry does not know (a table from a plugin or an
    older version) counts as a column selector, random when some group has it under several seeds.

    Parameters
    ----------
    results : pandas.DataFrame
        A table with ``selector`` and ``seed`` columns (and the group keys).

    Returns
    -------
    pandas.DataFrame
        One row per selector (the full layer ``'all'`` included) with columns selector, is_column,
        is_random and registered.
    """
    df = check_table(results, ["selector", "seed"], name="results table")
    # Imported here: the subsets stage pulls in scipy and scikit-learn, which reading a table does not need.
    from ..subsets import make_selector

    rows = []
    seeds = df.groupby([*[k for k in group_keys(df) if k in df.columns], "selector"])["seed"].nunique()
    for name in sorted(map(str, df["selector"].unique())):
        try:
            sel = make_selector(name)
        except SpecError:
            many = bool((seeds[seeds.index.get_level_values("selector") == name] > 1).any())
            logger.info("selector %r is not registered: counted as a column selector, %s", name,
                        "random (several seeds)" if many else "deterministic (one seed)")
            rows.append({"selector": name, "is_column": True, "is_random": many, "registered": False})
            continue
        rows.append({"selector": name, "is_column": not sel.is_projection, "is_random": not sel.deterministic,
                     "registered": True})
    return pd.DataFrame(rows, columns=["selector", "is_column", "is_random", "registered"])


def _check_baseline(df: pd.DataFrame, baseline) -> str:
    available = sorted(map(str, df["selector"].unique()))
    if not isinstance(baseline, str):
        raise ConfigError(f"baseline must be one selector name, e.g. 'random'; got {baseline!r}")
    if baseline == FULL_SELECTOR:
        raise ConfigError(f"baseline {FULL_SELECTOR!r} is the full layer itself; pick a subset selector, e.g. random")
    if baseline not in available:
        raise DataError(
            f"no rows with baseline selector {baseline!r}{closest(baseline, available)}; the table has: "
            f"{', '.join(available)}; run the probe with --selector {baseline} (several seeds) as well, "
            "or pass another baseline"
        )
    return baseline


def _check_others(df: pd.DataFrame, selectors, baseline: str) -> list[str]:
    """The selectors compared with the baseline: the given ones (checked), else all but the baseline and 'all'."""
    available = sorted(map(str, df["selector"].unique()))
    if selectors is None:
        chosen = [s for s in available if s not in (baseline, FULL_SELECTOR)]
        if not chosen:
            raise DataError(
                f"the table has no selector besides {baseline!r} and the full layer to compare with; run the probe "
                f"with more selectors, e.g. --selector {baseline},fscore,variance"
            )
        return chosen
    chosen = [selectors] if isinstance(selectors, str) else list(selectors)
    if not chosen:
        raise ConfigError(f"selectors is empty; pass None (every selector but {baseline!r}) or at least one name")
    for s in chosen:
        if s == baseline:
            raise ConfigError(f"selectors include the baseline {baseline!r}; leave it out (it is compared with "
                              "itself) or pass another baseline")
        if s == FULL_SELECTOR:
            raise ConfigError(f"selector {FULL_SELECTOR!r} is the full layer itself; pick a subset selector, "
                              "e.g. fscore")
        if s not in available:
            raise DataError(f"no rows with selector {s!r}{closest(s, available)}; the table has: "
                            f"{', '.join(available)}")
    return list(dict.fromkeys(chosen))


def _check_ci(ci) -> float:
    if isinstance(ci, bool) or not (isinstance(ci, (int, float)) and 0.0 < ci < 1.0):
        raise ConfigError(f"ci must be a confidence level in (0, 1); got {ci!r}; use e.g. 0.95")
    return float(ci)


def _label(key) -> str:
    return "/".join(str(k) for k in key if k != "")


def selector_gap(results: pd.DataFrame, *, baseline: str = GAP_BASELINE, selectors: str | Sequence[str] | None = None,
                 n_boot: int = 1000, ci: float = 0.95, random_state=0) -> pd.DataFrame:
    """Chosen minus random test accuracy at each subset size k, with a bootstrap CI over whole seeds.

    Per group (model, dataset, layer, solver, and weights / pooling when the table has them), selector
    and number of neurons k tested by both the selector and the baseline:

    - ``accuracy``: the selector's mean test accuracy over its seeds at k (one seed for a deterministic
      selector), ``baseline_accuracy`` the baseline's mean over its seeds at k, and
      ``gap = accuracy - baseline_accuracy``. A seed's rows of one k (fractions that round to the same k:
      one fit) are averaged first, as in :func:`critmass.metrics.dr`.
    - ``gap_ci_low`` / ``gap_ci_high``: percentile interval of the gap over ``n_boot`` resamples. Each
      resample draws the baseline's seeds with replacement (whole seeds: a seed's nested subsets at every k
      stay together) and, independently, the selector's seeds when it has several (their seeds are
      unrelated draws, so they are not paired); a one-seed selector enters every resample as it is. The
      resample's gap at k is the difference of the two resampled means (a seed that lacks k is left out
      of that mean). So the interval says how much the gap could move with other random seeds; it holds
      the test set fixed.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table (``results.parquet``): columns model, dataset, layer, solver, selector,
        fraction, n_neurons, n_features, seed, test_accuracy; weights and pooling split groups.
    baseline : str, default "random"
        The reference selector; it needs several seeds for a CI.
    selectors : str, sequence of str or None
        Selectors compared with the baseline; None means every selector but the baseline and ``'all'``.
    n_boot : int, default 1000
        Bootstrap resamples; 0 skips the bootstrap (NaN CI).
    ci : float, default 0.95
        Confidence level of the percentile interval.
    random_state : int, None or numpy.random.Generator, default 0
        Seed of the bootstrap. With an int each (group, selector) gets its own stream derived from the
        seed and the key, so an interval does not change when groups or selectors are added to or dropped
        from the table. Per (group, selector), the baseline's resample counts are drawn first
        (``rng.multinomial(n_baseline_seeds, uniform, size=n_boot)``), then the selector's when it has
        several seeds.

    Returns
    -------
    pandas.DataFrame
        One row per group, selector and k, with the group keys and columns n_features, selector,
        baseline, n_neurons, fraction (k / n_features, the fraction actually used), accuracy,
        baseline_accuracy, gap, gap_ci_low, gap_ci_high, n_seeds (the selector's) and baseline_n_seeds.
        Sizes tested by only one of the two are left out; groups without the baseline are skipped (logged).

    Raises
    ------
    DataError
        Empty table, missing columns or values, no baseline rows, an unknown selector, nothing to compare,
        no size tested by both, or (with ``n_boot > 0``) a baseline with one seed in a group: no CI over
        seeds is possible; pass ``n_boot=0`` for the gap without one.
    ConfigError
        Bad baseline, selectors, n_boot, ci or random_state.

    Examples
    --------
    >>> import pandas as pd
    >>> keys = dict(model="m", dataset="d", layer="penultimate", solver="ridge", n_features=10)
    >>> rows = [dict(keys, selector="random", fraction=0.2, n_neurons=2, seed=s, test_accuracy=a)
    ...         for s, a in [(0, 0.5), (1, 0.6)]]
    >>> rows += [dict(keys, selector="fscore", fraction=0.2, n_neurons=2, seed=0, test_accuracy=0.7)]
    >>> out = selector_gap(pd.DataFrame(rows), n_boot=0)
    >>> out[["selector", "n_neurons", "accuracy", "baseline_accuracy", "gap"]].round(3).to_dict("records")
    [{'selector': 'fscore', 'n_neurons': 2, 'accuracy': 0.7, 'baseline_accuracy': 0.55, 'gap': 0.15}]
    """
    df = check_table(results, RESULT_COLUMNS, name="results table")
    baseline = _check_baseline(df, baseline)
    names = _check_others(df, selectors, baseline)
    n_boot = check_n_boot(n_boot)
    ci = _check_ci(ci)
    q = 100 * np.array([(1 - ci) / 2, (1 + ci) / 2])

    keys = group_keys(df)
    rows = []
    for key, g in df.groupby(keys, sort=True):
        label = _label(key)
        base = g[g["selector"] == baseline]
        if base.empty:
            logger.info("skipping %s: no rows with baseline %r", label, baseline)
            continue
        base_seeds = np.sort(base["seed"].unique())
        if n_boot and len(base_seeds) < 2:
            raise DataError(
                f"baseline {baseline!r} has 1 seed in {label}: a bootstrap CI over seeds needs at least 2; re-run "
                "the probe with more seeds (e.g. --seeds 5) or pass n_boot=0 (--n-boot 0) for the gap without a CI"
            )
        n_features = int(g["n_features"].max())
        base_sizes = np.sort(base["n_neurons"].astype(int).unique())
        for sel in names:
            sub = g[g["selector"] == sel]
            if sub.empty:
                logger.info("skipping %s: no rows with selector %r", label, sel)
                continue
            sizes = np.intersect1d(base_sizes, sub["n_neurons"].astype(int).unique())
            if not len(sizes):
                logger.info("skipping %s / %s: no subset size tested by both it and %r", label, sel, baseline)
                continue
            seeds = np.sort(sub["seed"].unique())
            mat_b = _seed_matrix(base, "test_accuracy", base_seeds, sizes)
            mat_s = _seed_matrix(sub, "test_accuracy", seeds, sizes)
            with np.errstate(invalid="ignore"):
                acc_b, acc_s = np.nanmean(mat_b, axis=0), np.nanmean(mat_s, axis=0)
            lo = hi = np.full(len(sizes), np.nan)
            if n_boot:
                rkey = (*key[:4], *(k for k in key[4:] if k != ""), sel, "gap", baseline)
                rng = group_rng(random_state, rkey)
                nb = len(base_seeds)
                boot_b = _nanmean_rows(rng.multinomial(nb, np.full(nb, 1.0 / nb), size=n_boot).astype(float), mat_b)
                if len(seeds) > 1:
                    ns = len(seeds)
                    boot_s = _nanmean_rows(rng.multinomial(ns, np.full(ns, 1.0 / ns), size=n_boot).astype(float),
                                           mat_s)
                else:
                    boot_s = acc_s[None, :]
                with np.errstate(invalid="ignore"):
                    lo, hi = np.nanpercentile(boot_s - boot_b, q, axis=0)
            for j, k in enumerate(sizes):
                rows.append({**dict(zip(keys, key)), "n_features": n_features, "selector": sel, "baseline": baseline,
                             "n_neurons": int(k), "fraction": float(k) / n_features, "accuracy": float(acc_s[j]),
                             "baseline_accuracy": float(acc_b[j]), "gap": float(acc_s[j] - acc_b[j]),
                             "gap_ci_low": float(lo[j]), "gap_ci_high": float(hi[j]),
                             "n_seeds": int(np.isfinite(mat_s[:, j]).sum()),
                             "baseline_n_seeds": int(np.isfinite(mat_b[:, j]).sum())})
    if not rows:
        raise DataError(
            f"no subset size k was tested by both {baseline!r} and {', '.join(names)} in any group; probe them "
            "with the same fractions (one model, dataset, layer and solver)"
        )
    return pd.DataFrame(rows, columns=[*keys, *GAP_TAIL])


def selector_critical_mass(results: pd.DataFrame, delta: float = 0.9, *, baseline: str = GAP_BASELINE,
                           selectors: str | Sequence[str] | None = None, interpolate: bool = False,
                           select_on: str = "test") -> pd.DataFrame:
    """The critical mass k*(delta) under each selector next to the baseline's, per group.

    k* is :func:`critmass.metrics.dr`'s: the smallest tested number of neurons whose mean-over-seeds
    accuracy reaches ``delta`` x the full layer's (the group's ``'all'`` rows, one reference for every
    selector). ``k_ratio = k*(baseline) / k*(selector)``: above 1 the selector needs fewer neurons
    than the baseline. Where a selector never reaches ``delta`` x full at its tested sizes its k* is
    NaN (not the layer width :func:`dr` reports), and ``reason`` says which one missed.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table; every group needs full-layer (``'all'``) rows.
    delta : float in (0, 1], default 0.9
    baseline : str, default "random"
    selectors : str, sequence of str or None
        As in :func:`selector_gap`.
    interpolate, select_on
        As in :func:`critmass.metrics.dr_curve`.

    Returns
    -------
    pandas.DataFrame
        One row per group and (non-baseline) selector: the group keys, n_features, delta, select_on,
        baseline, selector, is_column (picks neurons, see :func:`selector_kinds`), critical_n_neurons,
        critical_fraction, reached, smallest_n_neurons (the smallest size it was tested at), n_seeds and
        the same for the baseline (``baseline_*``), k_ratio and reason ("" where k_ratio is defined).

    Raises
    ------
    DataError
        As :func:`critmass.metrics.dr`, and no baseline rows or nothing to compare.
    ConfigError
        Bad delta, baseline, selectors or select_on.
    """
    select_on = check_select_on(select_on)
    delta = check_delta(delta)
    required = (*RESULT_COLUMNS, *(["val_accuracy"] if select_on == "val" else []))
    df = check_table(results, required, name="results table")
    baseline = _check_baseline(df, baseline)
    names = _check_others(df, selectors, baseline)
    kinds = selector_kinds(df).set_index("selector")
    res = dr(df, delta, selector=[baseline, *names], interpolate=interpolate, n_boot=0, select_on=select_on)
    keys = group_keys(df)
    smallest = df.groupby([*keys, "selector"])["n_neurons"].min()
    largest = df.groupby([*keys, "selector"])["n_neurons"].max()

    def side(r) -> tuple[float, float, int]:
        reached = bool(r["reached"])
        k = float(r["critical_n_neurons"]) if reached else np.nan
        return k, (float(r["critical_fraction"]) if reached else np.nan), reached

    rows = []
    for key, g in res.groupby(keys, sort=True):
        label = _label(key)
        b = g[g["selector"] == baseline]
        if b.empty:
            logger.info("skipping %s: no rows with baseline %r", label, baseline)
            continue
        b = b.iloc[0]
        kb, fb, hit_b = side(b)
        for _, r in g[g["selector"] != baseline].iterrows():
            sel = r["selector"]
            ks, fs, hit_s = side(r)
            missed = [(s, int(largest[(*key, s)])) for s, hit in ((sel, hit_s), (baseline, hit_b)) if not hit]
            reason = "; ".join(f"{s} never reaches {delta:g} x full at its tested sizes (up to k = {m})"
                               for s, m in missed)
            rows.append({**dict(zip(keys, key)), "n_features": int(r["n_features"]), "delta": delta,
                         "select_on": select_on, "baseline": baseline, "selector": sel,
                         "is_column": bool(kinds.loc[sel, "is_column"]), "critical_n_neurons": ks,
                         "critical_fraction": fs, "reached": hit_s,
                         "smallest_n_neurons": int(smallest[(*key, sel)]), "n_seeds": int(r["n_seeds"]),
                         "baseline_critical_n_neurons": kb, "baseline_critical_fraction": fb,
                         "baseline_reached": hit_b, "baseline_smallest_n_neurons": int(smallest[(*key, baseline)]),
                         "baseline_n_seeds": int(b["n_seeds"]), "k_ratio": kb / ks if not missed else np.nan,
                         "reason": reason})
    if not rows:
        raise DataError(f"no group has both {baseline!r} and another subset selector; run the probe with them "
                        "on one model, dataset, layer and solver")
    return pd.DataFrame(rows, columns=[*keys, *CRITICAL_TAIL])


def _censored(k: float, smallest: int) -> bool:
    """k* at the smallest tested size above 1: the true crossing may lie below it (nothing was tested there)."""
    return k <= smallest and smallest > 1


def diffuseness(results: pd.DataFrame, delta: float = 0.9, *, baseline: str = GAP_BASELINE,
                selectors: str | Sequence[str] | None = None, interpolate: bool = False,
                select_on: str = "test") -> pd.DataFrame:
    """How diffuse a layer is: ``k*(baseline) / min over column selectors of k*(selector)``, per group.

    For each group (model, weights, dataset, layer, pooling, solver) the critical masses of
    :func:`selector_critical_mass` are compared: the baseline's (random neurons) over the smallest
    among the other *column* selectors, the ones that pick neurons (projections such as pca or randproj
    are left out: they do not say whether particular neurons matter). 1 means no chosen set of neurons
    reaches ``delta`` x full with fewer neurons than random ones: no neuron is special; 4 means the best
    selector needs a quarter of random's neurons; below 1, random neurons do better than every selector.

    On a grid the value is only as fine as the tested sizes. When the best selector reaches ``delta``
    already at its smallest tested size (above 1 neuron) its true k* may be smaller, so the value is a
    lower bound (``bound == "lower"``); when the baseline does, an upper bound (``"upper"``); when both
    do, it is NaN (test smaller fractions).

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table; every group needs full-layer (``'all'``) rows.
    delta : float in (0, 1], default 0.9
    baseline : str, default "random"
    selectors : str, sequence of str or None
        Candidates for the best selector (column selectors among them count); None means every
        selector but the baseline and ``'all'``.
    interpolate, select_on
        As in :func:`critmass.metrics.dr_curve`.

    Returns
    -------
    pandas.DataFrame
        One row per group: the group keys, n_features, delta, select_on, baseline,
        baseline_critical_n_neurons, best_selector (ties joined by ", "), best_critical_n_neurons,
        diffuseness, bound ("", "lower" or "upper"), candidates (the column selectors compared) and
        reason (why diffuseness is NaN; "" otherwise: the baseline or every candidate never reaches
        ``delta`` x full, no column candidate in the group, or both k* at the smallest tested size).

    Raises
    ------
    DataError
        As :func:`selector_critical_mass`, and no column selector besides the baseline in the table.
    ConfigError
        As :func:`selector_critical_mass`.

    Examples
    --------
    >>> import pandas as pd
    >>> keys = dict(model="m", dataset="d", layer="penultimate", solver="ridge", n_features=100)
    >>> rows = [dict(keys, selector="all", fraction=1.0, n_neurons=100, seed=0, test_accuracy=0.8)]
    >>> rows += [dict(keys, selector=s, fraction=k / 100, n_neurons=k, seed=0, test_accuracy=a)
    ...          for s, curve in {"random": [(5, 0.5), (10, 0.6), (40, 0.75)],
    ...                           "fscore": [(5, 0.6), (10, 0.75), (40, 0.78)]}.items() for k, a in curve]
    >>> out = diffuseness(pd.DataFrame(rows), 0.9)
    >>> out[["baseline_critical_n_neurons", "best_critical_n_neurons"]].to_dict("records")
    [{'baseline_critical_n_neurons': 40.0, 'best_critical_n_neurons': 10.0}]
    >>> out[["best_selector", "diffuseness", "bound"]].to_dict("records")
    [{'best_selector': 'fscore', 'diffuseness': 4.0, 'bound': ''}]
    """
    cm = selector_critical_mass(results, delta, baseline=baseline, selectors=selectors, interpolate=interpolate,
                                select_on=select_on)
    keys = [k for k in group_keys(cm) if k in cm.columns]
    if not cm["is_column"].any():
        projections = ", ".join(sorted(cm["selector"].unique()))
        raise DataError(
            f"no column selector besides {baseline!r} to compare with ({projections} pick projections, not "
            f"neurons); run the probe with a neuron ranking as well, e.g. --selector {baseline},fscore,variance"
        )
    rows = []
    for key, g in cm.groupby(keys, sort=True):
        first = g.iloc[0]
        cols = g[g["is_column"]]
        out = {**dict(zip(keys, key)), "n_features": int(first["n_features"]), "delta": first["delta"],
               "select_on": first["select_on"], "baseline": baseline,
               "baseline_critical_n_neurons": first["baseline_critical_n_neurons"], "best_selector": "",
               "best_critical_n_neurons": np.nan, "diffuseness": np.nan, "bound": "",
               "candidates": ", ".join(cols["selector"]), "reason": ""}
        reached = cols[cols["reached"]]
        if cols.empty:
            out["reason"] = (f"no column selector besides {baseline} in this group "
                             f"({', '.join(g['selector'])} pick projections)")
        elif not first["baseline_reached"]:
            out["reason"] = f"{baseline} never reaches {first['delta']:g} x full at its tested sizes"
        elif reached.empty:
            out["reason"] = f"no column selector ({out['candidates']}) reaches {first['delta']:g} x full"
        if out["reason"]:
            rows.append(out)
            continue
        kbest = float(reached["critical_n_neurons"].min())
        best = reached[reached["critical_n_neurons"] == kbest]
        kb = float(first["baseline_critical_n_neurons"])
        low = any(_censored(kbest, int(s)) for s in best["smallest_n_neurons"])
        high = _censored(kb, int(first["baseline_smallest_n_neurons"]))
        out.update(best_selector=", ".join(sorted(best["selector"])), best_critical_n_neurons=kbest)
        if low and high:
            out["reason"] = (f"{baseline} and {out['best_selector']} both reach {first['delta']:g} x full at their "
                             "smallest tested size: the grid cannot tell them apart; test smaller fractions")
        else:
            out.update(diffuseness=kb / kbest, bound="lower" if low else ("upper" if high else ""))
        rows.append(out)
    return pd.DataFrame(rows, columns=[*keys, *DIFFUSENESS_TAIL])


def join_diffuseness(critical: pd.DataFrame, diffuse: pd.DataFrame | None) -> pd.DataFrame:
    """:func:`selector_critical_mass` rows with their group's diffuseness: one tidy table for CSV files.

    Parameters
    ----------
    critical : pandas.DataFrame
        The output of :func:`selector_critical_mass`.
    diffuse : pandas.DataFrame or None
        The output of :func:`diffuseness` on the same table (None: ``critical`` is returned as is).

    Returns
    -------
    pandas.DataFrame
        ``critical`` plus best_selector, best_critical_n_neurons, diffuseness, bound and
        diffuseness_reason (the ``reason`` of :func:`diffuseness`).
    """
    if diffuse is None:
        return critical
    keys = [k for k in group_keys(critical) if k in diffuse.columns]
    extra = diffuse[[*keys, "best_selector", "best_critical_n_neurons", "diffuseness", "bound", "reason"]]
    return critical.merge(extra.rename(columns={"reason": "diffuseness_reason"}), on=keys, how="left")


def _varying(df: pd.DataFrame) -> list[str]:
    """model and dataset, plus the group keys that vary in the table (layer, solver, weights, pooling, codec)."""
    return ["model", "dataset", *(k for k in ("layer", "solver", "weights", "pooling", "codec")
                                  if k in df.columns and df[k].nunique() > 1)]


def _num(v, digits: int, sign: bool = False) -> str:
    return "" if pd.isna(v) else f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def diffuseness_cell(r, digits: int = 2) -> str:
    """A diffuseness as the tables show it: ``"4.00 (fscore)"``, ``"≥ 2.00 (greedy)"``; "–" where it is NaN."""
    if pd.isna(r.diffuseness):
        return "–"
    mark = {"lower": "≥ ", "upper": "≤ "}.get(r.bound, "")
    return f"{mark}{r.diffuseness:.{digits}f} ({r.best_selector})"


def gap_table(gap: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """:func:`selector_gap` rows as display strings: one row per group and k, one column per selector.

    Parameters
    ----------
    gap : pandas.DataFrame
        The output of :func:`selector_gap`.
    digits : int, default 3
        Decimals of every number.

    Returns
    -------
    pandas.DataFrame
        Columns model, dataset (and the group keys that vary), k, fraction (k / n_features), the
        baseline's accuracy (column named after it) and one column per selector holding the gap,
        e.g. ``"+0.093 [+0.071, +0.110]"`` (the CI omitted where it is NaN; empty where a selector
        did not test k).
    """
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 10:
        raise ConfigError(f"digits must be an integer in [0, 10]; got {digits!r}")
    if gap.empty:
        raise DataError("the gap table is empty; compute it with critmass.metrics.selector_gap")
    keys = _varying(gap)
    baseline = str(gap["baseline"].iloc[0])
    cell = [_num(r.gap, digits, True) + ("" if pd.isna(r.gap_ci_low) else
                                         f" [{_num(r.gap_ci_low, digits, True)}, {_num(r.gap_ci_high, digits, True)}]")
            for r in gap.itertuples()]
    wide = (gap.assign(_cell=cell)
            .pivot_table(index=[*keys, "n_neurons"], columns="selector", values="_cell", aggfunc="first"))
    base = gap.groupby([*keys, "n_neurons"]).agg(fraction=("fraction", "first"), acc=("baseline_accuracy", "first"))
    out = base.join(wide).reset_index()
    out.columns.name = None
    selectors = list(dict.fromkeys(gap["selector"]))
    out["fraction"] = out["fraction"].map(lambda v: f"{v:.3g}")
    out["acc"] = out["acc"].map(lambda v: _num(v, digits))
    out[selectors] = out[selectors].fillna("")
    return out.rename(columns={"n_neurons": "k", "acc": baseline})[[*keys, "k", "fraction", baseline, *selectors]]


def critical_mass_table(critical: pd.DataFrame, diffuse: pd.DataFrame | None = None, *,
                        digits: int = 2) -> pd.DataFrame:
    """k* per selector next to the baseline's (and the group's diffuseness), as display strings.

    Parameters
    ----------
    critical : pandas.DataFrame
        The output of :func:`selector_critical_mass`.
    diffuse : pandas.DataFrame, optional
        The output of :func:`diffuseness` for the same table; adds a ``diffuseness`` column (the
        group's, on each of its rows).
    digits : int, default 2

    Returns
    -------
    pandas.DataFrame
        Columns model, dataset (and the group keys that vary), selector, kind (neurons / projection),
        ``k*``, the baseline's k* (``k* (random)``), ``k*(random) / k*`` and, with ``diffuse``,
        diffuseness; "–" where a selector never reaches delta.
    """
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 10:
        raise ConfigError(f"digits must be an integer in [0, 10]; got {digits!r}")
    keys = _varying(critical)
    baseline = str(critical["baseline"].iloc[0])

    def k(v, d) -> str:
        return "–" if pd.isna(v) else f"{int(v)} / {int(d)}"

    out = critical[keys].copy()
    out["selector"] = critical["selector"]
    out["kind"] = critical["is_column"].map({True: "neurons", False: "projection"})
    out["k*"] = [k(v, d) for v, d in zip(critical["critical_n_neurons"], critical["n_features"])]
    out[f"k* ({baseline})"] = [k(v, d) for v, d in zip(critical["baseline_critical_n_neurons"],
                                                       critical["n_features"])]
    out[f"k*({baseline}) / k*"] = critical["k_ratio"].map(lambda v: "–" if pd.isna(v) else f"{v:.{digits}f}")
    if diffuse is not None:
        gk = [c for c in group_keys(critical) if c in critical.columns and c in diffuse.columns]
        cells = {tuple(getattr(r, c) for c in gk): diffuseness_cell(r, digits) for r in diffuse.itertuples()}
        out["diffuseness"] = [cells.get(tuple(row), "") for row in critical[gk].itertuples(index=False)]
    return out.reset_index(drop=True)
