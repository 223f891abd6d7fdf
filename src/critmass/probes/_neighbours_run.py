"""The kNN and retrieval solvers of :func:`critmass.probes.run_probes`: the same planned subsets and the same
table rows as the linear probes, with the neighbour settings in named columns.

``test_accuracy`` is the kNN accuracy (``knn``) or recall@1 (``retrieval``), so ``critmass dr``, reports
and sweeps read them unchanged. ``reg`` / ``reg_applied`` hold the chosen k of a kNN probe (NaN for
retrieval), ``train_accuracy`` is NaN (a neighbour probe has no training fit to score), ``n_iter`` 0 and
there are no weight files (nothing is learned but k).
"""

from __future__ import annotations

import json

import numpy as np

from ..exceptions import ConfigError

__all__ = ["NEIGHBOUR_SOLVERS", "NEIGHBOUR_COLUMNS", "neighbour_rows", "check_neighbour_options"]

NEIGHBOUR_SOLVERS = ("knn", "retrieval")
#: Result columns of the neighbour solvers (NaN / None in the rows of the linear solvers).
NEIGHBOUR_COLUMNS = ["knn_k", "knn_metric", "knn_vote", "normalization", "recall_at_1", "recall_at_5", "recall_at_10",
                     "map"]
_RECALL_KS = (1, 5, 10)


def _estimator(solver: str, opts: dict):
    from ._knn import KNNProbe
    from ._retrieval import RetrievalProbe

    cls = KNNProbe if solver == "knn" else RetrievalProbe
    opts = dict(opts)
    if "alphas" in opts:
        raise ConfigError(f"alphas is the penalty grid of the linear solvers; solver {solver!r} has none "
                          f"({'its k grid is solver_options ks / --k' if solver == 'knn' else 'drop --alphas'})")
    if solver == "retrieval" and "ks" in opts:
        raise ConfigError("the retrieval table reports recall_at_1, recall_at_5 and recall_at_10; drop the ks option "
                          "(use RetrievalProbe(ks=...).evaluate_subsets for other cutoffs)")
    valid = [p for p in cls().get_params() if p not in ("subsets", "refit", "random_state", "val_fraction")]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for solver {solver!r}; valid: "
                          f"{', '.join(valid)}")
    if solver == "retrieval":
        opts["ks"] = _RECALL_KS
    return cls, opts


def check_neighbour_options(solver: str, opts: dict, penalty_rule: str) -> None:
    """Refuse options the solver does not take, and invalid values, before any work."""
    if penalty_rule != "per-probe":
        raise ConfigError(f"penalty_rule={penalty_rule!r} applies to the linear solvers; solver {solver!r} scores its "
                          "whole k grid in one search: drop --penalty-rule")
    cls, opts = _estimator(solver, opts)
    cls(**opts)._settings()


def neighbour_rows(jobs, *, solver: str, opts: dict, y_fit, y_val, y_test, key: dict, common: dict, class_names,
                   penalty_rule: str, refit: bool, progress=None) -> tuple[list, list]:
    """Result rows and per-class rows of every planned subset (see the module docstring).

    ``key`` holds the group keys of every row (model, weights, dataset, layer, pooling, solver); ``common``
    the columns every row shares (n_features, config, versions).
    """
    from ._knn import faiss_version
    from ._run import _class_name

    check_neighbour_options(solver, opts, penalty_rule)
    cls, est_opts = _estimator(solver, opts)
    settings = cls(**est_opts)._settings()
    config = json.loads(common["config"])
    config["neighbours"] = {**{k: v for k, v in cls(**est_opts).get_params().items() 
                               if k not in ("subsets", "device", "refit", "random_state", "val_fraction")},
                            **{k: settings[k] for k in ("metrics", "votes", "normalizations", "index", "backend")}}
    if solver == "retrieval":
        config["neighbours"].pop("votes")
    config_json = json.dumps(config, sort_keys=True, default=str)
    vers = json.loads(common["versions"])
    if faiss_version() is not None:
        vers["faiss"] = faiss_version()
    versions_json = json.dumps(vers, sort_keys=True)
    rows, per_class = [], []
    for job in jobs:
        # val_fraction=0: run_probes has made the validation split already (x_val None: there is none)
        est = cls(**est_opts, subsets=job.subsets, refit=bool(refit), random_state=job.random_state, val_fraction=0.0)
        x_fit, x_val, x_test = job.arrays()
        if solver == "knn":
            out = est._fit(x_fit, y_fit, X_val=x_val, y_val=y_val, X_test=x_test, progress=progress)
        else:
            out = est._fit(x_fit, y_fit, X_val=x_val, y_val=y_val, X_test=x_test, y_test=y_test, progress=progress)
        del x_fit, x_val, x_test
        pos = np.searchsorted(est.classes_, y_test)
        for i, (sel, seed, k, frs) in enumerate(job.meta):
            if solver == "knn":
                correct = out[i] == y_test
                extra = {"knn_k": int(est.k_[i]), "knn_metric": est.metric_[i], "knn_vote": est.votes_[i],
                         "normalization": est.normalizations_[i], "recall_at_1": np.nan, "recall_at_5": np.nan,
                         "recall_at_10": np.nan, "map": np.nan}
                reg = float(est.k_[i])
                margin = float(est.choice_margins_[i])
            else:
                hits, ap = out[i]
                correct = hits[:, 0]
                extra = {"knn_k": np.nan, "knn_metric": est.metric_[i], "knn_vote": None,
                         "normalization": est.normalizations_[i],
                         **{f"recall_at_{c}": float(hits[:, j].mean()) for j, c in enumerate(_RECALL_KS)},
                         "map": float(ap.mean())}
                reg, margin = np.nan, np.nan  # retrieval chooses nothing
            recalls, supports = [], []
            for c in range(len(est.classes_)):
                in_c = pos == c
                supports.append(int(in_c.sum()))
                recalls.append(float(correct[in_c].mean()) if in_c.any() else float("nan"))
            for f in frs:
                k_row = {**key, "selector": sel, "fraction": float(f), "n_neurons": int(k), "seed": int(seed)}
                rows.append({
                    **k_row, "n_features": common["n_features"], "reg": reg, "reg_applied": reg,
                    "penalty_rule": penalty_rule, "choice_margin": margin, "train_accuracy": np.nan,
                    "val_accuracy": float(est.scores_[i]),
                    "test_accuracy": float(np.mean(correct)), "mean_per_class_recall": float(np.nanmean(recalls)),
                    "n_train": int(est.n_train_), "n_val": int(est.n_val_), "n_test": int(len(y_test)),
                    "n_classes": int(len(est.classes_)), "n_iter": 0, "refit": bool(refit), "weights_file": None,
                    "config": config_json, "versions": versions_json, **extra,
                })
                per_class += [{**k_row, "class": int(c), "class_name": _class_name(class_names, c), "accuracy": r,
                               "support": s} for c, r, s in zip(est.classes_, recalls, supports)]
    return rows, per_class
