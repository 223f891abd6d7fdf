"""Neuron masks from critmass's own selectors (one definition of subsets).

``k = max(1, round(f D))`` (critmass's rule, :func:`critmass._validation.resolve_sizes`); the paper's code takes
``int(f D)`` (truncation), so the two differ by one neuron where ``f D`` has a fractional part >= 0.5, and the
paper's mask is empty where ``f D < 1``. ``random`` is the prefix of critmass's seeded permutation
(``RandomSubset``: NumPy's ``RandomState(seed).permutation(D)``), not the paper's ``torch.randperm``: the same
distribution, other draws. ``norm-min`` / ``norm-max`` are the paper's: the L2 norm over the batch of the
representation being optimised, taken at the first step (the noise seeds) and kept for the run.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_fraction, resolve_sizes
from ..exceptions import ConfigError
from ..subsets import list_selectors, make_selector, supervised_selectors

__all__ = ["NOISE_SELECTORS", "check_selector", "subset_size", "select_neurons"]

#: Selectors fitted on the noise seeds' representations at the first step (the paper's ``min`` / ``max``).
NOISE_SELECTORS = ("norm-min", "norm-max")


def check_selector(name: str) -> str:
    """A column selector critmass knows, unsupervised; one-line errors for projections and supervised rankings."""
    names = list_selectors()
    if name not in names:
        make_selector(name)  # the registry's own one-line error, with the closest name
    sel = make_selector(name)
    if sel.is_projection:
        raise ConfigError(f"selector {name!r} is a projection, not a subset of neurons, so it has no neuron mask to "
                          "invert; use random, norm-min, norm-max or another column selector")
    if name in supervised_selectors():
        raise ConfigError(f"selector {name!r} needs class labels, which partial inversion does not take; use random, "
                          "norm-min, norm-max, variance, cluster or prefix")
    return name


def subset_size(fraction, n_neurons: int) -> int:
    """critmass's k rule: ``max(1, round(f D))`` for ``f`` in (0, 1]."""
    return resolve_sizes([check_fraction(fraction)], n_neurons)[0]


def select_neurons(selector: str, fraction: float, *, targets: np.ndarray, seeds: np.ndarray,
                   random_state: int = 0) -> np.ndarray:
    """Indices (int64, in the selector's order) of the ``k`` neurons the mask keeps.

    Parameters
    ----------
    targets : (n_targets, D) representations of the targets (what column selectors are fitted on).
    seeds : (n_targets, D) representations of the noise seeds at the first step (``norm-min`` / ``norm-max``).
    random_state : the seed of ``random`` (and of any other stochastic selector).
    """
    check_selector(selector)
    X = seeds if selector in NOISE_SELECTORS else targets
    X = np.asarray(X, dtype=np.float32)
    k = subset_size(fraction, X.shape[1])
    return make_selector(selector, random_state=random_state).fit(X).order_[:k].astype(np.int64)
