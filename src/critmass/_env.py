"""Versions and environment facts recorded with every manifest and result."""

from __future__ import annotations

import importlib.metadata as md
import platform

__all__ = ["versions"]

_PACKAGES = ("critmass", "torch", "torchvision", "timm", "transformers", "sentence-transformers", "numpy",
             "scipy", "scikit-learn", "pandas")


def versions(packages=_PACKAGES, *, python: bool = True, blas: bool | None = None) -> dict[str, str]:
    """Installed versions of the packages that can change numbers (missing ones are omitted), after Python's
    own unless ``python=False``; then, with ``blas`` (default: when ``packages`` is the default list), the
    BLAS backends of the CPU probe path and of the float64 Gram builds under ``"blas"`` (``'torch (mkl); gram
    numpy (openblas 0.3.30)'``, :mod:`critmass._blas`: resolving them may take a short measurement once per
    machine)."""
    out = {"python": platform.python_version()} if python else {}
    for name in packages:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    if blas if blas is not None else packages is _PACKAGES:
        from . import _blas

        out["blas"] = _blas.summary()
    return out
