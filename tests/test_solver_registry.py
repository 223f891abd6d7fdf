"""A new solver is one class plus its registration: a toy nearest-centroid probe runs through ``run_probes``,
``critmass probe``, a sweep and ``critmass profile`` without any other code knowing it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from critmass.exceptions import ConfigError
from critmass.probes import BaseProbe, SOLVERS, list_solvers, register_solver, run_probes, solver_spec
from critmass.probes._base import ChainFit

SPEC = "timm:test_resnet"


class CentroidProbe(BaseProbe):
    """Nearest class centroid in the probes' standardised space, shrunk towards zero by ``alphas`` (a linear
    classifier: scores ``x . m_c - |m_c|^2 / 2`` with ``m_c = mean_c / (1 + alpha)``)."""

    _dtype = torch.float64

    def __init__(self, alphas=(0.0,), *, subsets=None, standardize: bool = True, shift: float = 0.0,
                 val_fraction: float = 0.1, refit: bool = False, device: str = "auto", random_state=0):
        self.alphas = alphas
        self.subsets = subsets
        self.standardize = standardize
        self.shift = shift
        self.val_fraction = val_fraction
        self.refit = refit
        self.device = device
        self.random_state = random_state

    def _fit_chain(self, ctx, data, chain, problems) -> ChainFit:
        X, y, C = data.X.numpy(), data.y.numpy(), data.n_classes
        W, b, tr, va = [], [], [], []
        for k, a in problems:
            cols = chain.head[:k]
            M = np.stack([X[y == c][:, cols].mean(0) for c in range(C)]) / (1.0 + a)
            W.append(M.T.copy())
            b.append(-0.5 * (M**2).sum(1) + self.shift)
            tr.append(np.mean((X[:, cols] @ M.T + b[-1]).argmax(1) == y))
            if data.X_val is not None:
                Xv = data.X_val.numpy()[:, cols]
                va.append(np.mean((Xv @ M.T + b[-1]).argmax(1) == data.y_val.numpy()))
            else:
                va.append(np.nan)
        P = len(problems)
        return ChainFit(W=W, b=np.array(b), train_accuracy=np.array(tr), val_accuracy=np.array(va),
                        n_iter=np.zeros(P, dtype=np.int64))


@pytest.fixture
def centroid():
    register_solver("centroid", CentroidProbe, family="linear", score_label="centroid accuracy")
    yield "centroid"
    SOLVERS.unregister("centroid")


def _features(tmp_path):
    from sklearn.datasets import load_digits

    from critmass.features import save_arrays_as_entry

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    return X, y, save_arrays_as_entry(tmp_path / "entry", {"train": (X[:1200], y[:1200]), "test": (X[1200:], y[1200:])},
                                      meta={"model": "toy", "dataset": "digits", "layer": "pixels"})


def test_registry_lists_the_builtins_without_torch():
    import subprocess
    import sys

    code = ("import sys; from critmass.probes import list_solvers; print(list_solvers(), "
            "list_solvers('neighbours'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['logistic', 'ridge', 'sgd', 'knn', 'retrieval'] ['knn', 'retrieval'] False"
    assert solver_spec("logistic").forkable and not solver_spec("ridge").forkable
    assert "max_iter" in solver_spec("logistic").options and "subsets" not in solver_spec("logistic").options
    assert "ks" not in solver_spec("retrieval").options and "map_at" in solver_spec("retrieval").options
    with pytest.raises(ValueError, match="unknown solver 'lbfgs'"):
        solver_spec("lbfgs")
    with pytest.raises(RuntimeError, match="registered twice"):
        register_solver("ridge", CentroidProbe, family="linear")


def test_toy_solver_runs_through_run_probes_and_matches_a_naive_centroid(tmp_path, centroid):
    X, y, entry = _features(tmp_path)
    assert centroid in list_solvers("linear")
    res = run_probes(entry, solver=centroid, fractions=[1.0], seeds=1, val_fraction=0.0, device="cpu",
                     out=tmp_path / "run")
    full = res.results[res.results["selector"] == "all"].iloc[0]
    # naive: centroids of the standardised training rows, nearest centroid by Euclidean distance
    mu, sd = X[:1200].mean(0), X[:1200].std(0)
    sd = np.where(sd > 1e-5 * sd.max(), sd, 1.0)
    Z, Zt = (X[:1200] - mu) / sd, (X[1200:] - mu) / sd
    M = np.stack([Z[y[:1200] == c].mean(0) for c in range(10)])
    pred = ((Zt[:, None, :] - M[None]) ** 2).sum(2).argmin(1)
    assert full["test_accuracy"] == pytest.approx(np.mean(pred == y[1200:]))
    assert (tmp_path / "run" / "weights" / "all-seed0.npz").is_file() and full["solver"] == "centroid"
    with pytest.raises(ConfigError, match="unknown option.*'max_iter' for solver 'centroid'"):
        run_probes(entry, solver=centroid, solver_options={"max_iter": 3}, device="cpu")


def test_toy_solver_through_the_cli_with_its_own_option(tmp_path, centroid, capsys):
    from critmass.cli import _main

    _, _, entry = _features(tmp_path)
    out = tmp_path / "cli"
    code = _main(["probe", str(entry), "--out", str(out), "--solver", centroid, "--fractions", "0.5,1", "--seeds", "2",
                  "--option", "shift=0.25", "--alphas", "0,1", "--no-progress", "--device", "cpu"])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "centroid accuracy" in text.out
    df = pd.read_parquet(out / "results.parquet")
    assert set(df["solver"]) == {"centroid"} and df["choice_margin"].notna().all()
    assert '"shift": 0.25' in df["config"].iloc[0]
    assert _main(["probe", str(entry), "--out", str(out), "--solver", centroid, "--max-iter", "5"]) == 2
    assert "--max-iter applies to --solver logistic, not 'centroid'" in capsys.readouterr().err


def test_toy_solver_in_a_sweep_and_a_profile(tmp_path, centroid, capsys):
    from critmass.cli import _main
    from critmass.sweep import load_config, run_sweep

    cfg = {"output": str(tmp_path / "run"), "cache": str(tmp_path / "cache"), "device": "cpu",
           "models": [{"spec": SPEC, "pretrained": False, "image_size": 32}],
           "datasets": [{"spec": "digits", "max_samples": {"train": 200, "test": 80}}],
           "selectors": ["random"], "fractions": [0.5, 1.0], "seeds": [0], "solvers": [centroid],
           "cka": False, "probes": {"device": "cpu"}}
    assert load_config(cfg).solvers == [centroid]
    # spawned workers never ran register_solver: the probe units carry the registration ('module:Class')
    res = run_sweep(cfg, workers=2)
    assert res.ok, res.failures
    assert set(pd.read_parquet(res.run_dir / "results.parquet")["solver"]) == {centroid}

    out = tmp_path / "profile"
    code = _main(["profile", SPEC, "digits", "--out", str(out), "--layers", "penultimate", "--no-pretrained",
                  "--image-size", "32", "--max-samples", "train=120,test=40", "--fractions", "0.25,1", "--seeds", "2",
                  "--solver", centroid, "--n-boot", "20", "--num-workers", "0", "--quiet", "--cache",
                  str(tmp_path / "cache2"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert set(pd.read_parquet(out / "profile.parquet")["solver"]) == {centroid}


def test_request_object_and_thread_context(tmp_path):
    from critmass.probes import ProbeRequest, torch_threads

    _, _, entry = _features(tmp_path)
    request = ProbeRequest(solver="ridge", fractions=[0.25, 1.0], seeds=2, device="cpu")
    a = run_probes(entry, request).results
    b = run_probes(entry, solver="ridge", fractions=[0.25, 1.0], seeds=2, device="cpu").results
    pd.testing.assert_frame_equal(a.drop(columns=["versions"]), b.drop(columns=["versions"]))
    c = run_probes(entry, request, fractions=[1.0]).results  # keywords override the request's fields
    assert set(c["fraction"]) == {1.0} and request.fractions == [0.25, 1.0]
    with pytest.raises(ConfigError, match="unknown argument.*'fraction'"):
        run_probes(entry, fraction=[0.5])
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
