"""Neuron subsets: random, PCA, random projections, prefixes, activation norm."""

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
    "GaussianProjection",
    "NormSubset",
    "PCASubset",
    "PrefixSubset",
    "RandomSubset",
    "UniformProjection",
    "covariance",
    "list_selectors",
    "make_selector",
]
