"""Extract a layer's features for a dataset split into the on-disk cache, once."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._alloc import heap_reuse
from .._env import versions
from .._io import atomic_path, atomic_write_json
from .._validation import check_positive_int
from ..exceptions import ConfigError, CritmassError, FeatureError
from ._store import (FORMAT_VERSION, MANIFEST, SAMPLES, FeatureSet, SplitWriter, default_cache_dir, entry_name,
                     load_features, read_manifest, read_split, split_lock)

__all__ = ["extract", "default_cache_dir", "entry_key", "MultiLayerReader", "width_units"]

log = logging.getLogger(__name__)
DTYPES = ("float32", "float16")
AMP = {None: None, "none": None, "bf16": "bfloat16", "fp16": "float16"}  # torch dtypes, looked up when used
#: A layer wider than this without --max-width gets a warning (its cache takes n x width x 4 bytes).
WIDE_LAYER = 16384
UNITS = "units.npy"  # in a capped entry: the kept columns of the pooled layer output (sorted)
#: Rows are made durable (memmap flush + progress.json, both fsynced) after the first batch, then at most this
#: often or when this many bytes are buffered: a flush is an fsync, and one per batch and layer can cost more
#: than the forward pass on a busy disk. The first batch is flushed at once so progress shows (and survives a
#: SIGKILL) early.
FLUSH_S, FLUSH_BYTES = 2.0, 64 << 20


class _StopForward(Exception):
    """Raised by the last hook of a :class:`MultiLayerReader` pass once every hooked layer has run."""


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
    max_width: int | None = None,
    width_seed: int = 0,
    max_seq_length: int | None = None,
    preprocessing: dict | None = None,
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
    max_width, width_seed : a pooled output wider than ``max_width`` (e.g. a flattened conv map) keeps
        ``max_width`` random units, chosen with ``width_seed`` (:func:`width_units`), as the paper sampled random
        units of flattened maps; recorded in the key and the manifest (``width_cap``) and the kept columns in
        ``units.npy``. A layer not wider than ``max_width`` has the key of an uncapped extraction.
    max_seq_length : text models: truncate inputs to this many tokens (default the model's own).
    preprocessing : ``onnx:`` models: input options over the file's sidecar (``mean``, ``std``, ``scale``,
        ``bgr``, ``channels_last``, ``size``); see :func:`critmass.models.load_model`. Both are part of the key.

    Returns
    -------
    FeatureSet whose ``meta['source']`` is the cache entry directory.
    """
    from . import _requests

    splits = [split] if isinstance(split, str) else list(split)
    per_split_max = _check_options(splits, batch_size=batch_size, dtype=dtype, amp=amp, max_samples=max_samples,
                                   max_width=max_width, width_seed=width_seed)
    model_options = check_model_options(model, max_seq_length=max_seq_length, preprocessing=preprocessing)
    cache = Path(cache).expanduser() if cache is not None else default_cache_dir()
    from ..data import dataset_fingerprint

    content = dataset_fingerprint(dataset, data_root)  # once: the request index and the cache key both use it
    # A request served before is answered from a small index, before torch and the model are imported.
    request = _requests.request_key(
        model, dataset, weights=weights, pretrained=pretrained, data_root=data_root, dataset_content=content,
        **request_options(layer, splits, pooling=pooling, image_size=image_size, max_samples=max_samples, seed=seed,
                          val_fraction=val_fraction, carve_test=carve_test, dtype=dtype, amp=amp,
                          max_width=max_width, width_seed=width_seed, **model_options))
    if request is not None and (hit := _requests.lookup(cache, request, splits, verify=verify)) is not None:
        return hit

    from ..models import Backbone, LayerReader, load_model

    _resolve_device(device)  # a bad device fails before the model is loaded
    backbone = model if isinstance(model, Backbone) else load_model(
        model, pretrained=pretrained, weights=weights, image_size=image_size, **model_options)
    reader = LayerReader(backbone, layer, pooling)  # validates the layer before any data is touched

    def make_read(_layers, units):
        cols = units.get(layer)

        def read(batch):
            out = reader(batch)
            return {layer: out if cols is None else out[:, _index(cols, out.device)]}

        return read

    fs = extract_entries(
        backbone, [layer], make_read, dataset, splits=splits, cache=cache, data_root=data_root, download=download,
        pooling=pooling, max_samples=max_samples, per_split_max=per_split_max, seed=seed, val_fraction=val_fraction,
        carve_test=carve_test, content=content, batch_size=batch_size, num_workers=num_workers, device=device,
        dtype=dtype, amp=amp, channels_last=channels_last, progress=progress, verify=verify, max_width=max_width,
        width_seed=width_seed)[layer]
    if request is not None:
        _requests.record(cache, request, fs)
    return fs


def request_options(layer: str, splits, *, max_width, width_seed, **options) -> dict:
    """The options of one layer's request-index key (the width cap only when one was asked for)."""
    out = {"layer": layer, "split": list(splits), **options}
    if max_width is not None:
        out.update(max_width=int(max_width), width_seed=int(width_seed))
    return out


def check_model_options(model, *, max_seq_length, preprocessing) -> dict:
    """The model-loading options that were given (``max_seq_length``, ``preprocessing``), checked; they go to
    :func:`critmass.models.load_model` and, only when given, into the request-index key."""
    out = {}
    if max_seq_length is not None:
        check_positive_int(max_seq_length, name="max_seq_length")
        out["max_seq_length"] = int(max_seq_length)
    if preprocessing:
        if not isinstance(preprocessing, dict):  # its keys are checked where the onnx model loads: importing
            # that check (critmass.models, torch) here would slow down the request index's torch-free hits
            raise ConfigError(f"preprocessing must be a mapping of onnx input options; got {preprocessing!r}")
        out["preprocessing"] = dict(preprocessing)
    if out and not isinstance(model, str):
        raise ConfigError(f"{' and '.join(out)} apply when the model is a spec; a loaded Backbone has its own "
                          "(pass them to critmass.models.load_model)")
    return out


def _check_options(splits, *, batch_size, dtype, amp, max_samples, max_width, width_seed) -> dict:
    check_positive_int(batch_size, name="batch_size")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if amp not in AMP:
        raise ConfigError(f"amp must be bf16, fp16 or none; got {amp!r}")
    if max_width is not None:
        check_positive_int(max_width, name="max_width")
    if isinstance(width_seed, bool) or not isinstance(width_seed, (int, np.integer)) or width_seed < 0:
        raise ConfigError(f"width_seed must be a non-negative integer; got {width_seed!r}")
    per_split_max = max_samples if isinstance(max_samples, dict) else {s: max_samples for s in splits}
    for n in per_split_max.values():
        if n is not None:
            check_positive_int(n, name="max_samples")
    return per_split_max


class MultiLayerReader:
    """Callable ``batch -> {layer: (B, D) tensor}``: one forward pass with a hook on every layer.

    Each hook pools its layer's output at once (and keeps only the ``units`` columns of a capped layer), so
    a pass holds ``B x D`` per layer, never the whole maps of every layer; a hook keeps the first output of
    its module, as :class:`critmass.models.LayerReader` does. Without ``penultimate`` the forward stops once
    the last hooked layer has run; with it the pooled pre-logits pass runs and the hooks ride along (a
    layer that pass does not reach, e.g. the classifier, is read by a second, early-stopped forward).
    Values equal a :class:`~critmass.models.LayerReader` per layer: the same modules and the same pooling.
    """

    def __init__(self, backbone, layers, pooling: str = "auto", *, units: dict | None = None):
        from ..exceptions import PoolingError
        from ..models import POOLINGS

        self.backbone = backbone
        self.layers = [backbone.check_layer(name) for name in layers]
        if pooling not in POOLINGS:
            raise PoolingError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.units = dict(units or {})

    def _pool(self, name, output):
        from ..models import pool

        bb = self.backbone
        where = f"{bb.spec} penultimate" if name == "penultimate" else f"layer {name!r}"
        raw = output[0] if isinstance(output, (tuple, list)) and output else output
        out = pool(output, self.pooling, token_pooling=bb.token_pooling, where=where)
        cols = self.units.get(name)
        if cols is not None:
            return out[:, _index(cols, out.device)]  # a copy of the kept columns only
        if hasattr(raw, "untyped_storage") and out.untyped_storage().data_ptr() == raw.untyped_storage().data_ptr():
            out = out.clone()  # a view (flatten, cls, none): later in-place ops of the forward must not reach it
        return out

    def _run(self, batch, names, fn, stop: bool) -> dict:
        modules = dict(self.backbone.module.named_modules())
        got: dict = {}
        handles = []

        def make_hook(name):
            def hook(_module, _inputs, output):
                if name in got:
                    return
                got[name] = self._pool(name, output)
                if stop and len(got) == len(names):
                    raise _StopForward

            return hook

        try:
            for name in names:
                handles.append(modules[name].register_forward_hook(make_hook(name)))
            try:
                result = fn(batch)
            except _StopForward:
                result = None
        finally:
            for h in handles:
                h.remove()
        return got, result

    def __call__(self, batch) -> dict:
        from ..exceptions import PoolingError

        bb = self.backbone
        hooked = [n for n in self.layers if n != "penultimate"]
        out: dict = {}
        if "penultimate" in self.layers:
            got, pen = self._run(batch, hooked, bb.penultimate, stop=False)
            out.update(got)
            out["penultimate"] = self._pool("penultimate", pen)
        rest = [n for n in hooked if n not in out]
        if rest:
            got, _ = self._run(batch, rest, bb.run, stop=True)
            out.update(got)
        missing = [n for n in hooked if n not in out]
        if missing:
            raise PoolingError(f"layer {missing[0]!r} of {bb.spec} is not run by the forward pass; choose another layer")
        return {n: out[n] for n in self.layers}


def width_units(width: int, max_width: int, seed: int) -> np.ndarray:
    """The ``max_width`` units (sorted column indices) a capped layer of ``width`` units keeps, for ``seed``.

    ``numpy.random.default_rng(seed).permutation(width)[:max_width]``, sorted: a uniform random subset, the
    same for every split and every run with that seed.
    """
    return np.sort(np.random.default_rng(int(seed)).permutation(int(width))[: int(max_width)]).astype(np.int64)


def _index(cols: np.ndarray, device):
    import torch

    return torch.as_tensor(cols, dtype=torch.long, device=device)


@dataclass
class _Target:
    """One (layer, split) to write in a pass."""

    layer: str
    split_dir: Path
    key: str
    identity: dict


def _probe_widths(backbone, make_read, layers, ds, device, channels_last: bool, amp) -> dict[str, int]:
    """Pooled output width of every layer, from one forward pass of the first sample (no cap)."""
    import torch

    module = backbone.module
    was_training = module.training
    module.eval().to(device)
    x, _ = ds[0]
    batch = _to_device(backbone.collate([backbone.preprocess(x) if backbone.preprocess is not None else x]), device,
                       channels_last)
    autocast = torch.autocast(device.type, dtype=getattr(torch, amp)) if amp is not None else nullcontext()
    try:
        with torch.inference_mode(), autocast:
            out = make_read(list(layers), {})(batch)
    finally:
        module.train(was_training)
    return {name: int(t.shape[1]) for name, t in out.items()}


def extract_entries(backbone, layers, make_read, dataset, *, splits, cache: Path, data_root, download, pooling,
                    max_samples, per_split_max, seed, val_fraction, carve_test, content, batch_size, num_workers,
                    device, dtype, amp, channels_last, progress, verify, max_width=None, width_seed=0
                    ) -> dict[str, FeatureSet]:
    """Write (or find) one cache entry per layer; the layers missing from a split share one pass over it.

    ``make_read(layers, units)`` returns ``batch -> {layer: (B, D) tensor}`` for those layers, keeping the
    columns ``units[layer]`` of a capped layer. Entry keys, directories, manifests and locks are those of a
    single-layer :func:`extract`, so either serves the other's entries.
    """
    from ..data import load_splits

    dev = _resolve_device(device)
    amp_dtype = AMP[amp]
    # A carved val is held out of train (never a training row); such an entry is not the whole-train one.
    datasets = load_splits(dataset, splits, root=data_root, download=download, val_fraction=val_fraction, seed=seed,
                           max_samples=per_split_max, carve_test=carve_test)
    val_held_out = any(ds.info.get("val_held_out") or ds.info.get("val_carved_from") for ds in datasets.values())
    libs = versions(("torch", "torchvision", "timm", "transformers", "sentence-transformers"))
    units: dict[str, np.ndarray] = {}
    caps: dict[str, dict] = {}
    if max_width is not None:
        widths = _probe_widths(backbone, make_read, layers, next(iter(datasets.values())), dev, channels_last,
                               amp_dtype)
        for name in layers:
            if widths[name] > max_width:
                log.warning("layer %r gives %d features (pooling %r); keeping %d random units (width_seed %d)",
                            name, widths[name], pooling, max_width, width_seed)
                units[name] = width_units(widths[name], max_width, width_seed)
                caps[name] = {"max_width": int(max_width), "width_seed": int(width_seed), "width": widths[name]}
    entries: dict[str, Path] = {}
    identities: dict[str, dict] = {}
    for name in layers:
        identity = {
            "format_version": FORMAT_VERSION, "model": backbone.spec, "weights": backbone.weights_id, "layer": name,
            "pooling": pooling, "preprocessing": backbone.preprocessing, "dataset": dataset,
            "data_root": str(Path(data_root).expanduser().resolve()) if data_root else None,
            "val_held_out": val_held_out or None, "carve_test": carve_test or None,
            "max_samples": max_samples, "seed": seed if any(per_split_max.values()) else None, "dtype": dtype,
            "amp": amp, "versions": libs,
        }
        if content is not None:  # file datasets only, so the keys of the others stay as they were
            identity["dataset_content"] = content
        if name in caps:  # only a layer actually capped: an uncapped one keeps the plain key
            identity["width_cap"] = caps[name]
        key = entry_key(identity)
        entry = cache / entry_name(backbone.spec, dataset, name, key)
        atomic_write_json(entry / "entry.json", {**identity, "key": key})
        if name in units:
            with atomic_path(entry / UNITS, suffix=".npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, units[name])
        entries[name], identities[name] = entry, identity

    for s, ds in datasets.items():
        targets = []
        for name in layers:
            split_identity = {**identities[name], "split": s, "dataset_info": ds.info, "n": len(ds)}
            if s == "val":
                split_identity["val_fraction"] = val_fraction
            split_key = entry_key(split_identity)
            split_dir = entries[name] / s
            if not _is_hit(split_dir, split_key, verify):
                targets.append(_Target(name, split_dir, split_key, split_identity))
        if not targets:
            continue
        # Another process may be writing these splits: wait for it, then look again before writing. Locks are
        # taken in path order, so two multi-layer passes never wait for each other in a cycle.
        with ExitStack() as stack:
            for t in sorted(targets, key=lambda t: str(t.split_dir)):
                stack.enter_context(split_lock(t.split_dir.parent / f"{s}.lock"))
            targets = [t for t in targets if not _is_hit(t.split_dir, t.key, verify)]
            if targets:
                _extract_split(backbone, make_read, ds, targets, {t.layer: units[t.layer] for t in targets
                                                                  if t.layer in units},
                               batch_size=batch_size, num_workers=num_workers, device=dev, dtype=dtype, amp=amp_dtype,
                               channels_last=channels_last, progress=progress)
    return {name: load_features(entries[name], splits=splits, verify=False) for name in layers}


def _is_hit(split_dir: Path, split_key: str, verify: bool) -> bool:
    manifest = read_manifest(split_dir)
    if manifest is None or manifest.get("key") != split_key:
        return False
    read_split(split_dir, verify=verify)  # a corrupt entry is reported, not silently reused
    log.info("cache hit: %s", split_dir)
    return True


def _extract_split(backbone, make_read, ds, targets: list[_Target], units: dict, *, batch_size, num_workers,
                   device, dtype, amp, channels_last, progress) -> None:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    writers = {}
    for t in targets:
        writers[t.layer] = SplitWriter(t.split_dir, n_samples=len(ds), key=t.key, dtype=dtype)
        (t.split_dir / MANIFEST).unlink(missing_ok=True)  # stale manifest of other inputs: being rewritten
    done = {name: w.resume() for name, w in writers.items()}
    start = min(done.values())  # layers further along skip the rows they already hold
    if start or any(done.values()):
        log.info("resuming %s at row %d of %d", targets[0].split_dir if len(targets) == 1 else
                 f"{len(targets)} layers of split {targets[0].identity['split']}", start, len(ds))
    if num_workers is None:
        # Images are decoded and resized on the CPU: on a GPU that is the bottleneck, so more workers help up to
        # about 8, beyond which the gain is small (see the benchmarks page of the docs).
        cap = 8 if device.type == "cuda" else 4
        num_workers = 0 if backbone.modality == "text" else min(cap, max(0, (os.cpu_count() or 1) - 1))
    loader = DataLoader(_Preprocessed(ds, backbone.preprocess, start), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate(backbone), pin_memory=device.type == "cuda",
                        persistent_workers=False)
    read = make_read([t.layer for t in targets], units)
    module = backbone.module
    was_training = module.training
    module.eval().to(device)
    if channels_last and device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=getattr(torch, amp)) if amp is not None else nullcontext()
    bar = tqdm(total=len(ds), initial=start, unit="img" if backbone.modality == "image" else "text", unit_scale=True,
               desc=f"extract {targets[0].identity['split']}", disable=not progress, dynamic_ncols=True, leave=True)
    row = start
    warned = set()
    buffers: dict[str, list] = {name: [] for name in writers}
    # -inf: the first batch is made durable at once. Then at most every FLUSH_S, and never sooner than 9x the
    # last flush took: each layer's flush is an fsync, slow on a busy disk, so a pass writing several layers
    # at a fixed interval could spend most of its time flushing; this keeps flushing under ~10% of the pass.
    state = {"bytes": 0, "last": -math.inf, "wait": FLUSH_S}

    def drain():
        t = time.perf_counter()
        for name, chunks in buffers.items():
            if chunks:
                writers[name].write(np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
                chunks.clear()
        now = time.perf_counter()
        state["bytes"], state["last"], state["wait"] = 0, now, max(FLUSH_S, 9 * (now - t))

    t0 = time.perf_counter()
    try:
        # On a CPU, glibc would unmap and page-fault every large activation again each batch (see _alloc).
        with heap_reuse(device.type == "cpu") as reuse, torch.inference_mode(), autocast:
            for xb, yb in loader:
                out = read(_to_device(xb, device, channels_last))
                labels = yb.numpy()
                for name in writers:
                    skip = max(0, done[name] - row)  # rows this layer already held when the pass resumed
                    if skip >= len(labels):
                        continue
                    feats = out[name].float().cpu().numpy()[skip:]
                    if not np.isfinite(feats).all():
                        raise FeatureError(
                            f"layer {name!r} of {backbone.spec} produced NaN/inf features at rows "
                            f"{row + skip}..{row + skip + len(feats)}; check the weights, or drop --amp"
                        )
                    if feats.shape[1] > WIDE_LAYER and name not in warned:
                        warned.add(name)
                        log.warning("layer %r gives %d features per sample (%.1f GiB for %d samples); pass "
                                    "--max-width N to keep N seeded random units", name, feats.shape[1],
                                    feats.shape[1] * len(ds) * np.dtype(dtype).itemsize / 2**30, len(ds))
                    buffers[name].append((feats, labels[skip:]))
                    state["bytes"] += feats.nbytes
                row += len(labels)
                bar.update(len(labels))
                if state["bytes"] >= FLUSH_BYTES or time.perf_counter() - state["last"] >= state["wait"]:
                    drain()
            drain()
    except CritmassError:
        for writer in writers.values():
            writer.discard()  # a user error is not resumable: leave nothing behind
        raise
    except BaseException:
        drain()  # the rows computed before a crash or Ctrl-C are valid: keep them for the resume
        raise
    finally:
        bar.close()
        module.train(was_training)
    elapsed = time.perf_counter() - t0
    for t in targets:
        # Which samples of which source split these rows are: lets probes prove train and val are disjoint.
        with atomic_path(t.split_dir / SAMPLES, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(ds.indices, dtype=np.int64))
        extra = {"pass_layers": [u.layer for u in targets]} if len(targets) > 1 else {}
        writers[t.layer].commit({
            **t.identity, "sample_pool": ds.info.get("pool", t.identity["split"]), "classes": list(ds.classes),
            "elapsed_s": round(elapsed, 3), "images_per_s": round((len(ds) - start) / max(elapsed, 1e-9), 2),
            "heap_reuse": reuse, **extra})
