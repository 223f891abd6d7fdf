"""Benchmark: how often the penalty a probe chooses changes with the float summation order, and what the
choice rule costs in accuracy and time.

The probe benchmark's protocol curve (``benchmarks/probes.py``: random subsets at the demo's 12 fractions x 3
seeds plus the full layer, the default logistic penalty grid chosen on a stratified 10% validation split) is
fitted once per variant of the numeric matrix: torch threads {1, 2} x ``MKL_CBWR`` {unset, COMPATIBLE, AVX2}
x ``ATEN_CPU_CAPABILITY`` {unset, default}, each variant in its own process (the variables act at start-up).
Each variant changes the float summation order the way another CPU does. One process fits the curve
(``n_jobs=1``), so the thread count reaches the products.

Printed per data set and code version: probes whose chosen penalty differs between variants (and the share),
the mean test accuracy and the fitting time of the first variant, and per fraction the mean test accuracy.
``--old PATH`` also runs a checkout of another critmass version (its ``src``), e.g. the one before a rule
change, in the same run, so the two rules are measured on the same machine. Rows go to
``benchmarks/results/choice_rule.csv``.

Usage::

    python benchmarks/choice_rule.py --old /tmp/critmass-old      # this tree and an older checkout
    python benchmarks/choice_rule.py --datasets synthetic --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATASETS = ("synthetic", "fashion-mnist")


def cpu_model() -> str:
    from critmass._blas import cpu_model as _cpu_model  # the one reading of /proc/cpuinfo

    return _cpu_model()


def write_features(name: str, args, path: Path) -> None:
    """The benchmark's features as an .npz (x_train, y_train, x_test, y_test), shared by every variant."""
    sys.path.insert(0, str(HERE))
    import probes as bench  # benchmarks/probes.py: the same data sets

    ns = argparse.Namespace(n=args.n, d=args.d, classes=10, fm_train=5000, fm_test=2000, image_size=112,
                            cache=args.cache, data_root=None, device="cpu")
    fs = bench.load_dataset(name, ns, path.parent)[0]
    np.savez(path, x_train=np.asarray(fs["train"].x), y_train=np.asarray(fs["train"].y),
             x_test=np.asarray(fs["test"].x), y_test=np.asarray(fs["test"].y))


def child(args) -> None:
    """One variant: fit the curve on the .npz and write its rows."""
    import torch

    from critmass.features import FeatureSet, FeatureSplit
    from critmass.probes import run_probes

    torch.set_num_threads(args.child_threads)
    z = np.load(args.child)
    fs = FeatureSet({"train": FeatureSplit(z["x_train"], z["y_train"]), "test": FeatureSplit(z["x_test"], z["y_test"])},
                    {"model": "bench", "dataset": "bench", "layer": "x"})
    fractions = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)  # the demo's
    t = time.perf_counter()
    res = run_probes(fs, selectors=["random"], fractions=fractions, seeds=3, device="cpu", n_jobs=1,
                     save_weights=False)
    seconds = time.perf_counter() - t
    df = res.results
    if "choice_margin" not in df:
        df["choice_margin"] = np.nan
    df = df[["selector", "fraction", "n_neurons", "seed", "reg", "val_accuracy", "test_accuracy", "choice_margin"]]
    df.assign(seconds=seconds).to_parquet(args.child_out)


def variants(threads, mkl_paths):
    for t, mkl, aten in itertools.product(threads, mkl_paths, ("-", "default")):
        yield t, mkl, aten


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--threads", default="1,2", help="torch thread counts of the matrix")
    ap.add_argument("--mkl", default="-,COMPATIBLE,AVX2",
                    help="MKL_CBWR values of the matrix ('-': unset; COMPATIBLE runs MKL's slow generic code)")
    ap.add_argument("--old", default=None, help="a checkout of another critmass version to run too (its root)")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "choice_rule.csv"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    codes = {"this": str(HERE.parent / "src")}
    if args.old:
        codes["old"] = str(Path(args.old) / "src")
    threads = [int(t) for t in args.threads.split(",")]
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}", flush=True)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            npz = Path(tmp) / f"{name}.npz"
            write_features(name, args, npz)
            for code, src in codes.items():
                runs = {}
                for t, mkl, aten in variants(threads, args.mkl.split(",")):
                    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY")}
                    env.update(PYTHONPATH=src, OMP_NUM_THREADS=str(t))
                    if mkl != "-":
                        env["MKL_CBWR"] = mkl
                    if aten != "-":
                        env["ATEN_CPU_CAPABILITY"] = aten
                    out = Path(tmp) / f"{name}-{code}-{t}-{mkl}-{aten}.parquet"
                    subprocess.run([sys.executable, __file__, "--child", str(npz), "--child-out", str(out),
                                    "--child-threads", str(t)], env=env, check=True)
                    df = pd.read_parquet(out)
                    label = f"threads={t} mkl={mkl} aten={aten}"
                    runs[label] = df
                    rows.append(df.assign(dataset=name, code=code, variant=label, cpu=cpu_model()))
                    print(f"  {name} {code:>4} {label:<36} {df.seconds.iloc[0]:6.1f} s  "
                          f"mean test {100 * df.test_accuracy.mean():.2f}%", flush=True)
                keys = ["selector", "n_neurons", "seed"]
                regs = pd.concat([d.set_index(keys).reg.rename(v) for v, d in runs.items()], axis=1)
                flips = int((regs.nunique(axis=1) > 1).sum())
                first = next(iter(runs.values()))
                summary.append({
                    "dataset": name, "code": code, "probes": len(regs), "variants": len(runs),
                    "probes_with_differing_penalty": flips,
                    "mean_test_accuracy": float(first.test_accuracy.mean()),
                    "seconds_first_variant": float(first.seconds.iloc[0]),
                    "seconds_mean": float(np.mean([d.seconds.iloc[0] for d in runs.values()])),
                    "min_choice_margin": float(first.choice_margin.min()) if first.choice_margin.notna().any() else np.nan,
                })
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    table = pd.DataFrame(summary)
    print(table.to_string(index=False))
    all_rows = pd.concat(rows, ignore_index=True)
    per_fraction = all_rows.groupby(["dataset", "code", "fraction"]).test_accuracy.mean().unstack("code")
    print((100 * per_fraction).round(2).to_string())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.assign(cpu=cpu_model()).to_csv(args.out, index=False)
    all_rows.to_csv(Path(args.out).with_name(Path(args.out).stem + "_rows.csv"), index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
