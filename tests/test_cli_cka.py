"""`critmass cka`: the curve table, the one-number comparison and one-line errors."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from critmass.cli._app import main
from critmass.features import save_arrays_as_entry
from critmass.similarity import CKA_COLUMNS, cka, cka_curve


def _features(n, d, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) @ rng.normal(size=(3, d)) + 0.2 * rng.normal(size=(n, d)) + 1.0).astype(np.float32)


@pytest.fixture
def entry(tmp_path):
    x, y = _features(40, 12, 0), np.arange(40) % 4
    xt, yt = _features(16, 12, 1), np.arange(16) % 4
    return save_arrays_as_entry(tmp_path / "entry", {"train": (x, y), "test": (xt, yt)},
                                {"model": "timm:tiny", "dataset": "toy", "layer": "penultimate"})


def test_cli_curve_writes_a_tidy_parquet_table(entry, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["cka", str(entry), "--fractions", "0.25,0.5,1", "--seeds", "3", "--selector", "random,pca,randproj",
                 "--debiased", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(out / "cka.parquet")
    assert list(df.columns) == list(CKA_COLUMNS)
    assert len(df) == 3 * 3 * 3
    assert df["cka_debiased"].notna().all()
    assert set(df["selector"]) == {"random", "pca", "randproj"} and set(df["seed"]) == {0, 1, 2}
    assert (df["model"] == "timm:tiny").all() and (df["split"] == "train").all()
    want = cka_curve(entry, selectors=["random", "pca", "randproj"], fractions=[0.25, 0.5, 1.0], seeds=3,
                     debiased=True)
    np.testing.assert_allclose(df["cka"], want["cka"], rtol=0, atol=1e-12)
    assert "wrote 27 CKA values" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name != "cka.parquet"]  # no temp files left behind


def test_cli_curve_without_debiased_and_explicit_seeds(entry, tmp_path):
    out = tmp_path / "out2"
    assert main(["cka", str(entry), "--fractions", "0.5", "--seeds", "4,7", "--split", "test", "--out", str(out)]) == 0
    df = pd.read_parquet(out / "cka.parquet")
    assert df["seed"].tolist() == [4, 7] and df["cka_debiased"].isna().all() and (df["split"] == "test").all()


def test_cli_two_feature_sets_print_one_number(entry, tmp_path, capsys):
    y = np.arange(40) % 4
    xb = _features(40, 7, 2)
    other = save_arrays_as_entry(tmp_path / "other", {"train": (xb, y)},
                                 {"model": "m:b", "dataset": "toy", "layer": "x"})
    assert main(["cka", str(entry), str(other), "--debiased"]) == 0
    printed = capsys.readouterr().out.strip()
    xa = np.load(entry / "train" / "features.npy")
    assert abs(float(printed) - cka(xa, xb, debiased=True)) < 1e-10


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fractions", "0.5"], "needs --out"),
        (["--out", "OUT", "--selector", "randm"], "unknown selector 'randm'"),
        (["--out", "OUT", "--fractions", "0,1"], r"fraction must be in \(0, 1\]"),
        (["--out", "OUT", "--seeds", "five"], "--seeds must be a count"),
        (["--out", "OUT", "--on-constant", "zero"], "on_constant must be one of"),
    ],
)
def test_cli_curve_errors_are_one_line(entry, tmp_path, capsys, args, message):
    args = [a.replace("OUT", str(tmp_path / "o")) for a in args]
    message = message.replace("needs --out", "pass --out DIR")
    assert main(["cka", str(entry), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("critmass: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_cli_comparison_errors(entry, tmp_path, capsys):
    y = (np.arange(40) % 4)[::-1].copy()
    shuffled = save_arrays_as_entry(tmp_path / "shuf", {"train": (_features(40, 5, 3), y)},
                                    {"model": "m:s", "dataset": "toy", "layer": "x"})
    assert main(["cka", str(entry), str(shuffled)]) == 2
    err = capsys.readouterr().err
    assert "labels of" in err and "different order" in err and err.count("\n") == 1
    assert main(["cka", str(entry), str(shuffled), "--out", str(tmp_path)]) == 2
    assert "--out apply to the subset curve" in capsys.readouterr().err
    assert main(["cka", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
