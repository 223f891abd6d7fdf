"""Diffused redundancy DR(delta) and critical mass k*(delta) from a probe results table."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..exceptions import ConfigError
from ._common import (
    ACC_TOL,
    FULL_SELECTOR,
    GROUP_KEYS,
    RESULT_COLUMNS,
    check_delta,
    check_full_rows,
    check_n_boot,
    check_selectors,
    check_table,
    group_rng,
)

__all__ = ["dr", "dr_curve"]

logger = logging.getLogger(__name__)

DR_COLUMNS = [
    *GROUP_KEYS, "n_features", "selector", "delta", "full_accuracy", "critical_fraction", "critical_n_neurons",
    "dr", "dr_ci_low", "dr_ci_high", "dr_seed_std", "reached", "method",
]


def _critical(curves: np.ndarray, thr: np.ndarray, fractions: np.ndarray, n_neurons: np.ndarray,
              n_features: int, interpolate: bool):
    """Critical fraction and neuron count of each accuracy curve (row of ``curves``).

    ``curves`` is (B, F) over the ascending ``fractions``; ``thr`` is (B,). A curve that never
    reaches its threshold gets f* = 1 (the full layer), k* = n_features and reached = False.
    """
    ok = curves >= thr[:, None] - ACC_TOL  # NaN (untested fraction) compares False
    reached = ok.any(axis=1)
    i = ok.argmax(axis=1)
    fstar = np.where(reached, fractions[i], 1.0)
    kstar = np.where(reached, n_neurons[i], n_features).astype(float)
    if interpolate:
        # Linear in log-fraction between the last grid point below the threshold and the first one at
        # or above it: the authors' grid is close to log-spaced (0.0005 .. 1), and accuracy grows
        # roughly linearly in log(k), so a straight line in fraction would overshoot on the sparse low end.
        # Below the smallest tested fraction nothing is known, so f* stays at that fraction.
        rows = np.nonzero(reached & (i > 0))[0]
        hi = i[rows]
        lo = hi - 1
        a_lo, a_hi = curves[rows, lo], curves[rows, hi]
        t = np.clip((thr[rows] - a_lo) / (a_hi - a_lo), 0.0, 1.0)  # a_hi > a_lo: a_lo missed, a_hi reached
        fstar[rows] = fractions[lo] * (fractions[hi] / fractions[lo]) ** t
        kstar[rows] = n_neurons[lo] * (n_neurons[hi] / n_neurons[lo]) ** t
    return fstar, kstar, reached


def _group_dr(full_acc: np.ndarray, sub: pd.DataFrame, deltas: np.ndarray, n_features: int, *,
              interpolate: bool, n_boot: int, ci: float, rng: np.random.Generator) -> list[dict]:
    """DR rows (one per delta) for one group and selector."""
    per_frac = sub.groupby("fraction", sort=True)
    fractions = np.array(list(per_frac.groups), dtype=float)
    seed_accs = [g["test_accuracy"].to_numpy(float) for _, g in per_frac]
    n_neurons = per_frac["n_neurons"].max().to_numpy(float)
    mean_curve = np.array([a.mean() for a in seed_accs])
    full = float(full_acc.mean())

    # One resample of the seeds per fraction (and of the full layer's seeds, when it has several),
    # drawn once and shared by every delta.
    if n_boot:
        boot = np.column_stack([a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1) for a in seed_accs])
        boot_full = full_acc[rng.integers(0, full_acc.size, size=(n_boot, full_acc.size))].mean(axis=1)
    per_seed = sub.pivot_table(index="seed", columns="fraction", values="test_accuracy", aggfunc="mean")
    per_seed = per_seed.reindex(columns=fractions).to_numpy(float)

    q = 100 * np.array([(1 - ci) / 2, (1 + ci) / 2])
    rows = []
    for delta in deltas:
        thr = delta * full
        fstar, kstar, reached = _critical(mean_curve[None], np.array([thr]), fractions, n_neurons, n_features,
                                          interpolate)
        ci_low = ci_high = np.nan
        if n_boot:
            bf, _, _ = _critical(boot, delta * boot_full, fractions, n_neurons, n_features, interpolate)
            ci_low, ci_high = np.percentile(1.0 - bf, q)
        # Each seed's own curve, over the fractions that seed was run at.
        seed_dr = []
        for row in per_seed:
            m = ~np.isnan(row)
            f, _, _ = _critical(row[m][None], np.array([thr]), fractions[m], n_neurons[m], n_features, interpolate)
            seed_dr.append(1.0 - f[0])
        rows.append({
            "delta": float(delta),
            "full_accuracy": full,
            "critical_fraction": float(fstar[0]),
            # An interpolated k* is rounded up: the smallest whole number of neurons at the crossing.
            "critical_n_neurons": int(np.ceil(kstar[0] - 1e-9)),
            "dr": float(1.0 - fstar[0]),
            "dr_ci_low": float(ci_low),
            "dr_ci_high": float(ci_high),
            "dr_seed_std": float(np.std(seed_dr, ddof=1)) if len(seed_dr) > 1 else np.nan,
            "reached": bool(reached[0]),
            "method": "interpolated" if interpolate else "grid",
        })
    return rows


def dr_curve(results: pd.DataFrame, deltas: Sequence[float] | np.ndarray | None = None, *,
             selector: str | Sequence[str] = "random", interpolate: bool = False, n_boot: int = 1000,
             ci: float = 0.95, random_state=0) -> pd.DataFrame:
    """Diffused redundancy DR(delta) for several deltas, per group and selector.

    For each group (model, dataset, layer, solver) and selector, the full-layer accuracy is the mean
    test accuracy of the group's ``'all'`` rows and the accuracy curve is the mean over seeds at each
    tested fraction. The critical fraction f* is the smallest tested fraction whose mean accuracy is
    at least ``delta * full`` and DR = 1 - f* (Nanda et al. 2023). If no tested fraction reaches it,
    f* = 1, DR = 0 and ``reached`` is False.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table: one row per probe with columns model, dataset, layer, solver,
        selector, fraction, n_neurons, n_features, seed and test_accuracy.
    deltas : sequence of float in (0, 1], optional
        Thresholds; default ``numpy.linspace(0.5, 1, 51)``.
    selector : str or sequence of str, default "random"
        Subset selector(s) to evaluate.
    interpolate : bool, default False
        If True, f* is where the mean accuracy curve, interpolated linearly in log-fraction between
        the last tested fraction below the threshold and the first at or above it, crosses
        ``delta * full`` (``method == 'interpolated'``); k* is interpolated likewise in log(k) and
        rounded up. Below the smallest tested fraction nothing is extrapolated.
    n_boot : int, default 1000
        Bootstrap resamples for the confidence interval: the seeds at each fraction (and the
        full layer's seeds) are resampled with replacement and DR recomputed. 0 skips it (NaN CI).
    ci : float, default 0.95
        Confidence level of the percentile interval (0.95 gives percentiles 2.5 and 97.5).
    random_state : int, None or numpy.random.Generator, default 0
        Seed of the bootstrap. With an int each group gets its own derived stream, so the result
        is reproducible and a group's interval does not depend on the other groups in the table.

    Returns
    -------
    pandas.DataFrame
        One row per group, selector and delta with columns model, dataset, layer, solver,
        n_features, selector, delta, full_accuracy, critical_fraction, critical_n_neurons (k* =
        n_neurons at f*), dr, dr_ci_low, dr_ci_high, dr_seed_std (sample std over seeds of each
        seed's own DR; NaN with one seed), reached and method ('grid' or 'interpolated').

    Raises
    ------
    DataError
        Empty table, missing columns or values, a group without 'all' rows, unknown selector.
    ConfigError
        delta outside (0, 1], bad n_boot, ci or random_state.
    """
    df = check_table(results, RESULT_COLUMNS, name="results table")
    deltas = np.linspace(0.5, 1.0, 51) if deltas is None else np.atleast_1d(np.asarray(deltas, dtype=object))
    if deltas.size == 0:
        raise ConfigError("deltas is empty; pass at least one delta in (0, 1], e.g. 0.9")
    deltas = np.array([check_delta(d) for d in deltas])
    n_boot = check_n_boot(n_boot)
    if not (isinstance(ci, (int, float)) and 0.0 < ci < 1.0):
        raise ConfigError(f"ci must be a confidence level in (0, 1); got {ci!r}; use e.g. 0.95")
    selectors = check_selectors(df, selector, default_all=False)
    if FULL_SELECTOR in selectors:
        raise ConfigError(f"selector {FULL_SELECTOR!r} is the full layer itself; pick a subset selector, e.g. random")
    check_full_rows(df, name="results table")

    rows = []
    for key, g in df.groupby(list(GROUP_KEYS), sort=True):
        full_rows = g[g["selector"] == FULL_SELECTOR]
        n_features = int(full_rows["n_features"].max())
        for sel in selectors:
            sub = g[g["selector"] == sel]
            if sub.empty:
                logger.info("skipping %s: no rows with selector %r", "/".join(map(str, key)), sel)
                continue
            for row in _group_dr(full_rows["test_accuracy"].to_numpy(float), sub, deltas, n_features,
                                 interpolate=interpolate, n_boot=n_boot, ci=float(ci),
                                 rng=group_rng(random_state, (*key, sel))):
                rows.append({**dict(zip(GROUP_KEYS, key)), "n_features": n_features, "selector": sel, **row})
    return pd.DataFrame(rows, columns=DR_COLUMNS)


def dr(results: pd.DataFrame, delta: float = 0.9, *, selector: str | Sequence[str] = "random",
       interpolate: bool = False, n_boot: int = 1000, ci: float = 0.95, random_state=0) -> pd.DataFrame:
    """Diffused redundancy DR(delta) = 1 - f* and critical mass k*(delta), per group and selector.

    The same as :func:`dr_curve` with a single ``delta``; see there for the definitions.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table (columns model, dataset, layer, solver, selector, fraction,
        n_neurons, n_features, seed, test_accuracy).
    delta : float in (0, 1], default 0.9
        Share of the full layer's accuracy a subset must reach (the paper's Table 1 uses 0.9).
    selector, interpolate, n_boot, ci, random_state
        As in :func:`dr_curve`.

    Returns
    -------
    pandas.DataFrame
        One row per group and selector; columns as in :func:`dr_curve`.

    Examples
    --------
    >>> import pandas as pd
    >>> keys = dict(model="m", dataset="d", layer="penultimate", solver="ridge", n_features=10)
    >>> rows = [dict(keys, selector="all", fraction=1.0, n_neurons=10, seed=0, test_accuracy=0.8)]
    >>> rows += [dict(keys, selector="random", fraction=f, n_neurons=int(f * 10), seed=0, test_accuracy=a)
    ...          for f, a in [(0.1, 0.5), (0.3, 0.75), (0.5, 0.79)]]
    >>> out = dr(pd.DataFrame(rows), 0.9, n_boot=0)
    >>> out[["critical_fraction", "critical_n_neurons", "dr", "reached"]].to_dict("records")
    [{'critical_fraction': 0.3, 'critical_n_neurons': 3, 'dr': 0.7, 'reached': True}]
    """
    return dr_curve(results, [check_delta(delta)], selector=selector, interpolate=interpolate, n_boot=n_boot,
                    ci=ci, random_state=random_state)
