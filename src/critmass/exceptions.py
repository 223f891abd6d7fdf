"""Exceptions raised by critmass.

Every error a user can cause is a :class:`CritmassError` whose message is a single line naming
what was expected, what was got and how to fix it. The CLI prints that line and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "CritmassError",
    "SpecError",
    "LayerNotFoundError",
    "PoolingError",
    "WeightsError",
    "DataError",
    "CacheError",
    "FeatureError",
    "NotFittedError",
    "ConfigError",
]


class CritmassError(ValueError):
    """Base class of every user-facing critmass error (a ``ValueError``)."""

    def __init__(self, message: str):
        # One line, always: the CLI prints str(err) as is.
        super().__init__(" ".join(str(message).split()))


class SpecError(CritmassError):
    """A model or dataset spec (``source:name``) is malformed or unknown."""


class LayerNotFoundError(CritmassError):
    """A requested layer is not a module of the model."""


class PoolingError(CritmassError):
    """A layer's output cannot be pooled into a (n_samples, n_features) matrix."""


class WeightsError(CritmassError):
    """Pretrained or local weights cannot be had or do not fit the architecture."""


class DataError(CritmassError):
    """A dataset cannot be read: missing root, bad split, malformed file."""


class CacheError(CritmassError):
    """A feature cache entry is missing, incomplete or corrupt."""


class FeatureError(CritmassError):
    """Feature matrices are malformed: NaN/inf, wrong shape, mismatched splits."""


class NotFittedError(CritmassError):
    """An estimator was used before ``fit``."""


class ConfigError(CritmassError):
    """A sweep config or option value is invalid."""
