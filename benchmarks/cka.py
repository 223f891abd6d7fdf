"""Benchmark: subset-vs-full linear CKA, critmass's one-Gram path against the naive computation.

Synthetic float32 features (low-rank structure + noise, non-zero mean), 16 fractions x 5 seeds of
random neurons. critmass: :func:`critmass.similarity.cka_curve` end to end (mean pass, float64 Gram
accumulation, selector fits, all 80 subsets, the table). Naive: for each subset, centre ``X_S`` and
``X`` in float64 and compute ``||X_S^T X||_F^2 / (||X_S^T X_S||_F ||X^T X||_F)`` from the features,
which is what calling a per-pair CKA function 80 times costs. The time the naive loop spends on the
full-layer term is printed too, so the ratio against a naive loop that caches ``||X^T X||_F`` can be
read off.

Printed first and last, as in ``benchmarks/probes.py``: the CPU, the BLAS each side used (critmass's Gram builds
run on the Gram backend of ``critmass._blas``, the naive loop on numpy's), the load average at the start and end;
a busy machine is flagged and its ratio labelled. Each run appends a row to ``benchmarks/results/cka.csv``.

Target (issue 30): >= 100x on a quiet 2-core machine, AMD EPYC or Intel; |critmass - naive| <= 1e-8.

    python benchmarks/cka.py                 # N=20,000 x D=2,048 (a few minutes on 2 cores)
    python benchmarks/cka.py --n 5000 --d 512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import Machine, commit, machine_line, sklearn_blas, write_rows

from critmass import _blas
from critmass._env import versions
from critmass.similarity import DEFAULT_FRACTIONS, cka_curve, gram_stats
from critmass.subsets import make_selector

FRACTIONS = tuple(sorted({*DEFAULT_FRACTIONS, 0.7}))  # the paper's 15 + 0.7 = 16
RESULTS = Path(__file__).resolve().parent / "results" / "cka.csv"
CSV_COLUMNS = ("date", "commit", "n", "d", "subsets", "cpu", "cores", "torch_threads", "versions", "blas",
               "naive_blas", "naive_s", "critmass_s", "ratio", "ratio_cached_full", "gram_s", "max_abs_diff",
               "busy", "load_start", "load_end", "other_cpu_share", "args")


def make_features(n: int, d: int, *, rank: int = 64, seed: int = 0) -> np.ndarray:
    """Low-rank signal with a decaying spectrum, isotropic noise and a positive mean, float32."""
    rng = np.random.default_rng(seed)
    mixing = (rng.standard_normal((rank, d)) * (1.0 / np.arange(1, rank + 1))[:, None]).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 4096):  # built in chunks: no float64 copy of the whole matrix
        b = min(4096, n - s)
        x[s : s + b] = rng.standard_normal((b, rank), dtype=np.float32) @ mixing
        x[s : s + b] += 0.1 * rng.standard_normal((b, d), dtype=np.float32) + 0.5
    return x


def naive_subset_cka(x: np.ndarray, idx: np.ndarray, timings: dict) -> float:
    """CKA(X[:, idx], X) from the features, in float64, recomputing everything for this pair."""
    t0 = time.perf_counter()
    xf = x.astype(np.float64)
    xf -= xf.mean(axis=0)
    full = np.linalg.norm(xf.T @ xf)
    t1 = time.perf_counter()
    xs = x[:, idx].astype(np.float64)
    xs -= xs.mean(axis=0)
    num = np.linalg.norm(xs.T @ xf) ** 2
    den = np.linalg.norm(xs.T @ xs) * full
    timings["full"] += t1 - t0
    return float(num / den)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="samples (default 20,000)")
    p.add_argument("--d", type=int, default=2_048, help="neurons (default 2,048)")
    p.add_argument("--seeds", type=int, default=5, help="seeds (default 5)")
    args = p.parse_args(argv)

    machine = Machine()
    print(machine_line())
    print("\n".join(machine.start_lines(baseline="naive loop (numpy)")))
    x = make_features(args.n, args.d)
    seeds = list(range(args.seeds))
    print(f"features: {args.n} x {args.d} float32; {len(FRACTIONS)} fractions x {len(seeds)} seeds "
          f"= {len(FRACTIONS) * len(seeds)} subset-vs-full CKA values (random selector)")

    t0 = time.perf_counter()
    gram_stats(x)
    t_gram = time.perf_counter() - t0

    t0 = time.perf_counter()
    df = cka_curve(x, selectors=["random"], fractions=FRACTIONS, seeds=seeds)
    t_fast = time.perf_counter() - t0

    timings = {"full": 0.0}
    naive = []
    t0 = time.perf_counter()
    for seed in seeds:
        order = make_selector("random", random_state=seed).fit(x).order_  # the same subsets as critmass
        for k in df.loc[df.seed == seed, "n_neurons"]:
            naive.append(naive_subset_cka(x, order[:k], timings))
    t_naive = time.perf_counter() - t0

    diff = float(np.max(np.abs(df["cka"].to_numpy() - np.array(naive))))
    cached = t_naive - timings["full"]
    print(f"critmass cka_curve (incl. mean pass + Gram accumulation): {t_fast:8.2f} s "
          f"(Gram statistics alone: {t_gram:.2f} s)")
    print(f"naive per-pair feature-space CKA:                        {t_naive:8.2f} s "
          f"(of which full-layer ||X^T X||: {timings['full']:.2f} s)")
    end = machine.finish(baseline="the naive loop's threaded BLAS")
    print(f"speed-up: {t_naive / t_fast:.1f}x{machine.label()}  (vs a naive loop that caches ||X^T X||: "
          f"{cached / t_fast:.1f}x)")
    print(f"max |critmass - naive| = {diff:.3e}  (target <= 1e-8: {'ok' if diff <= 1e-8 else 'FAIL'})")
    print(f"CKA range over subsets: {df['cka'].min():.6f} .. {df['cka'].max():.6f}")
    print("\n".join(machine.start_lines(baseline="naive loop (numpy)")[1:] + end))
    v = versions(("torch", "numpy", "scipy"), python=False)
    write_rows([{"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit(), "n": args.n, "d": args.d,
                 "subsets": len(df), "cpu": _blas.cpu_model(), "cores": machine.cores,
                 "torch_threads": torch.get_num_threads(), "versions": ";".join(f"{k}={x}" for k, x in v.items()),
                 "blas": _blas.summary(), "naive_blas": sklearn_blas(), "naive_s": f"{t_naive:.3f}",
                 "critmass_s": f"{t_fast:.3f}", "ratio": f"{t_naive / t_fast:.2f}",
                 "ratio_cached_full": f"{cached / t_fast:.2f}", "gram_s": f"{t_gram:.3f}", "max_abs_diff": f"{diff:.3e}",
                 "busy": int(machine.busy), "load_start": f"{machine.load_start[0]:.2f}",
                 "load_end": f"{machine.load_end[0]:.2f}",
                 "other_cpu_share": "" if machine.other is None else f"{machine.other:.3f}",
                 "args": " ".join(sys.argv[1:])}], RESULTS, CSV_COLUMNS)


if __name__ == "__main__":
    main()
