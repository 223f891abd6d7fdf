"""Linear CKA (biased and debiased) between representations and between neuron subsets and a layer.

The fast path: :func:`gram_stats` streams the samples once into the layer's centred ``D x D`` Gram
matrix (plus a fourth-moment matrix for the debiased estimator); :func:`subset_cka` and
:func:`projection_cka` then give CKA of any column subset or linear reduction against the full
layer without touching the samples again. :func:`cka_curve` does a whole selector x fraction x
seed sweep into a tidy table, over the probes' own subsets (:func:`critmass.subsets.plan_subsets`);
:func:`cka` and :func:`cka_between` compare two representations; :func:`cka_matrix` compares several
(every layer of a model) in one pass and hands each one's Gram statistics to :func:`cka_curve`.

Modules: ``_estimators`` (the estimators), ``_gram`` (the streamed Gram statistics), ``_sets``
(feature-set input, same-sample checks), ``_curve`` (the curve table), ``_matrix`` (several at once).
"""

from .._defaults import DEFAULT_FRACTIONS
from ._curve import CKA_COLUMNS, cka_curve
from ._estimators import cka, projection_cka, subset_cka
from ._gram import GramAccumulator, GramStats, gram_stats
from ._matrix import CKAMatrix, cka_matrix
from ._sets import cka_between

__all__ = [
    "CKAMatrix",
    "CKA_COLUMNS",
    "DEFAULT_FRACTIONS",
    "GramAccumulator",
    "GramStats",
    "cka",
    "cka_between",
    "cka_curve",
    "cka_matrix",
    "gram_stats",
    "projection_cka",
    "subset_cka",
]
