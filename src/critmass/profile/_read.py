"""Reading a profile run directory back (``critmass report`` draws the depth figures from it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..exceptions import DataError

__all__ = ["read_profile"]


def read_profile(run_dir) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The tables of a ``critmass profile`` run directory, or None when it holds no profile.

    Parameters
    ----------
    run_dir : path
        A run directory (:func:`profile`'s ``out``, or any run directory).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame or None) or None
        ``profile.parquet`` and ``layer_cka.parquet`` (None when absent); None without ``profile.parquet``.

    Raises
    ------
    DataError
        An unreadable table, or one that lacks the columns the report reads.
    """
    path = Path(run_dir)
    if not (path / "profile.parquet").is_file():
        return None
    try:
        prof = pd.read_parquet(path / "profile.parquet")
        lc = pd.read_parquet(path / "layer_cka.parquet") if (path / "layer_cka.parquet").is_file() else None
    except Exception as exc:  # noqa: BLE001 - a malformed file is one line
        raise DataError(f"cannot read the profile tables in {path} ({type(exc).__name__}); run `critmass profile` "
                        "again into that directory") from None
    missing = [c for c in ("layer", "depth", "width", "full_accuracy", "dr", "dr_ci_low", "dr_ci_high")
               if c not in prof.columns]
    if missing:
        raise DataError(f"{path / 'profile.parquet'} lacks columns {missing}; run `critmass profile` again")
    return prof, lc
