"""Deprecated location of :func:`critmass.profile.profile` and :func:`critmass.features.extract_layers`.

Kept so ``from critmass.features._profile import profile, extract_layers`` still works; each name warns
(DeprecationWarning) and is served from its new home. ``critmass.features`` does not depend on
:mod:`critmass.profile`: the profile stage sits above it, so it is imported by name, only when asked for.
"""

from __future__ import annotations

import importlib
import warnings

_MOVED = {
    "extract_layers": "critmass.features",
    "DEFAULT_MAX_WIDTH": "critmass.features",
    "profile": "critmass.profile",
    "Profile": "critmass.profile",
    "read_profile": "critmass.profile",
    "PROFILE_COLUMNS": "critmass.profile",
    "LAYER_CKA_COLUMNS": "critmass.profile",
}

__all__ = list(_MOVED)


def __getattr__(name):
    if name in _MOVED:
        home = _MOVED[name]
        warnings.warn(f"critmass.features._profile.{name} moved; import it from {home} instead",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
