"""Spend the redundancy: export one probe as a small (optionally pruned) deployable model, compress stored
embeddings to k neurons, and measure what it saves.

``export_run(RUN_DIR, selector=..., fraction=..., out=DIR)`` writes the backbone (or only the reduction with
``head_only``), the index select / projection and the probe head as safetensors + config JSON, ONNX and
TorchScript; ``load_exported(DIR)`` rebuilds it. ``compress`` / ``apply_reducer`` reduce embeddings with the
selectors of :mod:`critmass.subsets`. Both write ``savings.json``.
"""

from ._compress import CompressResult, Reducer, apply_reducer, compress, load_reducer
from ._export import ExportResult, export_run, load_exported
from ._modules import ExportedModel, ReductionHead
from ._runs import RunProbe, read_probe
from ._savings import format_savings

__all__ = ["export_run", "load_exported", "ExportResult", "ExportedModel", "ReductionHead", "compress",
           "apply_reducer", "load_reducer", "Reducer", "CompressResult", "read_probe", "RunProbe", "format_savings"]
