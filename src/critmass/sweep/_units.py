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
from .._testhooks import pause_here
from ..exceptions import CritmassError
from ._plan import STATUS_FILE, Unit

__all__ = ["execute_unit", "failed_status", "init_local_worker", "pause_point", "set_threads", "write_table"]

log = logging.getLogger("critmass.sweep")


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads so concurrent workers do not oversubscribe the cores."""
    if not n:
        return
    import torch

    torch.set_num_threads(max(1, int(n)))


def init_local_worker(threads: int | None, parent: int | None = None) -> None:
    """Initializer of local pool workers: die with the driver, torch threads, the default start method.

    A driver killed with SIGKILL cannot shut its pool down, and idle workers would wait on their queue
    forever (holding their memory), while busy ones would race the resumed sweep for the same files.
    So the kernel kills a worker when the driver dies (Linux ``PR_SET_PDEATHSIG``), and a watchdog
    thread checks the parent pid (other platforms, and a parent gone before the initializer ran).
    DataLoader workers of an extraction watch their own parent (this worker) and exit after it.

    A spawned worker inherits ``spawn`` as its default start method, which would make the
    DataLoader inside an extraction pickle the dataset (and its transforms) for every loader
    worker; resetting it gives the DataLoader the same context as in a plain process.
    """
    import multiprocessing

    if parent is not None:
        _die_with_parent(parent)
    multiprocessing.set_start_method(None, force=True)
    set_threads(threads)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """Kill this process when ``parent`` (the pid of the process that started it) exits."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        # The signal fires when the thread that forked this process exits. ProcessPoolExecutor spawns its
        # workers from the thread calling submit() (the driver's main thread: see LocalExecutor), so it
        # fires when the driver process exits. Best effort: the watchdog below covers any failure.
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

    if os.getppid() != parent:  # the driver died before the signal was armed
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    threading.Thread(target=watch, name="critmass-parent-watchdog", daemon=True).start()


def pause_point(name: str, run_dir) -> None:
    """Test hook: with ``CRITMASS_SWEEP_PAUSE_AT=name`` write ``RUN_DIR/.paused-<name>`` and sleep.

    Lets the crash tests kill the driver at an exact point rather than when some file happens to appear:
    ``probe`` / ``cka`` once such a unit has finished (its workers still running others), ``merge`` between
    two of the run's tables. ``CRITMASS_SWEEP_PAUSE_S`` sets the sleep (see :func:`critmass._testhooks.pause_here`).
    """
    pause_here("CRITMASS_SWEEP_PAUSE_AT", name, run_dir, seconds_env="CRITMASS_SWEEP_PAUSE_S")


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


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class _ExtractProgress:
    """Log the progress of this unit's extraction (rows, images/s, ETA) every ``every_s`` seconds.

    Reads the ``progress.json`` the cache writer keeps per batch in the entry's split directories (the
    entry's key is known only inside :func:`critmass.features.extract`, so the directories of this
    dataset and layer changed since the unit started are watched).
    """

    def __init__(self, unit: Unit, every_s: float = 10.0):
        import threading

        from ..features import default_cache_dir, entry_glob

        p = unit.params
        cache = Path(p["cache"]).expanduser() if p.get("cache") else default_cache_dir()
        self.pattern = (cache, entry_glob(p["dataset"], p.get("layer")))
        self.splits, self.every_s, self.t0 = list(p["split"]), every_s, time.time()
        self.seen: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="critmass-extract-progress", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=1)
        return False

    def _run(self) -> None:
        import json

        cache, pattern = self.pattern
        while not self._stop.wait(self.every_s):
            for split in self.splits:
                for prog in cache.glob(f"{pattern}/{split}/progress.json"):
                    try:
                        if prog.stat().st_mtime < self.t0:
                            continue
                        info = json.loads(prog.read_text())
                        done, n = int(info["rows_done"]), int(info["n"])
                    except (OSError, ValueError, KeyError, TypeError):
                        continue  # being replaced, or finished
                    now = time.time()
                    t_first, rows_first = self.seen.setdefault(str(prog), (now, done))
                    rate = (done - rows_first) / (now - t_first) if now > t_first else 0.0
                    speed = f", {rate:.1f} images/s, ETA {_fmt_eta((n - done) / rate)}" if rate > 0 else ""
                    log.info("extract %s: %d/%d images%s", split, done, n, speed)


def _run_extract(unit: Unit, shard: Path) -> dict:
    if "layers" in unit.params:
        return _run_extract_layers(unit)
    from ..features import extract

    t0 = time.time()
    with _ExtractProgress(unit):
        fs = extract(**unit.params, progress=False)
    speeds = {}
    for name, sp in fs.splits.items():
        man = sp.manifest
        path = Path(fs.meta["source"]) / name / "manifest.json"
        fresh = path.is_file() and path.stat().st_mtime >= t0  # extracted now, not a cache hit
        if fresh and isinstance(man.get("images_per_s"), (int, float)):
            speeds[name] = float(man["images_per_s"])
            log.info("extracted %s: %d images in %.1f s, %.1f images/s", name, sp.n_samples,
                     float(man.get("elapsed_s") or 0), speeds[name])
        else:
            log.info("%s: %d images from the cache", name, sp.n_samples)
    return {"entry": str(fs.meta["source"]), "n_features": int(fs.n_features),
            "n_samples": {name: int(sp.n_samples) for name, sp in fs.splits.items()}, "images_per_s": speeds}


def _run_extract_layers(unit: Unit) -> dict:
    """A model's layers on one dataset entry: one pass, one cache entry per layer (``entry``: {layer: path})."""
    from ..features import extract_layers

    t0 = time.time()
    with _ExtractProgress(unit):
        # No width cap unless the model entry sets one: each layer's entry is the one a single-layer extraction writes.
        fsets = extract_layers(**{"max_width": None, **unit.params}, progress=False)
    speeds = {}
    for layer, fs in fsets.items():
        for name, sp in fs.splits.items():
            path = Path(fs.meta["source"]) / name / "manifest.json"
            if path.is_file() and path.stat().st_mtime >= t0 and isinstance(sp.manifest.get("images_per_s"), (int, float)):
                speeds[name] = float(sp.manifest["images_per_s"])  # one pass: every fresh layer has the same
    log.info("extracted %d layers (%s)", len(fsets), ", ".join(f"{k} {v:.1f} images/s" for k, v in speeds.items())
             or "all from the cache")
    first = next(iter(fsets.values()))
    return {"entry": {layer: str(fs.meta["source"]) for layer, fs in fsets.items()},
            "n_features": {layer: int(fs.n_features) for layer, fs in fsets.items()},
            "n_samples": {name: int(sp.n_samples) for name, sp in first.splits.items()}, "images_per_s": speeds}


def _entry_of(unit: Unit):
    """The cache entry an analysis unit reads: its layer's, when its extraction wrote several layers."""
    return unit.entry[unit.layer] if isinstance(unit.entry, dict) else unit.entry


def _run_probe(unit: Unit, shard: Path) -> dict:
    from ..features import load_features
    from ..probes import ensure_solver, run_probes

    p = unit.params
    ensure_solver(p["solver"], p.get("solver_registration"))  # this worker may not have run register_solver
    opts = {k: p[k] for k in ("alphas", "val_fraction", "val_seed", "refit", "save_weights", "solver_options")}
    opts["full_layer"] = p.get("full_layer", True)  # one unit per (model, dataset, layer, solver) fits it
    opts["codecs"] = p.get("codecs")  # the neighbour solvers' codecs (None: float32)
    # run_probes writes results.parquet, per_class.parquet and weights/ atomically into the shard.
    # Only this dataset entry's splits: the shared cache entry may hold a val split another entry asked for.
    features = load_features(_entry_of(unit), splits=p["splits"]) if p.get("splits") else _entry_of(unit)
    res = run_probes(features, selectors=[p["selector"]], fractions=p["fractions"], seeds=p["seeds"],
                     solver=p["solver"], n_neurons=p["n_neurons"], out=shard, device=p["device"], progress=False,
                     n_jobs=1, **opts)  # one process per unit: the sweep runs units in parallel
    return {"rows": len(res.results), "probe_seconds": round(res.seconds, 3)}


def _run_cka(unit: Unit, shard: Path) -> dict:
    from ..similarity import cka_curve

    p = unit.params
    sizes = list(p["fractions"]) + [int(k) for k in (p["n_neurons"] or [])]
    df = cka_curve(_entry_of(unit), selectors=p["selectors"], fractions=sizes, seeds=p["seeds"], debiased=p["debiased"],
                   split=p["split"], on_constant=p["on_constant"], val_fraction=p["val_fraction"],
                   val_seed=p["val_seed"])
    write_table(df, shard / "cka.parquet")
    return {"rows": len(df)}


def _run_dir_of(shard: Path) -> Path:
    return shard.parents[2]  # RUN_DIR/shards/<kind>/<key>


def _probe_shard(run_dir: Path, key: str) -> Path:
    return run_dir / "shards" / "probe" / key


def write_table(df, path: Path) -> None:
    """Write a table as Parquet, atomically (a killed unit leaves no half-written table)."""
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def _run_profile(unit: Unit, shard: Path) -> dict:
    from ..profile import profile

    p = unit.params
    ext = dict(p["extract_options"])
    ext.setdefault("max_width", None)  # as the sweep's one-pass extraction: the same cache entries
    prof = profile(p["model"], p["dataset"], out=shard, layers=p["layers"], fractions=p["fractions"], seeds=p["seeds"],
                   solver=p["solver"], delta=p["delta"], n_boot=p["n_boot"], alphas=p["alphas"],
                   probe_val_fraction=p["val_fraction"], val_seed=p["val_seed"], probe_device=p["device"],
                   split=p["split"], selectors=p["selectors"], progress=False, **ext)
    return {"layers": len(prof.profile), "seconds_by_stage": prof.seconds}


def _run_neurons(unit: Unit, shard: Path) -> dict:
    import pandas as pd

    from ..metrics import neuron_overlap, neuron_stability, top_neurons

    p = unit.params
    run_dir = _run_dir_of(shard)
    shards = [_probe_shard(run_dir, k) for k in p["probes"]]
    labels = dict(zip(map(str, shards), p["datasets"]))
    # Sizes above the largest probed subset cannot be judged: capped there (subsets are nested).
    cap = min(_largest_k(sh, p["selector"]) for sh in shards)
    ks = sorted({min(int(k), cap) for k in p["k"]})
    tops, stab = [], []
    for sh in shards:
        # probe: the probe unit's key, by which the merge names the dataset (labels are not part of keys)
        t = top_neurons(sh, p["selector"], max(ks))
        tops.append(t.assign(dataset=labels[str(sh)], probe=sh.name))
        if p["n_boot"]:
            st = neuron_stability(sh, p["selector"], ks, n_boot=p["n_boot"], random_state=p["random_state"])
            stab.append(st.assign(dataset=labels[str(sh)], probe=sh.name))
    top = pd.concat(tops, ignore_index=True).assign(model=unit.model, layer=unit.layer)
    write_table(top.drop(columns=["run"], errors="ignore"), shard / "neurons.parquet")
    if stab:
        write_table(pd.concat(stab, ignore_index=True).drop(columns=["run"], errors="ignore").assign(
            model=unit.model, layer=unit.layer), shard / "neuron_stability.parquet")
    if len(shards) > 1:
        ov = neuron_overlap(shards, p["selector"], ks)
        by_run = {str(sh): (labels[str(sh)], sh.name) for sh in shards}
        for side in ("a", "b"):  # the runs -> the sweep's dataset names and the probe keys
            runs = [str(v) for v in ov[f"run_{side}"]]
            ov[f"dataset_{side}"] = [by_run[r][0] for r in runs]
            ov[f"probe_{side}"] = [by_run[r][1] for r in runs]
        write_table(ov.drop(columns=["run_a", "run_b"]).assign(model=unit.model, layer=unit.layer),
                     shard / "neuron_overlap.parquet")
    return {"rows": len(top)}


def _largest_k(shard: Path, selector: str) -> int:
    import pandas as pd

    r = pd.read_parquet(shard / "results.parquet", columns=["selector", "n_neurons"])
    return int(r.loc[r["selector"] == selector, "n_neurons"].max())


def _run_inversion(unit: Unit, shard: Path) -> dict:
    from ..invert import invert, load_images, write_inversion
    from ..models import load_model

    p = unit.params
    backbone = load_model(p["model"], pretrained=p["pretrained"], weights=p["weights"], image_size=p["image_size"])
    if backbone.modality != "image":
        raise CritmassError(f"partial inversion needs an image model; {p['model']} reads {backbone.modality}; "
                            "drop inversion: for it")
    backbone.check_layer(p["layer"])
    samples, names = load_images(p["dataset"], index=list(range(p["n_images"])), split=p["split"],
                                 root=p.get("root"), download=bool(p.get("download")))
    result = invert(backbone, samples, layer=p["layer"], pooling=p["pooling"], selectors=p["selectors"],
                    fractions=p["fractions"], seeds=p["seeds"], steps=p["steps"], optimizer=p["optimizer"],
                    device=p["device"], names=names, progress=False)
    result.table.insert(1, "dataset", unit.dataset)
    write_inversion(result, shard)
    return {"rows": len(result.table)}


def _run_export(unit: Unit, shard: Path) -> dict:
    import pandas as pd

    from ..export import export_run
    from ..metrics import dr

    p = unit.params
    run_dir = _run_dir_of(shard)
    results = pd.concat([pd.read_parquet(_probe_shard(run_dir, k) / "results.parquet") for k in p["probes"]],
                        ignore_index=True)
    results = results[results["solver"] == p["solver"]]
    full = results[results["selector"] == "all"].drop_duplicates(["seed"])
    results = pd.concat([full, results[results["selector"] != "all"]], ignore_index=True)
    d = dr(results, p["delta"], selector=p["selector"], n_boot=0).iloc[0]
    k, n = int(d["critical_n_neurons"]), int(d["n_features"])
    sub = results[(results["selector"] == p["selector"]) & (results["n_neurons"] == k)]
    row = {"model": unit.model, "dataset": unit.dataset, "layer": unit.layer, "solver": p["solver"],
           "selector": p["selector"], "delta": p["delta"], "k": k, "n_features": n, "seed": int(p["seed"]),
           "reached": bool(d["reached"]), "full_test_accuracy": float(d["full_accuracy"])}
    if sub.empty:  # k* is the whole layer and the grid has no fraction 1: nothing smaller to export
        row.update(kind="not-reached", fraction=float("nan"))
        write_table(pd.DataFrame([row]), shard / "export.parquet")
        return {"rows": 1}
    fraction = float(sub["fraction"].iloc[0])
    # A whole model (pruned where asked) for an image model's penultimate layer; the reduction and head otherwise.
    image = bool(p["image"]) and unit.layer == "penultimate"
    prune = bool(p["prune"] and image)
    res = export_run(_probe_shard(run_dir, p["export_probe"]), selector=p["selector"], fraction=fraction,
                     seed=int(p["seed"]), out=shard / "model", head_only=not image, prune=prune, weights=p["weights"],
                     onnx=False, torchscript=False, n_boot=p["n_boot"])
    s = res.savings
    acc = s["accuracy"]
    ci = acc.get("cost_ci") or {}
    bb = s.get("backbone") or {}
    lat = bb.get("latency") or {}
    nan = float("nan")

    def num(v):
        return nan if v is None else float(v)

    row.update(kind=res.config["kind"], fraction=fraction, bytes_full=s["storage"]["bytes_per_vector"]["full"],
               bytes_reduced=s["storage"]["bytes_per_vector"]["reduced"],
               head_params_full=s["head"]["params"]["full"], head_params_reduced=s["head"]["params"]["reduced"],
               params_full=num(bb.get("params", {}).get("full")), params_exported=num(bb.get("params", {}).get("exported")),
               flops_full=num(bb.get("flops", {}).get("full")), flops_exported=num(bb.get("flops", {}).get("exported")),
               subset_test_accuracy=num(acc.get("subset_test_accuracy")), accuracy_cost=num(acc.get("cost")),
               accuracy_cost_low=num(ci.get("low")), accuracy_cost_high=num(ci.get("high")),
               latency_full_ms=num(_ms(lat, "full")), latency_exported_ms=num(_ms(lat, "exported")),
               export_dir=str((shard / "model").relative_to(run_dir)))
    row["full_test_accuracy"] = num(acc.get("full_test_accuracy"))
    write_table(pd.DataFrame([row]), shard / "export.parquet")
    return {"rows": 1, "k": k, "fraction": fraction}


def _ms(latency: dict, which: str):
    return (latency.get(which) or {}).get("median_ms")  # critmass.export's cpu_latency


_RUNNERS = {"extract": _run_extract, "probe": _run_probe, "cka": _run_cka, "profile": _run_profile,
            "neurons": _run_neurons, "inversion": _run_inversion, "export": _run_export}


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
            if unit.extract_key and not unit.entry:
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
