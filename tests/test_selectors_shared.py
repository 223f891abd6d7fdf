"""One definition of every selector and one set of defaults, shared by the probes, CKA and the sweep.

* The subsets behind ``cka.parquet`` rows are the ones ``critmass probe`` saves in
  ``weights/<selector>-seed<seed>.npz`` (same fit rows, same standardised space, same raw-unit
  projection), for random, pca and randproj.
* ``critmass probe``, ``critmass cka``, ``run_probes``, ``cka_curve``, the sweep config and the paper
  configs default to the same fractions, seeds, ``on_constant`` and validation split, and read a seeds
  value by the same rule.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from critmass._defaults import (
    DEFAULT_FRACTIONS,
    DEFAULT_ON_CONSTANT,
    DEFAULT_SEEDS,
    DEFAULT_VAL_FRACTION,
    DEFAULT_VAL_SEED,
    parse_seeds,
)
from critmass.cli._app import main
from critmass.data._splits import train_val_indices
from critmass.exceptions import ConfigError
from critmass.features import save_arrays_as_entry
from critmass.probes import ProbeRequest, run_probes
from critmass.similarity import cka_curve
from critmass.sweep import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SELECTORS = ["random", "pca", "randproj"]
FRACTIONS = [0.25, 0.5, 1.0]


def _naive_cka(a, b):
    a = np.asarray(a, np.float64) - np.asarray(a, np.float64).mean(0)
    b = np.asarray(b, np.float64) - np.asarray(b, np.float64).mean(0)
    k, l_ = a @ a.T, b @ b.T
    return float(np.vdot(k, l_) / np.sqrt(np.vdot(k, k) * np.vdot(l_, l_)))


def _features(n, d=12, seed=0):
    """Low-rank features with an offset and very different column scales, so that fitting on raw or on
    standardised rows (or on all of train or on the fit rows) gives visibly different projections."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 4)) @ rng.normal(size=(4, d)) + np.eye(3, d)[y] * 2.0 + 0.3 * rng.normal(size=(n, d))
    scales = np.geomspace(0.05, 20.0, d)
    return (x * scales + 3.0).astype(np.float32), y


@pytest.fixture(params=["carved", "val-split"])
def entry(request, tmp_path):
    x, y = _features(90, seed=1)
    xt, yt = _features(30, seed=2)
    arrays = {"train": (x, y), "test": (xt, yt)}
    if request.param == "val-split":
        arrays["val"] = _features(24, seed=3)
    meta = {"model": "timm:tiny", "dataset": "toy", "layer": "penultimate"}
    return save_arrays_as_entry(tmp_path / f"entry-{request.param}", arrays, meta), request.param


def _check_cka_rows_use_probe_weights(cka_df, weights_dir, x_train, seeds):
    for sel in SELECTORS:
        for seed in seeds:
            path = weights_dir / f"{sel}-seed{seed}.npz"
            if sel == "pca" and seed != seeds[0]:
                assert not path.exists()  # deterministic: probed once, under the first seed
                path = weights_dir / f"{sel}-seed{seeds[0]}.npz"
            w = np.load(path)
            for k in w["n_neurons"]:
                k = int(k)
                if "components" in w:
                    part = (x_train.astype(np.float64) - w["mean"]) @ w["components"][:, :k]
                else:
                    part = x_train[:, w[f"indices_{k}"]]
                row = cka_df[(cka_df.selector == sel) & (cka_df.seed == seed) & (cka_df.n_neurons == k)]
                assert len(row) == 1, (sel, seed, k)
                assert abs(row["cka"].item() - _naive_cka(part, x_train)) < 1e-9, (sel, seed, k)


@pytest.mark.numeric
def test_cka_parquet_rows_are_the_subsets_the_probes_saved(entry, tmp_path, capsys):
    entry, kind = entry
    x_train = np.load(entry / "train" / "features.npy")
    y_train = np.load(entry / "train" / "labels.npy")
    common = ["--fractions", ",".join(map(str, FRACTIONS)), "--seeds", "0,1", "--selector", ",".join(SELECTORS)]
    assert main(["probe", str(entry), *common, "--solver", "ridge", "--device", "cpu", "--threads", "1",
                 "--no-progress", "--out", str(tmp_path / "probe")]) == 0, capsys.readouterr().err
    assert main(["cka", str(entry), *common, "--out", str(tmp_path / "cka")]) == 0, capsys.readouterr().err
    df = pd.read_parquet(tmp_path / "cka" / "cka.parquet")
    _check_cka_rows_use_probe_weights(df, tmp_path / "probe" / "weights", x_train, [0, 1])
    # The fit rows are recorded: the probes' carved 90% of train, or all of train next to a val split.
    n_fit = len(train_val_indices(y_train, DEFAULT_VAL_FRACTION, seed=DEFAULT_VAL_SEED)[0]) if kind == "carved" else 90
    assert (df["n_fit"] == n_fit).all() and (df["val_seed"] == DEFAULT_VAL_SEED).all()
    assert (df["val_fraction"] == (DEFAULT_VAL_FRACTION if kind == "carved" else 0.0)).all()


@pytest.mark.numeric
def test_cka_curve_follows_the_probes_validation_split(tmp_path):
    x, y = _features(90, seed=4)
    xt, yt = _features(30, seed=5)
    entry = save_arrays_as_entry(tmp_path / "e", {"train": (x, y), "test": (xt, yt)},
                                 {"model": "m", "dataset": "toy", "layer": "penultimate"})
    kw = dict(selectors=SELECTORS, fractions=FRACTIONS, seeds=[3])
    run_probes(entry, **kw, solver="ridge", device="cpu", val_fraction=0.3, val_seed=7, out=tmp_path / "p")
    df = cka_curve(entry, **kw, val_fraction=0.3, val_seed=7)
    _check_cka_rows_use_probe_weights(df, tmp_path / "p" / "weights", x, [3])
    assert (df["val_fraction"] == 0.3).all() and (df["val_seed"] == 7).all()
    assert (df["n_fit"] == len(train_val_indices(y, 0.3, seed=7)[0])).all()


@pytest.mark.numeric
def test_the_cka_path_computes_with_the_saved_arrays_themselves(tmp_path, monkeypatch):
    """White box: the bases and index sets handed to the CKA estimators are the saved arrays."""
    from critmass.similarity import _curve

    x, y = _features(60, seed=6)
    entry = save_arrays_as_entry(tmp_path / "e", {"train": (x, y), "test": _features(20, seed=7)},
                                 {"model": "m", "dataset": "toy", "layer": "penultimate"})
    seen = {"bases": [], "indices": []}
    proj, weights = _curve._projection_values, _curve._subset_weights
    monkeypatch.setattr(_curve, "_projection_values", lambda s, basis, *a, **k: (seen["bases"].append(basis),
                                                                                 proj(s, basis, *a, **k))[1])
    monkeypatch.setattr(_curve, "_subset_weights", lambda subsets, d: (seen["indices"].append(subsets),
                                                                       weights(subsets, d))[1])
    kw = dict(selectors=SELECTORS, fractions=FRACTIONS, seeds=[0, 1])
    cka_curve(entry, **kw)
    run_probes(entry, **kw, solver="ridge", device="cpu", out=tmp_path / "p")
    wdir = tmp_path / "p" / "weights"
    saved = [np.load(wdir / f"{s}-seed{i}.npz")["components"] for s, i in (("pca", 0), ("randproj", 0), ("randproj", 1))]
    assert len(seen["bases"]) == 3
    for got, want in zip(seen["bases"], saved):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for got, seed in zip(seen["indices"], (0, 1)):
        w = np.load(wdir / f"random-seed{seed}.npz")
        for idx, k in zip(got, w["n_neurons"]):
            np.testing.assert_array_equal(idx, w[f"indices_{int(k)}"])


# ------------------------------------------------------------------------------------------- defaults
def _option_default(command, name):
    return inspect.signature(command).parameters[name].default.default


def test_defaults_agree_across_commands(tmp_path):
    from critmass.cli._cka import cka_command
    from critmass.cli._probe import probe

    want_seeds = list(range(5))
    assert DEFAULT_SEEDS == 5 and len(DEFAULT_FRACTIONS) == 15 and parse_seeds(DEFAULT_SEEDS) == want_seeds
    # critmass probe
    assert parse_seeds(_option_default(probe, "seeds")) == want_seeds
    assert tuple(float(f) for f in _option_default(probe, "fractions").split(",")) == DEFAULT_FRACTIONS
    assert _option_default(probe, "val_fraction") == DEFAULT_VAL_FRACTION
    assert _option_default(probe, "val_seed") == DEFAULT_VAL_SEED
    # run_probes and cka_curve
    # (run_probes takes its arguments as a ProbeRequest: its fields hold the defaults)
    rp = inspect.signature(ProbeRequest).parameters
    cc = inspect.signature(cka_curve).parameters
    for params in (rp, cc):
        assert parse_seeds(params["seeds"].default) == want_seeds
        assert tuple(params["fractions"].default) == DEFAULT_FRACTIONS
        assert params["val_fraction"].default == DEFAULT_VAL_FRACTION
        assert params["val_seed"].default == DEFAULT_VAL_SEED
    assert cc["on_constant"].default == DEFAULT_ON_CONSTANT
    # the sweep config
    cfg = load_config({"models": [{"spec": "timm:resnet18"}], "datasets": [{"spec": "digits"}]}, check_paths=False)
    assert cfg.seeds == want_seeds and tuple(cfg.fractions) == DEFAULT_FRACTIONS
    assert cfg.cka.on_constant == DEFAULT_ON_CONSTANT
    assert (cfg.probes.val_fraction, cfg.probes.val_seed) == (DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED)
    # critmass cka (its options default to None so that the two-set mode can refuse them): run it
    x, y = _features(40, d=12, seed=8)
    x[:, 0] = 1.5  # a dead neuron: the first prefix subset has undefined CKA
    entry = save_arrays_as_entry(tmp_path / "e", {"train": (x, y)}, {"model": "m", "dataset": "t", "layer": "l"})
    assert _option_default(cka_command, "seeds") is None
    assert main(["cka", str(entry), "--selector", "random,prefix", "--out", str(tmp_path / "c")]) == 0
    df = pd.read_parquet(tmp_path / "c" / "cka.parquet")
    assert sorted(set(df["seed"])) == want_seeds
    assert tuple(df.loc[(df.selector == "random") & (df.seed == 0), "fraction"]) == DEFAULT_FRACTIONS
    assert df.loc[(df.selector == "prefix") & (df.n_neurons == 1), "cka"].isna().all()  # on_constant='nan'
    assert (df["val_fraction"] == DEFAULT_VAL_FRACTION).all() and (df["val_seed"] == DEFAULT_VAL_SEED).all()


@pytest.mark.parametrize("name", ["table1", "resnets", "vits", "baselines", "adversarial", "imagenet_places"])
def test_paper_configs_use_the_shared_grid(name):
    cfg = load_config(EXAMPLES / "paper" / f"{name}.yaml", check_paths=False)
    assert tuple(cfg.fractions) == DEFAULT_FRACTIONS and cfg.seeds == parse_seeds(DEFAULT_SEEDS)
    assert cfg.cka.on_constant == DEFAULT_ON_CONSTANT


# ----------------------------------------------------------------------------------------- seed rules
ACCEPTED = [(5, [0, 1, 2, 3, 4]), ("5", [0, 1, 2, 3, 4]), ("1,2,3", [1, 2, 3]), ("3,", [3]), ([4, 7], [4, 7]),
            ((0,), [0]), (np.array([2, 0]), [2, 0]), ([np.int64(6)], [6])]
REFUSED = [0, "0", -1, "-2", [], "", "1,1", [1, 1], [-1], "1,-1", "five", [1.5], ["1"], True, None]


def _seed_readers(tmp_path):
    """Every place that reads a seeds value, as ``value -> list of seeds`` (raising ConfigError)."""
    from critmass.cli._probe import parse_seeds as cli_probe_seeds
    from critmass._defaults import parse_seeds as probes_seeds

    x = _features(20, d=6, seed=9)[0]

    def curve(value):
        return sorted(set(cka_curve(x, fractions=[1.0], seeds=value)["seed"]))

    def sweep(value):
        return load_config({"models": [{"spec": "timm:resnet18"}], "datasets": [{"spec": "digits"}],
                            "seeds": value}, check_paths=False).seeds

    return {"parse_seeds": parse_seeds, "run_probes": probes_seeds, "cli probe": cli_probe_seeds,
            "cka_curve": curve, "sweep": sweep}


@pytest.mark.parametrize("value, want", ACCEPTED, ids=[repr(v) for v, _ in ACCEPTED])
def test_seed_values_mean_the_same_everywhere(value, want, tmp_path):
    for where, read in _seed_readers(tmp_path).items():
        got = read(value)
        assert (sorted(got) if where == "cka_curve" else got) == (sorted(want) if where == "cka_curve" else want), where


@pytest.mark.parametrize("value", REFUSED, ids=[repr(v) for v in REFUSED])
def test_seed_values_are_refused_everywhere(value, tmp_path):
    for where, read in _seed_readers(tmp_path).items():
        with pytest.raises(ConfigError) as info:
            read(value)
        assert "seed" in str(info.value) and "\n" not in str(info.value), where


@pytest.mark.parametrize("value", ["0", "1,1", "five", "-1"])
def test_cli_seed_strings_are_refused_alike(value, tmp_path, capsys):
    x, y = _features(30, d=6, seed=10)
    entry = save_arrays_as_entry(tmp_path / "e", {"train": (x, y), "test": (x, y)},
                                 {"model": "m", "dataset": "t", "layer": "l"})
    errors = []
    for cmd in (["probe", str(entry), "--solver", "ridge", "--no-progress"], ["cka", str(entry)]):
        assert main([*cmd, "--seeds", value, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("critmass: error: ") and err.count("\n") == 1 and "--seeds" in err
        errors.append(err)
    assert errors[0] == errors[1]  # one rule, one message
    assert not (tmp_path / "o").exists()
