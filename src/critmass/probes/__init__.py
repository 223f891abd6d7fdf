"""Linear probes on (subsets of) cached features.

* :class:`LogisticProbe` (default): multinomial L2 logistic regression, batched preconditioned L-BFGS.
* :class:`RidgeProbe`: closed-form ridge classifier from one Gram matrix.
* :class:`SGDProbe`: the paper's SGD protocol (best-validation checkpoint), optionally on augmented views.
* :class:`KNNProbe`: k-nearest-neighbour accuracy (FAISS search; k and metric chosen on validation).
* :class:`RetrievalProbe`: recall@k and mAP of same-label gallery rows.
* :func:`run_probes`: every selector x seed x fraction of one feature set, as tidy tables.
"""

from ._knn import DEFAULT_KNN_KS, KNNProbe
from ._logistic import DEFAULT_LOGISTIC_ALPHAS, C_from_alpha, LogisticProbe, alpha_from_C
from ._ridge import DEFAULT_RIDGE_ALPHAS, RidgeProbe
from ._run import DEFAULT_FRACTIONS, PER_CLASS_COLUMNS, RESULT_COLUMNS, SOLVERS, ProbeResults, run_probes
from ._retrieval import RetrievalProbe
from ._sgd import SGDProbe

__all__ = [
    "LogisticProbe",
    "RidgeProbe",
    "SGDProbe",
    "KNNProbe",
    "RetrievalProbe",
    "run_probes",
    "ProbeResults",
    "SOLVERS",
    "DEFAULT_FRACTIONS",
    "RESULT_COLUMNS",
    "PER_CLASS_COLUMNS",
    "DEFAULT_LOGISTIC_ALPHAS",
    "DEFAULT_RIDGE_ALPHAS",
    "DEFAULT_KNN_KS",
    "alpha_from_C",
    "C_from_alpha",
]
