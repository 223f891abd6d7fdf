"""The torch modules of an export: the backbone up to the probed layer, the reduction and the probe head."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..exceptions import ConfigError

__all__ = ["ReductionHead", "Take", "PenultimateNet", "ExportedModel", "penultimate_net"]


class Take(nn.Module):
    """``x[:, index]`` along dim 1 (channels of a map, or features of a vector)."""

    def __init__(self, index):
        super().__init__()
        self.register_buffer("index", torch.as_tensor(np.asarray(index), dtype=torch.int64))

    def forward(self, x):
        return x.index_select(1, self.index)


class ReductionHead(nn.Module):
    """Index select (or projection) followed by the probe's affine head, in float64 like the probe itself.

    Column selectors: ``logits = float64(x)[:, index] @ coef.T + intercept``. Projections:
    ``logits = float64(float32((float64(x) - mean) @ components)) @ coef.T + intercept`` (the probes see the
    projected features rounded to float32). ``coef`` and ``intercept`` act on raw layer features: the
    probe's standardisation is folded into them.
    """

    def __init__(self, coef, intercept, *, index=None, components=None, mean=None):
        super().__init__()
        if (index is None) == (components is None):
            raise ConfigError("a reduction head takes either index or components (with mean)")
        self.projection = components is not None
        f64 = dict(dtype=torch.float64)
        self.register_buffer("coef", torch.as_tensor(np.asarray(coef, dtype=np.float64), **f64))
        self.register_buffer("intercept", torch.as_tensor(np.asarray(intercept, dtype=np.float64), **f64))
        if self.projection:
            self.register_buffer("components", torch.as_tensor(np.asarray(components, dtype=np.float64), **f64))
            self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float64), **f64))
        else:
            self.register_buffer("index", torch.as_tensor(np.asarray(index), dtype=torch.int64))

    @property
    def n_inputs(self) -> int:
        return int(self.components.shape[0]) if self.projection else -1

    def reduce(self, x):
        """The probe's input: the k selected (or projected) features, float64."""
        if self.projection:
            return ((x.to(torch.float64) - self.mean) @ self.components).to(torch.float32).to(torch.float64)
        return x.to(torch.float64).index_select(1, self.index)

    def forward(self, x):
        return self.reduce(x) @ self.coef.T + self.intercept


class PenultimateNet(nn.Module):
    """A backbone cut at its pooled pre-logits output (the ``penultimate`` layer), classifier removed.

    timm models: ``forward_head(forward_features(x), pre_logits=True)`` with the classifier reset;
    torchvision models: the module with its last ``nn.Linear`` replaced by ``nn.Identity``.
    """

    def __init__(self, module: nn.Module, family: str):
        super().__init__()
        self.family = family
        self.net = module

    def forward(self, x):
        if self.family == "timm":
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return self.net(x)


def _last_linear_name(module: nn.Module) -> str | None:
    name = None
    for n, m in module.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return name


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def penultimate_net(module: nn.Module, spec: str, *, copy_module: bool = True) -> PenultimateNet:
    """The ``penultimate`` layer of a loaded model as a standalone module (a copy: the original is left as is)."""
    net = copy.deepcopy(module) if copy_module else module
    if spec.startswith("timm:"):
        if hasattr(net, "reset_classifier"):
            net.reset_classifier(0)
        return PenultimateNet(net.eval(), "timm")
    if spec.startswith("torchvision:"):
        name = _last_linear_name(net)
        if name is None:
            raise ConfigError(f"{spec} has no linear classifier, so it has no 'penultimate' layer; export with --head-only")
        _set_submodule(net, name, nn.Identity())
        return PenultimateNet(net.eval(), "torchvision")
    raise ConfigError(f"full-model export supports timm: and torchvision: image models, not {spec}; export the "
                      "reduction and probe head with --head-only")


class ExportedModel(nn.Module):
    """What ``critmass export`` writes: ``backbone`` (None with ``--head-only``) then ``head``.

    ``forward(x)`` returns the class scores (float64, one column per entry of ``classes``); ``predict(x)``
    the labels. ``x`` is a preprocessed image batch (``preprocess`` maps one PIL image to one row of it) or,
    head-only, raw features of the probed layer.
    """

    def __init__(self, head: ReductionHead, backbone: nn.Module | None = None, *, classes=None, config=None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("classes", torch.as_tensor(np.asarray(classes if classes is not None else []),
                                                        dtype=torch.int64))
        self.config = dict(config or {})
        self.preprocess = None

    def features(self, x):
        """The backbone's features (the selected columns only, when pruned)."""
        return x if self.backbone is None else self.backbone(x)

    def forward(self, x):
        return self.head(self.features(x))

    @torch.inference_mode()
    def predict(self, x) -> np.ndarray:
        """Predicted class labels of a batch (tensor or array), as a numpy array."""
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if self.backbone is not None:
            x = x.to(torch.float32)
        scores = self(x)
        return self.classes[scores.argmax(1)].cpu().numpy()
