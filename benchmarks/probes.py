"""Benchmark: one full random-subset curve with critmass probes vs a loop of scikit-learn fits.

One curve = 16 fractions x 5 seeds of random neuron subsets, probed on synthetic features of
N x D (default 20,000 x 2,048, 10 classes; test set N/4). The features are made realistic enough that
accuracy is neither chance nor perfect: class means live in a low-rank subspace, plus correlated
low-rank nuisance variation and isotropic noise, passed through a ReLU with per-neuron offsets and scales
(like pooled penultimate activations).

Timed in the same run, with the same train / validation split and the same subsets:

* ``critmass logistic``: ``run_probes(solver='logistic', alphas=1 / (C * n_train))``, the penalty equal to
  scikit-learn's ``C`` (see ``critmass.probes.alpha_from_C``);
* ``critmass ridge``: ``run_probes(solver='ridge')`` with its default 8-value penalty grid chosen on
  validation (a different model; its accuracy is shown for reference);
* ``sklearn``: ``LogisticRegression(C=C, max_iter=...)`` (default lbfgs) fitted per probe on the same
  standardised features. It can be run on the first ``--sk-seeds`` seeds only (all fractions) and its time
  extrapolated to all seeds; the output says so.

Reported: wall time, speed ratio, and test-accuracy difference (critmass - sklearn, in points) averaged
over the probes both ran. Target: >= 20x faster at <= 0.5 points.

Usage::

    python benchmarks/probes.py            # full size
    python benchmarks/probes.py --quick    # N=4,000, D=512, sklearn on 1 seed
    python benchmarks/probes.py --n 10000 --d 1024 --sk-seeds 2
    python benchmarks/probes.py --device cuda,cpu   # critmass on the GPU and on the CPU, same run
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch

from critmass.data._splits import train_val_indices
from critmass.features import FeatureSet, FeatureSplit
from critmass.probes import alpha_from_C, run_probes
from critmass.probes._base import resolve_device
from critmass.subsets import make_selector

FRACTIONS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0)


def make_features(n: int, d: int, n_classes: int = 10, *, seed: int = 0, rank: int = 24, nuisance: int = 64):
    """Synthetic 'penultimate-layer' features (float32) and labels."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rank, d)) / np.sqrt(rank)  # class-mean subspace
    N = rng.standard_normal((nuisance, d)) / np.sqrt(nuisance)  # correlated nuisance subspace
    centers = rng.standard_normal((n_classes, rank)) * 0.9
    offset, gain = rng.normal(0.3, 0.3, d), rng.lognormal(0.0, 0.5, d)
    y = rng.integers(n_classes, size=n)
    X = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 4096):
        b = min(n, a + 4096)
        z = (centers[y[a:b]] + rng.standard_normal((b - a, rank))) @ A
        z += rng.standard_normal((b - a, nuisance)) @ N * 1.5 + rng.standard_normal((b - a, d)) * 1.2
        X[a:b] = np.maximum(z + offset, 0.0) * gain
    return X, y


def sklearn_curve(X_fit, y_fit, X_test, y_test, seeds, sizes, C, max_iter):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mu, sd = X_fit.mean(0, dtype=np.float64), X_fit.std(0, dtype=np.float64)
    sd[sd == 0] = 1.0
    Z, Zt = (X_fit - mu) / sd, (X_test - mu) / sd  # float64, as scikit-learn computes anyway
    acc, t0 = {}, time.perf_counter()
    for seed in seeds:
        order = make_selector("random", random_state=seed).fit(X_fit).order_
        for k in sizes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf = LogisticRegression(C=C, max_iter=max_iter).fit(Z[:, order[:k]], y_fit)
            acc[(seed, k)] = clf.score(Zt[:, order[:k]], y_test)
    return acc, time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="training samples (test: n/4)")
    ap.add_argument("--d", type=int, default=2048, help="neurons")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--C", type=float, default=1.0, help="scikit-learn C (critmass alpha = 1/(C n_train))")
    ap.add_argument("--sk-max-iter", type=int, default=100, help="scikit-learn max_iter")
    ap.add_argument("--sk-seeds", type=int, default=None, help="run scikit-learn on the first S seeds only and extrapolate")
    ap.add_argument("--max-iter", type=int, default=None, help="critmass L-BFGS max_iter (default: the probe's)")
    ap.add_argument("--device", default="auto", help="device(s) for critmass, comma-separated: e.g. cuda,cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both torch and numpy/scipy BLAS (default: libraries' defaults)")
    ap.add_argument("--quick", action="store_true", help="N=4,000, D=512, scikit-learn on one seed")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.d = 4000, 512
        args.sk_seeds = args.sk_seeds or 1
    sk_seeds = min(args.seeds, args.sk_seeds or args.seeds)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    X, y = make_features(args.n + args.n // 4, args.d, args.classes)
    fs = FeatureSet({"train": FeatureSplit(X[: args.n], y[: args.n]), "test": FeatureSplit(X[args.n :], y[args.n :])},
                    {"model": "synthetic", "dataset": "synthetic", "layer": "penultimate"})
    fit_rows, _ = train_val_indices(y[: args.n], 0.1, seed=0)  # run_probes' split (val_seed=0)
    n_fit = len(fit_rows)
    alpha = alpha_from_C(args.C, n_fit)
    seeds = list(range(args.seeds))
    print(f"features: train {args.n} x {args.d} ({n_fit} fit + {args.n - n_fit} val), test {args.n // 4}, "
          f"{args.classes} classes; {len(FRACTIONS)} fractions x {args.seeds} seeds = {len(FRACTIONS) * args.seeds} probes")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other "
          f"jobs slow both sides), torch threads {torch.get_num_threads()}, torch {torch.__version__}; "
          f"C = {args.C} (alpha = {alpha:.3g})")

    opts = {} if args.max_iter is None else {"max_iter": args.max_iter}
    timed = []  # (name, results, seconds)
    for device in args.device.split(","):
        dev = resolve_device(device)
        label = "" if "," not in args.device else f" [{dev.type}]"
        if dev.type == "cuda":  # CUDA context and library handles: paid once per process, not per curve
            small = FeatureSet({s: FeatureSplit(X[:200], y[:200]) for s in ("train", "test")}, fs.meta)
            for solver in ("logistic", "ridge"):
                run_probes(small, fractions=(0.5, 1.0), seeds=[0], solver=solver, alphas=alpha if solver == "logistic" else None,
                           device=device, save_weights=False)
            print(f"device {torch.cuda.get_device_name(dev)} (warmed up: CUDA context created before timing)")
        t = time.perf_counter()
        lg = run_probes(fs, fractions=FRACTIONS, seeds=seeds, solver="logistic", alphas=alpha, device=device,
                        solver_options=opts)
        timed.append((f"critmass logistic{label}", lg, time.perf_counter() - t))
        t = time.perf_counter()
        rg = run_probes(fs, fractions=FRACTIONS, seeds=seeds, solver="ridge", device=device)
        timed.append((f"critmass ridge{label}", rg, time.perf_counter() - t))
    lg = timed[0][1]

    sizes = sorted(set(lg.results.loc[lg.results.selector == "random", "n_neurons"]))
    sk_acc, t_sk = sklearn_curve(X[: args.n][fit_rows], y[: args.n][fit_rows], X[args.n :], y[args.n :],
                                 seeds[:sk_seeds], sizes, args.C, args.sk_max_iter)
    t_sk_total = t_sk * args.seeds / sk_seeds
    note = "" if sk_seeds == args.seeds else f" (ran {sk_seeds} of {args.seeds} seeds, time extrapolated x{args.seeds / sk_seeds:g})"

    def diffs(res):
        r = res.results[res.results.selector == "random"].drop_duplicates(["seed", "n_neurons"])
        d = [100 * (a - sk_acc[(s, k)]) for s, k, a in zip(r.seed, r.n_neurons, r.test_accuracy) if (s, k) in sk_acc]
        return np.mean(d), np.mean(np.abs(d)), np.max(np.abs(d))

    full = lg.full_accuracy()
    print(f"full-layer test accuracy (critmass logistic): {100 * full:.2f}%; "
          f"smallest subset: {100 * lg.results.test_accuracy.min():.2f}%")
    print(f"sklearn LogisticRegression loop: {t_sk_total:8.1f} s{note}")
    for name, res, tt in timed:
        mean, mabs, mx = diffs(res)
        print(f"{name:25s}: {tt:8.2f} s  speed-up x{t_sk_total / tt:6.1f}  test accuracy - sklearn: "
              f"mean {mean:+.2f} pt, mean |.| {mabs:.2f} pt, max |.| {mx:.2f} pt")
    it = lg.results[lg.results.selector == "random"].n_iter
    print(f"critmass logistic L-BFGS iterations per probe: mean {it.mean():.1f}, max {it.max()}")


if __name__ == "__main__":
    main()
