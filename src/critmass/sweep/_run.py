"""The sweep driver: plan, run the units that are not done, merge the shards into the run's tables.

Run directory layout::

    RUN_DIR/
        config.resolved.yaml     the config with every default filled in (absolute paths)
        versions.json            library versions of the driver
        summary.json             counts, executor, timings, failures of the last run
        plan.json                every unit: kind, key, label, state (done / failed), error
        failures.json            the units that failed: label, key, error, log file
        results.parquet          probe results of all units, deduplicated by key
        per_class.parquet        per-class test accuracy of the same probes
        cka.parquet              subset-vs-full CKA cells
        shards/<kind>/<key>/     one directory per unit: its tables, probe weights, status.json
        logs/sweep.log           the driver's log; logs/<kind>/<key>.log one log per unit
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import yaml

from .._env import versions
from .._io import atomic_path, atomic_write_bytes, atomic_write_json
from ..exceptions import ConfigError
from ._config import SweepConfig, load_config
from ._backends import check_executor
from ._executors import Executor, make_executor
from ._plan import STATUS_FILE, Plan, Unit, plan_sweep
from ._units import _fmt_eta, failed_status, log_to_file, pause_point, write_table

__all__ = ["CKA_KEYS", "RESULT_KEYS", "SweepResult", "merge_shards", "run_sweep"]

log = logging.getLogger("critmass.sweep")

#: Columns that identify a probe row (as in :mod:`critmass.probes`); the merged table is unique on them.
RESULT_KEYS = ["model", "dataset", "layer", "selector", "fraction", "n_neurons", "seed", "solver", "codec"]
#: Columns that identify a CKA cell.
CKA_KEYS = ["model", "dataset", "layer", "split", "selector", "fraction", "n_neurons", "seed"]
#: How often the driver re-runs units whose shards it cannot read before it records them as failed.
_MERGE_RETRIES = 2


@dataclass
class SweepResult:
    """What :func:`run_sweep` did and the merged tables.

    ``results`` / ``per_class`` / ``cka`` are the run directory's tables (empty on a dry run).
    ``ran`` lists the keys of the units run now, ``failures`` one dict per failed unit (``label``,
    ``key``, ``kind``, ``error``, ``log``); ``ok`` is true when nothing failed.
    """

    run_dir: Path
    plan: Plan
    results: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_class: pd.DataFrame = field(default_factory=pd.DataFrame)
    cka: pd.DataFrame = field(default_factory=pd.DataFrame)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    #: The optional sections' tables written beside them (profile.parquet, neurons.parquet, invert.parquet, ...).
    tables: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """A few lines: units run / skipped / failed and where the tables are."""
        lines = [(f"{len(self.ran)} unit(s) run, {len(self.skipped)} already done, {len(self.failures)} failed "
                  f"in {self.seconds:.1f} s")]
        if not self.dry_run:
            lines.append(f"results: {self.run_dir / 'results.parquet'} ({len(self.results)} rows), "
                         f"per_class.parquet ({len(self.per_class)}), cka.parquet ({len(self.cka)})")
        for f in self.failures:
            lines.append(f"FAILED {f['label']} [{f['key']}]: {f['error']} (log: {f['log']})")
        return "\n".join(lines)


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """One driver per run directory: a second one would run the same units twice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    fh = open(run_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"another `critmass sweep` is running in {run_dir}; wait for it or use another "
                              "output directory") from None
        yield
    finally:
        fh.close()  # closing releases the lock (also when the process is killed)


def _driver_log(path: Path):
    return log_to_file(path)


def _order(values: list[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(values)}


def _sort(df: pd.DataFrame, plan: Plan, keys: list[str]) -> pd.DataFrame:
    """Config order for names, numeric order for numbers: the same rows sort the same on every executor."""
    cfg = plan.config
    orders = {"model": _order([m.label for m in cfg.models]), "dataset": _order([d.label for d in cfg.datasets]),
              "layer": _order(list(dict.fromkeys(layer for m in cfg.models for layer in m.layers))),
              "selector": _order(["all", *cfg.selectors, *cfg.cka_selectors]), "solver": _order(cfg.solvers)}

    def key(col: pd.Series):
        if col.name in orders:
            return col.map(lambda v: orders[col.name].get(v, len(orders[col.name])))
        return col

    return df.sort_values([k for k in keys if k in df.columns], key=key, kind="stable").reset_index(drop=True)


def merge_shards(plan: Plan) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Merge the shards of the plan's finished units into (results, per_class, cka).

    Only units of the current plan count, so shards of an older config stay on disk without leaking
    into the tables. Rows get the config's model and dataset names, a ``unit`` column (the shard key)
    and, for probe weights, paths relative to the run directory. Every probe unit also fits the full
    layer (``selector='all'``); one such row per (model, dataset, layer, solver) is kept.

    A shard that cannot be read (e.g. torn by a crash of the machine) is not skipped silently: its unit
    is marked not done (``plan.state`` becomes ``'todo'``, its status file is set aside) and left out,
    with a warning; :func:`run_sweep` re-runs such units and merges again.
    """
    tables, _ = _merge(plan)
    return tables


def _unreadable(plan: Plan, unit: Unit, exc: BaseException) -> None:
    """Mark a finished unit whose shard cannot be read as not done, so the driver runs it again."""
    status = unit.shard_dir(plan.run_dir) / STATUS_FILE
    with contextlib.suppress(OSError):
        status.replace(status.with_name("status.unreadable.json"))  # kept for the post-mortem
    plan.state[unit.key] = "todo"
    log.warning("shard of %s [%s] cannot be read (%s: %s); it runs again", unit.label, unit.key,
                type(exc).__name__, " ".join(str(exc).split())[:300])


def _merge(plan: Plan) -> tuple[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], list[Unit]]:
    """:func:`merge_shards` and the units whose shards could not be read (now ``todo``)."""
    from ..probes import PER_CLASS_COLUMNS, RESULT_COLUMNS
    from ..similarity import CKA_COLUMNS

    run_dir = plan.run_dir
    res, pcs, ckas = [], [], []
    bad: list[Unit] = []
    for u in plan.units:
        if u.kind not in ("probe", "cka") or plan.state.get(u.key) != "done":
            continue
        shard = u.shard_dir(run_dir)
        rel = shard.relative_to(run_dir).as_posix()
        try:
            if u.kind == "probe":
                r = pd.read_parquet(shard / "results.parquet")
                pc = pd.read_parquet(shard / "per_class.parquet")
            else:
                ck = pd.read_parquet(shard / "cka.parquet")
        except Exception as exc:  # noqa: BLE001 - missing, truncated, not parquet: any reason re-runs it
            _unreadable(plan, u, exc)
            bad.append(u)
            continue
        if u.kind == "probe":
            if "weights_file" in r:
                r["weights_file"] = [f"{rel}/{p}" if isinstance(p, str) and p else p for p in r["weights_file"]]
            if "codec" not in r:  # shards written before the codec axis hold float32 probes
                r = r.assign(codec="float32", bytes_per_vector=4 * r["n_neurons"])
                pc = pc.assign(codec="float32")
            res.append(r.assign(model=u.model, dataset=u.dataset, unit=u.key))
            pcs.append(pc.assign(model=u.model, dataset=u.dataset, unit=u.key))
        else:
            ckas.append(ck.assign(model=u.model, dataset=u.dataset, unit=u.key))

    if res:
        results = pd.concat(res, ignore_index=True)
        full = results["selector"] == "all"
        reference = results[full].sort_values(["seed", "unit"], kind="stable").drop_duplicates(
            ["model", "dataset", "layer", "solver", "codec"])
        results = pd.concat([reference, results[~full]], ignore_index=True).drop_duplicates(RESULT_KEYS)
        per_class = pd.concat(pcs, ignore_index=True).merge(results[RESULT_KEYS + ["unit"]], on=RESULT_KEYS + ["unit"])
        per_class = per_class.drop_duplicates(RESULT_KEYS + ["class"])
        results, per_class = _sort(results, plan, RESULT_KEYS), _sort(per_class, plan, RESULT_KEYS + ["class"])
    else:
        results = pd.DataFrame(columns=[*RESULT_COLUMNS, "unit"])
        per_class = pd.DataFrame(columns=[*PER_CLASS_COLUMNS, "unit"])
    if ckas:
        cka = _sort(pd.concat(ckas, ignore_index=True).drop_duplicates(CKA_KEYS), plan, CKA_KEYS)
        for col in ("model", "dataset"):
            cka[col] = cka[col].astype("string")
    else:
        cka = pd.DataFrame(columns=[*CKA_COLUMNS, "unit"])
    return (results, per_class, cka), bad


#: Run-directory tables of the optional unit kinds: file -> (unit kind, shard file, key columns to de-duplicate on).
EXTRA_TABLES = {
    "profile.parquet": ("profile", "profile.parquet", ["model", "dataset", "layer", "solver"]),
    "layer_cka.parquet": ("profile", "layer_cka.parquet", ["model", "dataset", "layer_a", "layer_b"]),
    "profile_results.parquet": ("profile", "results.parquet", None),
    "neurons.parquet": ("neurons", "neurons.parquet", None),
    "neuron_stability.parquet": ("neurons", "neuron_stability.parquet", None),
    "neuron_overlap.parquet": ("neurons", "neuron_overlap.parquet", None),
    "invert.parquet": ("inversion", "invert.parquet", None),
    "export.parquet": ("export", "export.parquet", None),
}


def _merge_extras(plan: Plan) -> tuple[dict[str, pd.DataFrame], list[Unit]]:
    """The optional kinds' tables (:data:`EXTRA_TABLES`) from the finished units' shards, with the config's model
    and dataset names; the units whose shards cannot be read (now ``todo``)."""
    run_dir = plan.run_dir
    by_key = {u.key: u for u in plan.units}
    parts: dict[str, list[pd.DataFrame]] = {}
    bad: list[Unit] = []
    for u in plan.units:
        if u.kind not in {k for k, _, _ in EXTRA_TABLES.values()} or plan.state.get(u.key) != "done":
            continue
        shard = u.shard_dir(run_dir)
        try:
            read = {name: pd.read_parquet(shard / fname) for name, (kind, fname, _) in EXTRA_TABLES.items()
                    if kind == u.kind and (shard / fname).is_file()}
        except Exception as exc:  # noqa: BLE001 - any unreadable shard runs again
            _unreadable(plan, u, exc)
            bad.append(u)
            continue
        for name, df in read.items():
            # Names are not part of unit keys: the config's current names win over those in the shard.
            if u.kind in ("profile", "inversion", "export"):
                df = df.assign(model=u.model, dataset=u.dataset)
            elif u.kind == "neurons":
                df = _current_dataset_names(df, by_key).assign(model=u.model)
            parts.setdefault(name, []).append(df.assign(unit=u.key))
    tables = {}
    for name, dfs in parts.items():
        df = pd.concat(dfs, ignore_index=True)
        keys = EXTRA_TABLES[name][2]
        tables[name] = df.drop_duplicates(keys) if keys else df
    return tables, bad


def _current_dataset_names(df: pd.DataFrame, by_key: dict[str, Unit]) -> pd.DataFrame:
    """A which-neurons table with the dataset names of the probe units its rows came from (``probe`` keys)."""
    df = df.copy()
    for side in ("", "_a", "_b"):
        col = f"probe{side}"
        if col in df.columns:
            df[f"dataset{side}"] = [by_key[k].dataset if k in by_key else d
                                    for k, d in zip(df[col], df[f"dataset{side}"])]
    return df


def _write_extras(plan: Plan, tables: dict[str, pd.DataFrame]) -> None:
    """Write the optional tables and copy the inversion grids as ``invert_grid_<dataset>__<selector>.png``."""
    import shutil

    run_dir = plan.run_dir
    for name in EXTRA_TABLES:
        path = run_dir / name
        if name in tables:
            write_table(tables[name], path)
        else:
            path.unlink(missing_ok=True)  # a section dropped from the config leaves no stale table
    for old in run_dir.glob("invert_grid_*__*.png"):
        old.unlink(missing_ok=True)
    for u in plan.of_kind("inversion"):
        if plan.state.get(u.key) != "done":
            continue
        for grid in sorted(u.shard_dir(run_dir).glob("invert_grid*.png")):
            sel = grid.stem[len("invert_grid_"):] if grid.stem.startswith("invert_grid_") else \
                u.params["selectors"][0]
            with atomic_path(run_dir / f"invert_grid_{_safe(u.dataset)}__{sel}.png", suffix=".png") as tmp:
                shutil.copyfile(grid, tmp)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in str(name))


def _seconds_by_kind(plan: Plan, statuses: dict[str, dict]) -> dict[str, float]:
    """Worker seconds of the units run now, summed per kind (what each stage of the run cost)."""
    out: dict[str, float] = {}
    for u in plan.units:
        secs = statuses.get(u.key, {}).get("seconds")
        if isinstance(secs, (int, float)):
            out[u.kind] = round(out.get(u.kind, 0.0) + float(secs), 3)
    return out


def _apply_overrides(cfg: SweepConfig, executor, workers, address) -> SweepConfig:
    """The config as it will run: CLI executor options replace the file's (and are recorded)."""
    ex = cfg.executor.model_copy(update={k: v for k, v in (("kind", executor if isinstance(executor, str) else None),
                                                          ("workers", workers), ("address", address)) if v is not None})
    check_executor(ex.kind)
    if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
        raise ConfigError(f"workers must be a positive integer; got {workers!r}")
    new = cfg.model_copy(update={"executor": ex})
    new._filename, new._lines = cfg._filename, cfg._lines
    return new


def run_sweep(config, *, out=None, executor: str | Executor | None = None, workers: int | None = None,
              address: str | None = None, dry_run: bool = False, check_layers: bool = True,
              echo: Callable[[str], None] | None = None) -> SweepResult:
    """Run a sweep: every (model, layer, dataset) extraction, then its probe and CKA units; resumable.

    Units with a finished shard in the run directory are skipped, so a second call does no work, a
    changed config runs only the units whose inputs changed, and a killed run continues where it
    stopped. A unit that fails is recorded (``failures.json``, ``plan.json``) and the others go on.

    Parameters
    ----------
    config : path, dict or SweepConfig
        The sweep config (see :func:`critmass.sweep.load_config` and ``examples/demo.yaml``).
    out : path, optional
        Run directory (default: the config's ``output``).
    executor : {'local', 'ray', 'slurm'} or Executor, optional
        Backend (default: the config's ``executor.kind``, ``local``).
    workers : int, optional
        Local worker processes (default: the config's, else every core). Scripts that use more than
        one local worker need the ``if __name__ == "__main__":`` guard (spawned processes).
    address : str, optional
        Ray cluster address (default: the config's, ``RAY_ADDRESS`` or a new local instance).
    dry_run : bool
        Plan only: nothing is run or written.
    check_layers : bool
        Refuse layer names a model does not have before running (builds each model at random init).
    echo : callable, optional
        Receives the plan and one line per finished unit (the CLI prints them); default: the log.

    Returns
    -------
    SweepResult

    Examples
    --------
    >>> res = run_sweep("examples/demo.yaml", workers=2)            # doctest: +SKIP
    >>> res.results.groupby(["model", "dataset", "selector", "fraction"]).test_accuracy.mean()  # doctest: +SKIP
    """
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        for line in msg.splitlines():
            log.info(line)  # into RUN_DIR/logs/sweep.log once the run directory exists
        if echo is not None:
            echo(msg)

    cfg = _apply_overrides(load_config(config), executor, workers, address)
    plan = plan_sweep(cfg, out=out, check_layers=check_layers)
    run_dir = plan.run_dir
    if echo is not None:
        echo(plan.describe())  # also logged below, once the run directory's log exists
    elif dry_run:
        log.info(plan.describe())
    done_before = [u.key for u in plan.units if plan.state[u.key] == "done"]
    if dry_run:
        return SweepResult(run_dir=run_dir, plan=plan, skipped=done_before, dry_run=True,
                           seconds=time.perf_counter() - t0)

    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_lock(run_dir), _driver_log(run_dir / "logs" / "sweep.log"):
        # Re-read the shards under the lock: a driver that just finished may have completed units.
        plan = plan_sweep(cfg, out=run_dir)
        done_before = [u.key for u in plan.units if plan.state[u.key] == "done"]
        resolved = cfg.resolved()
        resolved["output"] = str(run_dir)
        atomic_write_bytes(run_dir / "config.resolved.yaml", yaml.safe_dump(resolved, sort_keys=False).encode())
        extra = versions(("critmass", "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "pandas",
                          "pyarrow", "pydantic", "ray", "submitit"))
        atomic_write_json(run_dir / "versions.json", extra)
        for line in plan.describe().splitlines():
            log.info(line)
        backend = make_executor(executor, cfg.executor, workers=workers, address=address)
        ran, statuses = _execute(plan, backend, cfg.device, say)
        (results, per_class, cka), bad = _merge(plan)
        extras, bad_extra = _merge_extras(plan)
        bad += bad_extra
        for _ in range(_MERGE_RETRIES):
            if not bad:
                break
            say(f"{len(bad)} finished unit(s) have unreadable shards; running them again")
            more_ran, more_statuses = _execute(plan, backend, cfg.device, say, units=bad)
            ran += [k for k in more_ran if k not in ran]
            statuses.update(more_statuses)
            (results, per_class, cka), bad = _merge(plan)
            extras, bad_extra = _merge_extras(plan)
            bad += bad_extra
        for u in bad:  # unreadable again right after a re-run: a failure, never a silent gap
            statuses[u.key] = failed_status(u, "its shard cannot be read after it was run again")
            plan.state[u.key] = "failed"
        write_table(results, run_dir / "results.parquet")
        pause_point("merge", run_dir)  # tests kill the driver here: one table new, the others old
        write_table(per_class, run_dir / "per_class.parquet")
        write_table(cka, run_dir / "cka.parquet")
        _write_extras(plan, extras)
        failures = [{"label": u.label, "key": u.key, "kind": u.kind, "error": statuses[u.key].get("error"),
                     "log": str(u.log_file(run_dir))}
                    for u in plan.units if plan.state[u.key] != "done" and u.key in statuses]
        atomic_write_json(run_dir / "failures.json", failures)
        atomic_write_json(run_dir / "plan.json", [
            {"kind": u.kind, "key": u.key, "label": u.label, "state": plan.state[u.key],
             "error": statuses.get(u.key, {}).get("error")} for u in plan.units])
        seconds = time.perf_counter() - t0
        atomic_write_json(run_dir / "summary.json", {
            "name": cfg.name, "run_dir": str(run_dir), "executor": backend.describe(), "units": len(plan.units),
            "ran": len(ran), "skipped": len(done_before), "failed": len(failures), "seconds": round(seconds, 3),
            **plan.count_cells(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "unit_seconds_by_kind": _seconds_by_kind(plan, statuses),
        })
        result = SweepResult(run_dir=run_dir, plan=plan, results=results, per_class=per_class, cka=cka, ran=ran,
                             skipped=done_before, failures=failures, seconds=seconds, tables=extras)
        say(result.summary())
    return result


def _needs(u: Unit, by_key: dict[str, Unit]) -> list[str]:
    """Keys of the units ``u`` waits for: its extraction, the analysis units whose shards it reads and their
    extractions (their refits and checks read the cached features)."""
    upstream = [by_key[k].extract_key for k in u.after if k in by_key and by_key[k].extract_key]
    return list(dict.fromkeys([*([u.extract_key] if u.extract_key else []), *upstream, *u.after]))


def _execute(plan: Plan, backend: Executor, device: str, say, units: list[Unit] | None = None
             ) -> tuple[list[str], dict[str, dict]]:
    """Submit every unit whose inputs are done (extractions first); release the rest as what they wait for
    finishes. ``units``: these (default: every unit not done). Returns the keys run and the status of every
    unit attempted."""
    run_dir = plan.run_dir
    by_key = {u.key: u for u in plan.units}
    todo = plan.todo if units is None else list(units)
    if units is not None:  # a unit whose inputs are gone needs them run again (transitively)
        chosen = {u.key for u in todo}
        stack = list(todo)
        while stack:
            for k in _needs(stack.pop(), by_key):
                if k not in chosen and plan.state.get(k) != "done" and k in by_key:
                    chosen.add(k)
                    stack.append(by_key[k])
        todo = [u for u in plan.units if u.key in chosen]

    def ready(u: Unit) -> bool:
        return all(plan.state.get(k) == "done" for k in _needs(u, by_key))

    def with_entry(u: Unit) -> Unit:
        return replace(u, entry=plan.entries.get(u.extract_key)) if u.extract_key else u

    waiting = [u for u in todo if u.kind != "extract" and not ready(u)]
    first = [u if u.kind == "extract" else with_entry(u) for u in todo if u.kind == "extract" or ready(u)]
    ran: list[str] = []
    statuses: dict[str, dict] = {}
    total = len(todo)
    if not total:
        return ran, statuses
    backend.start(run_dir, device=device)
    say(f"running {total} unit(s) on {backend.describe()}")
    progress = _Progress(total)
    with backend:
        backend.submit(first)
        while backend.pending:
            for st in backend.wait():
                unit = by_key[st["key"]]
                ran.append(unit.key)
                statuses[unit.key] = st
                ok = st.get("status") == "ok"
                plan.state[unit.key] = "done" if ok else "failed"
                _echo_unit(say, progress, unit, st)
                if unit.kind == "extract" and ok:
                    plan.entries[unit.key] = st["entry"]
                elif unit.kind != "extract":
                    pause_point(unit.kind, run_dir)  # tests kill the driver here: other units still running
                # What waited for this unit: run what is now ready; record why the rest cannot run.
                blocked = [unit] if not ok else []
                while blocked:
                    b = blocked.pop()
                    for d in [w for w in waiting if b.key in _needs(w, by_key)]:
                        waiting.remove(d)
                        what = "its extraction" if b.kind == "extract" else "a unit it reads"
                        dst = failed_status(d, f"not run: {what} failed ({b.label}: {statuses[b.key].get('error')})")
                        atomic_write_json(d.shard_dir(run_dir) / STATUS_FILE, dst)
                        ran.append(d.key)
                        statuses[d.key] = dst
                        plan.state[d.key] = "failed"
                        _echo_unit(say, progress, d, dst)
                        blocked.append(d)
                now = [w for w in waiting if ready(w)]
                if now:
                    for w in now:
                        waiting.remove(w)
                    backend.submit([with_entry(w) for w in now])
        for d in waiting:  # what it waits for did not run (not in this run's units): recorded, never silent
            missing = [by_key[k].label for k in _needs(d, by_key) if plan.state.get(k) != "done" and k in by_key]
            dst = failed_status(d, f"not run: waits for {', '.join(missing) or 'units'} that did not run; run the "
                                   "sweep again")
            atomic_write_json(d.shard_dir(run_dir) / STATUS_FILE, dst)
            ran.append(d.key)
            statuses[d.key] = dst
            plan.state[d.key] = "failed"
            _echo_unit(say, progress, d, dst)
    return ran, statuses


class _Progress:
    """Units done / total and an ETA from the mean time per finished unit so far."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def step(self) -> str:
        self.done += 1
        left = self.total - self.done
        if not left:
            return f"{self.done}/{self.total}"
        elapsed = time.perf_counter() - self.t0
        return f"{self.done}/{self.total}, ETA {_fmt_eta(elapsed / self.done * left)}"


def _echo_unit(say, progress: _Progress, unit: Unit, st: dict) -> None:
    ok = st.get("status") == "ok"
    where = progress.step()
    secs = st.get("seconds")
    facts = [f"{secs:.1f} s"] if isinstance(secs, (int, float)) else []
    speeds = st.get("images_per_s") or {}
    if speeds:
        facts.append(", ".join(f"{name} {v:.0f} images/s" for name, v in speeds.items()))
    tail = f" ({'; '.join(facts)})" if facts else ""
    if not ok:
        tail += f": {st.get('error')}"
    say(f"[{where}] {'ok' if ok else 'FAILED':<6} {unit.label}{tail}")
