"""Several layers in one pass: :func:`extract_layers` runs one forward pass per split and writes one ordinary
cache entry per layer (the entry a single-layer :func:`critmass.features.extract` of that layer writes).

``critmass extract --layers``, the sweep's multi-layer extraction units and :func:`critmass.profile.profile`
use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data import dataset_fingerprint
from ._store import FeatureSet, default_cache_dir

__all__ = ["extract_layers", "DEFAULT_MAX_WIDTH"]

#: ``critmass profile``'s cap on a pooled layer's width (a flattened early conv map has 10^5 units per image).
DEFAULT_MAX_WIDTH = 8192


def extract_layers(
    model,
    dataset: str,
    *,
    layers: str | Sequence[str] = "stages",
    split="train",
    cache=None,
    data_root=None,
    download: bool = False,
    weights=None,
    pretrained: bool = True,
    pooling: str = "auto",
    max_width: int | None = DEFAULT_MAX_WIDTH,
    width_seed: int = 0,
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
    max_seq_length: int | None = None,
    preprocessing: dict | None = None,
) -> dict[str, FeatureSet]:
    """Features of several layers of ``model`` from ONE forward pass per split, one cache entry per layer.

    Every layer's entry has exactly the key, directory, manifest and lock of a single-layer
    :func:`critmass.features.extract` with the same options (``max_width`` only counts for a layer wider than
    it), so ``probe``, ``cka`` and ``report`` read any of them and a later ``extract`` of one layer is a cache
    hit. Layers already in the cache are not computed; the others share one pass over the decoded images,
    each pooled inside its forward hook (memory stays ``batch x width`` per layer).

    Parameters
    ----------
    layers : ``'stages'`` (default: the model's stages, :func:`critmass.models.list_stages`),
        ``'all'`` (every block), a comma-separated string or a list of layer names.
    max_width, width_seed : a pooled output wider than ``max_width`` keeps ``max_width`` random units
        (seeded by ``width_seed``; a warning names the width); ``None``: no cap.

    Other Parameters
    ----------------
    model, dataset, split, cache, ...
        As :func:`critmass.features.extract`.

    Returns
    -------
    dict of layer name -> FeatureSet, in the order of ``layers``.
    """
    from . import _requests
    # Looked up at call time (not at import): tests count passes by patching ``_extract.extract_entries``.
    from ._extract import _check_options, _resolve_device, check_model_options, extract_entries, request_options

    splits = [split] if isinstance(split, str) else list(split)
    per_split_max = _check_options(splits, batch_size=batch_size, dtype=dtype, amp=amp, max_samples=max_samples,
                                   max_width=max_width, width_seed=width_seed)
    model_options = check_model_options(model, max_seq_length=max_seq_length, preprocessing=preprocessing)
    cache = Path(cache).expanduser() if cache is not None else default_cache_dir()
    content = dataset_fingerprint(dataset, data_root)
    opts = dict(pooling=pooling, image_size=image_size, max_samples=max_samples, seed=seed, val_fraction=val_fraction,
                carve_test=carve_test, dtype=dtype, amp=amp, max_width=max_width, width_seed=width_seed,
                **model_options)

    def request(name):
        return _requests.request_key(model, dataset, weights=weights, pretrained=pretrained, data_root=data_root,
                                     dataset_content=content, **request_options(name, splits, **opts))

    explicit = not (isinstance(layers, str) and layers.strip() in ("stages", "all"))
    if explicit:  # every layer served before: no model, no torch
        names = [p.strip() for p in layers.split(",")] if isinstance(layers, str) else list(layers)
        hits = {}
        for name in names:
            key = request(name)
            hit = _requests.lookup(cache, key, splits, verify=verify) if key is not None else None
            if hit is None:
                break
            hits[name] = hit
        else:
            if names and len(set(names)) == len(names):
                return hits

    from ..models import Backbone, load_model, resolve_layers
    from ._extract import MultiLayerReader

    _resolve_device(device)
    backbone = model if isinstance(model, Backbone) else load_model(
        model, pretrained=pretrained, weights=weights, image_size=image_size, **model_options)
    names = resolve_layers(backbone, layers)
    MultiLayerReader(backbone, names, pooling)  # validates the pooling before any data is touched

    def make_read(which, units):
        return MultiLayerReader(backbone, which, pooling, units=units)

    out = extract_entries(
        backbone, names, make_read, dataset, splits=splits, cache=cache, data_root=data_root, download=download,
        pooling=pooling, max_samples=max_samples, per_split_max=per_split_max, seed=seed, val_fraction=val_fraction,
        carve_test=carve_test, content=content, batch_size=batch_size, num_workers=num_workers, device=device,
        dtype=dtype, amp=amp, channels_last=channels_last, progress=progress, verify=verify, max_width=max_width,
        width_seed=width_seed)
    for name, fs in out.items():
        key = request(name)
        if key is not None:
            _requests.record(cache, key, fs)
    return out
