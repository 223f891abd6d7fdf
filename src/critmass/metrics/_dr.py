"""Diffused redundancy DR(delta) and critical mass k*(delta) from a probe results table."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._validation import closest
from ..exceptions import ConfigError
from ._common import (
    ACC_TOL,
    FULL_SELECTOR,
    RESULT_COLUMNS,
    check_delta,
    check_full_rows,
    check_n_boot,
    check_selectors,
    check_table,
    group_keys,
    group_rng,
)

__all__ = ["dr", "dr_curve", "duplicate_sizes", "n_resample_values", "SELECT_ON"]

logger = logging.getLogger(__name__)

#: Which accuracy curve f* is read off: the test curve (as the paper's Table 1) or the validation curve.
SELECT_ON = ("test", "val")

DR_TAIL = [
    "n_features", "selector", "delta", "select_on", "full_accuracy", "threshold", "critical_fraction",
    "critical_fraction_nominal", "critical_n_neurons", "test_accuracy_at_critical", "dr", "dr_ci_low", "dr_ci_high",
    "dr_seed_std", "n_seeds", "n_sizes", "collapsed_fractions", "reached", "method",
]


def n_resample_values(n_seeds: int) -> int:
    """Distinct resamples (multisets) of ``n_seeds`` whole seed curves: C(2n - 1, n); 10 for 3 seeds.

    A percentile interval over seeds can take no more distinct values than this.
    """
    n = int(n_seeds)
    return math.comb(2 * n - 1, n) if n > 0 else 0


def _critical(curves: np.ndarray, thr: np.ndarray, fractions: np.ndarray, n_neurons: np.ndarray,
              n_features: int, interpolate: bool):
    """Critical fraction and neuron count of each accuracy curve (row of ``curves``).

    ``curves`` is (B, F) over the ascending ``fractions``; ``thr`` is (B,). A curve that never
    reaches its threshold gets f* = 1 (the full layer), k* = n_features and reached = False. Also
    returns the index of the first tested size that reaches the threshold (0 where none does).
    """
    ok = curves >= thr[:, None] - ACC_TOL  # NaN (untested size) compares False
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
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.clip((thr[rows] - a_lo) / (a_hi - a_lo), 0.0, 1.0)  # a_hi > a_lo: a_lo missed, a_hi reached
        t = np.where(np.isnan(t), 1.0, t)  # the size below was not tested in this resample
        fstar[rows] = fractions[lo] * (fractions[hi] / fractions[lo]) ** t
        kstar[rows] = n_neurons[lo] * (n_neurons[hi] / n_neurons[lo]) ** t
    return fstar, kstar, reached, i


def _seed_matrix(rows: pd.DataFrame, column: str, seeds, sizes) -> np.ndarray:
    """(seeds x sizes) of ``column``; a seed's rows of one size (fractions rounding to one k: one fit) averaged."""
    m = rows.pivot_table(index="seed", columns="n_neurons", values=column, aggfunc="mean")
    return m.reindex(index=seeds, columns=sizes).to_numpy(float)


def _nanmean_rows(w: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Weighted (by resample counts ``w``, B x S) mean over seeds of ``mat`` (S x F), ignoring NaN."""
    num = w @ np.nan_to_num(mat)
    den = w @ (~np.isnan(mat)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _group_dr(full_rows: pd.DataFrame, sub: pd.DataFrame, deltas: np.ndarray, n_features: int, *, select_on: str,
              interpolate: bool, n_boot: int, ci: float, rng: np.random.Generator, label: str) -> list[dict]:
    """DR rows (one per delta) for one group and selector."""
    column = f"{select_on}_accuracy"
    # Sizes, not nominal fractions: fractions that round to the same k are the same fit, and f* = k / D.
    sizes = np.sort(sub["n_neurons"].astype(int).unique())
    n_neurons = sizes.astype(float)
    fractions = n_neurons / n_features
    nominal = sub.groupby("n_neurons")["fraction"].min().reindex(sizes).to_numpy(float)
    seeds = np.sort(sub["seed"].unique())
    sel = _seed_matrix(sub, column, seeds, sizes)
    test = _seed_matrix(sub, "test_accuracy", seeds, sizes)
    with np.errstate(invalid="ignore"):
        mean_curve = np.nanmean(sel, axis=0)
        test_curve = np.nanmean(test, axis=0)
    full_by_seed = full_rows.groupby("seed", sort=True)[list(dict.fromkeys([column, "test_accuracy"]))].mean()
    full = float(full_by_seed[column].mean())
    full_test = float(full_by_seed["test_accuracy"].mean())

    # The bootstrap resamples whole seeds: a seed's nested subsets (one curve over all sizes) and, when the
    # full layer was fitted per seed, that seed's full-layer fit travel together. One draw, shared by every delta.
    if n_boot:
        n = len(seeds)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
        boot = _nanmean_rows(w, sel)
        full_seeds = full_by_seed.index.to_numpy()
        if len(full_seeds) == 1:
            boot_full = np.full(n_boot, full)  # one full-layer fit (deterministic selector): shared by every curve
        elif set(full_seeds.tolist()) == set(seeds.tolist()):
            boot_full = w @ full_by_seed[column].reindex(seeds).to_numpy(float) / n
        else:
            logger.info("%s: full-layer seeds %s differ from the subset seeds %s; resampling them separately",
                        label, full_seeds.tolist(), seeds.tolist())
            m = len(full_seeds)
            wf = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot).astype(float)
            boot_full = wf @ full_by_seed[column].to_numpy(float) / m

    q = 100 * np.array([(1 - ci) / 2, (1 + ci) / 2])
    rows = []
    for delta in deltas:
        thr = delta * full
        fstar, kstar, reached, first = _critical(mean_curve[None], np.array([thr]), fractions, n_neurons, n_features,
                                                 interpolate)
        ci_low = ci_high = np.nan
        if n_boot:
            bf, _, _, _ = _critical(boot, delta * boot_full, fractions, n_neurons, n_features, interpolate)
            ci_low, ci_high = np.percentile(1.0 - bf, q)
        # Each seed's own curve, over the sizes that seed was run at.
        seed_dr = []
        for row in sel:
            m = ~np.isnan(row)
            f, _, _, _ = _critical(row[m][None], np.array([thr]), fractions[m], n_neurons[m], n_features,
                                   interpolate)
            seed_dr.append(1.0 - f[0])
        hit = bool(reached[0])
        rows.append({
            "delta": float(delta),
            "select_on": select_on,
            "full_accuracy": full_test,
            "threshold": float(thr),
            "critical_fraction": float(fstar[0]),
            "critical_fraction_nominal": float(nominal[first[0]]) if hit else 1.0,
            # An interpolated k* is rounded up: the smallest whole number of neurons at the crossing.
            "critical_n_neurons": int(np.ceil(kstar[0] - 1e-9)),
            "test_accuracy_at_critical": float(test_curve[first[0]]) if hit else full_test,
            "dr": float(1.0 - fstar[0]),
            "dr_ci_low": float(ci_low),
            "dr_ci_high": float(ci_high),
            "dr_seed_std": float(np.std(seed_dr, ddof=1)) if len(seed_dr) > 1 else np.nan,
            "n_seeds": int(len(seeds)),
            "n_sizes": int(len(sizes)),
            "collapsed_fractions": int(sub["fraction"].nunique() - len(sizes)),
            "reached": hit,
            "method": "interpolated" if interpolate else "grid",
        })
    return rows


def check_select_on(select_on) -> str:
    """Check which curve f* is read off: ``"test"`` (the paper's reading) or ``"val"``.

    Parameters
    ----------
    select_on : str

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        Any other value (with the closest valid one).
    """
    if select_on not in SELECT_ON:
        raise ConfigError(f"select_on must be one of {', '.join(SELECT_ON)}; got {select_on!r}"
                          f"{closest(str(select_on), SELECT_ON)}")
    return select_on


def duplicate_sizes(results: pd.DataFrame, *, selector: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Tested fractions that round to the same number of neurons k (the same fit), per group and selector.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table.
    selector : str, sequence of str or None
        Selectors to check; None means every subset selector.

    Returns
    -------
    pandas.DataFrame
        One row per group, selector and k that more than one fraction gave, with columns of the group
        keys, selector, n_neurons, n_features, fraction_effective (k / n_features) and fractions (the
        nominal fractions, comma-separated).
    """
    df = check_table(results, RESULT_COLUMNS, name="results table")
    selectors = check_selectors(df, selector, default_all=False)
    keys = group_keys(df)
    df = df[df["selector"].isin(selectors) & (df["selector"] != FULL_SELECTOR)]
    g = (df.groupby([*keys, "selector", "n_neurons"], sort=True)
         .agg(n_features=("n_features", "max"), fractions=("fraction", lambda f: sorted(set(f))))
         .reset_index())
    g = g[g["fractions"].map(len) > 1].copy()
    g["fraction_effective"] = g["n_neurons"] / g["n_features"]
    g["fractions"] = g["fractions"].map(lambda fs: ", ".join(f"{f:g}" for f in fs))
    return g[[*keys, "selector", "n_neurons", "n_features", "fraction_effective", "fractions"]].reset_index(drop=True)


def dr_curve(results: pd.DataFrame, deltas: Sequence[float] | np.ndarray | None = None, *,
             selector: str | Sequence[str] = "random", interpolate: bool = False, n_boot: int = 1000,
             ci: float = 0.95, random_state=0, select_on: str = "test") -> pd.DataFrame:
    """Diffused redundancy DR(delta) for several deltas, per group and selector.

    For each group (model, dataset, layer, solver, and weights / pooling when the table has those
    columns) and selector, the full-layer accuracy is the mean accuracy of the group's ``'all'`` rows
    and the accuracy curve is the mean over seeds at each tested subset size k. Fractions that round
    to the same k (D = 512: 0.0005, 0.001 and 0.002 all give k = 1) are one fit and count once, at
    the fraction actually used, k / D. The critical fraction f* = k* / D, k* the smallest tested size
    whose mean accuracy is at least ``delta * full``, and DR = 1 - f* (Nanda et al. 2023). If no
    tested size reaches it, f* = 1, DR = 0 and ``reached`` is False.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table: one row per probe with columns model, dataset, layer, solver,
        selector, fraction, n_neurons, n_features, seed and test_accuracy (val_accuracy with
        ``select_on="val"``; optional weights and pooling split groups).
    deltas : sequence of float in (0, 1], optional
        Thresholds; default ``numpy.linspace(0.5, 1, 51)``.
    selector : str or sequence of str, default "random"
        Subset selector(s) to evaluate.
    interpolate : bool, default False
        If True, f* is where the mean accuracy curve, interpolated linearly in log-fraction between
        the last tested size below the threshold and the first at or above it, crosses
        ``delta * full`` (``method == 'interpolated'``); k* is interpolated likewise in log(k) and
        rounded up. Below the smallest tested size nothing is extrapolated.
    n_boot : int, default 1000
        Bootstrap resamples for the confidence interval. Whole seeds are resampled with replacement:
        a seed's curve over all sizes (its nested subsets) stays together, and so does that seed's
        full-layer fit when the full layer was fitted per seed (a single full-layer fit is shared by
        every resample; full-layer seeds that differ from the subset seeds are resampled separately).
        With n seeds there are only C(2n - 1, n) distinct resamples (10 for 3 seeds, 126 for 5),
        see ``n_seeds``. 0 skips it (NaN CI).
    ci : float, default 0.95
        Confidence level of the percentile interval (0.95 gives percentiles 2.5 and 97.5).
    random_state : int, None or numpy.random.Generator, default 0
        Seed of the bootstrap. With an int each group gets its own derived stream, so the result
        is reproducible and a group's interval does not depend on the other groups in the table.
    select_on : {"test", "val"}, default "test"
        The curve f* is read off. "test" reads it off the test accuracies, as the paper's Table 1
        does (the smallest size whose noisy test mean first crosses the threshold: biased towards
        high DR). "val" reads it off the validation accuracies (threshold ``delta`` x the full layer's
        validation accuracy) and reports the test accuracy there (``test_accuracy_at_critical``).

    Returns
    -------
    pandas.DataFrame
        One row per group, selector and delta with the group keys and columns n_features, selector,
        delta, select_on, full_accuracy (full layer's mean test accuracy), threshold (delta x the full
        layer's accuracy on the ``select_on`` split), critical_fraction (f* = k* / n_features),
        critical_fraction_nominal (smallest nominal fraction that gave k*), critical_n_neurons (k*),
        test_accuracy_at_critical (mean test accuracy at the first tested size reaching the
        threshold; the full layer's when none does), dr, dr_ci_low, dr_ci_high, dr_seed_std (sample
        std over seeds of each seed's own DR; NaN with one seed), n_seeds, n_sizes (distinct k
        tested), collapsed_fractions (nominal fractions beyond one per k), reached and method
        ('grid' or 'interpolated').

    Raises
    ------
    DataError
        Empty table, missing columns or values, a group without 'all' rows, unknown selector.
    ConfigError
        delta outside (0, 1], bad n_boot, ci, select_on or random_state.
    """
    select_on = check_select_on(select_on)
    required = (*RESULT_COLUMNS, *(["val_accuracy"] if select_on == "val" else []))
    df = check_table(results, required, name="results table")
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

    keys = group_keys(df)
    rows = []
    for key, g in df.groupby(keys, sort=True):
        full_rows = g[g["selector"] == FULL_SELECTOR]
        n_features = int(full_rows["n_features"].max())
        label = "/".join(map(str, key))
        for sel in selectors:
            sub = g[g["selector"] == sel]
            if sub.empty:
                logger.info("skipping %s: no rows with selector %r", label, sel)
                continue
            # The stream is keyed by the four base keys when the optional ones are empty, so adding the
            # (empty) weights / pooling columns to an old table does not change its intervals.
            rkey = (*key[:4], *(k for k in key[4:] if k != ""), sel)
            for row in _group_dr(full_rows, sub, deltas, n_features, select_on=select_on, interpolate=interpolate,
                                 n_boot=n_boot, ci=float(ci), rng=group_rng(random_state, rkey), label=label):
                rows.append({**dict(zip(keys, key)), "n_features": n_features, "selector": sel, **row})
    return pd.DataFrame(rows, columns=[*keys, *DR_TAIL])


def dr(results: pd.DataFrame, delta: float = 0.9, *, selector: str | Sequence[str] = "random",
       interpolate: bool = False, n_boot: int = 1000, ci: float = 0.95, random_state=0,
       select_on: str = "test") -> pd.DataFrame:
    """Diffused redundancy DR(delta) = 1 - f* and critical mass k*(delta), per group and selector.

    The same as :func:`dr_curve` with a single ``delta``; see there for the definitions.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table (columns model, dataset, layer, solver, selector, fraction,
        n_neurons, n_features, seed, test_accuracy; val_accuracy with ``select_on="val"``).
    delta : float in (0, 1], default 0.9
        Share of the full layer's accuracy a subset must reach (the paper's Table 1 uses 0.9).
    selector, interpolate, n_boot, ci, random_state, select_on
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
                    ci=ci, random_state=random_state, select_on=select_on)
