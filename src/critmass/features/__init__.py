"""Feature extraction and the on-disk feature cache."""

from ._store import (FeatureSet, FeatureSplit, default_cache_dir, entry_glob, load_features, sample_ids,
                     save_arrays_as_entry)

__all__ = ["FeatureSet", "FeatureSplit", "load_features", "sample_ids", "save_arrays_as_entry", "default_cache_dir",
           "entry_glob", "extract", "extract_layers", "DEFAULT_MAX_WIDTH"]

# Extraction loads lazily: it pulls in the models and data stages, and torch when it runs.
_LAZY = {"extract": "._extract", "extract_layers": "._layers", "DEFAULT_MAX_WIDTH": "._layers"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
