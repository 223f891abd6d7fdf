"""The probes are scikit-learn classifiers: scikit-learn's own estimator checks, and the tools researchers use
them with (cross-validation, pipelines, grid search, calibration), on every probe."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from critmass.probes import KNNProbe, LogisticProbe, RetrievalProbe, RidgeProbe, SGDProbe

# Small, fast settings: the checks fit hundreds of times. Everything else is each probe's default.
ESTIMATORS = [
    LogisticProbe(device="cpu"),
    RidgeProbe(device="cpu"),
    SGDProbe(device="cpu", epochs=20),
    KNNProbe(device="cpu"),
    RetrievalProbe(device="cpu"),
]

#: The checks that cannot apply to these estimators, and why (check name -> reason). None today; the README's
#: "Probes are scikit-learn classifiers" paragraph lists them when there are.
EXPECTED_FAILED = {
    "SGDProbe": {},
    "LogisticProbe": {},
    "RidgeProbe": {},
    "KNNProbe": {},
    "RetrievalProbe": {},
}


def expected_failed_checks(estimator):
    return EXPECTED_FAILED.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. constant-column warnings on the checks' toy data
        check(estimator)


def _data():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:600]
    return X[idx].astype(np.float32), y[idx]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_cross_val_pipeline_grid_search(est):
    X, y = _data()
    scores = cross_val_score(clone(est), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    pipe = make_pipeline(StandardScaler(), clone(est)).fit(X, y)
    assert pipe.score(X, y) > 0.9
    grid = {"ks": [[1], [5]]} if isinstance(est, KNNProbe) and not isinstance(est, RetrievalProbe) else (
        {"metric": ["cosine", "l2"]} if isinstance(est, RetrievalProbe) else {"alphas": [1e-3, 1e-1]})
    search = GridSearchCV(clone(est), grid, cv=3).fit(X, y)
    assert search.best_score_ > 0.8 and set(search.cv_results_["params"][0]) == set(grid)


@pytest.mark.parametrize("est", [e for e in ESTIMATORS if not isinstance(e, RetrievalProbe)],
                         ids=lambda e: type(e).__name__)
def test_calibrated(est):
    X, y = _data()
    cal = CalibratedClassifierCV(clone(est), cv=3).fit(X[:450], y[:450])
    proba = cal.predict_proba(X[450:])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert (cal.classes_[proba.argmax(1)] == y[450:]).mean() > 0.8


def test_logistic_proba_matches_sklearn():
    """predict_proba of one penalty is scikit-learn's LogisticRegression at C = 1 / (alpha n) (an independent
    solver), on string labels and a pandas frame."""
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    frame = pd.DataFrame(StandardScaler().fit_transform(X), columns=["a", "b", "c", "d"])
    alpha = 1e-2
    probe = LogisticProbe(alphas=alpha, device="cpu", tol=1e-9, max_iter=500, standardize=False).fit(frame, names)
    ref = LogisticRegression(C=1 / (alpha * len(y)), tol=1e-10, max_iter=10_000).fit(frame, names)
    assert list(probe.classes_) == list(ref.classes_) and list(probe.feature_names_in_) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(probe.predict_proba(frame), ref.predict_proba(frame), atol=2e-4)
    assert (probe.predict(frame) == ref.predict(frame)).mean() > 0.99


@pytest.mark.parametrize("cls", [LogisticProbe, RidgeProbe, SGDProbe, KNNProbe])
def test_one_fit_answers_every_method(cls):
    """predict, predict_proba, decision_function and score all answer for the first subset's probe; the
    *_subsets methods keep every subset's answer."""
    X, y = _data()
    subsets = [np.arange(8, 40), np.arange(64)]
    est = cls(device="cpu", subsets=subsets).fit(X[:400], y[:400])
    Xt, yt = X[400:], y[400:]
    first = est.predict_subsets(Xt)[0]
    np.testing.assert_array_equal(est.predict(Xt), first)
    assert est.score(Xt, yt) == pytest.approx((first == yt).mean())
    assert est.score(Xt, yt) == pytest.approx(est.score_subsets(Xt, yt)[0])
    if hasattr(est, "decision_function"):
        np.testing.assert_array_equal(est.classes_[est.decision_function(Xt).argmax(1)], first)
    if hasattr(est, "predict_proba"):
        proba = est.predict_proba(Xt)
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-9)
        np.testing.assert_array_equal(est.classes_[proba.argmax(1)], first)
        np.testing.assert_allclose(proba, est.predict_proba_subsets(Xt)[0])


def test_string_labels_same_fit_as_integers():
    X, y = _data()
    names = np.array([f"digit-{c}" for c in range(10)])
    a = LogisticProbe(device="cpu").fit(X, y)
    b = LogisticProbe(device="cpu").fit(X, names[y])
    np.testing.assert_array_equal(names[a.predict(X)], b.predict(X))
    np.testing.assert_allclose(a.coef_, b.coef_)


def test_pickle_and_clone_keep_answers():
    X, y = _data()
    for est in ESTIMATORS:
        fitted = clone(est).fit(X, y)
        again = pickle.loads(pickle.dumps(fitted))
        np.testing.assert_array_equal(again.predict(X[:50]), fitted.predict(X[:50]))


def test_refusals_are_one_line():
    X, y = _data()
    with pytest.raises(ValueError, match="one class only") as err:
        LogisticProbe(device="cpu").fit(X, np.zeros(len(y)))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="Unknown label type"):
        RidgeProbe(device="cpu").fit(X, np.linspace(0, 1, len(y)))
    fitted = RidgeProbe(device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="X has 10 features, but RidgeProbe is expecting 64 features") as err:
        fitted.predict(X[:, :10])
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="sample_weight"):
        fitted.fit(X, y, sample_weight=np.ones(len(y)))
    assert not hasattr(RetrievalProbe(device="cpu").fit(X, y), "predict_proba")
