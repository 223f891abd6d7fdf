"""Throughput of `critmass extract` against a bare `model(x)` loop over the same tensors, same run.

    python benchmarks/extract.py [--model efficientnet-lite0] [--dataset fashion-mnist] [--n 512]
                                 [--image-size 224] [--batch-size 64] [--device auto] [--amp bf16 --channels-last]
                                 [--no-pretrained]

critmass's number includes everything a user pays: decoding and preprocessing samples (DataLoader
workers), the forward pass, the finiteness check, writing the memory-mapped cache and checksumming it.
The baseline gets pre-made input tensors for free. Target on CPU: ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import nullcontext

import torch

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

    bare()  # warm-up (allocator, kernels)
    t_bare = min(_timed(bare) for _ in range(args.repeats))
    t_ours = min(_timed(ours) for _ in range(args.repeats))
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else torch.get_num_threads()} "
          f"threads); model {backbone.spec} at {args.image_size}px; {n} images, batch {args.batch_size}"
          + (f", amp {args.amp}" if args.amp else "") + (", channels_last" if args.channels_last else ""))
    print(f"bare model(x) loop over pre-made tensors : {n / t_bare:8.1f} images/s")
    print(f"critmass extract (preprocess + cache)    : {n / t_ours:8.1f} images/s")
    print(f"ratio critmass / bare: {t_bare / t_ours:.2f}  (target >= 0.9 on CPU)")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
