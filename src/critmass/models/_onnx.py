"""The ``onnx:`` model source: an ONNX image or text encoder, converted to a torch module with onnx2torch.

The converted module is a ``torch.fx.GraphModule`` whose submodules are named after the ONNX nodes, so
``--layer`` hooks, pooling, ``penultimate`` and the feature cache work as for any other backbone.
A graph whose inputs are ``input_ids`` (and optionally ``attention_mask``, ``token_type_ids``) is a text
encoder: its tokenizer (a Hugging Face tokenizer directory or ``tokenizer.json``) and ``max_length``,
``output`` and ``text_pooling`` come from the sidecar. Any other graph is an image encoder with one 4-D input.
Preprocessing comes from a sidecar beside the file (``FILE.json`` / ``FILE.yaml`` for ``FILE.onnx``), from
options (``critmass extract --mean --std --bgr --nhwc --scale --image-size``) and from the graph's own input
shape; the resolved values are recorded in the manifest and the cache key (for text: with a digest of the
tokenizer files). The weights id is the content digest of the ``.onnx`` file (and of its external-data files,
if any).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from .._env import versions
from .._validation import closest
from ..exceptions import ConfigError, PoolingError, SpecError, WeightsError
from ._backbone import Backbone, capture
from ._weights import file_digest

__all__ = ["load_onnx", "read_sidecar", "check_preprocessing", "OnnxImageTransform", "OnnxTokenize",
           "PREPROCESSING_KEYS", "IMAGENET_MEAN", "IMAGENET_STD"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box")
_RESIZE_MODES = ("squash", "shorter")
PREPROCESSING_KEYS = {
    "size": "model input (after the crop): one int or [height, width]; default: the graph's fixed input size",
    "resize": "resize to this before the centre crop to `size` (int or [h, w]); default: `size` (no crop)",
    "resize_mode": "squash (resize to exactly `resize`, default) or shorter (shorter side to `resize`)",
    "interpolation": "bilinear (default), bicubic, nearest, lanczos or box",
    "scale": "pixel range before mean/std: 1 (0-1, default) or 255 (0-255)",
    "mean": "subtracted per channel, in the model's channel order and in units of `scale`; default ImageNet's",
    "std": "divided per channel (after the mean); default ImageNet's",
    "bgr": "feed channels as BGR (default false)",
    "channels_last": "NHWC input (default: from the graph's input shape, else false)",
    "jpeg_reencode": "JPEG round trip after the crop, as some reference pipelines do (default false)",
    "penultimate": "layer of the pooled features: a module name (`critmass layers`) or an ONNX tensor name "
                   "(e.g. pool/AvgPool:0); default: the data input of the last Gemm/MatMul, else the output",
    "tokenizer": "text encoders: a Hugging Face tokenizer directory or a tokenizer.json file (relative paths: to the "
                 ".onnx file's directory); required",
    "max_length": "text encoders: truncate texts to this many tokens (default 256)",
    "output": "text encoders: the graph output holding the embedding (default: sentence_embedding if the graph "
              "has it, else the first output)",
    "text_pooling": "text encoders: mean (attention-mask-weighted, default) or cls (token 0) for a (batch, tokens, "
                    "hidden) output; a (batch, hidden) output is used as is",
}
_BOOL_KEYS = ("bgr", "channels_last", "jpeg_reencode")
_TEXT_KEYS = ("tokenizer", "max_length", "output", "text_pooling")
_TEXT_POOLINGS = ("mean", "cls")
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_DEFAULT_MAX_LENGTH = 256


def _fix(where: str) -> str:
    return f"fix {where}" if where != "options" else "fix the option"


def _int_pair(value, key: str, where: str) -> list[int]:
    vals = value if isinstance(value, (list, tuple)) else [value, value]
    if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vals):
        raise ConfigError(f"preprocessing {key!r} must be a positive int or [height, width]; got {value!r}; "
                          f"{_fix(where)}")
    return [int(v) for v in vals]


def _floats(value, key: str, where: str) -> list[float]:
    vals = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = [float(v) for v in vals if not isinstance(v, bool)]
    except (TypeError, ValueError):
        out = []
    if not out or len(out) != len(vals) or not all(np.isfinite(out)):
        raise ConfigError(f"preprocessing {key!r} must be a number or a list of numbers (one per channel); "
                          f"got {value!r}; {_fix(where)}")
    return out


def check_preprocessing(options: dict | None, *, where: str = "options") -> dict:
    """Validate preprocessing options (sidecar or CLI) and normalise their types; unknown keys are refused.

    Parameters
    ----------
    options : dict or None
        Keys of :data:`PREPROCESSING_KEYS` (``mean``, ``std``, ``scale``, ``bgr``, ``channels_last``,
        ``size``, ...); None means none.
    where : str, default "options"
        Where the options came from, named in the error (``"preprocessing"``, a sidecar path).

    Returns
    -------
    dict
        The options with normalised types (floats for mean/std, int pairs for sizes); None values dropped.

    Raises
    ------
    ConfigError
        An unknown key or a value of the wrong kind, in one line that names ``where``.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"preprocessing in {where} must be a mapping of {', '.join(PREPROCESSING_KEYS)}; "
                          f"got {type(options).__name__}")
    out = {}
    for key, value in options.items():
        if key not in PREPROCESSING_KEYS:
            raise ConfigError(f"unknown preprocessing key {key!r} in {where}{closest(str(key), PREPROCESSING_KEYS)}; "
                              f"valid: {', '.join(PREPROCESSING_KEYS)}")
        if value is None:
            continue
        if key in ("size", "resize"):
            out[key] = _int_pair(value, key, where)
        elif key in ("mean", "std"):
            out[key] = _floats(value, key, where)
            if key == "std" and any(v == 0 for v in out[key]):
                raise ConfigError(f"preprocessing 'std' must not contain 0; got {value!r}; {_fix(where)}")
        elif key == "scale":
            scale = {"0-1": 1, "0-255": 255}.get(value, value) if isinstance(value, str) else value
            if isinstance(scale, bool) or scale not in (1, 255):
                raise ConfigError(f"preprocessing 'scale' must be 1 (pixels in 0-1) or 255 (0-255); got {value!r}; "
                                  f"{_fix(where)}")
            out[key] = int(scale)
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ConfigError(f"preprocessing {key!r} must be true or false; got {value!r}; {_fix(where)}")
            out[key] = value
        elif key == "interpolation" or key == "resize_mode":
            choices = _INTERPOLATIONS if key == "interpolation" else _RESIZE_MODES
            if value not in choices:
                raise ConfigError(f"preprocessing {key!r} must be one of {', '.join(choices)}; got {value!r}; "
                                  f"{_fix(where)}")
            out[key] = value
        elif key == "max_length":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"preprocessing 'max_length' must be a positive int (tokens); got {value!r}; "
                                  f"{_fix(where)}")
            out[key] = int(value)
        elif key == "text_pooling":
            if value not in _TEXT_POOLINGS:
                raise ConfigError(f"preprocessing 'text_pooling' must be one of {', '.join(_TEXT_POOLINGS)}; "
                                  f"got {value!r}; {_fix(where)}")
            out[key] = value
        else:  # penultimate, tokenizer, output: names
            what = {"penultimate": "a layer name", "tokenizer": "a path to a tokenizer directory or tokenizer.json",
                    "output": "a graph output name"}[key]
            if not isinstance(value, str) or not value:
                raise ConfigError(f"preprocessing {key!r} must be {what}; got {value!r}; {_fix(where)}")
            out[key] = value
    return out


def sidecar_path(path: Path) -> Path | None:
    """``FILE.json``, ``FILE.yaml`` or ``FILE.yml`` beside ``FILE.onnx`` (None: no sidecar; two: an error)."""
    found = [p for p in (path.with_suffix(s) for s in (".json", ".yaml", ".yml")) if p.is_file()]
    if len(found) > 1:
        raise ConfigError(f"{path.name} has {len(found)} preprocessing sidecars ({', '.join(p.name for p in found)}); "
                          "keep one")
    return found[0] if found else None


def read_sidecar(path) -> dict:
    """Read and validate a preprocessing sidecar (JSON, or YAML through ``yaml.safe_load``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"reading {path.name} needs PyYAML; pip install pyyaml, or write {path.stem}.json "
                                  "instead") from None
            data = yaml.safe_load(text)
    except ConfigError:
        raise
    except Exception as exc:  # OSError, JSONDecodeError, yaml.YAMLError, UnicodeDecodeError
        first = (str(exc).splitlines() or [""])[0][:160]
        raise ConfigError(f"cannot read preprocessing sidecar {str(path)!r} ({type(exc).__name__}: {first}); "
                          f"write a mapping of {', '.join(PREPROCESSING_KEYS)}") from None
    return check_preprocessing(data if data is not None else {}, where=str(path))


class OnnxImageTransform:
    """PIL image -> the tensor an ONNX image encoder takes (picklable, for DataLoader workers).

    RGB (or L for one-channel inputs) -> resize (squash or shorter side) -> centre crop to ``size`` ->
    optional JPEG round trip -> float32 in 0-1 or 0-255 -> optional RGB->BGR -> ``(x - mean) / std`` ->
    CHW, or HWC for ``channels_last``.
    """

    def __init__(self, *, size, resize, resize_mode, interpolation, scale, mean, std, bgr, channels_last,
                 channels, jpeg_reencode):
        self.size, self.resize, self.resize_mode = list(size), list(resize), resize_mode
        self.interpolation, self.scale, self.bgr = interpolation, scale, bgr
        self.channels_last, self.channels, self.jpeg_reencode = channels_last, channels, jpeg_reencode
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, img):
        from PIL import Image

        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        mode = "RGB" if self.channels == 3 else "L"
        if img.mode != mode:
            img = img.convert(mode)
        resample = getattr(Image.Resampling, self.interpolation.upper())
        h, w = self.size
        if self.resize_mode == "squash":
            rh, rw = self.resize
        else:  # shorter side to resize[0], aspect kept
            short = self.resize[0]
            scale = short / min(img.width, img.height)
            rw, rh = max(short, round(img.width * scale)), max(short, round(img.height * scale))
            rw, rh = (short, rh) if img.width <= img.height else (rw, short)
        if (img.width, img.height) != (rw, rh):
            img = img.resize((rw, rh), resample=resample)
        if (rw, rh) != (w, h):
            left, top = int(round((rw - w) / 2.0)), int(round((rh - h) / 2.0))
            img = img.crop((left, top, left + w, top + h))
        if self.jpeg_reencode:
            with io.BytesIO() as buf:
                img.save(buf, format="JPEG")
                buf.seek(0)
                arr = np.asarray(Image.open(buf), dtype=np.float32)
        else:
            arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.scale == 1:
            arr = arr / np.float32(255.0)
        if self.bgr:
            arr = arr[:, :, ::-1]
        arr = (arr - self.mean) / self.std
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return t if self.channels_last else t.permute(2, 0, 1).contiguous()

    def __repr__(self):
        return (f"OnnxImageTransform(size={self.size}, resize={self.resize}, {self.resize_mode}, {self.interpolation}, "
                f"scale={self.scale}, mean={self.mean.tolist()}, std={self.std.tolist()}, bgr={self.bgr}, "
                f"channels_last={self.channels_last})")


def _stack(samples: list) -> torch.Tensor:
    return torch.stack(samples)


# ---- reading and converting the graph -----------------------------------------------------------------------

def _read_onnx(path: Path):
    """Parse an ONNX file (protobuf: data, never code) with its external data; a bad file is a one-line error."""
    try:
        import onnx
    except ImportError:
        raise SpecError("onnx: models need onnx and onnx2torch; pip install onnx onnx2torch") from None
    if not path.is_file():
        raise WeightsError(f"ONNX file {str(path)!r} does not exist; pass onnx:PATH to an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise WeightsError(f"cannot read {str(path)!r} as ONNX ({type(exc).__name__}: {first}); "
                           "pass an ONNX model file (torch.onnx.export, tf2onnx, ...)") from None
    if not model.graph.node or not model.graph.input or not model.opset_import:
        raise WeightsError(f"{str(path)!r} holds no ONNX graph (no nodes, inputs or opset); "
                           "pass an ONNX model file (torch.onnx.export, tf2onnx, ...)")
    externals = sorted({entry.value for t in model.graph.initializer
                        if t.data_location == onnx.TensorProto.EXTERNAL
                        for entry in t.external_data if entry.key == "location"})
    try:
        if externals:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise WeightsError(f"{str(path)!r} is not a valid ONNX model ({type(exc).__name__}: {first}); "
                           "re-export it (external data files must sit beside it)") from None
    return model, [path.parent / e for e in externals]


def _weights_id(path: Path, externals: list[Path]) -> str:
    if not externals:
        return file_digest(path)
    h = hashlib.sha256()
    for p in [path, *externals]:
        h.update(file_digest(p).encode())
    return "sha256:" + h.hexdigest()[:16]


def _inline_constant_identities(model) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer, in place.

    torch.onnx.export shares equal constants (e.g. the zero biases of a fresh model) through Identity nodes;
    onnx2torch expects conv / gemm weights to be initializers and fails on them otherwise.
    """
    from onnx import TensorProto

    inits = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in inits:
            t = TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            model.graph.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(node)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)


def _has_converter(op_type: str, version: int) -> bool:
    try:
        from onnx2torch.node_converters.registry import get_converter

        get_converter(operation_type=op_type, version=version)
    except (ImportError, NotImplementedError):  # a reorganised onnx2torch: the (exact) rewrite is always safe
        return False
    return True


def _split_or_equal(model) -> None:
    """Rewrite ``GreaterOrEqual`` / ``LessOrEqual`` as ``Or(Greater, Equal)`` / ``Or(Less, Equal)``, in place,
    where onnx2torch has no converter for them at the model's opset.

    onnx2torch 1.5 registers them for opset 12-15 only, not their opset-16 versions (which only add bfloat16;
    ENOT-AutoDL/onnx2torch#240), and transformers' attention-mask code exports one at opset >= 16. The rewrite
    is exact, NaN included (every comparison with NaN is false); the Or node keeps the original node's name
    and output tensor, so layer names stay.
    """
    from onnx import helper

    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    ops = {"GreaterOrEqual": "Greater", "LessOrEqual": "Less"}
    todo = {op for op in ops if any(n.op_type == op for n in model.graph.node)}
    if version is None or not (todo := {op for op in todo if not _has_converter(op, version)}):
        return
    nodes = []
    for node in model.graph.node:
        if node.op_type not in todo:
            nodes.append(node)
            continue
        base, out = node.name or node.output[0], node.output[0]
        strict, equal = f"{out}__strict", f"{out}__equal"
        nodes += [helper.make_node(ops[node.op_type], list(node.input), [strict], name=f"{base}__strict"),
                  helper.make_node("Equal", list(node.input), [equal], name=f"{base}__equal"),
                  helper.make_node("Or", [strict, equal], [out], name=node.name)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


class _Flatten(torch.nn.Module):
    """ONNX ``Flatten``: ``(prod(dims[:axis]), prod(dims[axis:]))`` for any axis in ``[-rank, rank]``.

    onnx2torch's ``OnnxFlatten`` (axis != 1) flattens twice and fails where an empty product makes a
    dimension 1 (axis 0 or rank), e.g. the (B, T) -> (B*T, 1) Flatten of transformers' attention-mask code;
    elsewhere both give the same tensor.
    """

    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        axis = self.axis if self.axis >= 0 else self.axis + x.ndim
        return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _fix_flatten(module) -> None:
    try:
        from onnx2torch.node_converters.flatten import OnnxFlatten
    except ImportError:  # pragma: no cover - a reorganised onnx2torch
        return
    for name, child in list(module.named_children()):
        if isinstance(child, OnnxFlatten):
            fixed = _Flatten(int(child.axis))
            fixed.onnx_mapping = getattr(child, "onnx_mapping", None)  # tensor names, for penultimate / output
            setattr(module, name, fixed)


def _convert(model, path: Path):
    try:
        from onnx2torch import convert
    except ImportError:
        raise SpecError("onnx: models need onnx2torch; pip install onnx2torch") from None
    _inline_constant_identities(model)
    _split_or_equal(model)
    try:
        module = convert(model, attach_onnx_mapping=True)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise WeightsError(f"onnx2torch cannot convert {path.name} ({type(exc).__name__}: {first}); re-export the "
                           "model with a standard opset (e.g. 17) or convert it to torch yourself") from None
    _fix_flatten(module)
    return module.eval()


def _data_input(model, path: Path):
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise SpecError(f"{path.name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); the onnx: source "
                        f"takes single-input image encoders and text encoders with inputs {', '.join(_TOKEN_INPUTS)} "
                        "(input_ids required)")
    inp = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise SpecError(f"input {inp.name!r} of {path.name} has {len(dims)} dimensions; the onnx: source takes image "
                        "encoders with a 4-D input (N, C, H, W) or (N, H, W, C)")
    return inp.name, dims


def _token_inputs(model, path: Path) -> list[tuple[str, torch.dtype]] | None:
    """``[(name, dtype)]`` of a text encoder's inputs, in graph order; None for a graph that is not one.

    A text encoder's (non-initializer) inputs are ``input_ids`` and optionally ``attention_mask`` and
    ``token_type_ids``, each a 2-D (batch, tokens) int64 or int32 tensor.
    """
    from onnx import TensorProto

    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    if "input_ids" not in names or not set(names) <= set(_TOKEN_INPUTS):
        return None
    dtypes = {TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32}
    out = []
    for inp in inputs:
        tensor = inp.type.tensor_type
        rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
        if tensor.elem_type not in dtypes or rank not in (None, 2):
            kind = TensorProto.DataType.Name(tensor.elem_type).lower()
            raise SpecError(f"input {inp.name!r} of {path.name} is a {rank}-D {kind} tensor; the onnx: source takes "
                            "text encoders whose token inputs are 2-D (batch, tokens) int64 or int32 tensors")
        out.append((inp.name, dtypes[tensor.elem_type]))
    return out


def _graph_layout(dims) -> tuple[bool | None, list[int] | None, int | None]:
    """(channels_last, [h, w], channels) that a 4-D input shape implies; None where it does not tell."""
    c1, c3 = dims[1], dims[3]
    if c1 in (1, 3) and c3 not in (1, 3):
        hw = dims[2:4]
        return False, (hw if None not in hw else None), c1
    if c3 in (1, 3) and c1 not in (1, 3):
        hw = dims[1:3]
        return True, (hw if None not in hw else None), c3
    return None, None, None


def _module_outputs(module) -> dict[str, str]:
    """ONNX tensor name -> name of the converted module that computes it."""
    out = {}
    for name, m in module.named_modules():
        mapping = getattr(m, "onnx_mapping", None)
        for tensor in getattr(mapping, "outputs", ()) or ():
            out.setdefault(tensor, name)
    return out


def _default_penultimate(model) -> str | None:
    """The data input of the last Gemm / MatMul whose other input is a weight (the classifier's features)."""
    inits = {t.name for t in model.graph.initializer}
    for node in reversed(model.graph.node):
        if node.op_type in ("Gemm", "MatMul") and len(node.input) >= 2:
            data = [i for i in node.input[:2] if i not in inits]
            if len(data) == 1:
                return data[0]
    return None


def _resolve_penultimate(module, model, requested: str | None, path: Path) -> str:
    names = {n for n, _ in module.named_modules() if n}
    tensors = _module_outputs(module)
    if requested is not None:
        if requested in names:
            return requested
        if requested in tensors:
            return tensors[requested]
        raise ConfigError(f"penultimate layer {requested!r} is neither a module nor a tensor of {path.name}"
                          f"{closest(requested, list(names) + list(tensors))}; run `critmass layers onnx:{path}`")
    tensor = _default_penultimate(model)
    if tensor in tensors:
        return tensors[tensor]
    out = model.graph.output[0].name
    if out in tensors:
        return tensors[out]
    raise ConfigError(f"cannot tell the penultimate layer of {path.name}; set 'penultimate' in {path.stem}.json "
                      f"(`critmass layers onnx:{path}` lists the names)")


# ---- text encoders ------------------------------------------------------------------------------------------

class OnnxTokenize:
    """A list of texts -> ``{token input: (B, T) tensor}``, the graph's inputs in graph order (picklable).

    ``attention_mask`` is always in the batch, even for a graph that does not take it: mean pooling weights
    the tokens with it, so padding never counts. ``max_length`` is the truncation (``--max-seq-length`` sets it).
    """

    def __init__(self, tokenizer, inputs: list[tuple[str, torch.dtype]], max_length: int):
        self.tokenizer, self.inputs, self.max_length = tokenizer, list(inputs), max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        names = [n for n, _ in self.inputs]
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", return_attention_mask=True,
                             return_token_type_ids="token_type_ids" in names)
        batch = {}
        for name, dtype in self.inputs:
            value = enc.get(name)
            if value is None:  # a tokenizer without segments: all tokens are segment 0
                value = torch.zeros_like(enc["input_ids"])
            batch[name] = value.to(dtype)
        batch.setdefault("attention_mask", enc["attention_mask"])
        return batch

    def __repr__(self):
        return f"OnnxTokenize({type(self.tokenizer).__name__}, inputs={[n for n, _ in self.inputs]}, " \
               f"max_length={self.max_length})"


# The files ``from_pretrained`` reads for a tokenizer (weights beside them are not hashed): an edited
# tokenizer is a new cache key.
_TOKENIZER_SUFFIXES = frozenset({".json", ".txt", ".model", ".vocab", ".tiktoken"})


def _load_tokenizer(tok: Path, where: str):
    try:
        import transformers
    except ImportError:
        raise SpecError("onnx: text encoders need transformers for their tokenizer; "
                        "pip install 'critmass[hf]'") from None
    if not tok.exists():
        raise ConfigError(f"tokenizer {str(tok)!r} does not exist; set 'tokenizer' to a Hugging Face tokenizer "
                          f"directory or a tokenizer.json file (relative to the .onnx file's directory); {_fix(where)}")
    try:
        if tok.is_dir():
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok), local_files_only=True)
        else:
            tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok))
    except Exception as exc:  # OSError, ValueError, JSON and tokenizers' own errors
        first = (str(exc).splitlines() or [""])[0][:160]
        raise ConfigError(f"cannot load tokenizer {str(tok)!r} ({type(exc).__name__}: {first}); set 'tokenizer' to a "
                          f"Hugging Face tokenizer directory or a tokenizer.json file; {_fix(where)}") from None
    if tokenizer.pad_token is None:  # a bare tokenizer.json names none; batches of unequal texts need one
        padding = getattr(getattr(tokenizer, "backend_tokenizer", None), "padding", None) or {}
        vocab = tokenizer.get_vocab()
        pad = padding.get("pad_token") or next((t for t in ("[PAD]", "<pad>") if t in vocab), None)
        if pad is None:
            raise ConfigError(f"tokenizer {str(tok)!r} has no padding token; use a tokenizer directory whose "
                              "tokenizer_config.json sets pad_token")
        tokenizer.pad_token = pad
    return tokenizer


def _output_rank(model, name: str) -> int | None:
    for value in model.graph.output:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return None


def _pool_tokens(out, mask, pooling: str, where: str) -> torch.Tensor:
    """(B, H) as is; (B, T, H) -> token 0 (cls) or the attention-mask-weighted mean over tokens (mean)."""
    if isinstance(out, torch.Tensor) and out.ndim == 2:
        return out
    if not isinstance(out, torch.Tensor) or out.ndim != 3:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PoolingError(f"{where} is {shape}, not (batch, tokens, hidden) or (batch, hidden); set 'output' "
                           "to another graph output")
    if pooling == "cls":
        return out[:, 0]
    weights = mask.to(device=out.device, dtype=out.dtype).unsqueeze(-1)
    return (out * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _load_text(name, path: Path, model, externals, tokens, *, sidecar, from_sidecar, options, image_size) -> Backbone:
    """The text-encoder half of :func:`load_onnx`: tokenizer and pooling from the sidecar / options."""
    input_names = [n for n, _ in tokens]
    what = f"{path.name} is a text encoder (inputs {', '.join(input_names)})"
    where_of = {"sidecar": str(sidecar), "options": "the options"}  # where a key that fails came from
    if image_size:
        raise ConfigError(f"--image-size applies to image encoders; {what}; drop it")
    cfg: dict = {"max_length": _DEFAULT_MAX_LENGTH}
    origin = {"max_length": "default"}
    for src, values in (("sidecar", from_sidecar), ("options", options)):
        for key, value in values.items():
            if key not in _TEXT_KEYS:
                raise ConfigError(f"preprocessing {key!r} (from {where_of[src]}) applies to image encoders; {what}; "
                                  f"remove it (text encoders take {', '.join(_TEXT_KEYS)})")
            cfg[key], origin[key] = value, src
    if "tokenizer" not in cfg:
        side = sidecar.name if sidecar is not None else f"{path.stem}.json"
        raise ConfigError(f"{what} but has no tokenizer; put `tokenizer: DIR` (a Hugging Face tokenizer directory or "
                          f"a tokenizer.json, relative to the .onnx file) in {side} beside it")
    tok = Path(cfg["tokenizer"]).expanduser()
    tok = tok if tok.is_absolute() else path.parent / tok
    tokenizer = _load_tokenizer(tok, where_of[origin["tokenizer"]])

    outputs = [o.name for o in model.graph.output]
    if "output" not in cfg:
        cfg["output"] = "sentence_embedding" if "sentence_embedding" in outputs else outputs[0]
        origin["output"] = "default"
    output = cfg["output"]
    if output not in outputs:
        raise ConfigError(f"output {output!r} is not an output of {path.name}{closest(output, outputs)}; its outputs: "
                          f"{', '.join(outputs)}; {_fix(where_of[origin['output']])}")
    rank = _output_rank(model, output)
    if rank not in (None, 2, 3):
        raise ConfigError(f"output {output!r} of {path.name} has {rank} dimensions; set 'output' to a (batch, tokens, "
                          f"hidden) or (batch, hidden) output ({', '.join(outputs)})")
    if rank == 2 and "text_pooling" in cfg:
        raise ConfigError(f"output {output!r} of {path.name} is already (batch, hidden), so text_pooling does not "
                          f"apply; remove it from {where_of[origin['text_pooling']]}")
    if "text_pooling" not in cfg:
        cfg["text_pooling"], origin["text_pooling"] = ("none" if rank == 2 else "mean"), "default"

    module = _convert(model, path)
    producer = _module_outputs(module).get(output)
    if producer is None:
        raise SpecError(f"output {output!r} of {path.name} is computed by no node (a graph input or constant); "
                        "set 'output' to another graph output")
    produced = list(dict(module.named_modules())[producer].onnx_mapping.outputs)
    index = produced.index(output) if len(produced) > 1 else None
    collate = OnnxTokenize(tokenizer, tokens, cfg["max_length"])
    pooling = cfg["text_pooling"]
    where = f"output {output!r} of onnx:{name}"

    def run(batch):
        return module(*(batch[n] for n in input_names))

    def penultimate(batch):
        out = capture(module, producer, run, batch, where=f"onnx:{name}")  # the forward stops there
        return _pool_tokens(out if index is None else out[index], batch["attention_mask"], pooling, where)

    record = {"tokenizer": str(tok), "tokenizer_digest": file_digest(tok, suffixes=_TOKENIZER_SUFFIXES),
              "tokenizer_class": type(tokenizer).__name__, "max_length": cfg["max_length"], "output": output,
              "text_pooling": pooling, "inputs": input_names, "input_dtypes": [str(d) for _, d in tokens],
              "sidecar": str(sidecar) if sidecar is not None else None, "origin": origin,
              "converter": versions(("onnx", "onnx2torch", "transformers", "tokenizers"), python=False)}
    return Backbone(spec=f"onnx:{name}", module=module, modality="text", run=run, penultimate=penultimate,
                    collate=collate, weights_id=_weights_id(path, externals), preprocessing=record,
                    token_pooling="mean")


def load_onnx(name, *, pretrained=True, weights=None, image_size=None, num_classes=None,
              preprocessing: dict | None = None) -> Backbone:
    """``onnx:FILE.onnx``: the ONNX graph converted to torch; preprocessing from the sidecar, ``preprocessing``
    (options, e.g. the CLI flags; they win over the sidecar) and ``image_size`` (wins over both)."""
    if not pretrained:
        raise WeightsError("onnx: models are their weights; drop --no-pretrained")
    if weights is not None:
        raise WeightsError("onnx: models carry their weights in the .onnx file; drop --weights")
    if num_classes is not None:
        raise SpecError("onnx: models keep their own head; drop --num-classes")
    path = Path(name).expanduser()
    options = check_preprocessing(preprocessing)
    sidecar = sidecar_path(path) if path.is_file() else None
    from_sidecar = read_sidecar(sidecar) if sidecar is not None else {}
    model, externals = _read_onnx(path)
    tokens = _token_inputs(model, path)
    if tokens is not None:
        return _load_text(name, path, model, externals, tokens, sidecar=sidecar, from_sidecar=from_sidecar,
                          options=options, image_size=image_size)
    input_name, dims = _data_input(model, path)
    for src, values in (("sidecar", from_sidecar), ("options", options)):
        if text_keys := [k for k in values if k in _TEXT_KEYS]:
            raise ConfigError(f"preprocessing {text_keys[0]!r} (from {sidecar if src == 'sidecar' else 'the options'}) "
                              f"applies to text encoders; {path.name} is an image encoder (input {input_name!r}); "
                              "remove it")
    g_last, g_size, g_channels = _graph_layout(dims)

    cfg: dict = {"resize_mode": "squash", "interpolation": "bilinear", "scale": 1, "bgr": False,
                 "jpeg_reencode": False, "channels_last": False}
    origin = dict.fromkeys(cfg, "default")
    for src, values in (("graph", {"channels_last": g_last, "size": g_size}), ("sidecar", from_sidecar),
                        ("options", options), ("image_size", {"size": _int_pair(image_size, "image_size", "options")}
                                               if image_size else {})):
        for key, value in values.items():
            if value is not None:
                cfg[key], origin[key] = value, src
    if image_size:  # an explicit size means: feed the whole (resized) image, as for timm models
        cfg["resize"], origin["resize"] = cfg["size"], "image_size"
    where = str(sidecar) if sidecar is not None else "the options"
    if "size" not in cfg:
        raise ConfigError(f"input {input_name!r} of {path.name} has no fixed size; set 'size' in {path.stem}.json or "
                          "pass --image-size")
    if g_last is not None and cfg["channels_last"] != g_last:
        layout = "NHWC" if g_last else "NCHW"
        raise ConfigError(f"input {input_name!r} of {path.name} has shape {dims} ({layout}) but channels_last is "
                          f"{str(cfg['channels_last']).lower()} (from {origin['channels_last']}); fix {where}")
    channels = g_channels or 3
    cfg.setdefault("resize", cfg["size"])
    origin.setdefault("resize", origin.get("size", "default"))
    if cfg["resize_mode"] == "squash" and any(r < s for r, s in zip(cfg["resize"], cfg["size"])):
        raise ConfigError(f"preprocessing resize {cfg['resize']} is smaller than size {cfg['size']}; fix {where}")
    if cfg["resize_mode"] == "shorter" and min(cfg["resize"]) < max(cfg["size"]):
        raise ConfigError(f"preprocessing resize {cfg['resize']} (shorter side) is smaller than size {cfg['size']}; "
                          f"fix {where}")
    unit = 255.0 if cfg["scale"] == 255 else 1.0
    for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        if key not in cfg:
            values = [v * unit for v in default] if channels == 3 else [sum(default) / 3 * unit]
            cfg[key], origin[key] = values, "default"
        values = cfg[key] * channels if len(cfg[key]) == 1 else cfg[key]
        if len(values) != channels:
            raise ConfigError(f"preprocessing {key!r} has {len(cfg[key])} values but {path.name} takes {channels} "
                              f"channels; fix {where}")
        cfg[key] = [float(v) for v in values]
    if origin["mean"] == "default" or origin["std"] == "default":
        log.warning("%s has no preprocessing sidecar (%s.json) and no options: assuming %s", path.name, path.stem,
                    {k: cfg[k] for k in ("scale", "mean", "std", "bgr")})

    module = _convert(model, path)
    penultimate_layer = _resolve_penultimate(module, model, cfg.get("penultimate"), path)
    transform = OnnxImageTransform(size=cfg["size"], resize=cfg["resize"], resize_mode=cfg["resize_mode"],
                                   interpolation=cfg["interpolation"], scale=cfg["scale"], mean=cfg["mean"],
                                   std=cfg["std"], bgr=cfg["bgr"], channels_last=cfg["channels_last"],
                                   channels=channels, jpeg_reencode=cfg["jpeg_reencode"])
    record = {k: cfg[k] for k in ("size", "resize", "resize_mode", "interpolation", "scale", "mean", "std", "bgr",
                                  "channels_last", "jpeg_reencode")}
    record.update(penultimate=penultimate_layer, channels=channels, input=input_name, input_shape=dims,
                  sidecar=str(sidecar) if sidecar is not None else None, origin=origin,
                  converter=versions(("onnx", "onnx2torch"), python=False))

    def penultimate(x):
        return capture(module, penultimate_layer, module, x, where=f"onnx:{name}")

    return Backbone(spec=f"onnx:{name}", module=module, modality="image", run=module, penultimate=penultimate,
                    collate=_stack, preprocess=transform, weights_id=_weights_id(path, externals),
                    preprocessing=record, token_pooling="mean")
