"""Neuron subsets: random, PCA, random projections, prefixes, activation norm, and the one planner
(:func:`plan_subsets`) that fits them for the probes and for CKA alike."""

from ._plan import FittedSubset, fit_selector, plan_subsets, probe_fit_rows, size_fractions
from ._selectors import (
    AllNeurons,
    BaseSelector,
    GaussianProjection,
    NormSubset,
    PCASubset,
    PrefixSubset,
    RandomSubset,
    UniformProjection,
    covariance,
    list_selectors,
    make_selector,
)

__all__ = [
    "AllNeurons",
    "BaseSelector",
    "FittedSubset",
    "GaussianProjection",
    "NormSubset",
    "PCASubset",
    "PrefixSubset",
    "RandomSubset",
    "UniformProjection",
    "covariance",
    "fit_selector",
    "list_selectors",
    "make_selector",
    "plan_subsets",
    "probe_fit_rows",
    "size_fractions",
]
