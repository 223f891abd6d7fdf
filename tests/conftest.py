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


@pytest.fixture
def rng():
    return np.random.default_rng(0)
