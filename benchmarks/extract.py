"""Throughput of `critmass extract` against a bare `model(x)` loop over the same tensors, same run.

    python benchmarks/extract.py [--model efficientnet-lite0] [--dataset fashion-mnist] [--n 512]
                                 [--image-size 224] [--batch-size 64] [--device auto] [--amp bf16 --channels-last]
                                 [--no-pretrained]

critmass's number includes everything a user pays: decoding and preprocessing samples (DataLoader
workers), the forward pass, the finiteness check, writing the memory-mapped cache and checksumming it.
The baseline gets pre-made input tensors for free. Target on CPU: ratio >= 0.9 against the baseline
under the same allocator settings.

The bare loop runs twice. Once under the allocator settings critmass uses for a CPU pass
(``critmass._alloc.heap_reuse``: freed activations stay in glibc's heap), so that the ratio measures
critmass's own overhead and not the allocator; and once under glibc's default allocator, which maps
every large activation afresh and page-faults it in again every batch: what a user's own loop would
see. Both ratios are printed, and one row (date, commit, CPU model, cores, device, library versions and
the three throughputs) is appended to ``--out`` (default ``benchmarks/results/extract.csv``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from critmass._alloc import heap_reuse
from critmass._env import versions
from critmass.data import load_dataset
from critmass.features import extract
from critmass.features._extract import AMP, _resolve_device
from critmass.models import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default=None, choices=[None, "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-pretrained", action="store_true", help="random init (speed only; no weights download)")
    ap.add_argument("--repeats", type=int, default=2, help="best of N for each side")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "extract.csv"),
                    help="CSV file the result row is appended to ('' to write none)")
    args = ap.parse_args()

    device = _resolve_device(args.device)
    backbone = load_model(args.model, image_size=args.image_size, pretrained=not args.no_pretrained)
    ds = load_dataset(args.dataset, "test", max_samples=args.n)
    n = len(ds)
    # Baseline inputs: the very tensors critmass feeds the model, made before the clock starts.
    batches = [torch.stack([backbone.preprocess(ds[i][0]) for i in range(s, min(n, s + args.batch_size))])
               for s in range(0, n, args.batch_size)]
    module = backbone.module.eval().to(device)
    if args.channels_last and device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=getattr(torch, AMP[args.amp])) if args.amp else nullcontext()

    def bare():
        with torch.inference_mode(), autocast:
            for xb in batches:
                xb = xb.to(device)
                if args.channels_last and device.type == "cuda":
                    xb = xb.contiguous(memory_format=torch.channels_last)
                module(xb)
            if device.type == "cuda":
                torch.cuda.synchronize()

    def ours():
        with tempfile.TemporaryDirectory() as cache:  # a fresh cache each time: a real extraction, not a hit
            extract(backbone, args.dataset, split="test", max_samples=args.n, cache=cache, batch_size=args.batch_size,
                    num_workers=args.num_workers, device=str(device), amp=args.amp, channels_last=args.channels_last,
                    progress=False)

    def bare_same_allocator():
        # The settings critmass's own CPU pass runs under (a no-op on a GPU or without glibc).
        with heap_reuse(device.type == "cpu"):
            bare()

    bare()  # warm-up (allocator, kernels)
    t_bare = min(_timed(bare) for _ in range(args.repeats))
    with heap_reuse(device.type == "cpu") as reuse:
        bare()  # warm-up under the heap settings
    t_same = min(_timed(bare_same_allocator) for _ in range(args.repeats))
    t_ours = min(_timed(ours) for _ in range(args.repeats))
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu, {torch.get_num_threads()} threads")
    print(f"device: {device_name}; model {backbone.spec} at {args.image_size}px; {n} images, batch {args.batch_size}"
          + (f", amp {args.amp}" if args.amp else "") + (", channels_last" if args.channels_last else ""))
    print(f"bare model(x) loop, critmass's allocator settings : {n / t_same:8.1f} images/s"
          + ("" if reuse else "  (heap reuse not in effect here: same as the default)"))
    print(f"bare model(x) loop, default allocator             : {n / t_bare:8.1f} images/s")
    print(f"critmass extract (preprocess + cache)             : {n / t_ours:8.1f} images/s")
    print(f"ratio critmass / bare, same allocator : {t_same / t_ours:.2f}  "
          "(critmass's own overhead; target >= 0.9 on CPU)")
    print(f"ratio critmass / bare, default malloc : {t_bare / t_ours:.2f}  (against a plain loop of one's own)")
    if args.out:
        row = {"date": datetime.date.today().isoformat(), "commit": _commit(), "cpu": _cpu_model(),
               "cores": os.cpu_count(), "device": device_name, "model": backbone.spec, "dataset": args.dataset,
               "n": n, "image_size": args.image_size, "batch_size": args.batch_size, "amp": args.amp or "",
               "heap_reuse": bool(reuse), "bare_same_allocator_ips": round(n / t_same, 2),
               "bare_default_allocator_ips": round(n / t_bare, 2), "critmass_ips": round(n / t_ours, 2),
               "ratio_same_allocator": round(t_same / t_ours, 3), "ratio_default_allocator": round(t_bare / t_ours, 3),
               "versions": ";".join(f"{k}={v}" for k, v in sorted(versions().items()))}
        _append_row(Path(args.out), row)
        print(f"appended to {args.out}")


def _append_row(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), None)
        if header != list(row):
            raise SystemExit(f"{path} has other columns ({header}); pass --out with a new file")
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    from critmass._blas import cpu_model  # the one reading of /proc/cpuinfo

    return cpu_model()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
