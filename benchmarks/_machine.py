"""What the benchmarks record about the machine they ran on: the CPU, the BLAS each side used, the load at the
start and end (a run on a busy machine is flagged: contention slows a threaded-BLAS baseline more than
critmass's single-thread workers, so a busy run flatters critmass), the commit, and the rows each script
appends to ``benchmarks/results/*.csv``."""

from __future__ import annotations

import csv
import io
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from critmass import _blas
from critmass._io import atomic_write_bytes

__all__ = ["BUSY_LOAD", "BUSY_OTHER", "Machine", "commit", "machine_line", "sklearn_blas", "write_rows"]

BUSY_LOAD = 0.5  # x cores: the 1-minute load average at the start above this is a busy machine
BUSY_OTHER = 0.25  # share of the machine's CPU time other processes used during the run


def machine_line() -> str:
    return (f"machine: {_blas.cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} (other jobs slow both sides), torch threads {torch.get_num_threads()}, "
            f"torch {torch.__version__}")


def sklearn_blas() -> str:
    """The BLAS libraries numpy / scipy (so scikit-learn) have loaded, with their thread counts."""
    from threadpoolctl import threadpool_info

    libs = [f"{i.get('internal_api')} {i.get('version') or '?'} ({Path(i.get('filepath', '')).parent.name}, "
            f"{i.get('num_threads')} threads)" for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(libs) or "unknown"


def _cpu_jiffies() -> float | None:
    """Busy CPU seconds of the whole machine since boot (``/proc/stat``), None where unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            f = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(f[:8]) - f[3] - (f[4] if len(f) > 4 else 0)  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime  # forked workers once joined


class Machine:
    """The machine's state at the start of a run; :meth:`finish` says whether it was busy."""

    def __init__(self):
        self.cores = os.cpu_count() or 1
        self.load_start = os.getloadavg()
        self.t0, self.busy0, self.own0 = time.perf_counter(), _cpu_jiffies(), _own_cpu()
        self.load_end, self.other, self.busy, self.why = self.load_start, None, False, []

    def start_lines(self, baseline: str = "scikit-learn (numpy / scipy)") -> list[str]:
        load = " / ".join(f"{v:.2f}" for v in self.load_start)
        blas = (f"BLAS: critmass {_blas.summary()} [{_blas.resolution().get('source')}]; "
                f"{baseline} {sklearn_blas()}")
        return [f"CPU: {_blas.cpu_model()}, {self.cores} cores; load average at start {load} (1 / 5 / 15 min)", blas]

    def finish(self, baseline: str = "scikit-learn's threaded BLAS") -> list[str]:
        self.load_end = os.getloadavg()
        wall, busy1 = time.perf_counter() - self.t0, _cpu_jiffies()
        if busy1 is not None and self.busy0 is not None and wall > 0:
            self.other = max(0.0, (busy1 - self.busy0) - (_own_cpu() - self.own0)) / (wall * self.cores)
        self.why = []
        if self.load_start[0] > BUSY_LOAD * self.cores:
            self.why.append(f"1-minute load average {self.load_start[0]:.2f} at the start > {BUSY_LOAD} x "
                            f"{self.cores} cores")
        if self.other is not None and self.other > BUSY_OTHER:
            self.why.append(f"other processes used {100 * self.other:.0f}% of the CPU time during the run")
        elif self.other is None and self.load_end[0] > self.load_start[0] + BUSY_LOAD * self.cores:
            self.why.append(f"the 1-minute load average rose from {self.load_start[0]:.2f} to {self.load_end[0]:.2f}")
        self.busy = bool(self.why)
        lines = ["load average at end " + " / ".join(f"{v:.2f}" for v in self.load_end)
                 + ("" if self.other is None else f"; other processes' share of the CPU during the run "
                    f"{100 * self.other:.0f}%")]
        if self.busy:
            lines.append("WARNING: busy machine (" + "; ".join(self.why) + "): the ratios are labelled "
                         f"'(busy machine)'; contention slows {baseline} more than critmass, so "
                         "they flatter critmass. Rerun on a quiet machine.")
        return lines

    def label(self) -> str:
        return " (busy machine)" if self.busy else ""

    def early_label(self) -> str:
        """The label before the run ends: from the load at the start only."""
        return " (busy machine)" if self.busy or self.load_start[0] > BUSY_LOAD * self.cores else ""


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_rows(rows: list[dict], path: Path, columns) -> None:
    """Append ``rows`` (their ``columns``) to the results CSV ``path`` (the whole file rewritten atomically)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    if not old:
        w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in columns})
    atomic_write_bytes(path, (old + buf.getvalue()).encode("utf-8"))
    print(f"rows appended to {path}")
