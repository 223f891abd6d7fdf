"""Benchmark: what `critmass study` costs, stage by stage, from an empty feature cache.

Runs ``critmass study MODEL --datasets ... --out RUN`` with a fresh cache directory (so extraction is timed),
then writes one row per unit kind to ``benchmarks/results/study.csv``: how many units ran, the worker
seconds they took (``RUN/summary.json``), the estimate the study printed before it ran (``RUN/study.json``),
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
    """One row per unit kind of a finished study run directory, plus the report and the whole run."""
    from critmass._blas import cpu_model
    from critmass._env import versions

    summary = json.loads((run / "summary.json").read_text())
    study = json.loads((run / "study.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    cfg = (run / "config.resolved.yaml").read_text()
    import yaml

    config = yaml.safe_load(cfg)
    measured = summary.get("unit_seconds_by_kind", {})
    estimate = study.get("estimate", {}).get("seconds", {})
    units = pd.Series([u["kind"] for u in plan]).value_counts().to_dict()
    report_s = max(0.0, float(study.get("seconds", 0)) - float(summary.get("seconds", 0)))
    base = {
        "label": label, "model": study["model"], "datasets": ",".join(study["datasets"]), "quick": study["quick"],
        "budget_s": study.get("budget_s"), "cut": "; ".join(study.get("cut", [])),
        "fractions": len(config["fractions"]), "seeds": len(config["seeds"]),
        "max_samples": json.dumps({d["name"]: d.get("max_samples") for d in config["datasets"]}),
        "image_size": config["models"][0].get("image_size"),
        "inversion_steps": (config.get("inversion") or {}).get("steps"),
        "workers": config["executor"].get("workers") or os.cpu_count(),
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_start": None if load is None else load[0],
        "load_end": None if load is None else load[1], "date": date.today().isoformat(), "commit": _commit(),
        "versions": json.dumps(versions(("critmass", "torch", "timm", "numpy", "scikit-learn"))),
    }
    first = {"label": label, "model": study["model"]}  # stage columns next, for reading the CSV
    base = {**first, **base}
    rows = [{**base, "stage": kind, "units": units.get(kind, 0), "worker_seconds": measured.get(kind),
             "estimated_seconds": estimate.get(kind)} for kind in KINDS[:-1] if units.get(kind)]
    rows.append({**base, "stage": "report", "units": 1, "worker_seconds": round(report_s, 1),
                 "estimated_seconds": None})
    rows.append({**base, "stage": "total (wall clock)", "units": len(plan), "worker_seconds": round(wall, 1),
                 "estimated_seconds": study.get("estimate", {}).get("total")})
    return rows


COLUMNS = ["label", "model", "stage", "units", "worker_seconds", "estimated_seconds"]


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
