"""Central input checks. Each raises a one-line :class:`~critmass.exceptions.CritmassError`."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from .exceptions import ConfigError, FeatureError

__all__ = [
    "check_random_state",
    "check_features",
    "check_labels",
    "check_fraction",
    "check_positive_int",
    "closest",
    "resolve_sizes",
]


def check_random_state(seed) -> np.random.Generator:
    """Map ``None`` / int / Generator to a ``numpy.random.Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, numbers.Integral):
        return np.random.default_rng(None if seed is None else int(seed))
    raise ConfigError(f"seed must be an int, None or numpy Generator; got {seed!r}")


def closest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' (closest: a, b)' hint for error messages, or '' when nothing is close."""
    matches = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=0.5)
    return f" (closest: {', '.join(matches)})" if matches else ""


def check_features(x, *, name: str = "features", allow_mmap: bool = True) -> np.ndarray:
    """Return ``x`` as a 2-D float array, refusing NaN/inf and empty input."""
    arr = x if (allow_mmap and isinstance(x, np.memmap)) else np.asarray(x)
    if arr.ndim != 2:
        raise FeatureError(
            f"{name} must be a 2-D array (n_samples, n_neurons); got shape {arr.shape}; Reshape your data: "
            "x.reshape(-1, 1) for one neuron, x.reshape(1, -1) for one sample"
        )
    # The wording of scikit-learn's own messages, so that its estimator checks recognise these refusals.
    if arr.shape[1] == 0:
        raise FeatureError(f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required; "
                           "pass at least one neuron")
    if arr.shape[0] == 0:
        raise FeatureError(f"{name} has 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required; "
                           "pass at least one sample")
    if np.iscomplexobj(arr):
        raise FeatureError(f"{name}: Complex data not supported; pass real-valued features (e.g. x.real or abs(x))")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    # Chunked so memory-mapped matrices larger than RAM are checked without loading them whole.
    step = max(1, 2**24 // max(1, arr.shape[1]))
    for start in range(0, arr.shape[0], step):
        block = np.asarray(arr[start : start + step])
        if not np.isfinite(block).all():
            bad = int(start + np.nonzero(~np.isfinite(block).all(axis=1))[0][0])
            raise FeatureError(
                f"{name} contain NaN or inf (first at row {bad}); re-extract them or check the model "
                "(e.g. fp16 overflow: use --dtype float32)"
            )
    return arr


def check_labels(y, n_samples: int | None = None, *, name: str = "labels") -> np.ndarray:
    """Return ``y`` as a 1-D int64 array of length ``n_samples``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise FeatureError(f"{name} must be 1-D; got shape {arr.shape}")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise FeatureError(
            f"{name} has {arr.shape[0]} entries but the features have {n_samples} rows; pass matching arrays"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise FeatureError(f"{name} must be integer class ids; got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_fraction(frac, *, name: str = "fraction") -> float:
    """A fraction of neurons must lie in (0, 1]."""
    try:
        value = float(frac)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in (0, 1]; got {frac!r}") from None
    if not (0.0 < value <= 1.0) or not np.isfinite(value):
        raise ConfigError(f"{name} must be in (0, 1]; got {frac!r}; use e.g. 0.1 for 10% of the neurons")
    return value


def check_positive_int(value, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def resolve_sizes(sizes: Sequence, n_features: int) -> list[int]:
    """Map fractions in (0, 1] (floats) or absolute counts (ints >= 1) to neuron counts.

    A float ``f`` gives ``k = max(1, round(f * D))``; an int is taken as a count and must be <= D.
    """
    out = []
    for s in sizes:
        if isinstance(s, numbers.Integral) and not isinstance(s, bool):
            k = int(s)
            if not 1 <= k <= n_features:
                raise ConfigError(
                    f"subset size {k} is outside [1, {n_features}] for a layer of {n_features} neurons; "
                    "pass a smaller count or a fraction in (0, 1]"
                )
        else:
            f = check_fraction(s)
            k = max(1, int(round(f * n_features)))
        out.append(k)
    return out
