"""Extract a layer's features for a dataset split into the on-disk cache, once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from .._env import versions
from .._io import atomic_path, atomic_write_json
from .._validation import check_positive_int
from ..exceptions import ConfigError, CritmassError, FeatureError
from ._store import (FORMAT_VERSION, MANIFEST, SAMPLES, FeatureSet, SplitWriter, load_features, read_manifest, read_split,
                     split_lock)

__all__ = ["extract", "default_cache_dir", "entry_key"]

log = logging.getLogger(__name__)
DTYPES = ("float32", "float16")
AMP = {None: None, "none": None, "bf16": "bfloat16", "fp16": "float16"}  # torch dtypes, looked up when used


def default_cache_dir() -> Path:
    """``$CRITMASS_CACHE`` or ``~/.cache/critmass/features``."""
    return Path(os.environ.get("CRITMASS_CACHE", Path.home() / ".cache" / "critmass" / "features")).expanduser()


def _slug(text: str, n: int = 40) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text).rsplit("/", 1)[-1])
    return keep.strip("-")[:n] or "x"


def entry_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class _Preprocessed:
    """Applies the backbone's per-sample preprocessing inside DataLoader workers."""

    def __init__(self, ds, fn, start: int = 0):
        self.ds, self.fn, self.start = ds, fn, start

    def __len__(self):
        return len(self.ds) - self.start

    def __getitem__(self, i):
        x, y = self.ds[i + self.start]
        return (self.fn(x) if self.fn is not None else x), y


def _collate(backbone):
    import torch

    def collate(items):
        xs, ys = zip(*items)
        return backbone.collate(list(xs)), torch.as_tensor(ys, dtype=torch.int64)

    return collate


def _to_device(batch, device, channels_last: bool):
    import torch

    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.ndim == 4 else batch
    if isinstance(batch, dict):
        return {k: _to_device(v, device, False) for k, v in batch.items()}
    return batch


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a torch device; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available; use --device cpu")
    return dev


def extract(
    model,
    dataset: str,
    *,
    layer: str = "penultimate",
    split="train",
    cache=None,
    data_root=None,
    download: bool = False,
    weights=None,
    pretrained: bool = True,
    pooling: str = "auto",
    image_size: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    carve_test: bool = False,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    amp: str | None = None,
    channels_last: bool = False,
    progress: bool = True,
    verify: bool = True,
) -> FeatureSet:
    """Extract ``layer`` features of ``model`` on ``dataset`` splits into the cache and return them.

    A split already in the cache with the same identity (model spec, weights, layer, pooling, dataset,
    split, sub-sampling, preprocessing, dtype, amp, library versions) is read back without a forward
    pass; an interrupted extraction resumes from its last complete batch.

    Parameters
    ----------
    model : a spec (``timm:resnet50``, ``efficientnet-lite0``, ...) or a :class:`critmass.models.Backbone`.
    dataset : a dataset spec (``torchvision:CIFAR10``, ``fashion-mnist``, ...).
    split : one split name or a list (``["train", "test"]``).
    cache : cache directory (default :func:`default_cache_dir`).
    max_samples : a seeded stratified subset of this many samples per split (an int, or ``{split: n}``).
    val_fraction, seed : the validation split carved from train when ``val`` is requested and the dataset has
        none; ``train`` then holds the rest, so no sample is in both.
    carve_test : hold out a fixed 20% of train as ``test`` for datasets without a test split.
    dtype : ``float32`` (default) or ``float16`` on disk.
    amp : ``bf16`` / ``fp16`` autocast (GPU); part of the cache key because it changes the numbers.

    Returns
    -------
    FeatureSet whose ``meta['source']`` is the cache entry directory.
    """
    from . import _requests

    splits = [split] if isinstance(split, str) else list(split)
    batch_size = check_positive_int(batch_size, name="batch_size")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if amp not in AMP:
        raise ConfigError(f"amp must be bf16, fp16 or none; got {amp!r}")
    per_split_max = max_samples if isinstance(max_samples, dict) else {s: max_samples for s in splits}
    for n in per_split_max.values():
        if n is not None:
            check_positive_int(n, name="max_samples")
    cache = Path(cache).expanduser() if cache is not None else default_cache_dir()
    from ..data._fingerprint import dataset_fingerprint

    content = dataset_fingerprint(dataset, data_root)  # once: the request index and the cache key both use it
    # A request served before is answered from a small index, before torch and the model are imported.
    request = _requests.request_key(
        model, dataset, weights=weights, pretrained=pretrained, data_root=data_root, dataset_content=content,
        layer=layer, split=splits,
        pooling=pooling, image_size=image_size, max_samples=max_samples, seed=seed, val_fraction=val_fraction,
        carve_test=carve_test, dtype=dtype, amp=amp)
    if request is not None and (hit := _requests.lookup(cache, request, splits, verify=verify)) is not None:
        return hit

    from ..data import load_splits
    from ..models import Backbone, LayerReader, load_model

    dev = _resolve_device(device)

    backbone = model if isinstance(model, Backbone) else load_model(
        model, pretrained=pretrained, weights=weights, image_size=image_size)
    reader = LayerReader(backbone, layer, pooling)  # validates the layer before any data is touched
    # A carved val is held out of train (never a training row); such an entry is not the whole-train one.
    datasets = load_splits(dataset, splits, root=data_root, download=download, val_fraction=val_fraction, seed=seed,
                           max_samples=per_split_max, carve_test=carve_test)
    val_held_out = any(ds.info.get("val_held_out") or ds.info.get("val_carved_from") for ds in datasets.values())
    libs = versions(("torch", "torchvision", "timm", "transformers", "sentence-transformers"))
    identity = {
        "format_version": FORMAT_VERSION, "model": backbone.spec, "weights": backbone.weights_id, "layer": layer,
        "pooling": pooling, "preprocessing": backbone.preprocessing, "dataset": dataset,
        "data_root": str(Path(data_root).expanduser().resolve()) if data_root else None,
        "val_held_out": val_held_out or None, "carve_test": carve_test or None,
        "max_samples": max_samples, "seed": seed if any(per_split_max.values()) else None, "dtype": dtype, "amp": amp, "versions": libs,
    }
    if content is not None:  # file datasets only, so the keys of the others stay as they were
        identity["dataset_content"] = content
    key = entry_key(identity)
    entry = cache / f"{_slug(backbone.spec)}--{_slug(dataset)}--{_slug(layer)}-{key[:12]}"
    atomic_write_json(entry / "entry.json", {**identity, "key": key})

    for s, ds in datasets.items():
        split_identity = {**identity, "split": s, "dataset_info": ds.info, "n": len(ds)}
        if s == "val":
            split_identity["val_fraction"] = val_fraction
        split_key = entry_key(split_identity)
        split_dir = entry / s
        if _is_hit(split_dir, split_key, verify):
            continue
        # Another process may be writing this split: wait for it, then look again before writing.
        with split_lock(entry / f"{s}.lock"):
            if _is_hit(split_dir, split_key, verify):
                continue
            _extract_split(backbone, reader, ds, split_dir, split_key, split_identity, batch_size=batch_size,
                           num_workers=num_workers, device=dev, dtype=dtype, amp=AMP[amp],
                           channels_last=channels_last, progress=progress)
    fs = load_features(entry, splits=splits, verify=False)
    if request is not None:
        _requests.record(cache, request, fs)
    return fs


def _is_hit(split_dir: Path, split_key: str, verify: bool) -> bool:
    manifest = read_manifest(split_dir)
    if manifest is None or manifest.get("key") != split_key:
        return False
    read_split(split_dir, verify=verify)  # a corrupt entry is reported, not silently reused
    log.info("cache hit: %s", split_dir)
    return True


def _extract_split(backbone, reader, ds, split_dir: Path, key: str, identity: dict, *, batch_size, num_workers,
                   device, dtype, amp, channels_last, progress) -> None:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    writer = SplitWriter(split_dir, n_samples=len(ds), key=key, dtype=dtype)
    (split_dir / MANIFEST).unlink(missing_ok=True)  # stale manifest of other inputs: this split is being rewritten
    start = writer.resume()
    if start:
        log.info("resuming %s at row %d of %d", split_dir, start, len(ds))
    if num_workers is None:
        # Images are decoded and resized on the CPU: on a GPU that is the bottleneck (ResNet50 bf16 on an H200,
        # 224 px JPEGs: 1,147 images/s with 4 workers, 1,482 with 8, 1,573 with 15; the bare forward 7,700).
        cap = 8 if device.type == "cuda" else 4
        num_workers = 0 if backbone.modality == "text" else min(cap, max(0, (os.cpu_count() or 1) - 1))
    loader = DataLoader(_Preprocessed(ds, backbone.preprocess, start), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate(backbone), pin_memory=device.type == "cuda",
                        persistent_workers=False)
    module = backbone.module
    was_training = module.training
    module.eval().to(device)
    if channels_last and device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=getattr(torch, amp)) if amp is not None else nullcontext()
    bar = tqdm(total=len(ds), initial=start, unit="img" if backbone.modality == "image" else "text", unit_scale=True,
               desc=f"extract {identity['split']}", disable=not progress, dynamic_ncols=True, leave=True)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(), autocast:
            for xb, yb in loader:
                feats = reader(_to_device(xb, device, channels_last)).float().cpu().numpy()
                if not np.isfinite(feats).all():
                    raise FeatureError(
                        f"layer {reader.layer!r} of {backbone.spec} produced NaN/inf features at rows "
                        f"{writer.rows_done}..{writer.rows_done + len(feats)}; check the weights, or drop --amp"
                    )
                writer.write(feats, yb.numpy())
                bar.update(len(feats))
    except CritmassError:
        writer.discard()  # a user error is not resumable: leave nothing behind
        raise
    finally:
        bar.close()
        module.train(was_training)
    elapsed = time.perf_counter() - t0
    # Which samples of which source split these rows are: lets probes prove train and val are disjoint.
    with atomic_path(split_dir / SAMPLES, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(ds.indices, dtype=np.int64))
    writer.commit({**identity, "sample_pool": ds.info.get("pool", identity["split"]), "classes": list(ds.classes),
                   "elapsed_s": round(elapsed, 3), "images_per_s": round((len(ds) - start) / max(elapsed, 1e-9), 2)})
