"""Benchmark: critmass random-subset probe curves against a loop of scikit-learn fits.

Two modes, each timing critmass and a scikit-learn baseline in the same run on the same rows and subsets.

``--mode protocol`` (default): the probe protocol users run. ``run_probes(solver='logistic')`` with its
default penalty grid (``DEFAULT_LOGISTIC_ALPHAS``), each subset's penalty chosen on validation accuracy
(a stratified 10% of train, ``val_seed=0``), then the test accuracy of the chosen penalty. Baseline:
scikit-learn ``LogisticRegression`` (lbfgs, ``max_iter=100``) fitted per subset x penalty on the same
standardised rows (mean / scale of the fit rows, ``critmass.probes._base.standard_scale``) with
``C = 1 / (alpha n_fit)`` for the same alphas (the same objective: mean cross-entropy +
alpha/2 ||W||^2), the penalty picked on the same validation rows with critmass's own rule
(``critmass.probes._base._select``: the strongest penalty within one binomial standard error of the best
validation accuracy), then its test accuracy. The subsets are critmass's (``critmass.subsets.plan_subsets``),
and both sides also fit the full layer once (``selector='all'``, which ``run_probes`` always adds).
Default curve: the demo's 12 fractions (``critmass._demo.DEMO_FRACTIONS``) x 3 seeds.

Two data sets in one run:

* ``synthetic``: 20,000 x 2,048 synthetic features, 10 classes, test 5,000 (class means in a low-rank
  subspace, correlated nuisance variation and noise through a ReLU with per-neuron offsets and gains,
  like pooled penultimate activations);
* ``fashion-mnist``: EfficientNet-Lite0 penultimate features (1,280) of 5,000 train / 2,000 test
  Fashion-MNIST images at 112 px (the demo's size), extracted through ``critmass.extract`` and cached
  (``--cache``, default the user's feature cache); the first run extracts them (minutes on 2 CPU cores).

scikit-learn runs the full layer and the first ``--sk-seeds`` seeds (default 1) and its time is
extrapolated to all seeds (``--sk-all`` runs every seed); the output says which. Printed per data set:
wall times, the speed ratio, and per fraction the mean and max |test accuracy difference| (critmass -
scikit-learn, points) over the seeds both ran. Then the time of the whole CLI a user runs,
``critmass probe ENTRY --fractions ... --seeds 3 --selector random --out DIR`` (process start, torch
import, loading, probes, writing results and weights), next to the time of ``python -c "import
critmass.cli"`` and ``python -c "import torch"``, so the import share is visible.

``--mode fixed-c``: the older benchmark: 16 fractions x 5 seeds on the synthetic set with one penalty
equal to scikit-learn's ``C`` (``--C``), plus critmass ridge with its default grid, against one
``LogisticRegression(C=C)`` per probe.

Printed first and last: the CPU model, the BLAS each side runs (critmass's GEMM backend, ``critmass._blas``;
scikit-learn's via ``threadpoolctl``) and the load average. A run on a busy machine (1-minute load average at the
start above half the cores, or other processes using more than a quarter of the CPU time during the run: the load
that rose and is not this benchmark's) warns and labels its ratios "(busy machine)": contention slows
scikit-learn's threaded BLAS more than critmass's single-thread workers, so a busy run flatters critmass. Each
run appends its rows (date, commit, CPU, cores, device, versions, BLAS, both timings, ratio, load) to
``benchmarks/results/probes.csv``.

Target: >= 20x faster than the scikit-learn loop on 2 cores, mean accuracy difference <= 0.5 pt and no
fraction worse by more than 1 pt.

Usage::

    python benchmarks/probes.py                          # protocol mode, both data sets
    python benchmarks/probes.py --quick                  # smoke run (~1 min on 2 busy cores): small synthetic set
    python benchmarks/probes.py --datasets fashion-mnist --sk-all
    python benchmarks/probes.py --fractions 0.01,0.1,1 --seeds 5 --no-cli
    python benchmarks/probes.py --mode fixed-c           # the one-C benchmark (16 fractions x 5 seeds)
    python benchmarks/probes.py --device cuda,cpu        # critmass on the GPU and on the CPU, same run
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _machine import Machine, commit, machine_line, sklearn_blas, write_rows

from critmass import _blas
from critmass._demo import DEMO_FRACTIONS
from critmass._env import versions
from critmass.data._splits import train_val_indices
from critmass.features import FeatureSet, FeatureSplit
from critmass.probes import alpha_from_C, run_probes
from critmass.probes._base import _select, resolve_device, standard_scale
from critmass.probes._logistic import DEFAULT_LOGISTIC_ALPHAS
from critmass.subsets import make_selector

FIXED_C_FRACTIONS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0)
DATASETS = ("synthetic", "fashion-mnist")
VENV_BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results" / "probes.csv"
CSV_COLUMNS = ("date", "commit", "mode", "dataset", "cpu", "cores", "device", "torch_threads", "versions", "blas",
               "sklearn_blas", "sklearn_s", "critmass_s", "ratio", "busy", "load_start", "load_end",
               "other_cpu_share", "args")


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


def synthetic_set(n: int, d: int, n_classes: int) -> FeatureSet:
    X, y = make_features(n + n // 4, d, n_classes)
    return FeatureSet({"train": FeatureSplit(X[:n], y[:n]), "test": FeatureSplit(X[n:], y[n:])},
                      {"model": "synthetic", "dataset": "synthetic", "layer": "penultimate"})


def result_row(machine: Machine, args, *, mode: str, dataset: str, device: str, t_sk: float, t_cm: float) -> dict:
    v = versions(("torch", "numpy", "scipy", "scikit-learn"), python=False)
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit(), "mode": mode, "dataset": dataset,
            "cpu": _blas.cpu_model(), "cores": machine.cores, "device": device,
            "torch_threads": torch.get_num_threads(), "versions": ";".join(f"{k}={x}" for k, x in v.items()),
            "blas": _blas.summary(), "sklearn_blas": sklearn_blas(), "sklearn_s": f"{t_sk:.3f}",
            "critmass_s": f"{t_cm:.3f}", "ratio": f"{t_sk / t_cm:.2f}", "busy": int(machine.busy),
            "load_start": f"{machine.load_start[0]:.2f}", "load_end": f"{machine.load_end[0]:.2f}",
            "other_cpu_share": "" if machine.other is None else f"{machine.other:.3f}",
            "args": " ".join(sys.argv[1:])}


def warm_cuda(device: str, alphas=None) -> None:
    """Create the CUDA context and library handles before timing (paid once per process, not per curve)."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        return
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 16)).astype(np.float32), np.arange(200) % 2
    small = FeatureSet({s: FeatureSplit(X, y) for s in ("train", "test")}, {"model": "warmup"})
    for solver in ("logistic", "ridge"):
        run_probes(small, fractions=(0.5, 1.0), seeds=[0], solver=solver,
                   alphas=alphas if solver == "logistic" else None, device=device, save_weights=False)
    print(f"device {torch.cuda.get_device_name(dev)} (warmed up: CUDA context created before timing)")


# ------------------------------------------------------------------------------------------ protocol
def protocol_rows(fs: FeatureSet, val_fraction: float = 0.1, val_seed: int = 0):
    """(fit rows, val rows) of train as ``run_probes`` uses them: the set's own val split, else carved."""
    x_train = np.asarray(fs["train"].x, dtype=np.float32)
    y_train = np.asarray(fs["train"].y)
    if "val" in fs:
        return x_train, y_train, np.asarray(fs["val"].x, dtype=np.float32), np.asarray(fs["val"].y)
    fit_rows, val_rows = train_val_indices(y_train, val_fraction, seed=val_seed)
    return x_train[fit_rows], y_train[fit_rows], x_train[val_rows], y_train[val_rows]


def sklearn_protocol(fs: FeatureSet, fractions, seeds, alphas, max_iter: int):
    """The protocol with scikit-learn: per subset x alpha one lbfgs fit; pick on validation; test.

    Returns ``{(selector, seed, k): (test accuracy, chosen alpha)}`` and ``{'all': s, seed: s}`` seconds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from critmass._validation import resolve_sizes
    from critmass.subsets import plan_subsets

    X_fit, y_fit, X_val, y_val = protocol_rows(fs)
    X_test, y_test = np.asarray(fs["test"].x, dtype=np.float32), np.asarray(fs["test"].y)
    d = X_fit.shape[1]
    mean, scale = standard_scale([X_fit], [None])  # the probes' standardisation: the fit rows' statistics
    Z, Zv, Zt = ((X.astype(np.float64) - mean) / scale for X in (X_fit, X_val, X_test))  # lbfgs works in float64
    n_fit = len(y_fit)
    alphas = [float(a) for a in alphas]
    size_fracs: dict[int, list[float]] = {}
    for f, k in zip(fractions, resolve_sizes(list(fractions), d)):
        size_fracs.setdefault(k, []).append(f)

    def probe(cols):
        cand_acc, models = [], []
        for a in alphas:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf = LogisticRegression(C=1.0 / (a * n_fit), max_iter=max_iter).fit(Z[:, cols], y_fit)
            cand_acc.append(float(np.mean(clf.predict(Zv[:, cols]) == y_val)))
            models.append(clf)
        best, _ = _select(list(range(len(alphas))), cand_acc, alphas, len(y_val))
        return float(models[best].score(Zt[:, cols], y_test)), alphas[best]

    out, seconds = {}, {}
    t = time.perf_counter()
    out[("all", seeds[0], d)] = probe(np.arange(d))
    seconds["all"] = time.perf_counter() - t
    for fitted in plan_subsets(["random"], list(seeds), size_fracs, X_fit):
        t = time.perf_counter()
        for k, idx in zip(fitted.sizes, fitted.indices):
            out[("random", fitted.seed, int(k))] = probe(np.asarray(idx))
        seconds[fitted.seed] = time.perf_counter() - t
    return out, seconds


def objective_check(fs: FeatureSet, fractions, seed: int = 0):
    """Relative objective gap of critmass's chosen probes (default grid, regularisation path) against a
    tightly converged scikit-learn fit (lbfgs, float64, tol=1e-10) at the same penalty, on random subsets
    of ``seed`` at ``fractions``. Returns [(fraction, k, alpha, relative gap)]."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from critmass._validation import resolve_sizes
    from critmass.probes import LogisticProbe

    X_fit, y_fit, X_val, y_val = protocol_rows(fs)
    d = X_fit.shape[1]
    perm = np.random.default_rng(seed).permutation(d)
    sizes = resolve_sizes(list(fractions), d)
    subsets = [np.sort(perm[:k]) for k in sizes]
    probe = LogisticProbe(subsets=subsets, device="cpu").fit(X_fit, y_fit, X_val=X_val, y_val=y_val)
    n, rows = len(y_fit), []
    classes = np.unique(y_fit)
    pos = np.searchsorted(classes, y_fit)

    def objective(Z, W, b, alpha):  # mean cross-entropy + alpha/2 ||W||^2 (standardised units), float64
        from scipy.special import logsumexp

        L = Z @ W + b
        return float(np.mean(logsumexp(L, 1) - L[np.arange(n), pos]) + 0.5 * alpha * np.sum(W**2))

    for f, k, s, i in zip(fractions, sizes, subsets, range(len(subsets))):
        a = float(probe.regs_[i])
        Z = (X_fit[:, s].astype(np.float64) - probe.mean_[s]) / probe.scale_[s]
        W = (probe.coefs_[i] * probe.scale_[s][None, :]).T
        b = probe.intercepts_[i] + probe.mean_[s] @ probe.coefs_[i].T
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref = LogisticRegression(C=1.0 / (a * n), tol=1e-10, max_iter=10_000).fit(Z, y_fit)
        o, o_ref = objective(Z, W, b, a), objective(Z, ref.coef_.T, ref.intercept_, a)
        rows.append((f, int(k), a, (o - o_ref) / abs(o_ref)))
    return rows


def compare(res, sk, fractions):
    """Per fraction: critmass and scikit-learn mean accuracy, mean and max |.| difference (points),
    penalty agreement, over the (seed, k) both ran; plus the full layer."""
    r = res.results
    rows = []
    for f in [*fractions, "all"]:
        sel = r[r.selector == "all"] if f == "all" else r[(r.selector == "random") & np.isclose(r.fraction, f)]
        pairs = [(a, sk[(s_, sd, k)], reg) for s_, sd, k, a, reg in
                 zip(sel.selector, sel.seed, sel.n_neurons, sel.test_accuracy, sel.reg) if (s_, sd, k) in sk]
        if not pairs:
            continue
        cm = np.array([p[0] for p in pairs])
        sa = np.array([p[1][0] for p in pairs])
        same = sum(np.isclose(p[2], p[1][1]) for p in pairs)
        k = int(sel.n_neurons.iloc[0])
        rows.append((f, k, len(pairs), 100 * cm.mean(), 100 * sa.mean(), 100 * (cm - sa).mean(),
                     100 * np.abs(cm - sa).max(), same))
    return rows


def time_cmd(cmd, env=None) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if p.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return dt


def time_imports(repeat: int = 2) -> dict:
    """Best of ``repeat`` cold-process times of the imports the CLI pays before any work."""
    py = sys.executable
    return {name: min(time_cmd([py, "-c", code]) for _ in range(repeat))
            for name, code in (("python -c pass", "pass"), ("import torch", "import torch"),
                               ("import critmass.cli", "import critmass.cli"))}


def time_cli(entry, fractions, n_seeds: int, device: str, workdir: Path) -> tuple[float, list]:
    exe = VENV_BIN / "critmass"
    cmd = [str(exe) if exe.exists() else "critmass", "probe", str(entry),
           "--fractions", ",".join(f"{f:g}" for f in fractions), "--seeds", str(n_seeds),
           "--selector", "random", "--device", device, "--out", str(workdir / "cli-out")]
    times = []
    for _ in range(2):  # the first start may read torch's libraries from disk (cold page cache): report both
        times.append(time_cmd(cmd))
        shutil.rmtree(workdir / "cli-out", ignore_errors=True)
    return times, cmd


def load_dataset(name: str, args, workdir: Path):
    """(FeatureSet, CLI entry path, description)."""
    if name == "synthetic":
        fs = synthetic_set(args.n, args.d, args.classes)
        def entry():  # the CLI reads a .npz (x_train, y_train, x_test, y_test); written only when timing it
            path = workdir / "synthetic.npz"
            np.savez(path, x_train=fs["train"].x, y_train=fs["train"].y, x_test=fs["test"].x, y_test=fs["test"].y)
            return path

        return fs, entry, f"synthetic {args.n} train / {args.n // 4} test x {args.d} neurons, {args.classes} classes"
    if name == "fashion-mnist":
        import critmass

        t = time.perf_counter()
        fs = critmass.extract("efficientnet-lite0", "fashion-mnist", split=["train", "test"],
                              max_samples={"train": args.fm_train, "test": args.fm_test}, image_size=args.image_size,
                              cache=args.cache, data_root=args.data_root, device=args.device.split(",")[0],
                              progress=False)
        dt = time.perf_counter() - t
        how = f"extracted in {dt:.0f} s (cached now)" if dt > 30 else f"loaded from the cache in {dt:.1f} s"
        return (fs, lambda: fs.meta["source"],
                f"EfficientNet-Lite0 penultimate features of Fashion-MNIST, {fs.x_train.shape[0]} train / "
                f"{fs.x_test.shape[0]} test x {fs.n_features} neurons, {args.image_size} px; {how}; "
                f"entry {fs.meta['source']}")
    raise SystemExit(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")


def protocol_main(args) -> None:
    fractions = tuple(args.fractions or DEMO_FRACTIONS)
    seeds = list(range(args.seeds or 3))
    sk_seeds = len(seeds) if args.sk_all else max(1, min(len(seeds), args.sk_seeds))
    alphas = DEFAULT_LOGISTIC_ALPHAS
    datasets = args.datasets.split(",") if args.datasets else (["synthetic"] if args.quick else list(DATASETS))
    machine = Machine()
    print(machine_line())
    print("\n".join(machine.start_lines()))
    print(f"protocol: {len(fractions)} fractions x {len(seeds)} seeds of random subsets + the full layer; "
          f"penalty grid alpha = {', '.join(f'{a:g}' for a in alphas)} (sklearn C = 1/(alpha n_fit)) chosen on "
          f"a stratified 10% validation split of train; test accuracy of the chosen penalty")
    devices = args.device.split(",")
    n_jobs = [v if v == "auto" else int(v) for v in args.n_jobs.split(",")]
    for dev in devices:
        warm_cuda(dev)
    from critmass.probes._parallel import usable_cores

    print(f"run_probes n_jobs: {', '.join(map(str, n_jobs))} ('auto': one process per usable core, here "
          f"{usable_cores()}, for runs large enough)")
    summary = []
    with tempfile.TemporaryDirectory(prefix="critmass-bench-") as tmp:
        workdir = Path(tmp)
        for name in datasets:
            fs, entry, desc = load_dataset(name, args, workdir)
            n_val = len(protocol_rows(fs)[3])
            print(f"\n=== {name}: {desc}; {fs.x_train.shape[0] - n_val} fit + {n_val} val rows")
            timed = []
            for dev in devices:
                for nj in n_jobs:
                    runs = []
                    for _ in range(max(1, args.repeat)):
                        t = time.perf_counter()
                        res = run_probes(fs, selectors=["random"], fractions=fractions, seeds=seeds, solver="logistic",
                                         device=dev, save_weights=False, solver_options=args.solver_options, n_jobs=nj)
                        runs.append(time.perf_counter() - t)
                    label = dev if len(n_jobs) == 1 else f"{dev}, n_jobs={nj}"
                    timed.append((label, res, float(np.mean(runs)), runs))
            timed.sort(key=lambda t: t[2])  # the fastest first: the summary's and the comparison's
            res = timed[0][1]
            sk, secs = sklearn_protocol(fs, fractions, seeds[:sk_seeds], alphas, args.sk_max_iter)
            per_seed = np.mean([secs[s] for s in seeds[:sk_seeds]])
            t_sk = secs["all"] + per_seed * len(seeds)
            ran = sum(secs[s] for s in seeds[:sk_seeds]) + secs["all"]
            note = (f"all {len(seeds)} seeds run" if sk_seeds == len(seeds) else
                    f"EXTRAPOLATED: ran the full layer + {sk_seeds} of {len(seeds)} seeds in {ran:.1f} s, "
                    f"seed time x{len(seeds) / sk_seeds:g}")
            n_fits = (len(set(resolve(fractions, fs.n_features))) * len(seeds) + 1) * len(alphas)
            print(f"scikit-learn loop ({n_fits} lbfgs fits): {t_sk:8.1f} s  ({note})")
            for dev, _r, tt, runs in timed:
                label = "" if len(timed) == 1 else f" [{dev}]"
                each = f" (mean of {len(runs)} runs: {', '.join(f'{r:.2f}' for r in runs)} s)" if len(runs) > 1 else ""
                print(f"critmass run_probes{label}: {tt:8.2f} s{each}  speed-up x{t_sk / tt:.1f}{machine.early_label()}")
            rows = compare(res, sk, fractions)
            print(f"test accuracy per fraction (critmass - scikit-learn, over the {sk_seeds} seed(s) both ran; "
                  f"'alpha=' counts probes whose chosen penalty agrees):")
            print(f"  {'fraction':>8} {'k':>5} {'critmass':>9} {'sklearn':>8} {'mean diff':>10} {'max |diff|':>10}  alpha=")
            for f, k, n, cm, sa, md, mx, same in rows:
                fl = f"{f:g}" if f != "all" else "all"
                print(f"  {fl:>8} {k:>5} {cm:8.2f}% {sa:7.2f}% {md:+9.2f}pt {mx:9.2f}pt  {same}/{n}")
            mean_diff = float(np.mean([r_[5] for r_ in rows]))
            worst = min(r_[5] for r_ in rows)
            print(f"  mean over fractions {mean_diff:+.2f} pt; worst fraction mean {worst:+.2f} pt; "
                  f"largest single probe |diff| {max(r_[6] for r_ in rows):.2f} pt")
            it = res.results.n_iter
            print(f"critmass L-BFGS iterations per chosen probe: mean {it.mean():.1f}, max {it.max()}")
            if args.objective_check:
                gaps = objective_check(fs, args.objective_check)
                print("objective of critmass's chosen probe vs scikit-learn lbfgs tol=1e-10 at the same penalty "
                      "(relative gap; target < 1e-4): "
                      + ", ".join(f"f={f:g} (k={k}, alpha={a:g}) {g:+.1e}" for f, k, a, g in gaps))
            cli = None
            if not args.no_cli:
                times, cmd = time_cli(entry(), fractions, len(seeds), devices[0], workdir)
                cli = min(times)
                print(f"CLI: {cli:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)} s; the first may load torch "
                      f"from a cold disk cache) for `critmass probe {Path(cmd[2]).name} --fractions "
                      f"<{len(fractions)}> --seeds {len(seeds)} --selector random --out DIR` (whole process: start, "
                      f"torch import, load, probes, results + weights written)")
            summary.append((name, t_sk, timed[0][2], cli, mean_diff, worst, note, timed[0][0]))
    if not args.no_cli:
        imp = time_imports()
        print("\nimport share of the CLI (fresh processes, best of 2): "
              + ", ".join(f"`{k}` {v:.2f} s" for k, v in imp.items()))
    end = machine.finish()
    busy = machine.label()
    print("\nsummary:")
    for name, t_sk, t_cm, cli, md, worst, note, _dev in summary:
        c = f", CLI {cli:.1f} s (x{t_sk / cli:.1f}{busy})" if cli else ""
        print(f"  {name:14s} scikit-learn {t_sk:7.1f} s{' (extrapolated)' if 'EXTRA' in note else ''}, "
              f"critmass {t_cm:6.2f} s (x{t_sk / t_cm:.1f}{busy}){c}; accuracy diff mean {md:+.2f} pt, "
              f"worst fraction {worst:+.2f} pt")
    print("\n".join(machine.start_lines()[1:] + end))
    write_rows([result_row(machine, args, mode="protocol", dataset=name, device=dev, t_sk=t_sk, t_cm=t_cm)
                for name, t_sk, t_cm, _cli, _md, _w, _note, dev in summary], RESULTS, CSV_COLUMNS)


def resolve(fractions, d):
    from critmass._validation import resolve_sizes

    return resolve_sizes(list(fractions), d)


# ------------------------------------------------------------------------------------------- fixed C
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


def fixed_c_main(args) -> None:
    fractions = tuple(args.fractions or FIXED_C_FRACTIONS)
    n_seeds = args.seeds or 5
    sk_seeds = n_seeds if args.sk_all else min(n_seeds, args.sk_seeds_fixed or n_seeds)
    fs = synthetic_set(args.n, args.d, args.classes)
    X, y = np.concatenate([fs["train"].x, fs["test"].x]), np.concatenate([fs["train"].y, fs["test"].y])
    fit_rows, _ = train_val_indices(y[: args.n], 0.1, seed=0)  # run_probes' split (val_seed=0)
    n_fit = len(fit_rows)
    alpha = alpha_from_C(args.C, n_fit)
    seeds = list(range(n_seeds))
    print(f"features: train {args.n} x {args.d} ({n_fit} fit + {args.n - n_fit} val), test {args.n // 4}, "
          f"{args.classes} classes; {len(fractions)} fractions x {n_seeds} seeds = {len(fractions) * n_seeds} probes")
    machine = Machine()
    print(f"{machine_line()}; C = {args.C} (alpha = {alpha:.3g})")
    print("\n".join(machine.start_lines()))

    opts = args.solver_options
    timed = []  # (name, results, seconds)
    for device in args.device.split(","):
        dev = resolve_device(device)
        label = "" if "," not in args.device else f" [{dev.type}]"
        warm_cuda(device, alpha)
        t = time.perf_counter()
        lg = run_probes(fs, fractions=fractions, seeds=seeds, solver="logistic", alphas=alpha, device=device,
                        solver_options=opts, save_weights=False)
        timed.append((f"critmass logistic{label}", lg, time.perf_counter() - t))
        t = time.perf_counter()
        rg = run_probes(fs, fractions=fractions, seeds=seeds, solver="ridge", device=device, save_weights=False)
        timed.append((f"critmass ridge{label}", rg, time.perf_counter() - t))
    lg = timed[0][1]

    sizes = sorted(set(lg.results.loc[lg.results.selector == "random", "n_neurons"]))
    sk_acc, t_sk = sklearn_curve(X[: args.n][fit_rows], y[: args.n][fit_rows], X[args.n :], y[args.n :],
                                 seeds[:sk_seeds], sizes, args.C, args.sk_max_iter)
    t_sk_total = t_sk * n_seeds / sk_seeds
    end = machine.finish()
    note = "" if sk_seeds == n_seeds else f" (ran {sk_seeds} of {n_seeds} seeds, time extrapolated x{n_seeds / sk_seeds:g})"

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
        print(f"{name:25s}: {tt:8.2f} s  speed-up x{t_sk_total / tt:6.1f}{machine.label()}  test accuracy - sklearn: "
              f"mean {mean:+.2f} pt, mean |.| {mabs:.2f} pt, max |.| {mx:.2f} pt")
    it = lg.results[lg.results.selector == "random"].n_iter
    print(f"critmass logistic L-BFGS iterations per probe: mean {it.mean():.1f}, max {it.max()}")
    print("\n".join(machine.start_lines()[1:] + end))
    write_rows([result_row(machine, args, mode="fixed-c", dataset=f"synthetic {name}", device=args.device,
                           t_sk=t_sk_total, t_cm=tt) for name, _res, tt in timed], RESULTS, CSV_COLUMNS)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--mode", choices=("protocol", "fixed-c"), default="protocol",
                    help="protocol: default penalty grid chosen on validation; fixed-c: one C, synthetic only")
    ap.add_argument("--datasets", default=None,
                    help=f"comma-separated, of {', '.join(DATASETS)} (default: both; --quick: synthetic)")
    ap.add_argument("--fractions", type=lambda s: [float(f) for f in s.split(",")], default=None,
                    help="comma-separated fractions (default: protocol the demo's 12, fixed-c 16)")
    ap.add_argument("--seeds", type=int, default=None, help="random-subset seeds 0..N-1 (default: protocol 3, fixed-c 5)")
    ap.add_argument("--sk-seeds", type=int, default=1,
                    help="protocol: run scikit-learn on the full layer + the first S seeds and extrapolate")
    ap.add_argument("--sk-seeds-fixed", type=int, default=None, help="fixed-c: scikit-learn seeds (default all)")
    ap.add_argument("--sk-all", action="store_true", help="run scikit-learn on every seed (no extrapolation)")
    ap.add_argument("--sk-max-iter", type=int, default=100, help="scikit-learn max_iter")
    ap.add_argument("--n", type=int, default=20_000, help="synthetic training samples (test: n/4)")
    ap.add_argument("--d", type=int, default=2048, help="synthetic neurons")
    ap.add_argument("--classes", type=int, default=10, help="synthetic classes")
    ap.add_argument("--fm-train", type=int, default=5000, help="Fashion-MNIST train images")
    ap.add_argument("--fm-test", type=int, default=2000, help="Fashion-MNIST test images")
    ap.add_argument("--image-size", type=int, default=112, help="Fashion-MNIST input size (the demo's 112 px)")
    ap.add_argument("--cache", default=None, help="feature cache (default $CRITMASS_CACHE or ~/.cache/critmass/features)")
    ap.add_argument("--data-root", default=None, help="dataset root (default: critmass's lookup)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="protocol: time critmass this many times (ratio on the mean; scikit-learn runs once)")
    ap.add_argument("--no-cli", action="store_true", help="protocol: skip timing the `critmass probe` CLI")
    ap.add_argument("--objective-check", type=lambda s: [float(f) for f in s.split(",")] if s else [],
                    default=[0.01, 0.1, 1.0],
                    help="protocol: fractions whose chosen probe's objective is compared with a tightly converged "
                         "scikit-learn fit ('' to skip)")
    ap.add_argument("--C", type=float, default=1.0, help="fixed-c: scikit-learn C (critmass alpha = 1/(C n_fit))")
    ap.add_argument("--max-iter", type=int, default=None, help="critmass L-BFGS max_iter (default: the probe's)")
    ap.add_argument("--device", default="auto", help="device(s) for critmass, comma-separated: e.g. cuda,cpu")
    ap.add_argument("--n-jobs", default="auto",
                    help="run_probes n_jobs, comma-separated to time several in one run (e.g. 1,auto)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both torch and numpy/scipy BLAS (default: libraries' defaults)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: synthetic N=2,000 x D=256, 3 fractions x 2 seeds, critmass timed once "
                         "(fixed-c: N=4,000 x D=512, 16 x 5, sklearn 1 seed)")
    args = ap.parse_args(argv)
    if args.quick:
        if args.mode == "protocol":
            args.n, args.d = min(args.n, 2000), min(args.d, 256)
            args.fractions = args.fractions or [0.05, 0.2, 1.0]
            args.seeds = args.seeds or 2
            args.repeat = 1
        else:
            args.n, args.d = min(args.n, 4000), min(args.d, 512)
            args.sk_seeds_fixed = args.sk_seeds_fixed or 1
    args.solver_options = {} if args.max_iter is None else {"max_iter": args.max_iter}
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    (protocol_main if args.mode == "protocol" else fixed_c_main)(args)


if __name__ == "__main__":
    main()
