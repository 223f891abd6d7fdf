"""How :func:`~critmass.probes.run_probes` groups its probes into estimator fits that share work, splits them
over worker processes, orders the ``penalty_rule='first-seed'`` followers after the seeds they follow, and
writes each (selector, seed)'s weights once its last fit is done."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..subsets import plan_subsets
from ._base import _distinct_sets
from ._parallel import fit_in_order, split_even

__all__ = ["Job", "plan_jobs", "split_jobs", "fit_phases", "count_weights", "save_weights"]

logger = logging.getLogger("critmass.probes._run")


@dataclass
class Job:
    """One estimator fit: subsets of (possibly projected) features and what each subset's rows are."""

    x_fit: np.ndarray
    x_val: np.ndarray | None
    x_test: np.ndarray
    subsets: list
    meta: list  # per subset: (selector, seed, k, [fractions])
    random_state: int
    weights: list = field(default_factory=list)  # (selector, seed, projection dict or None)
    projection: dict | None = None  # the probes see (X - mean) @ components
    alphas: list | None = None  # the penalty grid of this fit; None: the run's
    group: tuple = ()  # which fit a deferred (penalty_rule='first-seed') subset joins, with its penalty

    def arrays(self):
        """(fit, val, test) features as the probes see them."""
        if self.projection is None:
            return self.x_fit, self.x_val, self.x_test
        m, c = self.projection["mean"], self.projection["components"]
        return tuple(None if X is None else _project(X, m, c) for X in (self.x_fit, self.x_val, self.x_test))


def plan_jobs(selectors, seeds, group_by_seed: bool, size_fracs, X_fit, X_val, X_test, d, *, defer: bool = False,
              y_fit=None):
    """Group the probes into estimator fits that share work; returns ``(jobs, deferred)``.

    The subsets come from :func:`critmass.subsets.plan_subsets`, the one definition shared with CKA:
    selectors fitted on the fit rows, projections fitted in the probes' standardised space and expressed
    in raw units as ``(X - mean) @ components``. Column selectors of all seeds go into one fit (one Gram
    matrix; each seed's nested subsets form one chain); with ``group_by_seed`` (solvers whose seed also
    changes the fit: SGD orders its minibatches with it) each seed is its own fit. Projections change the features, so each (projection, seed) is its own fit
    on the projected features (projected lazily, one projected copy at a time, and not rescaled again).

    With ``defer`` (``penalty_rule='first-seed'``) the seed-dependent selectors' subsets of every seed but
    the first are not planned into ``jobs`` but returned in ``deferred`` (one job each per (selector,
    seed), its ``group`` the fit it joins): :func:`follow_jobs` regroups them by the penalty the first
    seed chose once that is known.
    """
    column_jobs: dict[int, Job] = {}
    jobs: list[Job] = []
    deferred: list[Job] = []
    for fitted in plan_subsets(selectors, seeds, size_fracs, X_fit, y_fit):  # labels: the fit rows' only
        name, seed = fitted.selector, fitted.seed
        meta = [(name, seed, k, frs) for k, frs in zip(fitted.sizes, fitted.fractions)]
        follows = defer and not fitted.deterministic and seed != seeds[0]
        if fitted.is_projection:
            proj = {"components": fitted.components, "mean": fitted.mean}
            job = Job(X_fit, X_val, X_test, [np.arange(k) for k in fitted.sizes], meta, seed, projection=proj,
                       group=("projection", name, seed))
            job.weights.append((name, seed, proj))
            (deferred if follows else jobs).append(job)
            continue
        group = seed if group_by_seed else 0
        if follows:
            job = Job(X_fit, X_val, X_test, [idx.copy() for idx in fitted.indices], meta,
                       seed if group_by_seed else seeds[0], group=("columns", group))
            job.weights.append((name, seed, None))
            deferred.append(job)
            continue
        if group not in column_jobs:
            column_jobs[group] = Job(X_fit, X_val, X_test, [], [], seed if group_by_seed else seeds[0])
            jobs.append(column_jobs[group])
        job = column_jobs[group]
        job.subsets += [idx.copy() for idx in fitted.indices]
        job.meta += meta
        job.weights.append((name, seed, None))
    return jobs, deferred


def split_jobs(jobs: list[Job], n: int) -> list[Job]:
    """Cut the column fits into about ``n`` fits of nearly equal data-pass work (sum of subset sizes) for
    ``n`` worker processes: contiguous runs of each fit's planned subsets, so a piece holds whole chains or
    consecutive sizes of one (nested still). Projection fits stay whole (each piece would project again)."""
    if n <= 1:
        return jobs
    cost = lambda job: [len(s) + 32 for s in job.subsets]  # noqa: E731 - +32: a problem's fixed overhead
    total = sum(sum(cost(j)) for j in jobs)
    out = []
    for job in jobs:
        if job.projection is not None or len(job.subsets) < 2:
            out.append(job)
            continue
        pieces = max(1, round(n * sum(cost(job)) / total))
        # A subset with the columns of an earlier one is fitted once (BaseProbe.fit): it costs nothing and goes
        # with the piece of its first copy.
        fit_index, same = _distinct_sets(job.subsets)
        first = np.asarray(fit_index)[same]
        costs = [c if first[i] == i else 0 for i, c in enumerate(cost(job))]
        piece_of = np.empty(len(costs), dtype=np.int64)
        for p, (a, b) in enumerate(split_even(costs, pieces)):
            piece_of[a:b] = p
        piece_of = piece_of[first]
        for p in np.unique(piece_of):
            idx = np.nonzero(piece_of == p)[0]
            meta = [job.meta[i] for i in idx]
            owners = {(m[0], m[1]) for m in meta}
            out.append(Job(job.x_fit, job.x_val, job.x_test, [job.subsets[i] for i in idx], meta, job.random_state,
                            weights=[w for w in job.weights if (w[0], w[1]) in owners], projection=job.projection,
                            alphas=job.alphas, group=job.group))
    return out


def fit_phases(jobs, deferred, chosen, pending, seeds, fit, workers, bar):
    """``(job, estimator, test predictions)`` of the planned fits, then of the deferred ones (which need the
    first seed's choices, recorded in ``chosen`` by the caller as the first phase's results arrive); each
    phase's fits in ``workers`` processes, yielded in order."""
    for job, (est, pred) in zip(jobs, fit_in_order(jobs, fit, workers)):
        if workers > 1:
            bar.update(len(job.subsets))
        yield job, est, pred
    if deferred:
        follow = split_jobs(follow_jobs(deferred, chosen), workers)
        count_weights(pending, follow)
        logger.info("penalty_rule='first-seed': %d subsets of seeds %s in %d fits at the first seed's penalties",
                    sum(len(j.subsets) for j in follow), seeds[1:], len(follow))
        for job, (est, pred) in zip(follow, fit_in_order(follow, fit, workers)):
            if workers > 1:
                bar.update(len(job.subsets))
            yield job, est, pred


def follow_jobs(deferred: list[Job], chosen: dict) -> list[Job]:
    """The fits of the deferred subsets: one per (group, penalty the first seed chose at that size).

    Column subsets of all the remaining seeds share one fit per penalty (per seed for solvers grouped by
    seed, whose ``group`` holds the seed); a projection's subsets stay with their own projected features. A size
    the first seed has no choice for (none in practice: every seed probes the same sizes) keeps the
    run's whole grid.
    """
    fits: dict = {}
    out: list[Job] = []
    for d in deferred:
        for idx, m in zip(d.subsets, d.meta):
            alpha = chosen.get((m[0], int(m[2])))
            key = (d.group, alpha)
            if key not in fits:
                fits[key] = Job(d.x_fit, d.x_val, d.x_test, [], [], d.random_state, projection=d.projection,
                                 alphas=None if alpha is None else [alpha], group=d.group)
                out.append(fits[key])
            job = fits[key]
            job.subsets.append(idx)
            job.meta.append(m)
            if not any((n, s) == (m[0], m[1]) for n, s, _ in job.weights):
                job.weights.append((m[0], m[1], d.projection))
    return out


def count_weights(pending: dict, jobs) -> None:
    """Count the fits holding each (selector, seed): its weights file is written after the last one."""
    for job in jobs:
        for name, seed, _ in job.weights:
            pending.setdefault((name, seed), {"left": 0, "arrays": None, "ks": []})["left"] += 1


def _project(X, mean, components) -> np.ndarray:
    """The probe's view of a projection selector: ``(X - mean) @ components`` (float32)."""
    return ((X.astype(np.float64) - mean) @ components).astype(np.float32)


def save_weights(weights_dir: Path, est, job: Job, pending: dict) -> dict:
    """One ``.npz`` per (selector, seed), written once the last fit holding its probes is done (one fit,
    except under ``penalty_rule='first-seed'``); returns {(selector, seed): path relative to the output dir}."""
    files = {}
    for name, seed, projection in job.weights:
        entry = pending[(name, seed)]
        arrays = entry["arrays"]
        if arrays is None:
            arrays = {"classes": est.classes_}
            if projection is not None:
                arrays.update(projection)
        for i, (sel, s, k, _) in enumerate(job.meta):
            if (sel, s) != (name, seed):
                continue
            if projection is None:
                arrays[f"indices_{k}"] = job.subsets[i]
            arrays[f"coef_{k}"] = est.coefs_[i].astype(np.float32)
            arrays[f"intercept_{k}"] = est.intercepts_[i].astype(np.float32)
            arrays[f"reg_{k}"] = np.float64(est.regs_[i])
            arrays[f"reg_applied_{k}"] = np.float64(est.regs_applied_[i])
            entry["ks"].append(int(k))
        rel = Path("weights") / f"{name}-seed{seed}.npz"
        files[(name, seed)] = rel.as_posix()
        entry["left"] -= 1
        if entry["left"] > 0:
            entry["arrays"] = arrays
            continue
        del pending[(name, seed)]
        arrays["n_neurons"] = np.array(sorted(entry["ks"]))
        path = weights_dir.parent / rel
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # a file handle: savez would append '.npz' to the temporary name
    return files
