import os

# Tests never touch the network or the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CRITMASS_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CRITMASS_DATA", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """CRITMASS_TEST_THREADS=N runs the suite under N torch threads: numeric tests must not depend on it."""
    n = os.environ.get("CRITMASS_TEST_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))
    yield


@pytest.fixture(scope="module")
def probe_threads():
    """Torch threads of the probe modules: 1 (tiny problems: thread start-up and contention cost more than
    they save), or CRITMASS_TEST_THREADS to catch tests that depend on the float summation order a thread
    count implies (as a BLAS kernel does, e.g. MKL_CBWR=AVX2 or OPENBLAS_CORETYPE=Haswell)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("CRITMASS_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits as float32: 1,400 train and 397 test rows."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    return X[:1400], y[:1400], X[1400:], y[1400:]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
