"""`critmass profile`: every layer in one forward pass, per-layer DR and CKA, the depth x depth CKA matrix."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from critmass.exceptions import ConfigError, LayerNotFoundError
from critmass.features import extract, extract_layers, load_features
from critmass.features._extract import width_units
from critmass.profile import LAYER_CKA_COLUMNS, PROFILE_COLUMNS, profile
from critmass.models import LayerReader, load_model

SPEC = "timm:test_resnet"
# 32 px digits, a stratified 150 / 60 subset: seconds on one core.
KW = dict(split=["train", "test"], image_size=32, max_samples={"train": 150, "test": 60}, progress=False,
          num_workers=0, batch_size=32, pretrained=False)
FRACTIONS = [0.1, 0.5, 1.0]


def _backbone():
    return load_model(SPEC, pretrained=False, image_size=32)


def _count_batches(bb):
    """Forward passes of the backbone's stem: one per batch of one pass over the images."""
    calls = {"n": 0}
    bb.module.conv1.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    return calls


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    cache = tmp_path_factory.mktemp("profile-cache")
    prof = profile(SPEC, "digits", out=out, layers="stages", fractions=FRACTIONS, seeds=2, solver="ridge", n_boot=50,
                   cache=cache, **KW)
    return prof, cache


def test_one_pass_features_equal_single_layer_extraction(tmp_path, monkeypatch):
    bb = _backbone()
    calls = _count_batches(bb)
    fsets = extract_layers(bb, "digits", layers="layer1,penultimate", cache=tmp_path / "a", **KW)
    assert list(fsets) == ["layer1", "penultimate"]
    # One pass over each split (150 / 32 -> 5 batches, 60 / 32 -> 2), not one per layer; plus the one-sample
    # forward that measures the pooled widths for --max-width.
    assert calls["n"] == 1 + 5 + 2
    for layer, fs in fsets.items():
        single = extract(SPEC, "digits", layer=layer, cache=tmp_path / "b", **KW)
        for split in ("train", "test"):
            assert fs[split].x.shape == single[split].x.shape
            np.testing.assert_allclose(fs[split].x, single[split].x, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(fs[split].y, single[split].y)
        # Same cache identity: the entry directory name carries the key.
        assert fs.meta["source"].rsplit("/", 1)[-1] == single.meta["source"].rsplit("/", 1)[-1]
    # A later single-layer extraction into the profile's cache is a hit: no forward pass at all.
    reads = {"n": 0}
    original = LayerReader.__call__

    def counting(self, batch):
        reads["n"] += 1
        return original(self, batch)

    monkeypatch.setattr(LayerReader, "__call__", counting)
    hit = extract(SPEC, "digits", layer="layer1", cache=tmp_path / "a", **KW)
    assert reads["n"] == 0 and hit.meta["source"] == fsets["layer1"].meta["source"]
    # ... and so is the whole profile again (layers already cached are not computed).
    n = calls["n"]
    extract_layers(bb, "digits", layers=["layer1", "penultimate"], cache=tmp_path / "a", **KW)
    assert calls["n"] == n + 1  # only the width probe


def test_layer_cka_and_subset_cka_equal_the_similarity_api(run):
    from critmass.similarity import cka_between, cka_curve

    prof, _ = run
    names = list(prof.profile["layer"])
    assert names == ["layer1", "layer2", "layer3", "layer4", "penultimate"]
    mat = prof.matrix()
    for a in names:
        for b in names:
            want = cka_between(prof.entries[a], prof.entries[b], split="train")
            assert abs(mat.loc[a, b] - want) < 1e-9, (a, b, mat.loc[a, b], want)
    np.testing.assert_allclose(np.diag(mat.to_numpy()), 1.0, atol=1e-12)
    np.testing.assert_allclose(mat.to_numpy(), mat.to_numpy().T, atol=1e-12)
    # Subset-vs-full CKA from the joint Gram equals cka_curve on each cache entry (the probes' subsets).
    for layer in names:
        want = cka_curve(prof.entries[layer], selectors=["random"], fractions=FRACTIONS, seeds=2)
        got = prof.cka[prof.cka["layer"] == layer].reset_index(drop=True)
        pd.testing.assert_frame_equal(got.drop(columns="cka"), want.drop(columns="cka"))
        np.testing.assert_allclose(got["cka"], want["cka"], rtol=0, atol=1e-10)


def test_profile_table_matches_metrics_and_probes(run):
    from critmass.metrics import dr

    prof, _ = run
    p = prof.profile
    assert list(p.columns) == list(PROFILE_COLUMNS) and list(p["depth"]) == list(range(len(p)))
    assert list(prof.layer_cka.columns) == list(LAYER_CKA_COLUMNS) and len(prof.layer_cka) == len(p) ** 2
    want = dr(prof.results, 0.9, selector="random", n_boot=50, random_state=0).set_index("layer")
    for _, r in p.iterrows():
        w = want.loc[r["layer"]]
        full = prof.results[(prof.results["layer"] == r["layer"]) & (prof.results["selector"] == "all")]
        assert r["full_accuracy"] == pytest.approx(full["test_accuracy"].mean(), abs=1e-12)
        for col in ("dr", "dr_ci_low", "dr_ci_high", "critical_n_neurons"):
            assert r[col] == pytest.approx(w[col], abs=1e-12)
        assert r["width"] == load_features(r["entry"]).n_features
        at = prof.cka[(prof.cka["layer"] == r["layer"]) & (prof.cka["n_neurons"] == r["critical_n_neurons"])]
        assert r["cka_at_critical"] == pytest.approx(at["cka"].mean(), abs=1e-12)
    saved = pd.read_parquet(prof.out / "profile.parquet")
    pd.testing.assert_frame_equal(saved, p)
    meta = json.loads((prof.out / "profile.json").read_text())
    assert meta["config"]["seeds"] == [0, 1] and meta["config"]["layers"] == list(p["layer"])
    assert set(meta["entries"]) == set(p["layer"]) and "torch" in meta["versions"]


def test_report_has_the_depth_figures(run, tmp_path):
    from critmass.report import build_report

    prof, _ = run
    from critmass.report import load_run
    from critmass.report._profile import profile_figures

    figs = profile_figures(load_run(prof.out), n_boot=0)
    depth = figs["profile_depth"].axes[0]
    dr_line = next(line for line in depth.get_lines() if line.get_gid() == "dr")
    np.testing.assert_allclose(dr_line.get_ydata(), prof.profile["dr"])
    heat = figs["layer_cka"].axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(heat), prof.matrix().to_numpy())
    rep = build_report(prof.out, out=tmp_path / "report", formats=["png"], n_boot=0)
    for name in ("profile_depth", "layer_cka"):
        assert (tmp_path / "report" / "figures" / f"{name}.png").stat().st_size > 1000
    html = rep.html.read_text()
    assert 'id="sec-profile_depth"' in html and 'id="sec-layer_cka"' in html
    assert "DR and full accuracy across depth" in html


def test_max_width_caps_flatten_with_seeded_units(tmp_path, caplog):
    bb = _backbone()
    with caplog.at_level(logging.WARNING, logger="critmass"):
        capped = extract_layers(bb, "digits", layers=["layer1", "penultimate"], pooling="flatten", max_width=100,
                                width_seed=3, cache=tmp_path, **{**KW, "pretrained": True})
    assert "layer 'layer1' gives 2048 features" in caplog.text and "keeping 100 random units" in caplog.text
    fs = capped["layer1"]
    assert fs.n_features == 100
    units = np.load(fs.meta["source"] + "/units.npy")
    np.testing.assert_array_equal(units, width_units(2048, 100, 3))
    assert len(np.unique(units)) == 100 and units.max() < 2048
    assert fs["train"].manifest["width_cap"] == {"max_width": 100, "width_seed": 3, "width": 2048}
    # The kept columns are exactly those columns of the uncapped flattened map.
    full = extract(bb, "digits", layer="layer1", pooling="flatten", cache=tmp_path / "full", **KW)
    assert full.n_features == 2048
    np.testing.assert_allclose(fs.x_train, full.x_train[:, units], rtol=0, atol=1e-6)
    # Capped and uncapped are different entries; penultimate (96 <= 100) keeps the plain key.
    assert fs.meta["source"] != full.meta["source"]
    plain = extract(bb, "digits", layer="penultimate", pooling="flatten", cache=tmp_path / "full", **KW)
    assert capped["penultimate"].meta["source"].rsplit("/", 1)[-1] == plain.meta["source"].rsplit("/", 1)[-1]
    # Seeded: the same seed is a cache hit with the same units, another seed other units and another entry.
    again = extract(bb, "digits", layer="layer1", pooling="flatten", max_width=100, width_seed=3, cache=tmp_path, **KW)
    assert again.meta["source"] == fs.meta["source"]
    other = extract(bb, "digits", layer="layer1", pooling="flatten", max_width=100, width_seed=4, cache=tmp_path, **KW)
    assert other.meta["source"] != fs.meta["source"]
    other_units = np.load(other.meta["source"] + "/units.npy")
    assert not np.array_equal(other_units, units)
    np.testing.assert_allclose(other.x_train, full.x_train[:, other_units], rtol=0, atol=1e-6)


def test_stages_discovery_and_bad_layers(capsys):
    from critmass.cli import _main
    from critmass.models._stages import all_block_layers, resolve_layers, stage_layers

    bb = _backbone()
    assert stage_layers(bb) == ["layer1", "layer2", "layer3", "layer4", "penultimate"]  # stem act1 dropped
    assert all_block_layers(bb) == ["layer1.0", "layer2.0", "layer3.0", "layer4.0", "penultimate"]
    vit = load_model("timm:test_vit", pretrained=False)
    assert stage_layers(vit) == [f"blocks.{i}" for i in range(6)] + ["penultimate"]
    eff = load_model("timm:test_efficientnet", pretrained=False)
    assert stage_layers(eff) == [f"blocks.{i}" for i in range(len(eff.module.blocks))] + ["penultimate"]
    with pytest.raises(LayerNotFoundError, match=r"layer 'layer9' not in timm:test_resnet.*closest: layer4"):
        resolve_layers(bb, "layer1,layer9")
    with pytest.raises(ConfigError, match="given twice"):
        resolve_layers(bb, ["layer1", "layer1"])
    with pytest.raises(ConfigError, match="needs the train and test splits"):
        profile(bb, "digits", out="unused", split=["train"])
    with pytest.raises(ConfigError, match=r"unknown solver 'rdge' \(closest: ridge\)"):
        profile(bb, "digits", out="unused", solver="rdge")
    assert _main(["layers", SPEC, "--stages"]) == 0
    assert capsys.readouterr().out.split() == ["layer1", "layer2", "layer3", "layer4", "penultimate"]


def test_cli_profile_writes_the_tables(tmp_path, capsys):
    from critmass.cli import _main

    out = tmp_path / "run"
    code = _main(["profile", SPEC, "digits", "--out", str(out), "--layers", "layer2,penultimate", "--no-pretrained",
                  "--image-size", "32", "--max-samples", "train=120,test=40", "--fractions", "0.25,1", "--seeds", "2",
                  "--solver", "ridge", "--n-boot", "20", "--num-workers", "0", "--quiet", "--cache",
                  str(tmp_path / "cache")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "layer2" in text and "penultimate" in text and "DR(0.9)" in text
    p = pd.read_parquet(out / "profile.parquet")
    assert list(p["layer"]) == ["layer2", "penultimate"] and (out / "layer_cka.parquet").is_file()
    assert _main(["profile", SPEC, "digits", "--out", str(out), "--layers", "nope", "--no-pretrained"]) == 2
    assert "layer 'nope' not in timm:test_resnet" in capsys.readouterr().err


def test_cli_extract_layers_is_one_pass_with_the_single_layer_entries(tmp_path, capsys, monkeypatch):
    from critmass.cli import _main

    args = ["--no-pretrained", "--image-size", "32", "--max-samples", "train=150,test=60", "--num-workers", "0",
            "--batch-size", "32", "--quiet", "--cache", str(tmp_path / "c")]
    passes = {"n": 0}
    import critmass.features._extract as ex

    original = ex.extract_entries

    def counting(*a, **kw):
        passes["n"] += 1
        return original(*a, **kw)

    monkeypatch.setattr(ex, "extract_entries", counting)
    assert _main(["extract", SPEC, "digits", "--layers", "layer1,penultimate", *args]) == 0
    out = capsys.readouterr().out
    assert passes["n"] == 1 and "layer1 train: 150 x" in out and "penultimate test: 60 x" in out
    entries = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
    single = extract(SPEC, "digits", layer="layer1", cache=tmp_path / "c", **KW)  # a cache hit of that entry
    assert entries[0] == single.meta["source"] and len(entries) == 2
    assert _main(["extract", SPEC, "digits", "--layers", "stages", *args]) == 0  # the named set
    assert capsys.readouterr().out.count(str(tmp_path)) == 5
    assert _main(["extract", SPEC, "digits", "--layer", "layer1", "--layers", "layer2", *args]) == 2
    assert "not both" in capsys.readouterr().err
    assert _main(["extract", SPEC, "digits", "--layers", "layer1,nope", *args]) == 2
    assert "layer 'nope' not in timm:test_resnet" in capsys.readouterr().err


def test_sweep_extracts_a_models_layers_in_one_unit(tmp_path):
    from critmass.sweep import plan_sweep
    from critmass.sweep._units import _entry_of, execute_unit

    cfg = {"models": [{"spec": SPEC, "pretrained": False, "image_size": 32, "layers": ["layer1", "penultimate"]}],
           "datasets": [{"spec": "digits", "max_samples": 80}], "fractions": [0.5, 1.0], "seeds": 1,
           "solvers": ["ridge"], "cka": False, "cache": str(tmp_path / "cache"), "num_workers": 0}
    plan = plan_sweep(cfg, out=tmp_path / "run")
    (ext,) = plan.of_kind("extract")
    assert ext.params["layers"] == ["layer1", "penultimate"] and "layer" not in ext.params
    probes = plan.of_kind("probe")
    assert {u.layer for u in probes} == {"layer1", "penultimate"} and all(u.extract_key == ext.key for u in probes)
    st = execute_unit(ext, tmp_path / "run")
    assert st["status"] == "ok", st.get("error")
    assert set(st["entry"]) == {"layer1", "penultimate"}
    single = extract(SPEC, "digits", layer="layer1", cache=tmp_path / "cache", split=["train", "test"],
                     image_size=32, max_samples=80, pretrained=False, progress=False, num_workers=0)
    assert single.meta["source"] == st["entry"]["layer1"]  # the sweep wrote the ordinary single-layer entry
    from dataclasses import replace

    unit = replace(probes[0], entry=st["entry"])
    assert _entry_of(unit) == st["entry"][unit.layer]
    pst = execute_unit(unit, tmp_path / "run")
    assert pst["status"] == "ok", pst.get("error")


def test_old_module_path_still_serves_the_names_with_a_deprecation_warning():
    import critmass.features._profile as old
    import critmass.profile

    with pytest.warns(DeprecationWarning, match="import it from critmass.profile"):
        assert old.profile is critmass.profile.profile
    with pytest.warns(DeprecationWarning, match="import it from critmass.features"):
        assert old.extract_layers is extract_layers
    with pytest.raises(AttributeError):
        old.nothing_here


def test_cka_matrix_equals_pairwise_cka_both_ways():
    from critmass.similarity import cka, cka_matrix, gram_stats

    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 7))
    xs = [a, a @ rng.normal(size=(7, 5)), rng.normal(size=(10, 3))]
    feat = cka_matrix(xs, names=["a", "b", "c"])
    samp = cka_matrix(xs, names=["a", "b", "c"], max_bytes=8 * 15 * 15 - 1)  # the joint Gram does not fit
    assert (feat.method, samp.method) == ("features", "samples") and samp.stats == [None] * 3
    want = np.array([[cka(x, y) for y in xs] for x in xs])
    np.testing.assert_allclose(feat.matrix, want, atol=1e-10)
    np.testing.assert_allclose(samp.matrix, want, atol=1e-10)
    for x, st in zip(xs, feat.stats):  # each diagonal block is that representation's own Gram
        np.testing.assert_allclose(st.gram, gram_stats(x).gram, atol=1e-9)
    with pytest.raises(ConfigError, match="'b' has 4 rows but 'a' has 10"):
        cka_matrix([a, a[:4]], names=["a", "b"])
