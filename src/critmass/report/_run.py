"""Reading a run directory: the result tables plus the config and versions recorded with them."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..exceptions import DataError
from ..metrics import REQUIRED_PER_CLASS_COLUMNS, REQUIRED_RESULT_COLUMNS, check_table, read_results

__all__ = ["RunData", "load_run"]

logger = logging.getLogger(__name__)

CKA_REQUIRED = ("model", "dataset", "layer", "selector", "fraction", "n_neurons", "seed", "cka")
# Files a sweep may leave beside the tables; shown verbatim (never executed or unpickled).
CONFIG_FILES = ("config.resolved.yaml", "config.resolved.yml", "config.resolved.json", "config.yaml", "config.json")
VERSIONS_FILE = "versions.json"


@dataclass
class RunData:
    """The tables and metadata of one run directory.

    Attributes
    ----------
    path : pathlib.Path
        The run directory.
    results : pandas.DataFrame
        ``results.parquet``: one row per probe.
    per_class : pandas.DataFrame or None
        ``per_class.parquet`` when present.
    cka : pandas.DataFrame or None
        ``cka.parquet`` when present.
    config : dict of str to str
        Label -> text of each configuration found (resolved config files, the probes' ``config``
        column), for display.
    versions : dict of str to str
        Package -> version (``versions.json`` or the probes' ``versions`` column); values that differ
        between rows are joined with " / ".
    """

    path: Path
    results: pd.DataFrame
    per_class: pd.DataFrame | None = None
    cka: pd.DataFrame | None = None
    config: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _read_optional(path: Path, name: str, required) -> pd.DataFrame | None:
    if not (path / name).is_file():
        return None
    table = read_results(path, name=name)
    if len(table) == 0:  # e.g. the empty cka.parquet of a sweep with `cka: false`: the same as no table
        return None
    return check_table(table, required, name=name)


def _read_cka(path: Path) -> pd.DataFrame | None:
    """``cka.parquet`` without the cells of subsets made only of constant neurons (no CKA: NaN, as the sweep's
    ``on_constant: nan`` records them); the figures and notes average over the cells that have one."""
    if (path / "cka.parquet").is_file():
        raw = read_results(path, name="cka.parquet")
        if "cka" in raw.columns and raw["cka"].isna().any():
            n = int(raw["cka"].isna().sum())
            logger.warning("cka.parquet: %d cell(s) have no CKA (their subsets hold only constant neurons); left out "
                           "of the CKA figure", n)
            raw = raw[raw["cka"].notna()].reset_index(drop=True)
            return None if raw.empty else check_table(raw, CKA_REQUIRED, name="cka.parquet")
    return _read_optional(path, "cka.parquet", CKA_REQUIRED)


def _json_values(series: pd.Series) -> list:
    """Distinct JSON documents of a column, parsed (an unparsable one is kept as its text)."""
    out = []
    for text in pd.unique(series.dropna().astype(str)):
        try:
            out.append(json.loads(text))
        except ValueError:
            out.append(text)
    return out


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run directory written by ``critmass probe``, ``critmass cka`` or ``critmass sweep``.

    Parameters
    ----------
    run_dir : str or path-like
        The directory holding ``results.parquet`` (and optionally ``per_class.parquet``,
        ``cka.parquet``, ``config.resolved.yaml`` and ``versions.json``); a path to its
        ``results.parquet`` works too.

    Returns
    -------
    RunData

    Raises
    ------
    DataError
        The directory or ``results.parquet`` is missing, a table is unreadable, empty or lacks
        required columns.
    """
    path = Path(run_dir)
    if path.is_file() and path.suffix == ".parquet":
        path = path.parent
    if not path.is_dir():
        raise DataError(f"run directory {path} does not exist; pass the --out directory of "
                        "`critmass probe` or `critmass sweep`")
    if not (path / "results.parquet").is_file():
        raise DataError(f"{path} has no results.parquet; pass the --out directory of `critmass probe` or "
                        "`critmass sweep` (it holds results.parquet)")
    results = check_table(read_results(path), REQUIRED_RESULT_COLUMNS, name="results.parquet")
    per_class = _read_optional(path, "per_class.parquet", REQUIRED_PER_CLASS_COLUMNS)
    cka = _read_cka(path)

    config: dict[str, str] = {}
    for name in CONFIG_FILES:
        if (path / name).is_file():
            config[name] = (path / name).read_text(encoding="utf-8", errors="replace")
    if "config" in results.columns:
        docs = _json_values(results["config"])
        for i, doc in enumerate(docs):
            label = "probe config" + (f" ({i + 1} of {len(docs)})" if len(docs) > 1 else "")
            config[label] = json.dumps(doc, indent=2, sort_keys=True) if not isinstance(doc, str) else doc

    versions: dict[str, list[str]] = {}
    docs = []
    if (path / VERSIONS_FILE).is_file():
        try:
            docs.append(json.loads((path / VERSIONS_FILE).read_text(encoding="utf-8")))
        except ValueError:
            logger.warning("%s is not valid JSON; ignored", path / VERSIONS_FILE)
    if "versions" in results.columns:
        docs += _json_values(results["versions"])
    for doc in docs:
        if isinstance(doc, dict):
            for k, v in doc.items():
                versions.setdefault(str(k), [])
                if str(v) not in versions[str(k)]:
                    versions[str(k)].append(str(v))
    return RunData(path=path, results=results, per_class=per_class, cka=cka, config=config,
                   versions={k: " / ".join(v) for k, v in versions.items()})
