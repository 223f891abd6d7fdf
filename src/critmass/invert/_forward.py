"""A differentiable forward from the [0, 1] image at the model's input size to one layer's pooled features.

The model's own preprocessing is split in two: the resize / crop (to the input size) is applied to the target
images by the model's own transform, once; the normalisation (``(x * scale - mean) / std``, channel order and
layout) runs inside the differentiable path, so the optimised variable is the [0, 1] image.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..exceptions import ConfigError
from ..models import Backbone, LayerReader
from ._loss import fake_clamp

__all__ = ["InputSpec", "input_spec", "ImageForward"]


@dataclass(frozen=True)
class InputSpec:
    """How a [0, 1] RGB image ``(B, 3, H, W)`` becomes the model's input."""

    mean: tuple
    std: tuple
    scale: float = 1.0
    bgr: bool = False
    channels_last: bool = False

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        if self.bgr:
            x = x.flip(1)
        x = (x * self.scale - mean) / std
        return x.permute(0, 2, 3, 1) if self.channels_last else x

    def denormalise(self, t: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalise` for a batch the model's own transform produced."""
        if self.channels_last:
            t = t.permute(0, 3, 1, 2)
        mean = torch.as_tensor(self.mean, dtype=t.dtype, device=t.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=t.dtype, device=t.device).view(1, -1, 1, 1)
        x = (t * std + mean) / self.scale
        return (x.flip(1) if self.bgr else x).clamp(0, 1)


def _stats(obj):
    mean, std = getattr(obj, "mean", None), getattr(obj, "std", None)
    if mean is None or std is None:
        return None
    return tuple(np.asarray(mean, dtype=float).ravel().tolist()), tuple(np.asarray(std, dtype=float).ravel().tolist())


def input_spec(backbone: Backbone) -> InputSpec:
    """The normalisation of ``backbone``'s own preprocessing (timm data config, torchvision transforms, Hugging
    Face image processor, ``onnx:`` options); a one-line :class:`ConfigError` for a model that does not read images."""
    if backbone.modality != "image":
        raise ConfigError(f"partial inversion needs an image model; {backbone.spec} reads {backbone.modality}; "
                          "pass an image model such as timm:resnet50 or efficientnet-lite0")
    cfg = backbone.preprocessing
    if "mean" in cfg and "std" in cfg and "input_size" in cfg:  # timm data config
        return InputSpec(tuple(cfg["mean"]), tuple(cfg["std"]))
    tf = backbone.preprocess
    tf = getattr(tf, "tf", tf)  # critmass's RGB wrapper
    processor = getattr(tf, "processor", None)  # Hugging Face image processor
    if processor is not None:
        if not getattr(processor, "do_normalize", True):
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        else:
            mean, std = tuple(processor.image_mean), tuple(processor.image_std)
        scale = 255.0 * float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) \
            else 255.0
        return InputSpec(mean, std, scale=scale)
    found = _stats(tf)
    if found is not None:  # torchvision weights' transforms, or onnx:'s transform (with scale / bgr / layout)
        return InputSpec(*found, scale=float(getattr(tf, "scale", 1.0)), bgr=bool(getattr(tf, "bgr", False)),
                         channels_last=bool(getattr(tf, "channels_last", False)))
    for step in getattr(tf, "transforms", []):  # a torchvision Compose ending in Normalize
        found = _stats(step)
        if found is not None:
            return InputSpec(*found)
    raise ConfigError(f"cannot find the normalisation of {backbone.spec}'s preprocessing ({backbone.preprocess!r}); "
                      "partial inversion needs its mean and std")


_CLAMPS = {nn.ReLU: (0.0, None), nn.ReLU6: (0.0, 6.0)}


class ImageForward:
    """``x01 (B, 3, H, W) -> (B, D)`` features of ``layer``, differentiable in ``x01``.

    ``fake_relu``: when the layer's output is the output of a ReLU (or ReLU6), i.e. no module with parameters
    runs between the last activation module and the layer's output (pooling may), that one call is replaced by
    :func:`fake_relu` (the clamp forward, identity backward). ``fake_relu_at`` names the module, or is None.
    """

    def __init__(self, backbone: Backbone, layer: str = "penultimate", pooling: str = "auto", *,
                 fake_relu: bool = True):
        self.spec = input_spec(backbone)
        self.backbone = backbone
        self.reader = LayerReader(backbone, layer, pooling)
        self.layer = self.reader.layer
        self.fake_relu_at: str | None = None
        self._call = -1
        self._fake = fake_relu

    def image_size(self, sample) -> tuple[int, int]:
        t = self.backbone.preprocess(sample)
        return tuple(t.shape[:2] if self.spec.channels_last else t.shape[-2:])

    def to_unit(self, samples: list) -> torch.Tensor:
        """Raw samples (PIL images) -> their [0, 1] images at the model's input size, by the model's own transform."""
        batch = self.backbone.collate([self.backbone.preprocess(s) for s in samples])
        return self.spec.denormalise(batch.float())

    def locate(self, x01: torch.Tensor) -> str | None:
        """Find the activation call the fake ReLU replaces (one probe forward); returns its module name."""
        calls: list[tuple[str, nn.Module]] = []
        handles = [m.register_forward_hook(lambda m, i, o, n=n: calls.append((n, m)))
                   for n, m in self.backbone.module.named_modules() if n and not any(True for _ in m.children())]
        try:
            with torch.no_grad():
                self.reader(self.spec.normalise(x01[:1]))
        finally:
            for h in handles:
                h.remove()
        self.fake_relu_at, self._call = None, -1
        if not self._fake:
            return None
        for i in range(len(calls) - 1, -1, -1):
            name, mod = calls[i]
            if type(mod) in _CLAMPS:
                self.fake_relu_at = name
                self._call = sum(1 for n, _ in calls[: i + 1] if n == name) - 1  # which call of that module
                break
            if any(True for _ in mod.parameters(recurse=False)):
                break  # a module with parameters after the last activation: the output is not a ReLU output
        return self.fake_relu_at

    @contextlib.contextmanager
    def _fake_relu(self):
        if self.fake_relu_at is None:
            yield
            return
        mod = dict(self.backbone.module.named_modules())[self.fake_relu_at]
        low, high = _CLAMPS[type(mod)]
        seen = {"n": 0}
        inplace = getattr(mod, "inplace", False)

        def hook(_m, inputs, output):
            n = seen["n"]
            seen["n"] += 1
            return fake_clamp(inputs[0], low, high) if n == self._call else output

        mod.inplace = False  # the input must survive the clamp, for the hook to re-apply it
        handle = mod.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
            mod.inplace = inplace

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        with self._fake_relu():
            return self.reader(self.spec.normalise(x01)).flatten(1).float()
