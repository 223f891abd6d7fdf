"""The :class:`Backbone` every model source returns, and the layer/pooling machinery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._validation import closest
from ..exceptions import LayerNotFoundError, PoolingError

__all__ = ["Backbone", "POOLINGS", "pool", "LayerReader", "capture"]

POOLINGS = ("auto", "avg", "max", "flatten", "cls", "mean", "none")


@dataclass
class Backbone:
    """A loaded model plus everything needed to feed it and to name what it was.

    ``preprocess`` maps one raw sample (PIL image) to a tensor, ``collate`` a list of preprocessed
    samples to the batch ``run`` takes; for text models ``preprocess`` is None and ``collate``
    tokenizes a list of strings. ``penultimate(batch)`` returns the pooled input to the classifier
    head. ``identity`` holds what the cache key needs (spec, weights id, preprocessing config).

    ``weights_id`` goes into feature-cache keys and manifests: ``random-init:seed0``, ``sha256:<16 hex>`` of a
    local weights file or model directory's content, or ``pretrained:<repo>@<commit>`` with the hub commit the
    cached snapshot resolved to (``pretrained:<name>`` where no commit is known, e.g. torchvision's URLs).
    """

    spec: str
    module: nn.Module
    modality: str
    run: Callable[[Any], Any]
    penultimate: Callable[[Any], torch.Tensor]
    collate: Callable[[list], Any]
    preprocess: Callable | None = None
    weights_id: str = "random-init"
    preprocessing: dict = field(default_factory=dict)
    token_pooling: str = "cls"  # default pooling for (B, T, C) token outputs of this model

    def layer_names(self) -> list[str]:
        """Valid layer names: ``penultimate`` then every named submodule, in definition order."""
        return ["penultimate"] + [n for n, _ in self.module.named_modules() if n]

    def check_layer(self, layer: str) -> str:
        if layer == "penultimate":
            return layer
        names = dict(self.module.named_modules())
        if not layer or layer not in names:
            raise LayerNotFoundError(
                f"layer {layer!r} not in {self.spec}{closest(layer, names)}; run `critmass layers {self.spec}` "
                "to list the valid names"
            )
        return layer

    def to(self, device) -> Backbone:
        self.module.to(device)
        return self


class _StopForward(Exception):
    """Raised by the hook once the requested layer has run: no need to compute the rest."""


def pool(out, pooling: str, *, token_pooling: str = "cls", where: str = "layer") -> torch.Tensor:
    """Reduce a layer output to ``(batch, features)``.

    ``auto``: conv maps (B, C, H, W) -> global average; tokens (B, T, C) -> the model's token pooling
    (CLS for ViT/BERT-style models, mean otherwise); (B, C) unchanged.
    """
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]  # transformer blocks return (hidden_states, ...)
    elif hasattr(out, "last_hidden_state"):
        out = out.last_hidden_state
    if not isinstance(out, torch.Tensor):
        raise PoolingError(
            f"{where} returns {type(out).__name__}, not a tensor; choose another layer "
            "(`critmass layers MODEL` lists them)"
        )
    if pooling not in POOLINGS:
        raise PoolingError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    nd = out.ndim
    if pooling == "auto":
        pooling = {2: "none", 3: token_pooling, 4: "avg"}.get(nd, "")
        if not pooling:
            raise PoolingError(
                f"{where} output has shape {tuple(out.shape)}, which no pooling fits; pass --pooling flatten "
                "or choose another layer"
            )
    if pooling == "none":
        if nd != 2:
            raise PoolingError(f"{where} output has shape {tuple(out.shape)}; pooling 'none' needs (batch, features); "
                               "use --pooling auto")
        return out
    if pooling == "flatten":
        return out.flatten(1)
    if pooling in ("avg", "max"):
        if nd != 4:
            raise PoolingError(f"{where} output has shape {tuple(out.shape)}; '{pooling}' pooling needs a (B, C, H, W) "
                               "map; use --pooling auto")
        return out.mean((2, 3)) if pooling == "avg" else out.amax((2, 3))
    if nd != 3:  # cls / mean
        raise PoolingError(f"{where} output has shape {tuple(out.shape)}; '{pooling}' pooling needs (B, tokens, C); "
                           "use --pooling auto")
    return out[:, 0] if pooling == "cls" else out.mean(1)


class LayerReader:
    """Callable ``batch -> (B, D)`` features of one layer, via a forward hook that stops the forward early."""

    def __init__(self, backbone: Backbone, layer: str = "penultimate", pooling: str = "auto"):
        self.backbone = backbone
        self.layer = backbone.check_layer(layer)
        self.pooling = pooling
        if pooling not in POOLINGS:
            raise PoolingError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")

    def __call__(self, batch) -> torch.Tensor:
        bb = self.backbone
        if self.layer == "penultimate":
            out = bb.penultimate(batch)
            return pool(out, self.pooling, token_pooling=bb.token_pooling, where=f"{bb.spec} penultimate")
        out = capture(bb.module, self.layer, bb.run, batch, where=bb.spec)
        return pool(out, self.pooling, token_pooling=bb.token_pooling, where=f"layer {self.layer!r}")


def capture(module: nn.Module, layer: str, run: Callable[[Any], Any], batch, *, where: str = "the model"):
    """The output of ``module``'s submodule ``layer`` when ``run(batch)`` is called; the forward stops there."""
    captured = {}

    def hook(_module, _inputs, output):
        captured["out"] = output
        raise _StopForward

    handle = dict(module.named_modules())[layer].register_forward_hook(hook)
    try:
        run(batch)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "out" not in captured:
        raise PoolingError(f"layer {layer!r} of {where} is not run by the forward pass; choose another layer")
    return captured["out"]
