"""Probe fits in parallel processes on a CPU.

A batched L-BFGS fit on a few thousand rows spends most of its time in small tensor operations (indexing
the per-problem state, triangular solves, thin products) that a second intra-op thread barely speeds up,
because each operation is too small to split. Two processes of one thread each, fitting half of the
problems each, use both cores for all of it (``benchmarks/probes.py --n-jobs 1,auto`` compares them). The
problems are split into contiguous runs of the planned order, so each process receives whole nested chains or a sub-chain of consecutive sizes (a sub-chain is
itself nested: it keeps its one factorisation and one data pass per step) and results come back in the
planned order.

Workers are forked (Linux): they inherit the features without a copy and start in milliseconds, where a
spawned worker would first have to import torch again. Each runs one torch thread (a forked child must not start
an OpenMP team of its parent's size), and the parent waits.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from ..exceptions import ConfigError

#: ``n_jobs='auto'`` forks workers only for runs with at least this much data-pass work
#: (fit rows x sum of subset sizes x classes x penalties): below it the fit is too short for a second
#: process to pay for its start and the gathering of results. The demo's Fashion-MNIST curve is ~3e9.
AUTO_MIN_WORK = 2e8

_JOBS: list = []  # the fits a forked worker reads (inherited at fork, never pickled)
_FIT: Callable | None = None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_n_jobs(n_jobs) -> None:
    if not (n_jobs is None or n_jobs == "auto" or (isinstance(n_jobs, (int, np.integer))
                                                 and not isinstance(n_jobs, bool) and n_jobs >= 1)):
        raise ConfigError(f"n_jobs must be a positive integer or 'auto'; got {n_jobs!r}")


def resolve_n_jobs(n_jobs, *, solver: str, device: str, work: float, pieces: int) -> int:
    """The number of processes for a run: ``n_jobs`` (an int >= 1, or 'auto'/None) checked and capped.

    Only solvers registered as ``forkable`` (:func:`critmass.probes.register_solver`) fork: the closed-form
    ridge and the SGD probes are BLAS-bound, and threads serve them."""
    from ._solvers import solver_spec

    check_n_jobs(n_jobs)
    forkable = solver_spec(solver).forkable
    if n_jobs is None or n_jobs == "auto":
        if (not forkable or device != "cpu" or work < AUTO_MIN_WORK or not sys.platform.startswith("linux")
                or mp.current_process().daemon):
            return 1
        return max(1, min(usable_cores(), pieces))
    if n_jobs > 1 and (not forkable or device != "cpu"):
        return 1  # one process drives a GPU; other solvers use threads
    if n_jobs > 1 and not sys.platform.startswith("linux"):
        return 1  # workers are forked; elsewhere a spawned worker's torch import costs more than it saves
    return int(min(n_jobs, max(1, pieces)))


def split_even(costs: list[float], n: int) -> list[tuple[int, int]]:
    """Cut ``costs`` (in order) into at most ``n`` contiguous runs of nearly equal sum: each cut at the item
    boundary nearest to its share ``j x total / n``. Returns ``[(start, stop), ...]``, none empty."""
    c = np.cumsum(np.asarray(costs, dtype=np.float64))
    if n <= 1 or len(c) <= 1:
        return [(0, len(c))]
    total = c[-1]
    cuts = [0]
    for j in range(1, n):
        target = j * total / n
        at = int(np.searchsorted(c, target))  # c[at] >= target: cut after item at-1 or after item at
        if at > 0 and abs(c[at - 1] - target) <= abs(c[min(at, len(c) - 1)] - target):
            cut = at
        else:
            cut = at + 1
        cut = min(max(cut, cuts[-1] + 1), len(c) - (n - j))  # non-empty runs, room for the rest
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(len(c))
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _child_init() -> None:
    import torch

    torch.set_num_threads(1)


def _child_fit(i: int):
    # Warnings raised in a worker are sent back and raised again in the parent, where callers filter or
    # record them (a worker's own stderr would show them once, out of their reach).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _FIT(_JOBS[i])
    return out, [(str(w.message), w.category, w.filename, w.lineno) for w in caught]


def fit_in_order(jobs: list, fit: Callable, n_jobs: int) -> Iterator:
    """``fit(job)`` for every job, yielded in order; with ``n_jobs > 1`` in that many forked processes."""
    if n_jobs <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield fit(job)
        return
    global _JOBS, _FIT
    from concurrent.futures import ProcessPoolExecutor

    _JOBS, _FIT = jobs, fit
    try:
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=mp.get_context("fork"),
                                 initializer=_child_init) as pool:
            futures = [pool.submit(_child_fit, i) for i in range(len(jobs))]
            try:
                for fut in futures:
                    out, caught = fut.result()
                    for message, category, filename, lineno in caught:
                        warnings.warn_explicit(message, category, filename, lineno)
                    yield out
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        _JOBS, _FIT = [], None
