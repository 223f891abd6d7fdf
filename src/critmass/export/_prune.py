"""Cut a backbone down to the selected penultimate neurons with torch-pruning.

Applies where each selected neuron is one output channel of one layer, followed only by per-channel
operations up to the pooled output:

* ``conv-head``: a 1x1 ``conv_head`` then BatchNorm + activation + global pooling (timm EfficientNet,
  MobileNet and relatives). Pruned with a torch-pruning dependency group (the conv's output channels and
  the BatchNorm entries behind them).
* ``resnet-block``: a ResNet's last residual block. Channel ``c`` of its output is
  ``act(bn(conv(h))[c] + shortcut[c])``, where the shortcut is the previous block's full output, which every
  earlier block also reads. torch-pruning's dependency graph would therefore cut the channels out of the
  whole residual stream, which changes the kept features; here only the block's last conv and BatchNorm
  (and its downsample conv + BatchNorm, when it has one) lose their output channels, with torch-pruning's
  per-layer pruners, and an identity shortcut becomes an index select of the kept channels.
* ``linear``: the last ``nn.Linear`` before the classifier, followed only by element-wise modules
  (activation, dropout): e.g. torchvision's MobileNetV3 and VGG classifiers. A dependency group again.

The plan (kind, module name, kept channels in ascending order) is recorded in the export's config, so
:func:`apply_plan` rebuilds the same structure on a freshly built architecture before its weights load.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..exceptions import ConfigError
from ._modules import PenultimateNet, Take

__all__ = ["prune_plan", "apply_plan"]

_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Dropout,
                nn.Identity, nn.LeakyReLU, nn.ELU, nn.Mish)


def _tp():
    try:
        import torch_pruning as tp
    except ImportError:
        raise ConfigError("--prune needs torch-pruning: pip install 'critmass[export]'") from None
    return tp


def _why_not(net: PenultimateNet, spec: str) -> str:
    return (f"--prune needs the selected neurons to be the output channels of one layer (EfficientNet's 1x1 "
            f"conv_head + BatchNorm, a ResNet's last block, the last Linear of an MLP head), and the penultimate "
            f"layer of {spec} is none of those; export without --prune, or with --head-only")


def prune_plan(net: PenultimateNet, spec: str, keep, n_features: int) -> dict:
    """The pruning plan that keeps the neurons ``keep`` of ``net``'s ``n_features`` outputs, or a one-line error."""
    keep = np.unique(np.asarray(keep, dtype=np.int64))
    inner = net.net
    if net.family == "timm":
        head = getattr(inner, "conv_head", None)
        bn = getattr(inner, "bn2", None)
        if isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1) and head.groups == 1 and \
                head.out_channels == n_features:
            if bn is None or isinstance(bn, (nn.BatchNorm2d, nn.Identity)):
                return {"kind": "conv-head", "module": "conv_head", "keep": keep.tolist(), "n_features": n_features}
    stage = getattr(inner, "layer4", None)
    if isinstance(stage, nn.Sequential) and len(stage):
        block = stage[-1]
        conv_name = "conv3" if hasattr(block, "conv3") else "conv2"
        bn_name = "bn3" if conv_name == "conv3" else "bn2"
        conv, bn = getattr(block, conv_name, None), getattr(block, bn_name, None)
        se = getattr(block, "se", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.out_channels == n_features and (
                se is None or isinstance(se, nn.Identity)):
            return {"kind": "resnet-block", "module": f"layer4.{len(stage) - 1}", "conv": conv_name, "bn": bn_name,
                    "keep": keep.tolist(), "n_features": n_features}
    if net.family == "torchvision":
        linear = _linear_producer(inner, n_features)
        if linear is not None:
            return {"kind": "linear", "module": linear, "keep": keep.tolist(), "n_features": n_features}
    raise ConfigError(_why_not(net, spec))


def _linear_producer(inner: nn.Module, n_features: int) -> str | None:
    """Name of the Linear whose (element-wise activated) output is the input of the removed classifier."""
    for name, mod in inner.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        children = list(mod.named_children())
        for i in range(len(children) - 1, -1, -1):
            if not isinstance(children[i][1], nn.Identity) or i == 0:
                continue
            # the classifier was replaced by an Identity at position i: walk back over element-wise modules
            j = i - 1
            while j >= 0 and isinstance(children[j][1], _ELEMENTWISE) and not isinstance(children[j][1], nn.Linear):
                j -= 1
            if j >= 0 and isinstance(children[j][1], nn.Linear) and children[j][1].out_features == n_features:
                return f"{name}.{children[j][0]}" if name else children[j][0]
            break
    return None


def _drop(plan: dict) -> list[int]:
    return np.setdiff1d(np.arange(int(plan["n_features"])), np.asarray(plan["keep"], dtype=np.int64)).tolist()


def apply_plan(net: PenultimateNet, plan: dict, example_input: torch.Tensor) -> PenultimateNet:
    """Remove the channels ``plan`` drops from ``net`` (in place; returns ``net``)."""
    tp = _tp()
    drop = _drop(plan)
    inner = net.net
    if not drop:
        return net
    if plan["kind"] in ("conv-head", "linear"):
        layer = inner.get_submodule(plan["module"])
        fn = tp.prune_conv_out_channels if plan["kind"] == "conv-head" else tp.prune_linear_out_channels
        dg = tp.DependencyGraph().build_dependency(net, example_inputs=example_input)
        group = dg.get_pruning_group(layer, fn, idxs=drop)
        touched = {id(dep.target.module) for dep, _ in group if isinstance(dep.target.module, (nn.Conv2d, nn.Linear))}
        if touched != {id(layer)}:  # another conv / linear reads these channels: cutting them changes its output
            raise ConfigError(f"--prune: the channels of {plan['module']} feed other layers, so cutting them would "
                              "change the kept features; export without --prune, or with --head-only")
        group.prune()
        return net
    if plan["kind"] == "resnet-block":
        block = inner.get_submodule(plan["module"])
        tp.prune_conv_out_channels(getattr(block, plan["conv"]), drop)
        tp.prune_batchnorm_out_channels(getattr(block, plan["bn"]), drop)
        down = getattr(block, "downsample", None)
        if down is None or isinstance(down, nn.Identity):
            block.downsample = Take(plan["keep"])
        else:
            convs = [m for m in down.modules() if isinstance(m, nn.Conv2d)]
            bns = [m for m in down.modules() if isinstance(m, nn.BatchNorm2d)]
            if not convs:
                raise ConfigError("--prune: the last ResNet block's downsample has no convolution to prune; export "
                                  "without --prune, or with --head-only")
            tp.prune_conv_out_channels(convs[-1], drop)
            if bns:
                tp.prune_batchnorm_out_channels(bns[-1], drop)
        return net
    raise ConfigError(f"unknown pruning plan {plan['kind']!r} in the export config; re-export with this critmass")
