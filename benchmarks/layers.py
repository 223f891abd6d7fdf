"""Profiling L layers in ONE pass (`critmass profile`'s extraction) vs one `critmass extract` per layer, same run.

    python benchmarks/layers.py [--model efficientnet-lite0] [--dataset fashion-mnist] [--layers stages]
                                 [--train 2000] [--test 1000] [--image-size 64] [--batch-size 64] [--device cpu]
                                 [--cli] [--full-forward]

Each mode runs in its own subprocess (so each has its own peak RSS and nothing is shared through the page
cache of the feature files), into its own empty cache, with the same preloaded-weights model spec and the same
decoded images. Both pay everything a user pays: loading the model, decoding and resizing the images, the
forward passes, writing and checksumming the cache. Printed: wall time of each mode, the ratio
(per-layer total / one pass; target >= 0.8 x L for L >= 6) and the peak RSS of each (and peak CUDA memory on
a GPU). The features of both modes are compared (max abs difference).

The per-layer mode runs every extraction in ONE process, so only its first extraction pays the process's
warm-up, and each stops the forward at its layer (critmass's own single-layer path). ``--full-forward`` also
times per-layer extractions that run the whole forward, as a hook on a plain forward does (timm's
``forward_intermediates`` default; the paper re-ran the backbone per probe). ``--cli`` times what a
command-line user pays: one ``critmass extract --layer NAME`` process per layer (torch import, model load and
a cold forward each time) against one ``critmass extract --layers A,B,...`` process.
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's `profile`, which torch imports (via cProfile): run as a
# script, its own directory must not shadow it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def _worker(args) -> None:
    import numpy as np
    import torch

    from critmass.features import extract, extract_layers
    from critmass.models import load_model, resolve_layers

    torch.manual_seed(0)
    opts = dict(split=["train", "test"], max_samples={"train": args.train, "test": args.test}, image_size=args.image_size,
                batch_size=args.batch_size, device=args.device, progress=False, num_workers=args.num_workers,
                cache=args.cache)
    names = resolve_layers(load_model(args.model, image_size=args.image_size), args.layers)
    t0 = time.perf_counter()  # the comparison starts here: both modes load the model inside their calls
    if args.mode == "one-pass":
        fsets = extract_layers(args.model, args.dataset, layers=names, max_width=None, **opts)
    else:
        if args.mode == "per-layer-full":
            _run_whole_forward()
        fsets, each = {}, {}
        for name in names:
            t = time.perf_counter()
            fsets[name] = extract(args.model, args.dataset, layer=name, **opts)
            each[name] = time.perf_counter() - t
    seconds = time.perf_counter() - t0
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(json.dumps({
        "mode": args.mode, "seconds": seconds, "layers": names, "each": each if args.mode != "one-pass" else None,
        "widths": {k: fs.n_features for k, fs in fsets.items()},
        "entries": {k: fs.meta["source"] for k, fs in fsets.items()},
        "n": {s: fs[s].n_samples for s in ("train", "test") for fs in [next(iter(fsets.values()))]},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_cuda_mib": peak_cuda,
        "checksum": float(sum(np.asarray(fs.x_train, dtype=np.float64).sum() for fs in fsets.values())),
    }))


def _run_whole_forward() -> None:
    """Make a per-layer extraction run the whole forward, as a hook on a plain forward does (timm's
    ``forward_intermediates`` default, ``stop_early=False``; the paper re-ran the backbone per probe): critmass's
    own per-layer path stops at its layer, which makes the early layers cheaper than a pass."""
    from critmass.models import _backbone

    def capture(module, layer, run, batch, *, where="the model"):
        captured = {}
        handle = dict(module.named_modules())[layer].register_forward_hook(
            lambda _m, _i, out: captured.setdefault("out", out))
        try:
            run(batch)
        finally:
            handle.remove()
        return captured["out"]

    _backbone.capture = capture


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--layers", default="stages")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cli", action="store_true", help="also time one `critmass extract` process per layer")
    ap.add_argument("--full-forward", action="store_true",
                    help="also time one extraction per layer that runs the whole forward (no early stop)")
    ap.add_argument("--mode", choices=["one-pass", "per-layer", "per-layer-full"], help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        _worker(args)
        return
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("one-pass", "per-layer") + (("per-layer-full",) if args.full_forward else ()):
            cmd = [sys.executable, __file__, "--mode", mode, "--cache", os.path.join(tmp, mode)]
            for flag in ("model", "dataset", "layers", "train", "test", "image_size", "batch_size", "device"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            if args.num_workers is not None:
                cmd += ["--num-workers", str(args.num_workers)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        import numpy as np

        from critmass.features import load_features

        diff = max(float(np.abs(np.asarray(load_features(out["one-pass"]["entries"][k]).x_train)
                                - np.asarray(load_features(out["per-layer"]["entries"][k]).x_train)).max())
                   for k in out["one-pass"]["layers"])
        cli = _time_cli(args, out["one-pass"]["layers"], os.path.join(tmp, "cli")) if args.cli else None
    full = out.get("per-layer-full")
    one, per = out["one-pass"], out["per-layer"]
    L = len(one["layers"])
    ratio = per["seconds"] / one["seconds"]
    print(f"{args.model} on {args.dataset}: {one['n']['train']} train + {one['n']['test']} test images at "
          f"{args.image_size} px, device {args.device}, {L} layers:")
    print("  " + ", ".join(f"{k} ({w})" for k, w in one["widths"].items()))
    for m in (one, per):
        cuda = f", peak CUDA {m['peak_cuda_mib']:.0f} MiB" if m["peak_cuda_mib"] is not None else ""
        print(f"  {m['mode']:>9}: {m['seconds']:7.1f} s, peak RSS {m['peak_rss_mib']:.0f} MiB{cuda}")
    print(f"  ratio per-layer / one-pass = {ratio:.2f} (target >= 0.8 x L = {0.8 * L:.1f}); "
          f"max |features difference| {diff:.2e}")
    each = per["each"]
    last = one["layers"][-1]  # the deepest layer: a whole forward pass per extraction
    print("  per-layer extractions: " + ", ".join(f"{k} {v:.1f} s" for k, v in each.items()))
    print(f"  a per-layer extraction stops the forward at its layer, so the early layers cost less than a pass; "
          f"against L full passes (L x the {last} extraction, {each[last]:.1f} s) the ratio is "
          f"{L * each[last] / one['seconds']:.2f}")
    if full is not None:
        print("  per-layer extractions, whole forward each: " + ", ".join(f"{k} {v:.1f} s" for k, v in full["each"].items()))
        print(f"  per-layer (whole forward) total {full['seconds']:.1f} s: ratio {full['seconds'] / one['seconds']:.2f} "
              f"(target >= {0.8 * L:.1f})")
    if cli is not None:
        one_cli = cli.pop("--layers")
        total = sum(cli.values())
        print("  one `critmass extract --layer NAME` process per layer: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in cli.items()))
        print(f"  CLI per-layer total {total:.1f} s vs one `critmass extract --layers ...` process {one_cli:.1f} s: "
              f"ratio {total / one_cli:.2f} (target >= {0.8 * L:.1f})")


def _time_cli(args, layers, cache) -> dict[str, float]:
    """Wall time of one ``critmass extract --layer NAME`` process per layer, each into the same fresh cache,
    and (key ``"--layers"``) of one ``critmass extract --layers A,B,...`` process into another."""
    import shutil

    exe = shutil.which("critmass", path=os.path.dirname(sys.executable)) or "critmass"
    out = {}
    for name in [*layers, None]:
        which = ["--layer", name] if name else ["--layers", ",".join(layers)]
        cmd = [exe, "extract", args.model, args.dataset, *which, "--split", "train,test", "--max-samples",
               f"train={args.train},test={args.test}", "--image-size", str(args.image_size), "--batch-size",
               str(args.batch_size), "--device", args.device, "--cache", cache + ("" if name else "-one-pass"),
               "--quiet"]
        if args.num_workers is not None:
            cmd += ["--num-workers", str(args.num_workers)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out[name or "--layers"] = time.perf_counter() - t
        if proc.returncode:
            sys.exit(f"critmass extract {' '.join(which)} failed:\n{proc.stderr[-3000:]}")
    return out


if __name__ == "__main__":
    main()
