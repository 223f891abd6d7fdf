"""critmass: how many of a pre-trained layer's neurons does a downstream task need, and which ones?

The pipeline, one subpackage per stage: ``models`` -> ``data`` -> ``features`` (extract once, cache on
disk) -> ``subsets`` -> ``probes`` / ``similarity`` -> ``metrics`` -> ``profile`` -> ``sweep`` -> ``report``
(``tests/test_layering.py`` holds the order: a stage imports only the stages before it).
``import critmass`` is cheap: the verbs below load their stage on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_VERBS = {
    "load_model": "critmass.models",
    "list_layers": "critmass.models",
    "load_dataset": "critmass.data",
    "extract": "critmass.features",
    "load_features": "critmass.features",
    "make_selector": "critmass.subsets",
    "run_probes": "critmass.probes",
    "LogisticProbe": "critmass.probes",
    "RidgeProbe": "critmass.probes",
    "SGDProbe": "critmass.probes",
    "cka": "critmass.similarity",
    "dr": "critmass.metrics",
    "run_sweep": "critmass.sweep",
    "build_report": "critmass.report",
}

_STAGES = ("models", "data", "features", "subsets", "probes", "similarity", "metrics", "profile", "sweep", "report")

__all__ = sorted(_VERBS) + list(_STAGES) + ["__version__"]


def __getattr__(name):
    if name in _VERBS:
        return getattr(importlib.import_module(_VERBS[name]), name)
    if name in _STAGES:
        return importlib.import_module(f"critmass.{name}")
    raise AttributeError(f"module 'critmass' has no attribute {name!r}")


def __dir__():
    return __all__
