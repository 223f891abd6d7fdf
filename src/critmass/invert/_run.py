"""Partial inversion of a batch of targets: plan the masks, optimise, measure, write.

For every (selector, fraction, seed) one batch inversion matches the targets' representations on the mask only;
per seed one more matches the full layer (the reference). Every inversion starts from the same seeded noise
images (the floor). Each is measured under each mask, so the table has, per (target, selector, fraction, seed),
three rows: ``inversion`` = ``partial``, ``full`` (the reference) and ``noise`` (the floor).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._validation import check_fraction
from ..exceptions import ConfigError, DataError
from ..models import Backbone
from ._forward import ImageForward
from ._loss import relative_error
from ._masks import check_selector, select_neurons
from ._optimize import DEFAULT_STEP_SIZES, check_optimizer, optimise

__all__ = ["COLUMNS", "METRICS", "Inversion", "load_images", "invert", "write_inversion", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
METRICS = ("subset_error_start", "subset_error_end", "rest_error_start", "rest_error_end", "cosine_start",
           "cosine_end")
COLUMNS = ("model", "weights", "layer", "pooling", "target", "target_name", "selector", "fraction", "k", "n_neurons",
           "seed", "inversion", "regularised", "optimizer", "step_size", "steps", "image_size", "fake_relu",
           "loss_start", "loss_end", "best_step", *METRICS, "seconds_per_step")


@dataclass
class Inversion:
    """What :func:`invert` returns: the tidy ``table`` (columns :data:`COLUMNS`), the targets and every inversion
    as float32 ``(n_targets, 3, H, W)`` images in [0, 1]: ``partial[(selector, fraction, seed)]``, ``full[seed]``
    (the reference) and ``noise[seed]`` (the start)."""

    table: object
    targets: np.ndarray
    names: list
    partial: dict = field(default_factory=dict)
    full: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)


def load_images(images, *, index=None, split: str = "train", root=None, download: bool = False
                ) -> tuple[list, list[str]]:
    """Raw PIL images and their names from an image file, a directory of images, or a critmass dataset spec.

    ``index`` picks samples (default: all files of a path; the first 4 samples of a dataset); ``root`` and
    ``download`` are the dataset's (``torchvision:`` specs read their files from ``root``).
    """
    from PIL import Image, UnidentifiedImageError

    spec = str(images)
    path = Path(spec).expanduser()
    is_path = path.exists() or ":" not in spec and (path.suffix.lower() in IMAGE_SUFFIXES or "/" in spec)
    if is_path:
        from ..data import ALIASES

        if not path.exists() and spec not in ALIASES:
            raise DataError(f"cannot read images from {spec!r}: no such file or directory; pass an image file, a "
                            "directory of images or a dataset spec such as fashion-mnist")
    if is_path and path.exists():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {spec!r}")
        if index is not None:
            files = [files[_check_index(i, len(files), spec)] for i in index]
        out = []
        for p in files:
            try:
                with Image.open(p) as im:
                    out.append(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"cannot read image {str(p)!r} ({type(exc).__name__}); "
                                "pass a PNG or JPEG file") from None
        return out, [p.name for p in files]
    from ..data import load_dataset

    ds = load_dataset(spec, split, root=root, download=download)
    if ds.modality != "image":
        raise DataError(f"dataset {spec!r} holds {ds.modality}, not images; pass an image dataset or files")
    index = list(range(min(4, len(ds)))) if index is None else [_check_index(i, len(ds), spec) for i in index]
    return [ds[i][0] for i in index], [f"{spec}[{i}]" for i in index]


def _check_index(i, n: int, where: str) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= int(i) < n:
        raise DataError(f"index {i!r} is outside the {n} images of {where!r}; pass indices in [0, {n - 1}]")
    return int(i)


def _device(device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA device; pass --device cpu")
    return dev


def _measure(r: torch.Tensor, rt: torch.Tensor, mask: torch.Tensor) -> dict:
    sub = relative_error(r, rt, mask).cpu().numpy()
    rest = relative_error(r, rt, 1 - mask).cpu().numpy()
    if bool(mask.all()):
        rest = np.full_like(rest, np.nan)  # no unselected neurons
    cos = torch.nn.functional.cosine_similarity(r, rt, dim=1, eps=1e-10).cpu().numpy()
    return {"subset_error": sub, "rest_error": rest, "cosine": cos}


def invert(backbone: Backbone, images: list, *, layer: str = "penultimate", pooling: str = "auto",
           selectors=("random",), fractions=(0.2,), seeds=(0,), regularised: bool = False, steps: int = 5000,
           optimizer: str = "normgrad", step_size: float | None = None, fake_relu: bool = True, device="cpu",
           names=None, progress: bool = True) -> Inversion:
    """Partial inversion of ``images`` (PIL images) through ``backbone``'s ``layer``.

    Parameters
    ----------
    backbone : an image :class:`critmass.models.Backbone` (its ``image_size`` fixes the size of the inversions).
    selectors : critmass column selectors (``random``, ``norm-min``, ``norm-max``, ``variance``, ...).
    fractions : fractions of the layer's neurons in (0, 1]; ``k = max(1, round(f D))``.
    seeds : seeds of the noise images and of the random masks.
    regularised : subtract ``alpha`` times the rest-of-layer error (alpha fixed at the first step).
    steps, optimizer, step_size : see :func:`critmass.invert.optimise` (the paper: 5000 ``normgrad`` steps of 1).

    Returns
    -------
    Inversion
    """
    import pandas as pd

    fwd = ImageForward(backbone, layer, pooling, fake_relu=fake_relu)
    selectors = [check_selector(s) for s in selectors]
    fractions = [check_fraction(f) for f in fractions]
    check_optimizer(optimizer)
    if not images:
        raise DataError("no images to invert; pass at least one")
    seeds = [int(s) for s in seeds]
    device = _device(device)
    module = backbone.module
    training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    backbone.to(device)
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        targets = fwd.to_unit(images).to(device)
        fwd.locate(targets)
        with torch.no_grad():
            rt = fwd(targets)
        D = rt.shape[1]
        size = tuple(targets.shape[-2:])
        names = list(names) if names is not None else [str(i) for i in range(len(images))]
        base = {"model": backbone.spec, "weights": backbone.weights_id, "layer": fwd.layer, "pooling": pooling,
                "regularised": bool(regularised), "optimizer": optimizer,
                "step_size": float(DEFAULT_STEP_SIZES[optimizer] if step_size is None else step_size),
                "steps": int(steps),
                "image_size": size[0] if size[0] == size[1] else f"{size[0]}x{size[1]}",
                "fake_relu": fwd.fake_relu_at or "", "n_neurons": int(D)}
        result = Inversion(table=None, targets=targets.cpu().numpy(), names=names)
        rows = []
        ones = torch.ones(D, device=device)
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            noise = torch.rand(targets.shape, generator=g).to(device)  # uniform [0, 1) pixels
            with torch.no_grad():
                r_noise = fwd(noise)
            t0 = time.perf_counter()
            full = optimise(fwd, noise, rt, ones, steps=steps, optimizer=optimizer, step_size=step_size,
                            progress=progress, desc=f"full layer, seed {seed}")
            full_sps = (time.perf_counter() - t0) / max(1, steps)
            with torch.no_grad():
                r_full = fwd(full.images)
            result.full[seed] = full.images.cpu().numpy()
            result.noise[seed] = noise.cpu().numpy()
            for sel in selectors:
                for f in fractions:
                    idx = select_neurons(sel, f, targets=rt.cpu().numpy(), seeds=r_noise.cpu().numpy(),
                                         random_state=seed)
                    mask = torch.zeros(D, device=device)
                    mask[torch.as_tensor(idx, device=device)] = 1
                    if len(idx) == D:  # the whole layer: the reference run is this very optimisation
                        part, sps = full, full_sps
                    else:
                        t0 = time.perf_counter()
                        part = optimise(fwd, noise, rt, mask, regularised=regularised, steps=steps,
                                        optimizer=optimizer, step_size=step_size, progress=progress,
                                        desc=f"{sel} {f:g}, seed {seed}")
                        sps = (time.perf_counter() - t0) / max(1, steps)
                    with torch.no_grad():
                        r_part = fwd(part.images)
                    result.partial[(sel, f, seed)] = part.images.cpu().numpy()
                    start = _measure(r_noise, rt, mask)
                    runs = {"partial": (_measure(r_part, rt, mask), part, sps),
                            "full": (_measure(r_full, rt, mask), full, full_sps),
                            "noise": (start, None, float("nan"))}
                    for kind, (end, opt, per_step) in runs.items():
                        for i in range(len(images)):
                            row = {**base, "target": i, "target_name": names[i], "selector": sel, "fraction": f,
                                   "k": len(idx), "seed": seed, "inversion": kind,
                                   "loss_start": float(opt.loss_start[i]) if opt else float("nan"),
                                   "loss_end": float(opt.loss[i]) if opt else float("nan"),
                                   "best_step": int(opt.step[i]) if opt else 0, "seconds_per_step": per_step}
                            for m in ("subset_error", "rest_error", "cosine"):
                                row[f"{m}_start"] = float(start[m][i])
                                row[f"{m}_end"] = float(end[m][i])
                            rows.append(row)
        result.table = pd.DataFrame(rows, columns=list(COLUMNS))
        return result
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(training)


def write_inversion(result: Inversion, out, *, plots: bool = True) -> list[Path]:
    """Write ``invert.parquet``, ``invert_images.npz`` and the figures into ``out``, each atomically."""
    from .._io import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_path(out / "invert.parquet", suffix=".parquet") as tmp:
        result.table.to_parquet(tmp, index=False)
    written.append(out / "invert.parquet")
    arrays = {"targets": result.targets}
    arrays.update({f"partial/{s}/{f:g}/{seed}": v for (s, f, seed), v in result.partial.items()})
    arrays.update({f"full/{seed}": v for seed, v in result.full.items()})
    arrays.update({f"noise/{seed}": v for seed, v in result.noise.items()})
    with atomic_path(out / "invert_images.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    written.append(out / "invert_images.npz")
    if plots:
        from ._plots import plot_grid, plot_rest_error, save_png

        selectors = list(dict.fromkeys(s for s, _, _ in result.partial))
        for sel in selectors:
            path = out / (f"invert_grid_{sel}.png" if len(selectors) > 1 else "invert_grid.png")
            save_png(plot_grid(result, selector=sel), path)
            written.append(path)
        path = out / "invert_rest_error.png"
        save_png(plot_rest_error(result.table), path)
        written.append(path)
    return written
