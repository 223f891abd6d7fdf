"""Shared checks for the tidy tables the probe stage writes (results and per-class)."""

from __future__ import annotations

import glob as _glob
import numbers
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import check_random_state, closest
from ..exceptions import ConfigError, DataError

__all__ = ["GROUP_KEYS", "OPTIONAL_KEYS", "FULL_SELECTOR", "RESULT_COLUMNS", "PER_CLASS_COLUMNS", "REQUIRED_RESULT_COLUMNS",
           "REQUIRED_PER_CLASS_COLUMNS", "ACC_TOL",
           "read_results", "read_many", "group_keys", "class_label", "check_table", "check_delta", "check_selectors",
           "check_n_boot"]

#: One probe "group": a layer of a model probed on a dataset with one solver.
GROUP_KEYS = ("model", "dataset", "layer", "solver")
#: Keys newer probe tables carry: the weights (file hash or checkpoint name), the pooling of the layer and the
#: codec the neighbour solvers stored the vectors with. When present they split groups too, so two checkpoints
#: of one architecture are two groups (rows), and DR is never averaged across codecs.
OPTIONAL_KEYS = ("weights", "pooling", "codec")
# What a row written before a key existed means by it: every probe before the codec axis stored float32.
_MISSING_KEY = {"codec": "float32"}
#: The selector name of the full-layer probe (fraction 1.0, n_neurons == n_features).
FULL_SELECTOR = "all"
#: Columns the metrics need of a results / per-class table (the probe stage writes more; see
#: :data:`critmass.probes.RESULT_COLUMNS`).
RESULT_COLUMNS = (*GROUP_KEYS, "selector", "fraction", "n_neurons", "n_features", "seed", "test_accuracy")
PER_CLASS_COLUMNS = (*GROUP_KEYS, "selector", "fraction", "n_neurons", "seed", "class", "accuracy")
# Public names: what a results / per-class table must hold for the metrics (critmass.probes.RESULT_COLUMNS and
# PER_CLASS_COLUMNS are the full tables the probes write).
REQUIRED_RESULT_COLUMNS, REQUIRED_PER_CLASS_COLUMNS = RESULT_COLUMNS, PER_CLASS_COLUMNS

# Accuracies are ratios of counts over a test set of at most millions of samples, so two values
# closer than this are equal up to floating-point rounding of means (0.9 * 0.8 != 0.72 exactly).
ACC_TOL = 1e-9


def read_results(path: str | os.PathLike, *, name: str = "results.parquet") -> pd.DataFrame:
    """Read a probe table from a Parquet file, or from ``name`` inside a directory.

    Parameters
    ----------
    path : str or path-like
        A ``.parquet`` file, or the probe output directory that holds ``name``.
    name : str, default "results.parquet"
        File looked up when ``path`` is a directory (e.g. ``"per_class.parquet"``).

    Returns
    -------
    pandas.DataFrame
    """
    p = Path(path)
    if p.is_dir():
        p = p / name
    if not p.is_file():
        raise DataError(f"no results file at {p}; pass a {name} file or the directory the probe stage wrote it to")
    try:
        return pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises several types for a malformed file
        raise DataError(
            f"cannot read {p} as Parquet ({type(exc).__name__}: {exc}); pass the probe stage's {name}"
        ) from None


def group_keys(df: pd.DataFrame) -> list[str]:
    """The group keys of a table: :data:`GROUP_KEYS` plus those of :data:`OPTIONAL_KEYS` it has.

    Parameters
    ----------
    df : pandas.DataFrame
        A results, per-class or DR table.

    Returns
    -------
    list of str
    """
    return [*GROUP_KEYS, *(k for k in OPTIONAL_KEYS if k in df.columns)]


def class_label(cls, name=None) -> str:
    """A class as tables and notes show it: its own name when known (``"Shirt"``), else ``"class 4"``.

    Parameters
    ----------
    cls : int
        The class id.
    name : str, optional
        The class name (None, NaN or ``""`` when unknown).

    Returns
    -------
    str
    """
    if name is not None and not (isinstance(name, float) and np.isnan(name)) and str(name) != "":
        return str(name)
    return f"class {cls}"


def _expand(path) -> list[Path]:
    text = os.fspath(path)
    if _glob.has_magic(text) and not Path(text).exists():
        hits = sorted(_glob.glob(text, recursive=True))
        if not hits:
            raise DataError(f"no file or directory matches {text!r}; check the pattern (quote it to let critmass "
                            "expand it)")
        return [Path(h) for h in hits]
    return [Path(text)]


def read_many(paths, *, name: str = "results.parquet") -> pd.DataFrame:
    """Read and concatenate probe tables from several files, directories or glob patterns.

    Rows listed twice (the same file reached by two patterns) are kept once; the same probe with
    different results in two files is an error, since the bootstrap would count it twice.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = list(dict.fromkeys(p.resolve() for path in paths for p in _expand(path)))
    if not files:
        raise DataError(f"no {name} given; pass one or more files, run directories or glob patterns")
    tables = [read_results(p, name=name).assign(_source=str(p)) for p in files]
    if len(tables) == 1:
        return tables[0].drop(columns="_source")
    df = pd.concat(tables, ignore_index=True, sort=False)
    for k in OPTIONAL_KEYS:
        if k in df.columns:  # older files lack the column: one shared "unknown" value, not NaN (groupby drops NaN)
            df[k] = df[k].astype(object).where(df[k].notna(), _MISSING_KEY.get(k, ""))
    keys = [c for c in (*group_keys(df), "selector", "fraction", "n_neurons", "seed", "class") if c in df.columns]
    value = [c for c in ("test_accuracy", "val_accuracy", "accuracy") if c in df.columns]
    df = df.drop_duplicates(subset=[*keys, *value])
    dup = df.duplicated(subset=keys, keep=False).to_numpy()
    if dup.any():
        r = df[dup].iloc[0]
        srcs = sorted(set(df[dup & (df[keys] == r[keys]).all(axis=1).to_numpy()]["_source"]))
        raise DataError(
            f"probe {'/'.join(str(r[k]) for k in keys)} appears with different results in {' and '.join(srcs)}; "
            "pass each run once (or give the runs distinct weights / pooling columns)"
        )
    return df.drop(columns="_source").reset_index(drop=True)


def check_table(df, required: Sequence[str], *, name: str) -> pd.DataFrame:
    """Refuse a non-DataFrame, an empty table, missing columns and missing values in them.

    Parameters
    ----------
    df : pandas.DataFrame
        A probe table (results, per-class, CKA).
    required : sequence of str
        Columns that must be present and hold no missing value.
    name : str
        The table's name in messages (``"results"``).

    Returns
    -------
    pandas.DataFrame
        A copy with ``fraction`` rounded to 12 decimals (grouping key) and the optional keys as strings.

    Raises
    ------
    DataError
        In one line that names the table, the column and the fix.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"{name} must be a pandas DataFrame; got {type(df).__name__}; load it with critmass.metrics.read_results"
        )
    if df.empty:
        raise DataError(f"{name} is empty (0 rows); run the probe first or relax the filter that emptied it")
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = "".join(closest(c, df.columns) for c in missing)
        raise DataError(
            f"{name} lacks required column(s) {', '.join(missing)}{hint}; "
            f"pass the probe stage's {name} (needs {', '.join(required)})"
        )
    bad = df[list(required)].isna().any(axis=1).to_numpy()
    if bad.any():
        cols = [c for c in required if df[c].isna().any()]
        raise DataError(
            f"{name} has {int(bad.sum())} row(s) with missing values in {', '.join(cols)} "
            f"(first at row {int(np.argmax(bad))}); drop them or re-run those probes"
        )
    df = df.copy()
    # Fractions written by different jobs may differ in the last bits; group on a rounded copy.
    df["fraction"] = df["fraction"].astype(float).round(12)
    for k in OPTIONAL_KEYS:
        if k in df.columns:
            df[k] = df[k].astype(object).where(df[k].notna(), _MISSING_KEY.get(k, "")).astype(str)
    return df


def check_delta(delta) -> float:
    """Check delta, the share of full-layer accuracy a subset must reach: a number in (0, 1].

    Parameters
    ----------
    delta : float

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        Not a number, or outside (0, 1].
    """
    try:
        value = float(delta)
    except (TypeError, ValueError):
        raise ConfigError(f"delta must be a number in (0, 1]; got {delta!r}") from None
    if not (0.0 < value <= 1.0):
        raise ConfigError(f"delta must be in (0, 1]; got {delta!r}; use e.g. 0.9 for 90% of the full layer's accuracy")
    return value


def check_selectors(df: pd.DataFrame, selector, *, default_all: bool) -> list[str]:
    """Resolve ``selector`` (a name, names or None) against the table's selectors.

    Parameters
    ----------
    df : pandas.DataFrame
        A table with a ``selector`` column.
    selector : str, sequence of str or None
        None means every selector except the full layer (``default_all=False``) or every selector.
    default_all : bool
        Whether None includes the full layer (``'all'``).

    Returns
    -------
    list of str

    Raises
    ------
    DataError
        A selector the table lacks (with the closest one), or only full-layer rows.
    """
    available = sorted(map(str, df["selector"].unique()))
    if selector is None:
        chosen = [s for s in available if default_all or s != FULL_SELECTOR]
        if not chosen:
            raise DataError(
                "the table has only full-layer ('all') rows; run the probe with a subset selector "
                "(e.g. random) as well"
            )
        return chosen
    chosen = [selector] if isinstance(selector, str) else list(selector)
    for s in chosen:
        if s not in available:
            raise DataError(
                f"no rows with selector {s!r}{closest(s, available)}; the table has: {', '.join(available)}"
            )
    return chosen


def check_full_rows(df: pd.DataFrame, *, name: str) -> None:
    """Every group needs full-layer ('all') rows: DR and drops are relative to them."""
    has_full = df.assign(_full=df["selector"] == FULL_SELECTOR).groupby(group_keys(df), sort=True)["_full"].any()
    if not has_full.all():
        key = has_full.index[~has_full.to_numpy()][0]
        raise DataError(
            f"{name} for {'/'.join(map(str, key))} has no full-layer ('all') rows; "
            "run the probe with selector 'all' included"
        )


def check_n_boot(n_boot) -> int:
    """Check a bootstrap resample count: a non-negative integer (0: no bootstrap).

    Parameters
    ----------
    n_boot : int

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        A bool, a non-integer or a negative count.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 0:
        raise ConfigError(f"n_boot must be a non-negative integer (0 = no bootstrap); got {n_boot!r}")
    return int(n_boot)


def group_rng(random_state, key) -> np.random.Generator:
    """A generator for one group's bootstrap.

    With an int seed each group gets its own stream derived from (seed, group key), so a group's
    confidence interval does not change when other groups are added to or dropped from the table.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ConfigError(f"random_state must be a non-negative int, None or a Generator; got {random_state!r}")
        return np.random.default_rng([int(random_state), zlib.crc32(repr(tuple(map(str, key))).encode())])
    return check_random_state(random_state)
