"""A model's default set of layers for a depth profile: its stages (``stages``) or every block (``all``).

Discovery, in order:

1. timm models with ``feature_info``: a top-level ``blocks`` sequence (ViT, EfficientNet, ConvNeXt-style)
   gives one stage per child (``blocks.0`` .. ``blocks.N``: every EfficientNet stage, not only the ones at
   a new stride); otherwise the ``feature_info`` modules that are containers (ResNet ``layer1`` ..
   ``layer4``; the stem activation ``act1`` is dropped).
2. Top-level children named ``layer<N>`` (torchvision ResNets).
3. The longest ``ModuleList`` / ``Sequential`` whose children share one class (Hugging Face
   ``encoder.layer``, torchvision ViT ``encoder.layers``).
4. The top-level children.

``penultimate`` always comes last. ``all`` expands each stage that is itself a sequence of blocks into
its children (ResNet ``layer1.0`` .. ``layer4.2``, EfficientNet ``blocks.0.0`` .. ``blocks.6.0``; ViT blocks
stay as they are): the block outputs of the paper's middle-layer analysis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from ..exceptions import ConfigError
from ._backbone import Backbone

__all__ = ["stage_layers", "all_block_layers", "describe_stages", "resolve_layers", "list_stages", "LAYER_SETS"]

LAYER_SETS = ("stages", "all")
_SEQUENCES = (nn.Sequential, nn.ModuleList)


def _same_class_children(m: nn.Module) -> bool:
    kids = list(m.children())
    return len(kids) >= 2 and len({type(k) for k in kids}) == 1


def _discover(module: nn.Module) -> tuple[list[str], str]:
    mods = dict(module.named_modules())
    blocks = mods.get("blocks")
    info = getattr(module, "feature_info", None)
    if info is not None:
        if isinstance(blocks, _SEQUENCES) and len(blocks) >= 2:
            return [f"blocks.{i}" for i in range(len(blocks))], "timm feature_info (every child of blocks)"
        try:
            names = [f["module"] for f in info]
        except (TypeError, KeyError):
            names = []
        names = [n for n in names if n in mods and any(True for _ in mods[n].children())]
        if names:
            return names, "timm feature_info"
    top = [n for n, _ in module.named_children()]
    layers = [n for n in top if re.fullmatch(r"layer\d+", n)]
    if len(layers) >= 2:
        return sorted(layers, key=lambda n: int(n[5:])), "module names (layer<N>)"
    best, best_n = None, 1
    for name, m in module.named_modules():
        if name and isinstance(m, _SEQUENCES) and _same_class_children(m) and len(m) > best_n:
            best, best_n = name, len(m)
    if best is not None:
        return [f"{best}.{i}" for i in range(best_n)], f"module names (the {best_n} children of {best})"
    return top, "module names (top-level children)"


def stage_layers(backbone: Backbone) -> list[str]:
    """The model's stages (see the module docstring), then ``penultimate``."""
    names, _ = _discover(backbone.module)
    return [*names, "penultimate"]


def all_block_layers(backbone: Backbone) -> list[str]:
    """Every block: each stage that is a sequence of blocks expanded into its children, then ``penultimate``."""
    names, _ = _discover(backbone.module)
    mods = dict(backbone.module.named_modules())
    out: list[str] = []
    for n in names:
        m = mods[n]
        out += [f"{n}.{c}" for c, _ in m.named_children()] if isinstance(m, _SEQUENCES) and len(m) else [n]
    return [*out, "penultimate"]


def describe_stages(backbone: Backbone) -> str:
    """How the stages of ``backbone`` were found (for ``critmass layers MODEL --stages``)."""
    return _discover(backbone.module)[1]


def resolve_layers(backbone: Backbone, layers: str | Sequence[str]) -> list[str]:
    """``'stages'``, ``'all'``, ``'a,b,c'`` or a list of names -> validated layer names, in the given order.

    Parameters
    ----------
    backbone : Backbone
        The loaded model (:func:`critmass.models.load_model`).
    layers : str or sequence of str
        ``'stages'`` (the model's stages, see the module docstring), ``'all'`` (every block), a
        comma-separated string or a list of layer names (``penultimate`` or ``named_modules()`` paths).

    Returns
    -------
    list of str
        Layer names, ``penultimate`` last for the named sets.

    Raises
    ------
    LayerNotFoundError
        A name the model does not have (with the closest valid name).
    ConfigError
        An empty selection or a name given twice.
    """
    if isinstance(layers, str):
        key = layers.strip()
        if key == "stages":
            return stage_layers(backbone)
        if key == "all":
            return all_block_layers(backbone)
        names = [p.strip() for p in key.split(",") if p.strip()]
    else:
        names = [str(p).strip() for p in layers]
    if not names:
        raise ConfigError(f"no layers given; pass --layers stages, all, or comma-separated names "
                          f"(`critmass layers {backbone.spec}` lists them)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"layer {dup[0]!r} is given twice in --layers; list each layer once")
    for n in names:
        backbone.check_layer(n)
    return names


def list_stages(spec_or_backbone, **kwargs) -> list[str]:
    """The ``stages`` layer set of a model spec or :class:`Backbone` (what ``critmass profile`` reads by default).

    Parameters
    ----------
    spec_or_backbone : str or Backbone
        A model spec (``timm:resnet50``, an offline alias, ...) or a loaded model.
    **kwargs
        Passed to :func:`critmass.models.load_model` for a spec; hub models are built at random init
        (``pretrained=False``) unless given, since only the module names matter.

    Returns
    -------
    list of str
        The stage layer names in forward order, then ``penultimate``.
    """
    from ._sources import ALIASES, SOURCES, load_model
    from .._registry import parse_spec

    if isinstance(spec_or_backbone, Backbone):
        return stage_layers(spec_or_backbone)
    source, _ = parse_spec(spec_or_backbone, kind="model", sources=tuple(SOURCES.names()), aliases=tuple(ALIASES))
    kwargs.setdefault("pretrained", source in ("", "sbert"))
    return stage_layers(load_model(spec_or_backbone, **kwargs))
