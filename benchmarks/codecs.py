"""Benchmark: recall against bytes per vector across "which dimensions" and "how many bits", on real offline data.

For each case (model x dataset, features from the offline cache, extracted on first use), ``run_probes`` with the
retrieval solver (queries: the test split, gallery: the training rows, relevant = same label) and the kNN solver,
every selector (random, 3 seeds; pca) and fraction, and every codec: float32, float16, int8, binary,
binary-rerank, pq (and opq on all-MiniLM-L6-v2, whose OPQ training stays short at 384 dimensions). One row per
(solver, selector, k, codec, seed) goes to ``benchmarks/results/codecs.csv`` with recall@1/10, mAP, kNN accuracy,
bytes per vector and the rank agreement with the full float32 vector; the summary
``benchmarks/results/codecs_critical.csv`` holds, per case, the smallest bytes per vector within 1 and 5
points of the full vector's recall@10 (and kNN accuracy) and who achieves it; ``docs/codecs/frontier.png`` the
recall@10 frontiers. Every file records the date, commit, CPU, core count and library versions.

Usage::

    python benchmarks/codecs.py                      # every case (tens of minutes on 2 cores)
    python benchmarks/codecs.py --cases minilm-bbc   # one case
    python benchmarks/codecs.py --quick              # 3 fractions x 2 seeds, no opq
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CODECS = ["float32", "float16", "int8", "binary", "binary-rerank", "pq"]
CASES = {
    "lite0-fashion-mnist": dict(model="efficientnet-lite0", dataset="fashion-mnist", image_size=112,
                                max_samples={"train": 5000, "test": 2000}, opq=False),
    "minilm-bbc": dict(model="all-minilm-l6-v2", dataset="bbc-news", opq=True),
    "mpnet-bbc": dict(model="all-mpnet-base-v2", dataset="bbc-news", opq=False),
    "minilm-spam": dict(model="all-minilm-l6-v2", dataset="spam-assassin", opq=True),
    "mpnet-spam": dict(model="all-mpnet-base-v2", dataset="spam-assassin", opq=False),
}
FRACTIONS = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0]


def cpu_model() -> str:
    from critmass._blas import cpu_model as _cpu_model  # the one reading of /proc/cpuinfo

    return _cpu_model()


def provenance() -> dict:
    from critmass._env import versions

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    v = versions()
    return {"date": date.today().isoformat(), "commit": commit, "cpu": cpu_model(), "cores": os.cpu_count(),
            "device": "cpu", "versions": json.dumps({k: v[k] for k in sorted(v) if k in
                                                      ("critmass", "torch", "numpy", "faiss", "python")})}


def features(case: dict):
    import critmass

    kw = {k: case[k] for k in ("image_size", "max_samples") if case.get(k)}
    return critmass.extract(case["model"], case["dataset"], split=["train", "test"], device="cpu", progress=False,
                            **kw)


def run_case(name: str, case: dict, *, quick: bool) -> pd.DataFrame:
    from critmass.probes import run_probes

    fs = features(case)
    codecs = CODECS + (["opq"] if case["opq"] and not quick else [])
    fractions = [0.05, 0.25, 1.0] if quick else FRACTIONS
    out = []
    for solver in ("retrieval", "knn"):
        t0 = time.perf_counter()
        res = run_probes(fs, solver=solver, selectors=["random", "pca"], fractions=fractions, seeds=2 if quick else 3,
                         codecs=codecs, progress=False, n_threads=1).results
        seconds = time.perf_counter() - t0
        print(f"{name} {solver}: {len(res)} rows in {seconds:.0f} s", flush=True)
        out.append(res.assign(case=name, model=case["model"], seconds=seconds))
    return pd.concat(out, ignore_index=True)


def critical_rows(df: pd.DataFrame) -> pd.DataFrame:
    from critmass.metrics import critical_bytes

    rows = []
    for (case, solver), g in df.groupby(["case", "solver"], sort=False):
        for metric in (["recall_at_10", "map"] if solver == "retrieval" else ["test_accuracy"]):
            for within in (0.01, 0.05):
                cb = critical_bytes(g.drop(columns=["case", "seconds"]), metric=metric, within=within)
                rows.append(cb.assign(case=case))
    return pd.concat(rows, ignore_index=True)


def plot(df: pd.DataFrame, path: Path) -> None:
    from critmass.report._bytes import plot_bytes_frontier
    from critmass.report._style import render

    ret = df[df["solver"] == "retrieval"].drop(columns=["case", "seconds"])
    fig = plot_bytes_frontier(ret, metrics=["recall_at_10"], ncols=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(render(fig, "png"))
    os.replace(tmp, path)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write beside, then rename: a killed run leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "codecs.csv"))
    ap.add_argument("--figure", default=str(ROOT / "docs" / "codecs" / "frontier.png"))
    args = ap.parse_args(argv)
    prov = provenance()
    print(f"CPU: {prov['cpu']} ({prov['cores']} cores); load average at start {os.getloadavg()[0]:.2f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    for name in args.cases.split(","):
        frames.append(run_case(name, CASES[name], quick=args.quick))
        # every finished case is on disk at once: a long run killed midway keeps what it measured
        write_csv(pd.concat(frames, ignore_index=True), out.with_name(out.stem + ".partial.csv"))
    df = pd.concat(frames, ignore_index=True)
    keep = ["case", "model", "dataset", "solver", "selector", "codec", "n_neurons", "n_features", "fraction", "seed",
            "bytes_per_vector", "test_accuracy", "recall_at_1", "recall_at_10", "map", "overlap_at_10",
            "overlap_at_10_se", "spearman_top100", "spearman_top100_se", "knn_k", "n_train", "n_test", "seconds"]
    table = df[keep].assign(**prov)
    write_csv(table, out)
    out.with_name(out.stem + ".partial.csv").unlink(missing_ok=True)
    crit = critical_rows(df)
    crit = crit[["case", "model", "dataset", "solver", "metric", "within", "full_value", "full_bytes",
                 "critical_bytes", "selector", "codec", "n_neurons", "value_at_critical", "saving", "reached"]]
    write_csv(crit.assign(**prov), out.with_name(out.stem + "_critical.csv"))
    plot(df, Path(args.figure))
    print(crit.to_string(index=False))
    print(f"load average at end {os.getloadavg()[0]:.2f}; wrote {out}, {out.with_name(out.stem + '_critical.csv')}, "
          f"{args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
