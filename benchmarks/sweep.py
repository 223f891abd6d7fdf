"""Benchmark: wall time of the demo sweep (``examples/demo.yaml``) with 1 vs 2 local workers.

Each run gets a fresh run directory and, by default, a fresh feature cache, so it is the whole sweep a
user runs the first time (4 extractions of EfficientNet-Lite0, 28 logistic probe units, 4 CKA units).
``--warm`` extracts the features once beforehand (untimed) and times the sweep with cache hits, i.e.
the analysis units plus the cost of checking the cached extractions.

Printed: wall time per worker count, the speed-up over one worker, the summed time of the extraction
and analysis units (time inside units; with several workers it exceeds the wall time), and whether
the tables of every run agree (they must: the same units with the same keys).

Usage::

    python benchmarks/sweep.py                    # examples/demo.yaml, 1 and 2 workers, cold cache
    python benchmarks/sweep.py --warm             # features cached first
    python benchmarks/sweep.py --workers 1,2,4 --config my.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from critmass.sweep import load_config, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def unit_seconds(run_dir: Path) -> dict[str, float]:
    """Summed ``seconds`` of the units' status files, per kind."""
    out: dict[str, float] = {}
    for path in run_dir.glob("shards/*/*/status.json"):
        st = json.loads(path.read_text())
        out[st["kind"]] = out.get(st["kind"], 0.0) + float(st.get("seconds") or 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "demo.yaml"))
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--warm", action="store_true", help="extract the features once first; time cache hits")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    cfg = load_config(args.config)
    print(f"config {args.config}: {len(cfg.models)} model(s), {sum(len(m.layers) for m in cfg.models)} layer(s), "
          f"{len(cfg.datasets)} dataset(s), selectors {cfg.selectors}, {len(cfg.fractions)} fractions, "
          f"{len(cfg.seeds)} seeds, solvers {cfg.solvers}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; cache: {'warm' if args.warm else 'cold (fresh per run)'}")

    with tempfile.TemporaryDirectory(prefix="critmass-bench-sweep-") as tmp:
        tmp = Path(tmp)
        shared_cache = tmp / "cache-shared"
        if args.warm:
            t0 = time.perf_counter()
            run_sweep(cfg.model_copy(update={"cache": shared_cache}), out=tmp / "warmup", workers=max(counts))
            print(f"warm-up (extraction + analysis, untimed): {time.perf_counter() - t0:.1f} s")
        rows, tables = [], []
        for w in counts:
            cache = shared_cache if args.warm else tmp / f"cache-{w}"
            run_cfg = cfg.model_copy(update={"cache": cache})
            t0 = time.perf_counter()
            res = run_sweep(run_cfg, out=tmp / f"run-{w}", workers=w)
            wall = time.perf_counter() - t0
            if not res.ok:
                raise SystemExit(f"{len(res.failures)} unit(s) failed: {res.failures[0]['error']}")
            secs = unit_seconds(res.run_dir)
            rows.append((w, wall, len(res.ran), secs))
            tables.append(res.results)
            print(f"  {w} worker(s): {wall:7.1f} s wall, {len(res.ran)} units "
                  f"(inside units: extract {secs.get('extract', 0):.1f} s, probe {secs.get('probe', 0):.1f} s, "
                  f"cka {secs.get('cka', 0):.1f} s)", flush=True)

    base = rows[0][1]
    print()
    print("| workers | wall (s) | speed-up vs 1st |")
    print("|---:|---:|---:|")
    for w, wall, _, _ in rows:
        print(f"| {w} | {wall:.1f} | {base / wall:.2f}x |")
    ref = tables[0]["test_accuracy"].to_numpy()
    diff = max(float(np.max(np.abs(t["test_accuracy"].to_numpy() - ref))) if len(t) == len(ref) else float("inf")
               for t in tables)
    print(f"\nresults agree across worker counts: max |test accuracy difference| = {diff:.2g} "
          f"({len(ref)} probe rows each)")
    if len(rows) > 1:
        print(f"speed-up {rows[-1][0]} vs {rows[0][0]} worker(s): {base / rows[-1][1]:.2f}x")


if __name__ == "__main__":
    main()
