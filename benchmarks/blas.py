"""Benchmark: the two BLAS libraries of the process on the operations critmass runs, on this CPU.

critmass picks torch's BLAS (Intel MKL in the CPU wheels) or numpy's / SciPy's (OpenBLAS) per machine
(``critmass._blas``: a short measurement cached in ``$CRITMASS_CACHE/.blas.json``). This script measures the
same operations at more shapes, so the choice can be checked on a new CPU (an AMD EPYC, where MKL's
single-precision products run at about half speed) in about a minute:

* ``gemm``: float32 ``a @ b`` on the probe path's shapes (a data pass ``n x k x C``, a block of logits, a square
  product): ``torch.matmul`` against ``np.matmul`` on the same memory;
* ``gram``: a float64 Gram build ``c += y^T y`` in place, torch's ``addmm_`` against SciPy's ``dsyrk``
  (``critmass._blas.GramSum``);
* ``trsm``: the logistic preconditioner's float32 triangular solve ``U x = B`` (``k x k`` upper factor, ``B`` with
  ``problems x classes`` columns): ``torch.linalg.solve_triangular`` against SciPy's ``strsm`` without copies
  (the right-side form on transposed views). critmass keeps these on torch; a CPU where ``strsm`` wins by a
  margin would be the case for routing them too.

Each row: best-of-``--reps`` seconds of each side at torch's thread count (OpenBLAS limited to it; each side
timed after the other's thread pool went idle, so the row is each library alone), the ratio
torch / OpenBLAS (> 1: OpenBLAS faster) and GFLOP/s. Printed with the CPU, both libraries, the load average and
what ``critmass._blas`` chose; rows are appended to ``benchmarks/results/blas.csv``. critmass's own choice for the
probe path compares the two libraries on one thread (forked probe workers run one thread each, and inside a
probe fit OpenBLAS runs one thread beside torch's, ``critmass._blas.products``): the ``gemm`` rows of a
``--threads 1`` run.

    python benchmarks/blas.py               # torch's default thread count
    python benchmarks/blas.py --threads 1   # what one forked probe worker sees
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import Machine, commit, machine_line, sklearn_blas, write_rows
from scipy.linalg.blas import dsyrk, strsm
from threadpoolctl import threadpool_limits

from critmass import _blas
from critmass._env import versions

RESULTS = Path(__file__).resolve().parent / "results" / "blas.csv"
CSV_COLUMNS = ("date", "commit", "cpu", "cores", "threads", "op", "shape", "torch_s", "openblas_s", "ratio",
               "torch_gflops", "openblas_gflops", "choice", "versions", "openblas", "busy", "load_start", "args")
GEMM = ((4500, 1280, 10), (4500, 128, 150), (4500, 1280, 150), (1024, 1024, 1024))
GRAM = ((4096, 512), (4096, 1280), (4096, 2048))
TRSM = ((64, 150), (256, 150), (640, 50), (1280, 30), (1280, 150))
SETTLE_S = 0.3


def best(fn, reps: int) -> float:
    # Each library alone: the other's thread pool is given time to go idle first (OpenBLAS's workers spin for a
    # while after a call, and torch's OpenMP threads wait for the core they take; critmass's probe path keeps
    # OpenBLAS on one thread for that reason, critmass._blas.products).
    time.sleep(SETTLE_S)
    fn()  # warm-up
    t = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def rows_gemm(rng, reps):
    for m, k, n in GEMM:
        a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        yield "gemm float32", f"{m}x{k}x{n}", best(lambda: at @ bt, reps), best(lambda: a @ b, reps), 2e-9 * m * k * n


def rows_gram(rng, reps):
    for n, d in GRAM:
        y = rng.random((n, d))
        yt, ct, cn = torch.from_numpy(y), torch.zeros((d, d), dtype=torch.float64), np.zeros((d, d), order="F")
        t_t = best(lambda: ct.addmm_(yt.T, yt), reps)
        t_n = best(lambda: dsyrk(1.0, y.T, beta=1.0, c=cn, trans=0, lower=0, overwrite_c=1), reps)
        yield "gram float64 (addmm_ vs dsyrk)", f"{n}x{d}", t_t, t_n, 2e-9 * n * d * d


def rows_trsm(rng, reps):
    for k, m in TRSM:
        g = rng.standard_normal((k, k)).astype(np.float32)
        lower = np.linalg.cholesky(g @ g.T + k * np.eye(k, dtype=np.float32)).astype(np.float32)
        upper_t = torch.from_numpy(lower).T  # critmass's layout: the upper factor as a column-major view
        upper_f = lower.T  # the same memory as a Fortran-ordered numpy array
        b = rng.standard_normal((k, m)).astype(np.float32)
        bt = torch.from_numpy(b)
        work = np.empty((m, k), dtype=np.float32, order="F")

        def scipy_side():  # U x = B as x^T U^T = B^T: B^T of a C-ordered B is Fortran-ordered, solved in place
            work[...] = b.T
            strsm(1.0, upper_f, work, side=1, lower=0, trans_a=1, diag=0, overwrite_b=1)

        t_t = best(lambda: torch.linalg.solve_triangular(upper_t, bt, upper=True), reps)
        t_n = best(scipy_side, reps)
        x_t = torch.linalg.solve_triangular(upper_t, bt, upper=True).numpy()
        scipy_side()
        err = float(np.abs(work.T - x_t).max() / np.abs(x_t).max())
        if err > 1e-4:
            raise SystemExit(f"trsm sides disagree at {k}x{m}: {err:.1e}")
        yield "trsm float32", f"{k}x{m}", t_t, t_n, 1e-9 * k * k * m


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch and OpenBLAS threads (default: torch's)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per timing (best of)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    machine = Machine()
    print(machine_line())
    print("\n".join(machine.start_lines(baseline="OpenBLAS (numpy / SciPy)")))
    rng = np.random.default_rng(0)
    choice = f"gemm {_blas.backend()}, gram {_blas.backend('gram')} [{_blas.resolution().get('source')}]"
    out = []
    with threadpool_limits(limits=threads, user_api="blas"):
        print(f"{'op':32s} {'shape':>16s} {'torch ms':>9s} {'OpenBLAS ms':>11s} {'torch/OpenBLAS':>14s}")
        for gen in (rows_gemm, rows_gram, rows_trsm):
            for op, shape, t_t, t_n, gflop in gen(rng, args.reps):
                print(f"{op:32s} {shape:>16s} {1e3 * t_t:9.2f} {1e3 * t_n:11.2f} {t_t / t_n:14.2f}")
                out.append({"op": op, "shape": shape, "torch_s": f"{t_t:.6f}", "openblas_s": f"{t_n:.6f}",
                            "ratio": f"{t_t / t_n:.3f}", "torch_gflops": f"{gflop / t_t:.1f}",
                            "openblas_gflops": f"{gflop / t_n:.1f}"})
    end = machine.finish(baseline="OpenBLAS")
    print(f"critmass's choice on this machine: {choice} ({_blas.summary()})")
    print("\n".join(end))
    v = versions(("torch", "numpy", "scipy"), python=False)
    common = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit(), "cpu": _blas.cpu_model(),
              "cores": machine.cores, "threads": threads, "choice": choice,
              "versions": ";".join(f"{k}={x}" for k, x in v.items()), "openblas": sklearn_blas(),
              "busy": int(machine.busy), "load_start": f"{machine.load_start[0]:.2f}", "args": " ".join(sys.argv[1:])}
    write_rows([{**common, **r} for r in out], RESULTS, CSV_COLUMNS)


if __name__ == "__main__":
    main()
