"""The result tables of :func:`~critmass.probes.run_probes`: their columns and the one row builder of every solver.

A fitted estimator describes its subset ``i`` through ``_row_values(i)`` (the columns that depend on the
solver: the chosen penalty or k, validation and train accuracy, iterations, the neighbour settings); the
builder adds the keys, the test accuracy and mean per-class recall from the test predictions, and the
columns every row of the run shares.
"""

from __future__ import annotations

import json

import numpy as np

from .._defaults import DEFAULT_FRACTIONS

__all__ = ["DEFAULT_FRACTIONS", "KEYS", "RESULT_COLUMNS", "PER_CLASS_COLUMNS", "NEIGHBOUR_COLUMNS", "AGREEMENT_COLUMNS",
           "result_rows",
           "class_name"]

# weights (the backbone's weights id: file hash, checkpoint or hub revision) and pooling tell two
# checkpoints, or two poolings, of one architecture and layer apart.
# codec: how a neighbour solver stored the gallery vectors (critmass.codecs); float32 for every linear solver.
KEYS = ["model", "weights", "dataset", "layer", "pooling", "selector", "fraction", "n_neurons", "seed", "solver",
        "codec"]
#: Rank agreement with the full layer's float32 vectors (retrieval): means over the test queries, standard errors.
AGREEMENT_COLUMNS = ["overlap_at_10", "overlap_at_10_se", "spearman_top100", "spearman_top100_se"]
#: Columns of the neighbour solvers (kNN / retrieval); NaN / None in the rows of the linear solvers.
NEIGHBOUR_COLUMNS = ["knn_k", "knn_metric", "knn_vote", "normalization", "recall_at_1", "recall_at_5", "recall_at_10",
                     "map", *AGREEMENT_COLUMNS]
RESULT_COLUMNS = KEYS + [
    "n_features", "bytes_per_vector", "reg", "reg_applied", "penalty_rule", "choice_margin", "train_accuracy", "val_accuracy",
    "test_accuracy", "mean_per_class_recall",
    "n_train", "n_val", "n_test", "n_classes", "n_iter", "refit", "weights_file", "config", "versions",
] + NEIGHBOUR_COLUMNS
PER_CLASS_COLUMNS = KEYS + ["class", "class_name", "accuracy", "support"]

# NaN (float) in the rows of solvers that leave them out, as before the row builder was shared: parquet keeps the
# columns' types
_EMPTY_NEIGHBOUR = {name: np.nan for name in NEIGHBOUR_COLUMNS}


def class_name(names, c) -> str:
    """The dataset's own name of integer class ``c`` where the manifest recorded it, else its index."""
    c = int(c)
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def result_rows(est, meta, correct, y_test, *, key: dict, common: dict, class_names, margins=None,
                weights_files=None) -> tuple[list, list]:
    """Result rows and per-class rows of one fitted estimator.

    Parameters
    ----------
    est : fitted estimator
        Any registered solver; ``est._row_values(i)`` gives its columns for subset ``i``.
    meta : list of (selector, seed, k, fractions)
        What each of its subsets is; one row per fraction.
    correct : list of bool arrays
        Per subset, which test rows it got right.
    y_test : int array
        The test labels (the classes of ``est.classes_``).
    key : dict
        The row keys shared by the run (model, weights, dataset, layer, pooling, solver).
    common : dict
        Columns every row shares (n_features, penalty_rule, refit, n_test, config, versions).
    class_names : list or None
        The dataset's class names.
    margins : dict, optional
        ``{subset index: choice_margin}`` overriding the estimator's (first-seed followers).
    weights_files : dict, optional
        ``{(selector, seed): path}`` of the saved weights.
    """
    rows, per_class = [], []
    pos = np.searchsorted(est.classes_, y_test)
    in_class = [pos == c for c in range(len(est.classes_))]
    supports = [int(m.sum()) for m in in_class]
    for i, (sel, seed, k, frs) in enumerate(meta):
        values = {**_EMPTY_NEIGHBOUR, "bytes_per_vector": 4 * int(k), **est._row_values(i)}
        codec_params = values.pop("codec_params", None)
        if codec_params is not None:  # the codec's resolved parameters and codebook size go in the row's config
            config = json.loads(common["config"]) if common.get("config") else {}
            values["config"] = json.dumps({**config, "codec": {"spec": key.get("codec"), **codec_params}},
                                          sort_keys=True, default=str)
        if margins and i in margins:
            values["choice_margin"] = margins[i]
        ok = np.asarray(correct[i], dtype=bool)
        recalls = [float(ok[m].mean()) if m.any() else float("nan") for m in in_class]
        for f in frs:
            row_key = {**key, "selector": sel, "fraction": float(f), "n_neurons": int(k), "seed": int(seed)}
            rows.append({**row_key, **common, **values, "test_accuracy": float(ok.mean()),
                         "mean_per_class_recall": float(np.nanmean(recalls)),
                         "n_classes": int(len(est.classes_)),
                         "weights_file": (weights_files or {}).get((sel, seed))})
            per_class += [{**row_key, "class": int(c), "class_name": class_name(class_names, c), "accuracy": r,
                           "support": s} for c, r, s in zip(est.classes_, recalls, supports)]
    return rows, per_class
