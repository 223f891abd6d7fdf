"""The offline training-factors study: train every config of configs/ with each seed, measure DR, CKA
and per-class Gini of the penultimate layer on three downstream tasks, and summarise.

    .venv/bin/python examples/factors/run_study.py                      # everything, seeds 0 and 1
    .venv/bin/python examples/factors/run_study.py --seeds 0 --configs plain,dropout-0.5   # a subset

Steps (each resumable: run it again after a kill and it continues):
1. `critmass.train.train` for every config x seed (in parallel worker processes of 1 torch thread each)
   into OUT/models/<config>-seed<seed>/model.safetensors;
2. the Fashion-MNIST classes 5-9 downstream task as OUT/fashion-mnist-5to9.npz (labels 0-4);
3. one sweep (OUT/sweep.yaml -> OUT/sweep/): penultimate features of every model on fashion-mnist 5-9,
   digits and textures; random and prefix subsets, logistic probes, CKA;
4. summarize.py: OUT/summary.md, OUT/dr.csv, OUT/factors.png.
Times of every step go to OUT/timings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = sorted(p.stem for p in (HERE / "configs").glob("*.yaml"))


def _train_one(args):
    name, seed, out, threads = args
    from critmass.train import load_train_config, train

    cfg = load_train_config(HERE / "configs" / f"{name}.yaml", seed=seed, output=out)
    cfg.threads = threads
    t = time.perf_counter()
    res = train(cfg, progress=False)
    return name, seed, res.summary(), round(time.perf_counter() - t, 1), res.final


def downstream_npz(path: Path, n_train: int, n_test: int) -> Path:
    """Fashion-MNIST classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot), relabelled 0-4, seeded subsets."""
    import numpy as np

    from critmass._io import atomic_path
    from critmass.data import load_dataset, stratified_subset

    if path.is_file():
        return path
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        ds = load_dataset("fashion-mnist", split)
        keep = np.nonzero(ds.targets >= 5)[0]
        keep = keep[stratified_subset(ds.targets[keep], n, seed=0)]
        sub = ds.subset(keep)
        arrays[f"x_{split}"] = np.stack([np.asarray(sub[i][0], dtype=np.uint8) for i in range(len(sub))])
        arrays[f"y_{split}"] = sub.targets - 5
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def sweep_config(out: Path, runs: list[tuple[str, int]], npz: Path, fractions, probe_seeds: int) -> dict:
    models = [{"spec": "timm:convnext_atto", "name": f"{c}-seed{s}", "weights": str(out / "models" / f"{c}-seed{s}" /
                                                                                  "model.safetensors")}
              for c, s in runs]
    return {
        "name": "factors", "output": str(out / "sweep"), "cache": str(out / "cache"), "device": "cpu",
        "batch_size": 256, "models": models,
        "datasets": [{"spec": f"npz:{npz}", "name": "fashion-mnist-5to9"},
                     {"spec": "digits"}, {"spec": "textures"}],
        "selectors": ["random", "prefix"], "fractions": list(fractions), "seeds": probe_seeds,
        "solvers": ["logistic"], "probes": {"device": "cpu"}, "cka": {"enabled": True, "selectors": ["random", "prefix"]},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/factors"))
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {', '.join(CONFIGS)}")
    ap.add_argument("--seeds", default="0,1", help="training seeds (comma-separated)")
    ap.add_argument("--workers", type=int, default=2, help="training processes (1 torch thread each)")
    ap.add_argument("--probe-seeds", type=int, default=3, help="random-subset seeds per probe")
    ap.add_argument("--downstream-train", type=int, default=2000, help="Fashion-MNIST 5-9 training images")
    ap.add_argument("--downstream-test", type=int, default=1000, help="Fashion-MNIST 5-9 test images")
    ap.add_argument("--fractions", default="0.01,0.02,0.05,0.1,0.2,0.3,0.5,0.75,1.0")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; choose from {CONFIGS}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [(c, s) for c in configs for s in seeds]
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}

    t0 = time.perf_counter()
    jobs = [(c, s, out / "models" / f"{c}-seed{s}", 1) for c, s in runs]
    train_times = timings.get("train_runs", {})
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for name, seed, summary, secs, final in pool.map(_train_one, jobs):
            print(f"[train] {name} seed {seed}: {summary} ({secs} s)", flush=True)
            train_times.setdefault(f"{name}-seed{seed}", secs)
    timings["train_runs"] = train_times
    timings["train_s_this_call"] = round(time.perf_counter() - t0, 1)

    t1 = time.perf_counter()
    npz = downstream_npz(out / "fashion-mnist-5to9.npz", args.downstream_train, args.downstream_test)
    import yaml

    from critmass.sweep import run_sweep

    fractions = [float(f) for f in args.fractions.split(",")]
    (out / "sweep.yaml").write_text(yaml.safe_dump(sweep_config(out, runs, npz, fractions, args.probe_seeds),
                                                   sort_keys=False))
    res = run_sweep(out / "sweep.yaml", workers=2, echo=print)
    timings["sweep_s_this_call"] = round(time.perf_counter() - t1, 1)
    if not res.ok:
        print(res.summary())

    t2 = time.perf_counter()
    from summarize import summarize  # examples/factors/summarize.py

    summarize(out)
    timings["summary_s"] = round(time.perf_counter() - t2, 1)
    timings["total_s_this_call"] = round(time.perf_counter() - t0, 1)
    timings["cpus"] = os.cpu_count()
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(json.dumps({k: v for k, v in timings.items() if k != "train_runs"}))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
