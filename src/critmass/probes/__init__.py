"""Probes on (subsets of) cached features: scikit-learn classifiers over column subsets, and the runner.

* :class:`LogisticProbe` (default): multinomial L2 logistic regression, batched preconditioned L-BFGS.
* :class:`RidgeProbe`: closed-form ridge classifier from one Gram matrix.
* :class:`SGDProbe`: the paper's SGD protocol (best-validation checkpoint), optionally on augmented views.
* :class:`KNNProbe`: k-nearest-neighbour accuracy (FAISS search; k and metric chosen on validation).
* :class:`RetrievalProbe`: recall@k and mAP of same-label gallery rows.
* :func:`run_probes`: every selector x seed x fraction of one feature set, as tidy tables.
* :data:`SOLVERS`, :func:`register_solver`, :func:`solver_spec`, :func:`list_solvers`: the solver registry.

The registry is importable without torch (config validation lists solver names); everything else is
imported on first access.
"""

from importlib import import_module

from ._solvers import (FAMILIES, RUN_PARAMS, SOLVERS, SolverSpec, ensure_solver, list_solvers, register_solver,
                       solver_registration, solver_spec)

_LAZY = {
    "BaseProbe": "._base",
    "ConstantSubsetWarning": "._base",
    "KNNProbe": "._knn",
    "DEFAULT_KNN_KS": "._knn",
    "LogisticProbe": "._logistic",
    "DEFAULT_LOGISTIC_ALPHAS": "._logistic",
    "C_from_alpha": "._logistic",
    "alpha_from_C": "._logistic",
    "RidgeProbe": "._ridge",
    "DEFAULT_RIDGE_ALPHAS": "._ridge",
    "SGDProbe": "._sgd",
    "RetrievalProbe": "._retrieval",
    "run_probes": "._run",
    "ProbeRequest": "._run",
    "ProbeResults": "._run",
    "PENALTY_RULES": "._run",
    "DEFAULT_FRACTIONS": "._rows",
    "RESULT_COLUMNS": "._rows",
    "PER_CLASS_COLUMNS": "._rows",
    "NEIGHBOUR_COLUMNS": "._rows",
    "AGREEMENT_COLUMNS": "._rows",
    "rank_agreement": "._retrieval",
    "torch_threads": "._run",
}

__all__ = [
    "LogisticProbe",
    "RidgeProbe",
    "SGDProbe",
    "KNNProbe",
    "RetrievalProbe",
    "BaseProbe",
    "ConstantSubsetWarning",
    "run_probes",
    "ProbeRequest",
    "ProbeResults",
    "torch_threads",
    "SOLVERS",
    "FAMILIES",
    "RUN_PARAMS",
    "SolverSpec",
    "register_solver",
    "solver_spec",
    "list_solvers",
    "solver_registration",
    "ensure_solver",
    "PENALTY_RULES",
    "DEFAULT_FRACTIONS",
    "RESULT_COLUMNS",
    "PER_CLASS_COLUMNS",
    "NEIGHBOUR_COLUMNS",
    "AGREEMENT_COLUMNS",
    "rank_agreement",
    "DEFAULT_LOGISTIC_ALPHAS",
    "DEFAULT_RIDGE_ALPHAS",
    "DEFAULT_KNN_KS",
    "alpha_from_C",
    "C_from_alpha",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'critmass.probes' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
