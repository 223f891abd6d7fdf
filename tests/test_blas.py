"""The GEMM backend of the CPU probe path (issue 30): ``CRITMASS_BLAS``, the measured and cached choice, the
products on numpy views, OpenBLAS threads following torch's, and probe results that agree across backends
within the numeric tests' tolerances (accuracy within one test sample, objectives within 1e-4 relative)."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from choice_oracle import assert_fits_choose_alike
from threadpoolctl import ThreadpoolController

from critmass import _blas
from critmass._env import versions
from critmass.exceptions import ConfigError
from critmass.features import FeatureSet, FeatureSplit
from critmass.probes import LogisticProbe, RidgeProbe, SGDProbe, run_probes
from critmass.probes._base import ConstantSubsetWarning

pytestmark = pytest.mark.usefixtures("probe_threads")  # 1 torch thread, or CRITMASS_TEST_THREADS (conftest)


@pytest.fixture(autouse=True)
def _fresh_backend():
    """Every test resolves the backend itself; afterwards the process resolves it again (from its own env)."""
    _blas.reset()
    yield
    _blas.reset()


def _use(monkeypatch, name):
    monkeypatch.setenv("CRITMASS_BLAS", name)
    _blas.reset()
    assert _blas.backend() == name


def _openblas_threads() -> set[int]:
    """Thread counts of numpy's and SciPy's OpenBLAS (the ones critmass calls; FAISS bundles another)."""
    libs = ThreadpoolController().select(internal_api="openblas").lib_controllers
    return {lib.num_threads for lib in libs if "numpy" in lib.filepath or "scipy" in lib.filepath}


# ---------------------------------------------------------------------------------- choice and cache
@pytest.mark.parametrize("value, expected", [("torch", "torch"), ("numpy", "numpy"), (" NumPy ", "numpy")])
def test_env_forces_the_backend_without_measuring(monkeypatch, value, expected):
    monkeypatch.setattr(_blas, "measure", lambda *a, **k: pytest.fail("measured despite CRITMASS_BLAS"))
    monkeypatch.setenv("CRITMASS_BLAS", value)
    assert _blas.backend() == expected and _blas.resolution()["source"] == "env"
    assert not _blas.cache_path().exists()
    assert _blas.backend("gram") == expected
    assert versions()["blas"] == _blas.summary() == f"{_blas.describe()}; gram {_blas.describe(op='gram')}"
    assert versions()["blas"].startswith(f"{expected} (") and f"; gram {expected} (" in versions()["blas"]


@pytest.mark.parametrize("value", ["mkl", "openblas", "1"])
def test_env_bad_value_is_a_one_line_config_error(monkeypatch, value):
    monkeypatch.setenv("CRITMASS_BLAS", value)
    with pytest.raises(ConfigError) as err:
        _blas.matmul(torch.ones(2, 2), torch.ones(2, 2))
    msg = str(err.value)
    assert "\n" not in msg and value in msg and "torch" in msg and "numpy" in msg


def _measured(ratio, gram_ratio=2.0, calls=None):
    def fake(*a, **k):
        if calls is not None:
            calls.append(1)
        return {"threads": 1, "ratio": ratio, "shapes": [], "gram_ratio": gram_ratio, "gram_shapes": []}
    return fake


@pytest.mark.parametrize("ratio, expected", [(1.5, "numpy"), (1.1, "torch"), (0.5, "torch")])
def test_measured_choice_needs_the_margin_and_is_cached(monkeypatch, ratio, expected):
    monkeypatch.delenv("CRITMASS_BLAS", raising=False)
    calls = []
    monkeypatch.setattr(_blas, "measure", _measured(ratio, calls=calls))
    assert _blas.backend() == expected and len(calls) == 1
    assert _blas.resolution()["source"] == "measured"
    entries = json.loads(_blas.cache_path().read_text())["entries"]
    key = _blas.resolution()["key"]
    assert set(entries) == {key} and entries[key]["backend"] == expected and entries[key]["gram_backend"] == "numpy"
    assert _blas.cpu_model() in key and torch.__version__ in key and np.__version__ in key
    assert f"threads {torch.get_num_threads()}" in key
    _blas.reset()  # a new process on the same machine: read from the cache, not measured again
    assert _blas.backend() == expected and len(calls) == 1 and _blas.resolution()["source"] == "cache"
    assert _blas.backend("gram") == "numpy"
    _blas.reset()  # another thread count is another entry
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(previous + 1)
        _blas.backend()
    finally:
        torch.set_num_threads(previous)
    assert len(calls) == 2 and len(json.loads(_blas.cache_path().read_text())["entries"]) == 2


def test_a_corrupt_cache_is_measured_again(monkeypatch):
    monkeypatch.delenv("CRITMASS_BLAS", raising=False)
    _blas.cache_path().parent.mkdir(parents=True, exist_ok=True)
    _blas.cache_path().write_text("{not json")
    monkeypatch.setattr(_blas, "measure", _measured(2.0))
    assert _blas.backend() == "numpy"
    assert json.loads(_blas.cache_path().read_text())["version"] == _blas._CACHE_VERSION == 4


@pytest.mark.parametrize("gram_ratio, expected", [(2.0, "numpy"), (1.0, "numpy"), (0.9, "numpy"), (0.8, "torch")])
def test_the_gram_builds_keep_numpys_syrk_unless_torch_is_the_margin_faster(monkeypatch, gram_ratio, expected):
    monkeypatch.delenv("CRITMASS_BLAS", raising=False)
    monkeypatch.setattr(_blas, "measure", _measured(1.0, gram_ratio))
    assert _blas.backend() == "torch" and _blas.backend("gram") == expected
    _blas.reset()
    assert _blas.backend("gram") == expected and _blas.resolution()["source"] == "cache"
    with pytest.raises(ValueError, match="op must be one of"):
        _blas.backend("syrk")


@pytest.mark.parametrize("version, entry", [(1, {"backend": "numpy"}),  # before the Gram choice
                                            (2, {"backend": "numpy", "gram_backend": "numpy"}),  # products timed
                                            (3, {"backend": "numpy", "gram_backend": "numpy"})])  # at torch's threads
def test_a_cache_from_an_older_measurement_is_measured_again(monkeypatch, version, entry):
    monkeypatch.delenv("CRITMASS_BLAS", raising=False)
    key = _blas._key(torch.get_num_threads())
    _blas.cache_path().parent.mkdir(parents=True, exist_ok=True)
    _blas.cache_path().write_text(json.dumps({"version": version, "entries": {key: entry}}))
    calls = []
    monkeypatch.setattr(_blas, "measure", _measured(1.0, calls=calls))
    assert _blas.backend() == "torch" and calls == [1] and _blas.resolution()["source"] == "measured"


def test_the_measurement_is_short_and_covers_the_shapes():
    shapes = ((450, 128, 10), (450, 64, 150), (128, 128, 128))
    m = _blas.measure(shapes, reps=2)
    assert [r["shape"] for r in m["shapes"]] == [list(s) for s in shapes]
    assert m["ratio"] > 0 and all(r["torch_s"] > 0 and r["numpy_s"] > 0 for r in m["shapes"])
    assert m["threads"] == torch.get_num_threads()
    assert [r["shape"] for r in m["gram_shapes"]] == [list(s) for s in _blas.GRAM_SHAPES]
    assert m["gram_ratio"] > 0 and all(r["torch_s"] > 0 and r["numpy_s"] > 0 for r in m["gram_shapes"])


# ------------------------------------------------------------------------------------------ products
def _operands(dtype):
    rng = np.random.default_rng(0)
    big = torch.from_numpy(rng.standard_normal((40, 70)).astype(dtype))
    other = torch.from_numpy(rng.standard_normal((70, 30)).astype(dtype))
    return [
        (big, other),  # contiguous
        (big[5:25, 3:60], other[3:60, 2:17]),  # slices (row stride > width)
        (big.T[10:30], big[:, :30]),  # a transposed view times a slice: (20, 40) @ (40, 30)
        (big[:, ::2][:12, :20], other[::3][:20, :9]),  # strided columns: not BLAS-readable, copied
        (torch.from_numpy(np.ones(7, dtype=dtype)).expand(5, 7), other[:7, :4]),  # zero stride
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_products_match_torch(monkeypatch, dtype):
    _use(monkeypatch, "numpy")
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in _operands(dtype):
        ref = (a.double() @ b.double()).numpy()
        got = _blas.matmul(a, b)
        assert got.dtype == a.dtype and got.shape == ref.shape
        np.testing.assert_allclose(got.double().numpy(), ref, rtol=tol, atol=tol * np.abs(ref).max())
        out = torch.zeros(ref.shape, dtype=a.dtype)
        assert _blas.matmul(a, b, out=out) is out
        np.testing.assert_allclose(out.double().numpy(), ref, rtol=tol, atol=tol * np.abs(ref).max())
        c = torch.ones((ref.shape[0] + 3, ref.shape[1]), dtype=a.dtype)
        assert _blas.addmm_(c[3:], a, b).data_ptr() == c[3:].data_ptr()  # in place, into a view
        np.testing.assert_allclose(c[3:].double().numpy(), ref + 1, rtol=tol, atol=tol * np.abs(ref).max())
        assert (c[:3] == 1).all()
    # Mixed dtypes, integers, gradients: torch's own product (and its errors).
    a, b = _operands(dtype)[0]
    assert torch.equal(_blas.matmul(a.long(), b.long()), a.long() @ b.long())
    g = a.clone().requires_grad_()
    assert _blas.matmul(g, b).requires_grad
    with pytest.raises(RuntimeError):
        _blas.matmul(a.float(), b.double())


def test_torch_backend_is_exactly_torch(monkeypatch):
    _use(monkeypatch, "torch")
    for a, b in _operands(np.float32):
        assert torch.equal(_blas.matmul(a, b), a @ b)
        c1, c2 = torch.ones(a.shape[0], b.shape[1]), torch.ones(a.shape[0], b.shape[1])
        assert torch.equal(_blas.addmm_(c1, a, b), c2.addmm_(a, b))


def _restore(controller, before_torch, before_blas):
    torch.set_num_threads(before_torch)
    for n in before_blas:
        controller.limit(limits=n)


def test_probe_products_run_one_openblas_thread_beside_torchs_threads(monkeypatch, digits):
    """On the numpy backend the probe path's OpenBLAS products ran at torch's thread count, so at 2 torch
    threads two thread pools alternated every few microseconds on the same cores (OpenBLAS's idle workers
    spinning while torch's OpenMP threads waited for a core): the Fashion-MNIST probe curve took 87-101 s
    instead of 12 s on 2 cores. Inside a fit or a scoring pass OpenBLAS now runs one thread, restored after."""
    Xtr, ytr, Xte, _ = digits
    controller = ThreadpoolController().select(internal_api="openblas")
    before_torch, before_blas = torch.get_num_threads(), _openblas_threads()
    _use(monkeypatch, "numpy")
    seen = []
    np_matmul = _blas._np_matmul
    monkeypatch.setattr(_blas, "_np_matmul", lambda *a, **k: seen.append(_openblas_threads()) or np_matmul(*a, **k))
    try:
        controller.limit(limits=2)
        torch.set_num_threads(2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantSubsetWarning)
            probe = LogisticProbe(alphas=1e-3, subsets=[np.arange(16)], device="cpu", max_iter=20).fit(Xtr, ytr)
        n_fit = len(seen)
        probe.score_subsets(Xte, np.zeros(len(Xte), dtype=int))
        assert n_fit > 0 and len(seen) > n_fit and all(s == {1} for s in seen)
        assert _openblas_threads() == {2}  # the user's setting is back after the fit and the scoring
        with _blas.products():
            assert _openblas_threads() == {1}
        assert _openblas_threads() == {2}
    finally:
        _restore(controller, before_torch, before_blas)


def _worker_threads() -> tuple[str, set[int], set[int]]:
    torch.set_num_threads(1)  # what critmass's forked probe workers do
    with _blas.products():
        _blas.matmul(torch.ones(64, 64), torch.ones(64, 64))
        inside = _openblas_threads()
    return _blas.backend(), inside, _openblas_threads()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="critmass forks workers on Linux only")
def test_a_forked_worker_runs_one_openblas_thread(monkeypatch):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    controller = ThreadpoolController().select(internal_api="openblas")
    before_torch, before_blas = torch.get_num_threads(), _openblas_threads()
    _use(monkeypatch, "numpy")
    try:
        controller.limit(limits=2)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
            assert pool.submit(_worker_threads).result(timeout=60) == ("numpy", {1}, {2})
    finally:
        _restore(controller, before_torch, before_blas)


def test_the_torch_backend_leaves_openblas_threads_alone(monkeypatch):
    before = _openblas_threads()
    _use(monkeypatch, "torch")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(max(1, min(before) + 1))
        with _blas.products():
            _blas.matmul(torch.ones(8, 8), torch.ones(8, 8))
            assert _openblas_threads() == before
    finally:
        torch.set_num_threads(previous)
    assert _openblas_threads() == before


def test_the_measurement_times_products_on_one_thread_and_the_gram_builds_at_torchs(monkeypatch):
    """Forked probe workers run one thread each and numpy runs one inside a fit whatever torch's count, so the
    products' choice compares the two libraries per core; at 2 torch threads against 1 OpenBLAS thread an AMD
    EPYC's half-speed MKL could have been kept."""
    seen = {"gemm": [], "gram": [], "torch": []}
    np_mm, t_mm, syrk = np.matmul, torch.matmul, _blas._syrk_into
    monkeypatch.setattr(_blas.np, "matmul", lambda *a, **k: seen["gemm"].append(_openblas_threads()) or np_mm(*a, **k))
    monkeypatch.setattr(_blas.torch, "matmul", lambda *a, **k: seen["torch"].append(torch.get_num_threads())
                        or t_mm(*a, **k))
    monkeypatch.setattr(_blas, "_syrk_into", lambda c, y: seen["gram"].append(_openblas_threads()) or syrk(c, y))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _blas.measure(((64, 32, 8),), reps=1, gram_shapes=((64, 16),))
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(previous)
    assert seen["gemm"] and all(s == {1} for s in seen["gemm"])
    assert seen["torch"] and all(n == 1 for n in seen["torch"])
    assert seen["gram"] and all(s == {2} for s in seen["gram"])


# ------------------------------------------------------------------------------------ Gram builds
def _gram_operands(dtype):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((50, 12)).astype(dtype) + 3.0
    b = rng.standard_normal((50, 7)).astype(dtype)
    return [
        (a, b),  # C order
        (np.asfortranarray(a), b[::-1]),  # F order; a reversed (negative-stride) view
        (a[5:40, 2:9], b[5:40]),  # slices
        (a.T.copy().T, b),  # a transposed buffer
    ]


@pytest.mark.parametrize("name", _blas.BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_and_cross_match_the_naive_products_on_both_backends(monkeypatch, name, dtype):
    _use(monkeypatch, name)
    assert _blas.backend("gram") == name
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in _gram_operands(dtype):
        ref_g = a.astype(np.float64).T @ a.astype(np.float64)
        ref_c = a.astype(np.float64).T @ b.astype(np.float64)
        g, c = _blas.gram(a), _blas.cross(a, b)
        assert g.dtype == dtype and c.dtype == dtype
        np.testing.assert_allclose(g, ref_g, rtol=tol, atol=tol * np.abs(ref_g).max())
        np.testing.assert_allclose(g, g.T, rtol=0, atol=tol * np.abs(ref_g).max())
        np.testing.assert_allclose(c, ref_c, rtol=tol, atol=tol * np.abs(ref_c).max())
        out_c = np.ones_like(ref_c, dtype=dtype)
        assert _blas.cross(a, b, out=out_c) is out_c
        np.testing.assert_allclose(out_c, ref_c + 1, rtol=tol, atol=tol * np.abs(ref_c).max())
        # A running sum over uneven chunks (float64 whatever the chunks' dtype), plus a rank-one term.
        acc = _blas.GramSum(a.shape[1])
        for lo, hi in ((0, 1), (1, 20), (20, a.shape[0])):
            assert acc.add(a[lo:hi]) is acc
        v = np.arange(a.shape[1], dtype=np.float64)
        got = acc.add_outer(v, 0.5).value()
        want = ref_g + 0.5 * np.outer(v, v)
        assert got.dtype == np.float64 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, got.T)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
        np.testing.assert_allclose(acc.value(), got, rtol=0, atol=0)  # value() leaves the sum as it was
    with pytest.raises(TypeError, match="2-D float32 or float64"):
        _blas.gram(np.ones((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="chunk has 3 columns; this sum has 4"):
        _blas.GramSum(4).add(np.ones((2, 3)))


def test_gram_builds_run_openblas_at_torchs_thread_count_and_restore_it(monkeypatch):
    """A sweep unit or forked worker told to use one torch thread built its float64 Gram matrices (CKA, PCA,
    the selectors, ridge) on one OpenBLAS thread per core in every process: two such processes on two
    cores ran 1.45x slower than at one thread each. Each build now runs at torch's count, restored after."""
    from critmass.similarity import gram_stats
    from critmass.subsets import covariance

    monkeypatch.delenv("CRITMASS_BLAS", raising=False)
    monkeypatch.setattr(_blas, "measure", _measured(1.0, 2.0))  # Intel's choice: MKL products, OpenBLAS syrk
    assert (_blas.backend(), _blas.backend("gram")) == ("torch", "numpy")
    seen = []
    syrk = _blas._syrk_into
    monkeypatch.setattr(_blas, "_syrk_into", lambda c, y: seen.append(_openblas_threads()) or syrk(c, y))
    controller = ThreadpoolController().select(internal_api="openblas")
    before_torch, before_blas = torch.get_num_threads(), _openblas_threads()
    x = np.random.default_rng(0).standard_normal((300, 20))
    try:
        controller.limit(limits=2)
        torch.set_num_threads(1)
        gram_stats(x, chunk_size=100)
        covariance(x, chunk=100)
        assert len(seen) == 6 and all(s == {1} for s in seen)
        assert _openblas_threads() == {2}  # the user's setting is back
        torch.set_num_threads(2)
        covariance(x, chunk=100)
        assert seen[-1] == {2}  # at torch's count, not one per core: here the same
        with _blas.products():  # a probe fit (ridge's Gram matrix): one thread beside torch's, whatever the gemm
            covariance(x, chunk=100)
        assert seen[-1] == {1} and _openblas_threads() == {2}
    finally:
        torch.set_num_threads(before_torch)
        for n in before_blas:
            controller.limit(limits=n)


# ------------------------------------------------------------------------- probes on both backends
def _both(monkeypatch, fit):
    """``fit()`` on the torch backend, then on numpy (checking that its products did run in numpy)."""
    out, views = {}, []
    np2 = _blas._np2
    monkeypatch.setattr(_blas, "_np2", lambda t: views.append(1) or np2(t))
    for name in ("torch", "numpy"):
        _use(monkeypatch, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantSubsetWarning)  # digits has a few all-zero pixels
            out[name] = fit()
        assert (len(views) > 0) == (name == "numpy")
    return out["torch"], out["numpy"]


def _objective(probe, i, X, y, alpha):
    """mean CE + alpha/2 ||W||^2 on the probe's standardised features (float64 numpy)."""
    s = probe.subsets_[i]
    Z = (X[:, s] - probe.mean_[s]) / probe.scale_[s]
    W = probe.coefs_[i] * probe.scale_[s]
    b = probe.intercepts_[i] + probe.coefs_[i] @ probe.mean_[s]
    logits = Z @ W.T + b
    logits -= logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits).sum(1))
    return float((lse - logits[np.arange(len(y)), y]).mean() + 0.5 * alpha * (W**2).sum())


@pytest.mark.numeric
def test_logistic_objective_and_accuracy_agree_across_backends(monkeypatch, digits):
    Xtr, ytr, Xte, yte = digits
    order = np.random.default_rng(1).permutation(64)
    subsets = [order[:k] for k in (8, 24, 64)]
    alpha = 1e-3
    kw = dict(alphas=alpha, subsets=subsets, device="cpu", tol=1e-7, max_iter=500, random_state=0)
    one, two = _both(monkeypatch, lambda: LogisticProbe(**kw).fit(Xtr, ytr))
    X64 = Xtr.astype(np.float64)
    for i in range(len(subsets)):
        a, b = _objective(one, i, X64, ytr, alpha), _objective(two, i, X64, ytr, alpha)
        assert abs(a - b) <= 1e-4 * abs(a), (i, a, b)
    acc_one, acc_two = one.score_subsets(Xte, yte), two.score_subsets(Xte, yte)
    assert np.abs(np.asarray(acc_one) - np.asarray(acc_two)).max() <= 1 / len(yte) + 1e-12


@pytest.mark.numeric
def test_logistic_penalty_choice_agrees_where_its_margin_allows(monkeypatch, digits):
    Xtr, ytr, Xte, _ = digits
    order = np.random.default_rng(1).permutation(64)
    subsets = [order[:k] for k in (8, 64)]
    kw = dict(alphas=[1e-3, 1e-2], subsets=subsets, device="cpu", tol=1e-7, max_iter=300, random_state=0)
    one, two = _both(monkeypatch, lambda: LogisticProbe(**kw).fit(Xtr, ytr))
    assert_fits_choose_alike(one, two, Xte)


@pytest.mark.numeric
def test_ridge_agrees_across_backends(monkeypatch, digits):
    Xtr, ytr, Xte, yte = digits
    subsets = [np.arange(k) for k in (10, 40, 64)]
    one, two = _both(monkeypatch, lambda: RidgeProbe(alphas=1.0, subsets=subsets, device="cpu").fit(Xtr, ytr))
    for c1, c2 in zip(one.coefs_, two.coefs_):  # float64 closed form: only the summation order differs
        np.testing.assert_allclose(c1, c2, rtol=1e-8, atol=1e-10 * np.abs(c1).max())
    acc = [np.asarray(p.score_subsets(Xte, yte)) for p in (one, two)]
    assert np.abs(acc[0] - acc[1]).max() <= 1 / len(yte) + 1e-12


@pytest.mark.numeric
def test_sgd_agrees_across_backends(monkeypatch, digits):
    Xtr, ytr, Xte, yte = digits
    kw = dict(alphas=5e-4, subsets=[np.arange(32), np.arange(64)], epochs=3, device="cpu", random_state=0)
    one, two = _both(monkeypatch, lambda: SGDProbe(**kw).fit(Xtr, ytr))
    for c1, c2 in zip(one.coefs_, two.coefs_):  # float32 steps: rounding differs, the path does not
        np.testing.assert_allclose(c1, c2, rtol=1e-3, atol=1e-4 * np.abs(c1).max())
    acc = [np.asarray(p.score_subsets(Xte, yte)) for p in (one, two)]
    assert np.abs(acc[0] - acc[1]).max() <= 1 / len(yte) + 1e-12


@pytest.mark.numeric
def test_run_probes_agrees_across_backends_and_records_the_backend(monkeypatch, digits, tmp_path):
    Xtr, ytr, Xte, yte = digits
    fs = FeatureSet({"train": FeatureSplit(Xtr, ytr), "test": FeatureSplit(Xte, yte)},
                    {"model": "toy", "dataset": "digits", "layer": "pixels"})
    kw = dict(selectors=("random",), fractions=(0.1, 0.5), seeds=(0,), solver="logistic", alphas=1e-3,
              solver_options={"tol": 1e-7, "max_iter": 500})
    one, two = _both(monkeypatch, lambda: run_probes(fs, **kw).results)
    assert len(one) == len(two)
    assert np.abs(one.test_accuracy.to_numpy() - two.test_accuracy.to_numpy()).max() <= 1 / len(yte) + 1e-12
    assert {json.loads(v)["blas"].split()[0] for v in one.versions} == {"torch"}
    assert {json.loads(v)["blas"].split()[0] for v in two.versions} == {"numpy"}
