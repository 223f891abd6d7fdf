"""Run a study: plan it as a sweep, run the sweep (resumable, local / Ray / Slurm), write one report and the
study's own Table 1 (DR per dataset for random, PCA and the best supervised ranking, the diffuseness, the
full-layer accuracy)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from .._io import atomic_path, atomic_write_bytes, atomic_write_json
from ._plan import SUPERVISED, Estimate, estimate, fit_budget, parse_budget, study_config

__all__ = ["StudyResult", "run_study", "study_table"]

log = logging.getLogger("critmass.study")

#: The study's summary table (``RUN_DIR/report/tables/study.csv``), one row per model, dataset and layer.
STUDY_COLUMNS = ("model", "dataset", "layer", "n_features", "full_accuracy", "dr_random", "dr_random_low",
                 "dr_random_high", "k_random", "dr_pca", "dr_pca_low", "dr_pca_high", "k_pca", "best_selector",
                 "dr_best", "dr_best_low", "dr_best_high", "k_best", "diffuseness", "diffuseness_bound")


@dataclass
class StudyResult:
    """What :func:`run_study` did: the config it ran, the sweep, the report and the study table."""

    run_dir: Path
    config: dict
    estimate: Estimate | None = None
    cut: list[str] = field(default_factory=list)
    sweep: object = None
    report: object = None
    table: pd.DataFrame | None = None
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.dry_run or (self.sweep is not None and self.sweep.ok)


def study_table(results: pd.DataFrame, *, delta: float = 0.9, n_boot: int = 1000, random_state: int = 0,
                supervised=SUPERVISED) -> pd.DataFrame:
    """Table 1 of a study: per (model, dataset, layer) the full-layer accuracy, DR(delta) with its bootstrap CI and
    k* for random neurons, for PCA and for the best supervised ranking (the one with the smallest k*), and the
    diffuseness k*(random) / min k*(rankings) (:func:`critmass.metrics.diffuseness`)."""
    from ..metrics import diffuseness, dr

    have = set(results["selector"].unique())
    sups = [s for s in supervised if s in have]
    names = [s for s in ("random", "pca", *sups) if s in have]
    d = dr(results, delta, selector=names, n_boot=n_boot, random_state=random_state)
    diff = diffuseness(results, delta, selectors=sups) if sups and "random" in have else None
    rows = []
    for (model, dataset, layer), g in d.groupby(["model", "dataset", "layer"], sort=False):
        by = {r["selector"]: r for _, r in g.iterrows()}
        row = {"model": model, "dataset": dataset, "layer": layer, "n_features": int(g["n_features"].iloc[0]),
               "full_accuracy": float(g["full_accuracy"].iloc[0])}
        for tag, sel in (("random", "random"), ("pca", "pca")):
            r = by.get(sel)
            row.update({f"dr_{tag}": _f(r, "dr"), f"dr_{tag}_low": _f(r, "dr_ci_low"),
                        f"dr_{tag}_high": _f(r, "dr_ci_high"), f"k_{tag}": _f(r, "critical_n_neurons")})
        best = min((by[s] for s in sups if s in by), key=lambda r: (r["critical_n_neurons"], -r["dr"]), default=None)
        row.update({"best_selector": None if best is None else best["selector"], "dr_best": _f(best, "dr"),
                    "dr_best_low": _f(best, "dr_ci_low"), "dr_best_high": _f(best, "dr_ci_high"),
                    "k_best": _f(best, "critical_n_neurons")})
        dd = None if diff is None else diff[(diff["model"] == model) & (diff["dataset"] == dataset)
                                            & (diff["layer"] == layer)]
        row["diffuseness"] = float(dd["diffuseness"].iloc[0]) if dd is not None and len(dd) else float("nan")
        row["diffuseness_bound"] = (str(dd["bound"].iloc[0]) if dd is not None and len(dd) and "bound" in dd
                                    and dd["bound"].iloc[0] is not None else "")
        rows.append(row)
    return pd.DataFrame(rows, columns=list(STUDY_COLUMNS))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _f(row, col):
    return float("nan") if row is None else float(row[col])


def _markdown(table: pd.DataFrame, delta: float) -> str:
    def ci(r, tag):
        v = r[f"dr_{tag}"]
        if pd.isna(v):
            return "—"
        lo, hi = r[f"dr_{tag}_low"], r[f"dr_{tag}_high"]
        k = "" if pd.isna(r[f"k_{tag}"]) else f", k* {int(r[f'k_{tag}'])}"
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]{k}" if pd.notna(lo) else f"{v:.3f}{k}"

    lines = [f"| dataset | layer | neurons | full acc. | DR({delta:g}) random | DR PCA | best supervised | "
             "DR best | diffuseness |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        diff = "—" if pd.isna(r["diffuseness"]) else f"{r['diffuseness']:.2f}" + (
            f" ({r['diffuseness_bound']} bound)" if r["diffuseness_bound"] else "")
        lines.append(f"| {r['dataset']} | {r['layer']} | {r['n_features']} | {r['full_accuracy']:.3f} | "
                     f"{ci(r, 'random')} | {ci(r, 'pca')} | {r['best_selector'] or '—'} | {ci(r, 'best')} | {diff} |")
    return "\n".join(lines) + "\n"


def run_study(model: str, datasets, *, out, quick: bool = False, budget=None, parts=None, dry_run: bool = False,
              config_out=None, executor: str | None = None, workers: int | None = None, address: str | None = None,
              delta: float = 0.9, n_boot: int = 1000, echo: Callable[[str], None] | None = None,
              **options) -> StudyResult:
    """The paper's study of one model on several datasets, in one call.

    Plans the study (:func:`critmass.study.study_config`: probe curves of random, PCA and supervised subsets
    with CKA, the depth profile, which neurons, partial inversion, the export of the critical mass), scales it to
    ``budget`` when given, writes the plan as a sweep config (``config_out``), runs it with
    :func:`critmass.sweep.run_sweep` (resumable: a killed study re-run continues; ``executor`` / ``workers`` /
    ``address`` as for sweeps) and writes one report (:func:`critmass.report.build_report`) with the study's
    Table 1 (:func:`study_table`) in ``RUN_DIR/report/tables/study.{csv,md}``.

    Parameters
    ----------
    model, datasets, quick, parts, **options
        See :func:`critmass.study.study_config` (``data_root``, ``cache``, ``image_size``, ``max_samples``,
        ``seeds``, ``fractions``, ``inversion_steps``, ``weights``, ``pretrained``, ``device``, ``batch_size``).
    out : path
        The run directory.
    budget : str or float, optional
        A time budget (``'1h'``, ``'90m'``, seconds): the settings are scaled down (:data:`BUDGET_STEPS`) until the
        estimate fits; what was cut is printed and recorded in ``RUN_DIR/study.json``.
    dry_run : bool
        Print the units and the estimated time; run nothing (``config_out`` is still written).
    delta, n_boot
        The report's DR threshold and bootstrap resamples.

    Returns
    -------
    StudyResult
    """
    from ..sweep import load_config, plan_sweep, run_sweep

    t0 = time.perf_counter()
    say = echo or (lambda msg: log.info(msg))
    out = Path(out).expanduser().resolve()
    budget_s = parse_budget(budget)
    cfg = study_config(model, datasets, out=out, quick=quick, parts=parts, workers=workers, **options)
    # Validate before anything is measured: an unknown dataset or a bad option is a one-line error now.
    plan = plan_sweep(load_config(cfg), out=out)
    cut: list[str] = []

    def price(c: dict) -> float:  # the whole study, done or not: a resumed study fits the budget the same way
        return estimate(plan_sweep(load_config(c), out=out), workers=workers, todo_only=False).total

    request = json.loads(json.dumps({"model": model, "datasets": datasets, "quick": quick, "parts": parts,
                                     "budget_s": budget_s, "options": options}, default=str))
    fitted = out / "study.plan.json"  # the settings a --budget chose, kept so a re-run resumes the same study
    if budget_s is not None:
        saved = _read_json(fitted)
        if saved and saved.get("request") == request:
            cfg, cut = saved["config"], saved["cut"]
        else:
            cfg, cut, _ = fit_budget(cfg, budget_s, price=price)
        plan = plan_sweep(load_config(cfg), out=out)
        if not dry_run:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(fitted, {"request": request, "config": cfg, "cut": cut})
    est = estimate(plan, workers=workers)
    if config_out is not None:
        path = Path(config_out)
        atomic_write_bytes(path, yaml.safe_dump(cfg, sort_keys=False).encode())
        say(f"wrote the study's sweep config to {path} (`critmass sweep {path}` runs it)")
    say(plan.describe())
    if cut:
        say(f"--budget {budget}: cut " + "; ".join(cut))
    say(est.describe())
    if dry_run:
        return StudyResult(run_dir=out, config=cfg, estimate=est, cut=cut, dry_run=True,
                           seconds=time.perf_counter() - t0)
    sweep = run_sweep(cfg, out=out, executor=executor, workers=workers, address=address, echo=echo)
    whole = estimate(plan, workers=workers, todo_only=False)  # the same calibration: the whole study's units
    study_info = {"model": model, "datasets": [d["spec"] for d in cfg["datasets"]], "quick": quick,
                  "budget_s": budget_s, "cut": cut, "estimate": {"seconds": est.seconds, "total": round(est.total, 1),
                                                                  "calibration": est.calibration},
                  "estimate_whole": {"seconds": whole.seconds, "total": round(whole.total, 1)},
                  "parts": [p for p in ("profile", "neurons", "inversion", "export") if p in cfg]}
    rep = table = None
    if len(sweep.results):
        from ..report import build_report

        table = study_table(sweep.results, delta=delta, n_boot=n_boot)
        # The report renders it (its first section) from the run directory, like the sweep's other tables.
        with atomic_path(out / "study_table.parquet", suffix=".parquet") as tmp:
            table.assign(delta=delta).to_parquet(tmp, index=False)
        rep = build_report(out, delta=delta, n_boot=n_boot)
        atomic_write_bytes(rep.out / "tables" / "study.csv", table.to_csv(index=False).encode())
        atomic_write_bytes(rep.out / "tables" / "study.md", _markdown(table, delta).encode())
        say(f"\nStudy table (DR({delta:g}) with 95% CI over seeds, k* in neurons):\n{_markdown(table, delta)}")
        say(f"report: {rep.html}")
    elif not sweep.ok:
        say("no probe results: see the failures above")
    study_info["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_json(out / "study.json", study_info)
    return StudyResult(run_dir=out, config=cfg, estimate=est, cut=cut, sweep=sweep, report=rep, table=table,
                       seconds=time.perf_counter() - t0)
