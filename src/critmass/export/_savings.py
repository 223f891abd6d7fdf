"""Measured savings of a reduced representation: storage, head and backbone size, FLOPs, latency, accuracy."""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np

__all__ = ["storage_savings", "count_params", "count_flops", "cpu_latency", "accuracy_cost", "format_savings"]

logger = logging.getLogger(__name__)

#: FLOPs are fvcore's count: one multiply-accumulate (of a conv, linear layer or matmul) counts as one.
FLOP_CONVENTION = "fvcore: one multiply-accumulate = 1 flop; element-wise ops not counted"


def storage_savings(n_features: int, k: int, *, itemsize_full: int = 4, itemsize_reduced: int | None = None,
                    n_vectors: int | None = None) -> dict:
    """Bytes per stored vector (full layer vs the k kept values) and for a gallery of ``n_vectors``."""
    itemsize_reduced = itemsize_full if itemsize_reduced is None else int(itemsize_reduced)
    full, red = int(n_features) * int(itemsize_full), int(k) * itemsize_reduced
    out = {"bytes_per_vector": {"full": full, "reduced": red, "ratio": red / full, "saved": full - red},
           "itemsize": {"full": int(itemsize_full), "reduced": itemsize_reduced}}
    if n_vectors is not None:
        out["gallery"] = {"n_vectors": int(n_vectors), "full_bytes": full * int(n_vectors),
                          "reduced_bytes": red * int(n_vectors), "saved_bytes": (full - red) * int(n_vectors)}
    return out


def count_params(module) -> int:
    """Parameters and buffers of floating dtype (BatchNorm statistics, fixed projections) of a module."""
    import torch

    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen or not torch.is_floating_point(t):
            continue
        seen.add(id(t))
        total += t.numel()
    return int(total)


def count_flops(module, example) -> int | None:
    """fvcore's FLOP count of one forward of ``example`` (None, with a log line, if fvcore cannot trace it)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore scripts a loss function at import (a torch.jit deprecation)
            from fvcore.nn import FlopCountAnalysis
    except ImportError:
        logger.warning("fvcore is not installed (pip install 'critmass[export]'): FLOPs not counted")
        return None
    import torch

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings of fvcore's jit trace
            fca = FlopCountAnalysis(module, (example,))
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(fca.total())
    except Exception as exc:  # tracing failures of exotic models
        logger.warning("fvcore could not count FLOPs (%s: %s)", type(exc).__name__, str(exc)[:120])
        return None


def cpu_latency(modules: dict, example, *, repeats: int = 20, warmup: int = 3) -> dict:
    """Median wall time per forward of ``example`` (a batch of one image) for each module, on the CPU.

    The modules run interleaved (a, b, a, b, ...), so load from other processes on the machine hits them
    alike; each gets ``repeats`` timed runs after ``warmup`` untimed ones.
    """
    import torch

    times = {name: [] for name in modules}
    with torch.inference_mode():
        for _ in range(int(warmup)):
            for m in modules.values():
                m(example)
        for _ in range(int(repeats)):
            for name, m in modules.items():
                t0 = time.perf_counter()
                m(example)
                times[name].append(time.perf_counter() - t0)
    return {name: {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t), "repeats": int(repeats),
                   "batch": int(example.shape[0]), "threads": int(torch.get_num_threads())}
            for name, t in times.items()}


def accuracy_cost(run_rows, selector: str, fraction: float, seed: int, *, correct_full=None, correct_subset=None,
                  n_boot: int = 1000, random_state: int = 0, ci: float = 0.95) -> dict:
    """Full-layer vs subset test accuracy from the run's table, and a paired bootstrap CI of the difference.

    ``run_rows`` is ``results.parquet``. The CI resamples test samples (paired: the same resample for both
    probes) from the per-sample correctness vectors, when given; the spread over the run's seeds at this
    fraction is reported too (the metrics module's seed bootstrap is for DR, not for one fraction).
    """
    res = run_rows
    full = res[res["selector"] == "all"]
    at = res[(res["selector"] == selector) & np.isclose(res["fraction"].to_numpy(float), fraction, rtol=0, atol=1e-9)]
    this = at[at["seed"] == seed]
    out = {"full_test_accuracy": float(full["test_accuracy"].mean()) if len(full) else None,
           "subset_test_accuracy": float(this["test_accuracy"].iloc[0]) if len(this) else None,
           "seeds": {"n": int(at["seed"].nunique()), "mean": float(at["test_accuracy"].mean()),
                     "min": float(at["test_accuracy"].min()), "max": float(at["test_accuracy"].max())}}
    if out["full_test_accuracy"] is not None and out["subset_test_accuracy"] is not None:
        out["cost"] = out["full_test_accuracy"] - out["subset_test_accuracy"]
        out["relative"] = out["subset_test_accuracy"] / out["full_test_accuracy"] if out["full_test_accuracy"] else None
    if correct_full is not None and correct_subset is not None and n_boot:
        cf = np.asarray(correct_full, dtype=np.float64)
        cs = np.asarray(correct_subset, dtype=np.float64)
        rng = np.random.default_rng(random_state)
        n = len(cf)
        diffs = []
        for start in range(0, int(n_boot), 100):
            idx = rng.integers(0, n, size=(min(100, int(n_boot) - start), n))
            diffs.append(cf[idx].mean(1) - cs[idx].mean(1))
        diffs = np.concatenate(diffs)
        lo, hi = np.quantile(diffs, [(1 - ci) / 2, 1 - (1 - ci) / 2])
        out["cost_ci"] = {"low": float(lo), "high": float(hi), "level": ci, "n_boot": int(n_boot),
                          "random_state": int(random_state), "resampled": f"{n} test samples, paired"}
    return out


def _mb(n_bytes: float) -> str:
    if n_bytes >= 1 << 20:
        return f"{n_bytes / (1 << 20):.2f} MiB"
    if n_bytes >= 1 << 10:
        return f"{n_bytes / (1 << 10):.1f} KiB"
    return f"{int(n_bytes)} B"


def _pair(a, b, unit: str = "") -> str:
    if a is None or b is None:
        return "n/a"
    ratio = f" ({b / a:.3g}x)" if a else ""
    return f"{a:,}{unit} -> {b:,}{unit}{ratio}"


def format_savings(s: dict) -> list[str]:
    """Human-readable lines of a savings dict (what the CLI prints)."""
    lines = []
    st = s.get("storage")
    if st:
        b = st["bytes_per_vector"]
        lines.append(f"bytes per vector: {b['full']:,} -> {b['reduced']:,} ({b['ratio']:.3g}x)")
        g = st.get("gallery")
        if g:
            lines.append(f"gallery of {g['n_vectors']:,} vectors: {_mb(g['full_bytes'])} -> {_mb(g['reduced_bytes'])}")
    h = s.get("head")
    if h:
        lines.append(f"head parameters: {_pair(h['params']['full'], h['params']['reduced'])}; "
                     f"FLOPs: {_pair(h['flops']['full'], h['flops']['reduced'])}")
    bb = s.get("backbone")
    if bb:
        lines.append(f"backbone parameters: {_pair(bb['params']['full'], bb['params']['exported'])}; "
                     f"FLOPs: {_pair(bb['flops']['full'], bb['flops']['exported'])}")
        lat = bb.get("latency")
        if lat:
            lines.append(f"CPU latency per image (median of {lat['full']['repeats']}, {lat['full']['threads']} "
                         f"threads): {lat['full']['median_ms']:.2f} ms -> {lat['exported']['median_ms']:.2f} ms")
    a = s.get("accuracy")
    if a and a.get("cost") is not None:
        ci = a.get("cost_ci")
        ci_text = f", 95% CI [{ci['low']:+.4f}, {ci['high']:+.4f}]" if ci else ""
        lines.append(f"test accuracy: full {a['full_test_accuracy']:.4f} -> subset {a['subset_test_accuracy']:.4f} "
                     f"(cost {a['cost']:+.4f}{ci_text}; over {a['seeds']['n']} seed(s) at this fraction: "
                     f"{a['seeds']['min']:.4f}..{a['seeds']['max']:.4f})")
    v = s.get("variance_retained")
    if v is not None:
        lines.append(f"variance retained (fit rows): {v:.4f}")
    return lines
