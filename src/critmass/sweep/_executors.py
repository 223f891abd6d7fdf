"""Three backends behind one small interface: local processes, Ray tasks, Submitit (Slurm) job arrays.

Each is registered by name (:func:`critmass.sweep._backends.register_executor`); :func:`make_executor` and the
config read the registry, so a new backend is one module with one registered :class:`Executor` subclass,
imported by ``critmass/sweep/__init__.py``.

An executor takes units (:meth:`Executor.submit`) and hands back the status of finished ones
(:meth:`Executor.wait`); the driver decides what to submit next. Ray and Submitit do the placement;
the local executor places units itself: at most one extraction per GPU (one on a CPU-only machine),
analysis units on the remaining workers. Every backend runs the same worker
function, :func:`critmass.sweep._units.execute_unit`, which writes the unit's shard itself; a worker
that dies without writing (killed, out of memory, Slurm timeout) is recorded as failed by the driver.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as futures_wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from .._io import atomic_write_json
from ..exceptions import ConfigError
from ._backends import Executor, executor_class, register_executor
from ._config import ExecutorOptions, Resources
from ._plan import STATUS_FILE, Unit
from ._units import _one_line, execute_unit, failed_status, init_local_worker

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "SlurmExecutor", "make_executor"]

log = logging.getLogger(__name__)


def _crashed(unit: Unit, run_dir: Path, exc: BaseException) -> dict:
    """Record a unit whose worker died before writing its status."""
    status = failed_status(unit, f"worker crashed: {_one_line(exc)}")
    atomic_write_json(unit.shard_dir(run_dir) / STATUS_FILE, status)
    return status


def _wants_gpu(device: str, res: Resources, *, cluster_has_gpu: bool) -> float:
    """GPUs an extraction unit asks for: explicit ``gpus``, else 1 on a cuda device (or auto with GPUs)."""
    if res.gpus is not None:
        return float(res.gpus)
    if device.startswith("cuda") or (device == "auto" and cluster_has_gpu):
        return 1.0
    return 0.0


def _local_gpus(device: str) -> list[str]:
    """The CUDA devices local extraction units may use: one concurrent extraction each."""
    if device.startswith("cuda:"):
        return [device]
    if device not in ("auto", "cuda"):
        return []
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@register_executor("local")
class LocalExecutor(Executor):
    """Worker processes on this machine (``concurrent.futures``, spawn context).

    ``workers=1`` runs the units one by one in this process (no start-up cost, easy to debug). With
    several workers, at most one extraction runs per GPU (each with its DataLoader workers); without a GPU
    extractions run on any worker. Every unit gets ``cores // workers`` torch threads (a unit that runs
    alone, with nothing queued, every core), so the workers never oversubscribe the cores. Extractions
    are started first: they unlock the analysis.
    Workers die with the driver, also when it is killed.
    """

    def __init__(self, workers: int | None = None):
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ConfigError(f"workers must be a positive integer; got {workers!r}")
        self._queue: collections.deque[Unit] = collections.deque()
        self._extract_queue: collections.deque[Unit] = collections.deque()
        self._futures: dict[Future, Unit] = {}
        self._slots: dict[Future, int] = {}  # running extraction -> its GPU slot
        self._pool: ProcessPoolExecutor | None = None
        self._gpus: list[str] = []

    @classmethod
    def from_options(cls, options: ExecutorOptions, *, workers=None, address=None) -> LocalExecutor:
        return cls(workers or options.workers)

    def start(self, run_dir: Path, *, device: str = "auto") -> None:
        super().start(run_dir, device=device)
        self._gpus = _local_gpus(device) if self.workers > 1 else []

    def describe(self) -> str:
        return f"local, {self.workers} worker{'s' if self.workers > 1 else ''}"

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            # spawn, not fork: the driver may hold torch's thread pools, which do not survive a fork.
            # os.getpid(): workers watch this pid and die with the driver.
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=init_local_worker, initargs=(threads, os.getpid()))
        return self._pool

    def submit(self, units: Sequence[Unit]) -> None:
        if self.workers == 1:
            self._queue.extend(units)
            return
        for u in units:
            (self._extract_queue if u.kind == "extract" else self._queue).append(u)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand queued units to free workers: extractions first, while a GPU slot is free."""
        # Each unit gets its share of the cores as torch threads, so the workers together never run more
        # threads than there are cores: OpenMP threads that outnumber the cores wait on descheduled peers, and
        # an extraction with every core next to a probe unit runs far slower than alone. A unit that runs
        # alone (nothing else queued or running) gets every core.
        cores = os.cpu_count() or 1
        share = max(1, cores // self.workers)
        n_slots = len(self._gpus) or self.workers
        while len(self._futures) < self.workers:
            free = sorted(set(range(n_slots)) - set(self._slots.values()))
            if self._extract_queue and free:
                unit, slot = self._extract_queue.popleft(), free[0]
                if len(self._gpus) > 1 and unit.params.get("device") in ("auto", "cuda"):
                    unit = replace(unit, params={**unit.params, "device": self._gpus[slot]})
            elif self._queue:
                unit, slot = self._queue.popleft(), None
            else:
                return
            alone = not (self._futures or self._queue or self._extract_queue)
            threads = cores if alone and not self._gpus else share
            # submit() from this (the driver's main) thread: spawned workers are its children, which
            # their parent-death signal needs (it fires when the spawning thread exits).
            fut = self._get_pool().submit(execute_unit, unit, str(self.run_dir), threads)
            self._futures[fut] = unit
            if slot is not None:
                self._slots[fut] = slot

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._extract_queue) + len(self._futures)

    def wait(self) -> list[dict]:
        if self.workers == 1:
            return [execute_unit(self._queue.popleft(), self.run_dir)] if self._queue else []
        if not self._futures:
            self._dispatch()
        done, _ = futures_wait(list(self._futures), return_when=FIRST_COMPLETED)
        broken = any(isinstance(f.exception(), BrokenProcessPool) for f in done)
        if broken:  # a worker died (killed, out of memory): the pool fails every unit it holds, in a moment
            more, _ = futures_wait(list(self._futures), timeout=10)
            done = set(self._futures) if len(more) < len(self._futures) else more
        out = []
        for fut in done:
            unit = self._futures.pop(fut)
            self._slots.pop(fut, None)
            try:
                out.append(fut.result(timeout=0))
            except Exception as exc:  # noqa: BLE001 - broken pool, a result that cannot be unpickled
                out.append(_crashed(unit, self.run_dir, exc))
        if broken:  # later units get a fresh pool
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._dispatch()
        return out

    def close(self, *, cancel: bool = False) -> None:
        self._queue.clear()
        self._extract_queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None
        self._futures.clear()
        self._slots.clear()


@register_executor("ray")
class RayExecutor(Executor):
    """Ray core tasks, one per unit, on a running cluster (``address``) or a local instance.

    Extraction units ask for ``extract.cpus`` CPUs and, on a cuda (or auto, on a cluster with GPUs)
    device, ``extract.gpus`` GPUs (default 1; fractions pack several units on one GPU); analysis
    units ask for ``analysis.cpus`` / ``analysis.gpus``. A Ray instance this executor started is shut
    down by :meth:`close`; one that was already initialised is left running.
    """

    def __init__(self, address: str | None = None, *, extract: Resources | None = None,
                 analysis: Resources | None = None):
        self.address = address
        self.extract_res = extract or Resources()
        self.analysis_res = analysis or Resources(gpus=0)
        self._refs: dict = {}
        self._started = False

    @classmethod
    def from_options(cls, options: ExecutorOptions, *, workers=None, address=None) -> RayExecutor:
        return cls(address or options.address, extract=options.extract, analysis=options.analysis)

    def start(self, run_dir: Path, *, device: str = "auto") -> None:
        super().start(run_dir, device=device)
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'critmass[cluster]'") from None
        self._ray = ray
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                kwargs["_node_ip_address"] = "127.0.0.1"  # a local instance stays on loopback
            ray.init(address=self.address, **kwargs)
            self._started = True
        resources = ray.cluster_resources()
        self._cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        self._gpu_extract = _wants_gpu(device, self.extract_res, cluster_has_gpu=gpus > 0)
        self._gpu_analysis = float(self.analysis_res.gpus or 0)
        need = max(self._gpu_extract, self._gpu_analysis)
        if need > gpus:
            raise ConfigError(f"units ask for {need:g} GPU(s) but the Ray cluster has {gpus:g}; use device: cpu, "
                              "set executor.extract.gpus: 0, or add GPU nodes")
        for kind, res in (("extract", self.extract_res), ("analysis", self.analysis_res)):
            if res.cpus > self._cpus:
                raise ConfigError(f"executor.{kind}.cpus is {res.cpus} but the Ray cluster has {self._cpus:g} CPUs; "
                                  "lower it")
        self._remote = ray.remote(execute_unit)

    def describe(self) -> str:
        cpus = getattr(self, "_cpus", None)
        return f"ray ({self.address or 'local instance'}" + (f", {cpus:g} CPUs)" if cpus is not None else ")")

    def submit(self, units: Sequence[Unit]) -> None:
        for u in units:
            res = self.extract_res if u.kind == "extract" else self.analysis_res
            gpus = self._gpu_extract if u.kind == "extract" else self._gpu_analysis
            ref = self._remote.options(num_cpus=res.cpus, num_gpus=gpus, max_retries=0,
                                       name=f"critmass-{u.kind}-{u.key}").remote(u, str(self.run_dir), res.cpus)
            self._refs[ref] = u

    @property
    def pending(self) -> int:
        return len(self._refs)

    def wait(self) -> list[dict]:
        ray = self._ray
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        more, _ = ray.wait([r for r in self._refs if r not in ready], num_returns=len(self._refs) - len(ready),
                           timeout=0)
        out = []
        for ref in [*ready, *more]:
            unit = self._refs.pop(ref)
            try:
                out.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - worker died, task cancelled, object lost
                out.append(_crashed(unit, self.run_dir, exc))
        return out

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self._refs):
                with contextlib.suppress(Exception):  # already finished
                    self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._started:
            self._ray.shutdown()
            self._started = False


@register_executor("slurm")
class SlurmExecutor(Executor):
    """Submitit job arrays: one array per submission batch, extraction and analysis with their own parameters.

    ``cluster=None`` requires Slurm (``sbatch`` on the PATH); ``'local'`` runs the jobs as processes on
    this machine (for tests), ``'debug'`` in this process. ``params`` holds extra submitit parameters per
    kind (``{'extract': {'slurm_partition': 'gpu', 'timeout_min': 240}, 'analysis': {...}}``). The
    driver must stay alive while jobs run (run it in ``tmux`` on the login node or as a small job);
    interrupted, it cancels its jobs, and a re-run resumes from the shards.
    """

    def __init__(self, cluster: str | None = None, *, extract: Resources | None = None,
                 analysis: Resources | None = None, params: dict | None = None, poll_s: float | None = None):
        self.cluster = cluster
        self.extract_res = extract or Resources()
        self.analysis_res = analysis or Resources(gpus=0)
        self.params = params or {}
        self.poll_s = poll_s if poll_s is not None else (0.5 if cluster in ("local", "debug") else 10.0)
        self._jobs: dict = {}

    @classmethod
    def from_options(cls, options: ExecutorOptions, *, workers=None, address=None) -> SlurmExecutor:
        return cls(options.cluster, extract=options.extract, analysis=options.analysis,
                   params=options.slurm.model_dump())

    def start(self, run_dir: Path, *, device: str = "auto") -> None:
        super().start(run_dir, device=device)
        try:
            import submitit
        except ImportError:
            raise ConfigError("--executor slurm needs Submitit: pip install 'critmass[cluster]'") from None
        if self.cluster is None and shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm: no Slurm on this machine (sbatch not found); run on a Slurm login "
                              "node, or set executor.cluster: local to try it with submitit's local executor")
        folder = Path(run_dir) / "logs" / "submitit"
        self._executors = {}
        for kind, res in (("extract", self.extract_res), ("analysis", self.analysis_res)):
            ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
            gpus = _wants_gpu(device, res, cluster_has_gpu=False) if kind == "extract" else float(res.gpus or 0)
            params = {"name": f"critmass-{kind}", "timeout_min": 60, "cpus_per_task": res.cpus}
            if gpus:
                if gpus != int(gpus):
                    raise ConfigError(f"executor.{kind}.gpus is {gpus:g}; Slurm allocates whole GPUs")
                params["gpus_per_node"] = int(gpus)
            params.update(self.params.get(kind, {}))
            try:
                ex.update_parameters(**params)
            # submitit refuses an unknown parameter name with NameError and a value of the wrong type with
            # AssertionError, besides TypeError / ValueError: all are the user's config, in one line.
            except (TypeError, ValueError, NameError, AssertionError) as exc:
                raise ConfigError(f"executor.slurm.{kind}: {' '.join(str(exc).split())[:300]}; fix the "
                                  f"executor.slurm.{kind} entry of the sweep config") from None
            self._executors[kind] = ex
        self._threads = {"extract": self.extract_res.cpus, "analysis": self.analysis_res.cpus}

    def describe(self) -> str:
        return f"slurm (submitit, cluster={self.cluster or 'slurm'})"

    def submit(self, units: Sequence[Unit]) -> None:
        groups: dict[str, list[Unit]] = {}
        for u in units:
            groups.setdefault("extract" if u.kind == "extract" else "analysis", []).append(u)
        for kind, us in groups.items():
            n = len(us)
            jobs = self._executors[kind].map_array(execute_unit, us, [str(self.run_dir)] * n, [self._threads[kind]] * n)
            log.info("submitted %d %s job(s): %s", n, kind, jobs[0].job_id if jobs else "")
            self._jobs.update(zip(jobs, us))

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def wait(self) -> list[dict]:
        while True:
            done = [job for job in self._jobs if job.done()]
            if done or not self._jobs:
                break
            time.sleep(self.poll_s)
        out = []
        for job in done:
            unit = self._jobs.pop(job)
            try:
                out.append(job.result())
            except Exception as exc:  # noqa: BLE001 - FailedJobError, UncompletedJobError (timeout, preemption)
                out.append(_crashed(unit, self.run_dir, exc))
        return out

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            for job in list(self._jobs):
                with contextlib.suppress(Exception):  # already gone
                    job.cancel(check=False)
        self._jobs.clear()


def make_executor(kind: str | Executor | None, options: ExecutorOptions, *, workers: int | None = None,
                  address: str | None = None) -> Executor:
    """The executor registered as ``kind`` (default ``options.kind``), built from the config, CLI values first.

    Parameters
    ----------
    kind : str, Executor or None
        A registered name (``critmass.sweep.list_executors()``: ``local``, ``ray``, ``slurm`` built in), an
        executor (returned as is) or None for ``options.kind``.
    options : ExecutorOptions
        The config's ``executor`` section.
    workers, address : optional
        ``--workers`` / ``--address``: replace the config's.

    Returns
    -------
    Executor
    """
    if isinstance(kind, Executor):
        return kind
    return executor_class(kind or options.kind).from_options(options, workers=workers, address=address)
