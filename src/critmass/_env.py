"""Versions and environment facts recorded with every manifest and result."""

from __future__ import annotations

import importlib.metadata as md
import platform

__all__ = ["versions"]

_PACKAGES = ("critmass", "torch", "torchvision", "timm", "transformers", "sentence-transformers", "numpy",
             "scipy", "scikit-learn", "pandas")


def versions(packages=_PACKAGES, *, python: bool = True) -> dict[str, str]:
    """Installed versions of the packages that can change numbers (missing ones are omitted), after Python's
    own unless ``python=False``."""
    out = {"python": platform.python_version()} if python else {}
    for name in packages:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
