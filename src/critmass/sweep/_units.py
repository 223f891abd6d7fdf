"""Worker side: run one unit and write its shard. Imported by local processes, Ray and Slurm workers.

:func:`execute_unit` never raises for an error of the unit itself: it records the error in the shard's
``status.json`` (``status: failed``) and returns the status, so one bad model or dataset does not stop
the sweep. Every file of a unit lives in its own shard directory and is written atomically; the
status file is written last, so a unit killed midway is simply not done.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import traceback
from pathlib import Path

from .._io import atomic_path, atomic_write_json
from ..exceptions import CritmassError
from ._plan import STATUS_FILE, Unit

__all__ = ["execute_unit", "failed_status", "init_local_worker", "set_threads"]

log = logging.getLogger("critmass.sweep")


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads so concurrent workers do not oversubscribe the cores."""
    if not n:
        return
    import torch

    torch.set_num_threads(max(1, int(n)))


def init_local_worker(threads: int | None) -> None:
    """Initializer of local pool workers: torch threads, and the platform's default start method.

    A spawned worker inherits ``spawn`` as its default start method, which would make the
    DataLoader inside an extraction pickle the dataset (and its transforms) for every loader
    worker; resetting it gives the DataLoader the same context as in a plain process.
    """
    import multiprocessing

    multiprocessing.set_start_method(None, force=True)
    set_threads(threads)


def failed_status(unit: Unit, error: str, *, tb: str | None = None, seconds: float = float("nan")) -> dict:
    """The ``status.json`` content of a unit that failed (also used by executors for crashed workers)."""
    return {"key": unit.key, "kind": unit.kind, "label": unit.label, "status": "failed", "error": error,
            "traceback": tb, "seconds": None if math.isnan(seconds) else round(seconds, 3),
            "host": socket.gethostname(), "pid": os.getpid(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CritmassError):
        return f"{type(exc).__name__}: {exc}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__


@contextlib.contextmanager
def log_to_file(path: Path, loggers=("critmass",), *, capture_warnings: bool = False):
    """Send the records of ``loggers`` (INFO and up) to ``path`` while the context is open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    targets = [logging.getLogger(name) for name in loggers]
    old_levels = [t.level for t in targets]
    for t in targets:
        t.addHandler(handler)
        if t.getEffectiveLevel() > logging.INFO:
            t.setLevel(logging.INFO)
    if capture_warnings:
        logging.captureWarnings(True)
    try:
        yield
    finally:
        if capture_warnings:
            logging.captureWarnings(False)
        for t, lvl in zip(targets, old_levels):
            t.removeHandler(handler)
            t.setLevel(lvl)
        handler.close()


def _unit_log(path: Path):
    """Send critmass's log records (and warnings) of this unit to its own log file."""
    return log_to_file(path, ("critmass", "py.warnings"), capture_warnings=True)


def _run_extract(unit: Unit, shard: Path) -> dict:
    from ..features import extract

    fs = extract(**unit.params, progress=False)
    return {"entry": str(fs.meta["source"]), "n_features": int(fs.n_features),
            "n_samples": {name: int(sp.n_samples) for name, sp in fs.splits.items()}}


def _run_probe(unit: Unit, shard: Path) -> dict:
    from ..probes import run_probes

    p = unit.params
    opts = {k: p[k] for k in ("alphas", "val_fraction", "val_seed", "refit", "save_weights", "solver_options")}
    # run_probes writes results.parquet, per_class.parquet and weights/ atomically into the shard.
    res = run_probes(unit.entry, selectors=[p["selector"]], fractions=p["fractions"], seeds=p["seeds"],
                     solver=p["solver"], n_neurons=p["n_neurons"], out=shard, device=p["device"], progress=False,
                     **opts)
    return {"rows": len(res.results), "probe_seconds": round(res.seconds, 3)}


def _run_cka(unit: Unit, shard: Path) -> dict:
    from ..similarity import cka_curve

    p = unit.params
    sizes = list(p["fractions"]) + [int(k) for k in (p["n_neurons"] or [])]
    df = cka_curve(unit.entry, selectors=p["selectors"], fractions=sizes, seeds=p["seeds"], debiased=p["debiased"],
                   split=p["split"], on_constant=p["on_constant"])
    with atomic_path(shard / "cka.parquet", suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    return {"rows": len(df)}


_RUNNERS = {"extract": _run_extract, "probe": _run_probe, "cka": _run_cka}


def execute_unit(unit: Unit, run_dir, threads: int | None = None) -> dict:
    """Run one unit, write its shard and ``status.json``, and return the status.

    Parameters
    ----------
    unit : Unit
        From :func:`critmass.sweep.plan_sweep`; analysis units need ``unit.entry`` (the cache entry).
    run_dir : path
        The sweep's run directory (shared by every worker).
    threads : int, optional
        torch intra-op threads of this worker.

    Returns
    -------
    dict
        ``status`` (``ok`` or ``failed``), ``key``, ``kind``, ``label``, ``seconds``, and ``error`` /
        ``traceback`` for a failure or the unit's own facts (``entry`` of an extraction, ``rows``).
    """
    set_threads(threads)
    run_dir = Path(run_dir)
    shard = unit.shard_dir(run_dir)
    shard.mkdir(parents=True, exist_ok=True)
    (shard / STATUS_FILE).unlink(missing_ok=True)  # a stale 'failed' must not outlive this attempt
    t0 = time.perf_counter()
    with _unit_log(unit.log_file(run_dir)):
        log.info("start %s (%s)", unit.label, unit.key)
        try:
            if unit.kind != "extract" and not unit.entry:
                raise CritmassError(f"{unit.label}: no features (extraction {unit.extract_key} did not finish)")
            info = _RUNNERS[unit.kind](unit, shard)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - any error of a unit is recorded, the sweep goes on
            tb = traceback.format_exc()
            log.error("failed %s: %s\n%s", unit.label, _one_line(exc), tb)
            status = failed_status(unit, _one_line(exc), tb=tb, seconds=time.perf_counter() - t0)
        else:
            seconds = time.perf_counter() - t0
            log.info("done %s in %.1f s", unit.label, seconds)
            status = {**failed_status(unit, "", seconds=seconds), "status": "ok", "error": None, **info}
    atomic_write_json(shard / STATUS_FILE, status)
    return status
