"""Neuron subsets: random, PCA, random projections, prefixes, activation norm, the neuron rankings (variance,
correlation clusters, and the supervised fscore, probe-weight, greedy and attribution), and the one planner
(:func:`plan_subsets`) that fits them for the probes and for CKA alike."""

from ._ranked import (
    AttributionSubset,
    ClusterSubset,
    FScoreSubset,
    GreedySubset,
    ProbeWeightSubset,
    RankedSubset,
    VarianceSubset,
    label_stats,
)
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
    supervised_selectors,
)

__all__ = [
    "AttributionSubset",
    "ClusterSubset",
    "FScoreSubset",
    "GreedySubset",
    "ProbeWeightSubset",
    "RankedSubset",
    "VarianceSubset",
    "label_stats",
    "supervised_selectors",
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
