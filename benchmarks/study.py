"""Benchmark: what `critmass study` costs, stage by stage, from an empty feature cache.

Runs ``critmass study MODEL --datasets ... --out RUN`` with a fresh cache directory (so extraction is timed),
then writes one row per unit kind to ``benchmarks/results/study.csv``: how many units it has and how many
finished, the worker seconds they took (their shards' status files), the study's estimate of all its units
(``RUN/study.json``),
and the run's wall-clock time, with the settings, what ``--budget`` cut, the CPU, the core count, the load
average at start and end, the date, the commit and the versions. ``--from-run RUN --wall S`` collects the rows
of a study that was run by hand (its wall time given in seconds).

Usage::

    python benchmarks/study.py efficientnet-lite0 fashion-mnist,digits,textures            # the default study
    python benchmarks/study.py efficientnet-lite0 fashion-mnist,digits,textures --budget 1h
    python benchmarks/study.py all-minilm-l6-v2 bbc-news,spam-assassin
    python benchmarks/study.py --from-run /tmp/lite0-study --wall 5400 --label default
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

OUT = ROOT / "benchmarks" / "results" / "study.csv"
KINDS = ("extract", "probe", "cka", "profile", "neurons", "inversion", "export", "report")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def rows_of(run: Path, *, wall: float, label: str, load: tuple[float, float] | None) -> list[dict]:
    """One row per unit kind of a study run directory (finished or stopped), plus the report and the whole run.

    Worker seconds are summed over the units whose shards say ``ok`` (every run into the directory counts, so a
    resumed study is measured whole); the estimate is the study's of all its units (``study.json``) or, for a run
    stopped before it wrote one, :func:`critmass.study.estimate` of its plan now.
    """
    import yaml

    from critmass._blas import cpu_model
    from critmass._env import versions
    from critmass.study import estimate
    from critmass.sweep import load_config, plan_sweep

    plan = plan_sweep(load_config(run / "config.resolved.yaml"), out=run)
    config = yaml.safe_load((run / "config.resolved.yaml").read_text())
    study_file = run / "study.json"
    study = json.loads(study_file.read_text()) if study_file.is_file() else None
    workers = config["executor"].get("workers") or os.cpu_count()
    if study is not None and study.get("estimate_whole"):
        est, est_total = study["estimate_whole"]["seconds"], study["estimate_whole"].get("total")
    else:
        e = estimate(plan, workers=workers, todo_only=False)
        est, est_total = e.seconds, round(e.total, 1)
    done: dict[str, int] = {}
    secs: dict[str, float] = {}
    for u in plan.units:
        try:
            st = json.loads((u.shard_dir(run) / "status.json").read_text())
        except (OSError, ValueError):
            continue
        if st.get("status") == "ok" and isinstance(st.get("seconds"), (int, float)):
            done[u.kind] = done.get(u.kind, 0) + 1
            secs[u.kind] = secs.get(u.kind, 0.0) + float(st["seconds"])
    model = config["models"][0]
    base = {
        "label": label, "model": model["spec"], "datasets": ",".join(d["spec"] for d in config["datasets"]),
        "quick": None if study is None else study.get("quick"),
        "budget_s": None if study is None else study.get("budget_s"),
        "cut": "" if study is None else "; ".join(study.get("cut", [])),
        "fractions": len(config["fractions"]), "seeds": len(config["seeds"]),
        "max_samples": json.dumps({d["name"]: d.get("max_samples") for d in config["datasets"]}),
        "image_size": model.get("image_size"), "inversion_steps": (config.get("inversion") or {}).get("steps"),
        "workers": workers, "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_start": None if load is None else load[0], "load_end": None if load is None else load[1],
        "date": date.today().isoformat(), "commit": _commit(),
        "versions": json.dumps(versions(("critmass", "torch", "timm", "numpy", "scikit-learn"))),
    }
    kinds = [k for k in KINDS[:-1] if plan.of_kind(k)]
    rows = [{**base, "stage": kind, "units": len(plan.of_kind(kind)), "units_done": done.get(kind, 0),
             "worker_seconds": round(secs[kind], 1) if kind in secs else None,
             "estimated_seconds": est.get(kind)} for kind in kinds]
    if study is not None:
        summary = json.loads((run / "summary.json").read_text())
        report_s = max(0.0, float(study.get("seconds", 0)) - float(summary.get("seconds", 0)))
        rows.append({**base, "stage": "report", "units": 1, "units_done": 1, "worker_seconds": round(report_s, 1),
                     "estimated_seconds": None})
    rows.append({**base, "stage": "total (wall clock)", "units": len(plan.units), "units_done": sum(done.values()),
                 "worker_seconds": round(wall, 1) if wall == wall else None, "estimated_seconds": est_total})
    return rows


COLUMNS = ["label", "model", "stage", "units", "units_done", "worker_seconds", "estimated_seconds"]


def append(rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    if OUT.is_file():
        df = pd.concat([pd.read_csv(OUT), df], ignore_index=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT, index=False)
    print(f"appended {len(rows)} rows to {OUT}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("datasets", nargs="?")
    ap.add_argument("--budget")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--label", default="")
    ap.add_argument("--from-run", type=Path, help="collect the rows of a finished study run directory")
    ap.add_argument("--wall", type=float, help="with --from-run: its wall-clock seconds")
    ap.add_argument("--load", help="with --from-run: 'START,END' load averages")
    args = ap.parse_args(argv)
    if args.from_run:
        load = tuple(float(v) for v in args.load.split(",")) if args.load else None
        append(rows_of(args.from_run, wall=args.wall or float("nan"), label=args.label, load=load))
        return
    if not (args.model and args.datasets):
        ap.error("give MODEL and DATASETS, or --from-run RUN")
    with tempfile.TemporaryDirectory(prefix="critmass-study-bench-") as tmp:
        run, cache = Path(tmp) / "run", Path(tmp) / "cache"  # an empty cache: extraction is timed
        cmd = [sys.executable, "-c", "from critmass.cli import main; main()", "study", args.model, "--datasets", args.datasets, "--out", str(run),
               "--cache", str(cache), "-q", *(["--budget", args.budget] if args.budget else []),
               *(["--quick"] if args.quick else [])]
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()[0]
        if load0 > 0.5:
            print(f"warning: load average {load0:.2f} at the start: the machine was busy, the times read high")
        append(rows_of(run, wall=wall, label=args.label or ("budget " + args.budget if args.budget else "default"),
                       load=(load0, load1)))


if __name__ == "__main__":
    main()
