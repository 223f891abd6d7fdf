"""What makes every probe a scikit-learn classifier: input validation that sets ``n_features_in_`` /
``feature_names_in_``, label encoding (any labels scikit-learn accepts: ints, strings, ...), and the
one-subset answers of ``predict`` / ``predict_proba`` / ``decision_function`` / ``score``.

critmass's own checks run first (one-line :class:`~critmass.exceptions.FeatureError` messages, worded so
that scikit-learn's estimator checks recognise them); scikit-learn's ``validate_data`` then records the
input's width and feature names and checks them again at prediction.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from .._validation import check_features
from ..exceptions import FeatureError, NotFittedError

__all__ = ["validate_fit", "validate_predict", "encode_labels", "softmax", "ProbeNotFittedError"]


class ProbeNotFittedError(NotFittedError, SklearnNotFittedError):
    """A probe used before ``fit``: critmass's :class:`~critmass.exceptions.NotFittedError` and scikit-learn's
    (which its tools and checks catch). It lives here so that ``critmass.exceptions`` imports no scikit-learn."""


def _numeric(X, name: str):
    if sp.issparse(X):
        raise FeatureError(f"{name}: sparse input is not supported (the probes standardise every column, which "
                           "makes it dense); pass X.toarray()")
    # pandas frames and lists become arrays here; memory-mapped arrays stay mapped (no copy)
    if hasattr(X, "iloc") or not isinstance(X, np.ndarray):
        X = np.asarray(X)
        if X.dtype == object:
            X = X.astype(np.float64)  # raises TypeError on non-numbers (scikit-learn's behaviour)
    return check_features(X, name=name)


def _dtype(X):
    """scikit-learn's target dtype: None (keep) for floating arrays, float64 for the rest."""
    return None if np.issubdtype(X.dtype, np.floating) else (np.float64, np.float32)


def validate_fit(est, X, y) -> tuple[np.ndarray, np.ndarray]:
    """``(X, label codes)``: checked features and ``y`` encoded as positions in ``est.classes_`` (set here,
    with ``n_features_in_`` and, for frames, ``feature_names_in_``)."""
    frame = X
    X = _numeric(X, "training features")
    if y is None:  # scikit-learn's wording (its checks look for it)
        raise FeatureError(f"{type(est).__name__} requires y to be passed, but the target y is None; pass the "
                           "training labels")
    y_arr = np.asarray(y) if not hasattr(y, "iloc") else y
    shape = np.shape(y_arr)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise FeatureError(f"training labels must be 1-D (one label per row); got shape {shape}; pass y.ravel() "
                           "for a column vector, one probe per label column otherwise")
    if shape[0] != X.shape[0]:
        raise FeatureError(f"training labels have {shape[0]} entries but the features have {X.shape[0]} rows; pass "
                           "matching arrays")
    # validate_data records n_features_in_ / feature_names_in_ and turns a column-vector y into 1-D with
    # scikit-learn's DataConversionWarning; floating inputs keep their dtype (no copy of a float16 memmap),
    # integers become float64.
    Xv, y = validate_data(est, frame if hasattr(frame, "columns") else X, y, dtype=_dtype(X),
                          ensure_all_finite=False, accept_sparse=False, y_numeric=False, multi_output=False)
    if not isinstance(X, np.memmap):
        X = Xv
    check_classification_targets(y)
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise FeatureError(f"the training labels hold one class only ({classes[0]!r}); a classifier needs at least "
                           "2 classes: add samples of another class")
    est.classes_ = classes
    return X, codes.astype(np.int64)


def encode_labels(classes: np.ndarray, y, split: str) -> np.ndarray:
    """Positions of ``y`` in ``classes``; labels never seen in training are refused (one line)."""
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.ravel() if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise FeatureError(f"{split} labels must be 1-D; got shape {y.shape}")
    pos = np.searchsorted(classes, y)
    ok = (pos < len(classes)) & (classes[np.minimum(pos, len(classes) - 1)] == y)
    if not ok.all():
        unseen = np.unique(y[~ok])
        raise FeatureError(f"{split} labels contain classes never seen in training: {unseen[:10].tolist()}; "
                           "every class must have training samples")
    return pos.astype(np.int64)


def validate_predict(est, X) -> np.ndarray:
    """Checked features for prediction: as many columns as in ``fit`` (and the same names for frames)."""
    frame = X
    X = _numeric(X, "features")
    expected = getattr(est, "n_features_in_", None)
    if expected is not None and X.shape[1] != expected:  # scikit-learn's wording, critmass's error and fix
        raise FeatureError(f"X has {X.shape[1]} features, but {type(est).__name__} is expecting {expected} features "
                           "as input; pass features of the same layer (same columns) as in fit")
    Xv = validate_data(est, frame if hasattr(frame, "columns") else X, reset=False, dtype=_dtype(X),
                       ensure_all_finite=False, accept_sparse=False)
    return X if isinstance(X, np.memmap) else Xv


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (shifted by the row max: no overflow)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
