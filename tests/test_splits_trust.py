"""Issue 11, items 1, 2, 13, 14, 16, 20: disjoint train/val, one source split per split, per-split
sub-sampling from the CLI, and result rows that name weights, pooling and classes."""

import json

import numpy as np
import pytest

from critmass.data import MissingSplit, load_dataset, load_splits
from critmass.exceptions import FeatureError
from critmass.features import load_features, save_arrays_as_entry

KW = dict(image_size=32, progress=False, num_workers=0, batch_size=64, pretrained=False)


# ---- item 1: a carved val is never a training row --------------------------------------------------------------
def test_carved_val_is_held_out_of_train():
    pool = load_dataset("digits", "train")  # train as the dataset defines it
    sp = load_splits("digits", ["train", "val", "test"], seed=3)
    tr, va = sp["train"], sp["val"]
    assert np.intersect1d(tr.indices, va.indices).size == 0
    # train = the rest, as train_test_split would give: together they are the whole train pool.
    np.testing.assert_array_equal(np.sort(np.concatenate([tr.indices, va.indices])), np.sort(pool.indices))
    assert tr.info["pool"] == va.info["pool"] == "train" and tr.info["val_held_out"]
    # Sub-sampled splits stay disjoint.
    sub = load_splits("digits", ["train", "val"], max_samples={"train": 300, "val": 50})
    assert (len(sub["train"]), len(sub["val"])) == (300, 50)
    assert np.intersect1d(sub["train"].indices, sub["val"].indices).size == 0
    # Without val in the request train stays whole.
    assert len(load_splits("digits", ["train", "test"])["train"]) == len(pool)


def test_extracted_train_val_never_share_a_sample(tmp_path):
    from critmass.features import extract, sample_ids
    from critmass.probes import run_probes

    fs = extract("timm:test_resnet", "digits", split=["train", "val", "test"], cache=tmp_path, **KW)
    n_pool = len(load_dataset("digits", "train"))
    # Old code kept train whole (1437 rows) beside a val carved from it (144 rows).
    assert fs["train"].n_samples + fs["val"].n_samples == n_pool
    (p_tr, ids_tr), (p_va, ids_va) = sample_ids(fs, "train"), sample_ids(fs, "val")
    assert p_tr == p_va == "train" and np.intersect1d(ids_tr, ids_va).size == 0
    # The whole-train entry is another entry: neither overwrites the other.
    whole = extract("timm:test_resnet", "digits", split=["train", "test"], cache=tmp_path, **KW)
    assert whole.meta["source"] != fs.meta["source"] and whole["train"].n_samples == n_pool
    assert load_features(fs.meta["source"])["train"].n_samples == fs["train"].n_samples
    res = run_probes(fs, selectors=["random"], fractions=[0.5], seeds=1, save_weights=False)
    assert json.loads(res.results["config"][0])["val_source"] == "split"
    assert (res.results["n_val"] == fs["val"].n_samples).all()


def _entry(tmp_path, n=40, d=6, train_ids=None, val_ids=None, train_info=None, val_info=None):
    rng = np.random.default_rng(0)
    arrays = {s: (rng.normal(size=(m, d)).astype(np.float32), np.arange(m) % 2)
              for s, m in (("train", n), ("val", 10), ("test", 10))}
    entry = save_arrays_as_entry(tmp_path / "e", arrays, {"model": "m", "dataset": "d", "layer": "l"})
    for split, ids, info in (("train", train_ids, train_info), ("val", val_ids, val_info)):
        man_path = entry / split / "manifest.json"
        man = json.loads(man_path.read_text())
        if ids is not None:
            np.save(entry / split / "samples.npy", np.asarray(ids, dtype=np.int64))
            man["sample_pool"] = "train"
        if info is not None:
            man["dataset_info"] = info
        man_path.write_text(json.dumps(man))
    return entry


def test_run_probes_refuses_overlapping_train_and_val(tmp_path):
    from critmass.probes import run_probes

    opts = dict(selectors=["random"], fractions=[0.5], seeds=1, save_weights=False)
    overlap = _entry(tmp_path / "a", train_ids=np.arange(40), val_ids=np.arange(35, 45))
    with pytest.raises(FeatureError, match="5 of its 10 val samples are also train samples") as exc:
        run_probes(overlap, **opts)
    assert "\n" not in str(exc.value)
    disjoint = _entry(tmp_path / "b", train_ids=np.arange(40), val_ids=np.arange(40, 50))
    assert len(run_probes(disjoint, **opts).results) == 2
    # An entry from before sample ids were recorded: a val carved from a train that was kept whole.
    legacy = _entry(tmp_path / "c", train_info={"split": "train"}, val_info={"split": "val", "val_carved_from": "train"})
    with pytest.raises(FeatureError, match="carved from train but train was kept whole"):
        run_probes(legacy, **opts)
    held = _entry(tmp_path / "d", train_info={"val_held_out": True}, val_info={"val_carved_from": "train"})
    assert len(run_probes(held, **opts).results) == 2


# ---- item 2: one source split per requested split --------------------------------------------------------------
def _hf_dir(tmp_path, splits):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    dd = datasets.DatasetDict({
        name: datasets.Dataset.from_dict({"text": [f"{name} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]},
                                         features=feats)
        for name, n in splits.items()})
    path = tmp_path / "hfds"
    dd.save_to_disk(str(path))
    return f"hf:{path}"


def test_hf_validation_is_never_served_as_test(tmp_path):
    spec = _hf_dir(tmp_path, {"train": 50, "validation": 10})
    val = load_dataset(spec, "val")
    assert len(val) == 10 and val[0][0].startswith("validation")
    with pytest.raises(MissingSplit, match=r"has splits train, validation and no test split; pass --carve-test") as exc:
        load_dataset(spec, "test")
    assert "\n" not in str(exc.value)
    sp = load_splits(spec, ["train", "val", "test"], carve_test=True)
    assert len(sp["test"]) == 10 and len(sp["train"]) == 40 and len(sp["val"]) == 10
    assert all(sp["test"][i][0].startswith("train") for i in range(len(sp["test"])))
    assert np.intersect1d(sp["train"].indices, sp["test"].indices).size == 0
    # A dataset with a real test split uses it, validation stays validation.
    spec3 = _hf_dir(tmp_path / "three", {"train": 20, "validation": 6, "test": 8})
    assert load_dataset(spec3, "test")[0][0].startswith("test")
    assert load_dataset(spec3, "val")[0][0].startswith("validation")


def test_hf_extract_without_test_is_one_line_error(tmp_path, capsys):
    from critmass.cli._app import main

    spec = _hf_dir(tmp_path, {"train": 50, "validation": 10})
    capsys.readouterr()  # save_to_disk's progress bar
    rc = main(["extract", "all-minilm-l6-v2", spec, "--split", "train,test", "--cache", str(tmp_path / "c"), "-q"])
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("critmass: error:")]
    assert rc == 2 and len(line) == 1 and "no test split" in line[0] and "--carve-test" in line[0]


# ---- item 13: no dataset loading scripts ------------------------------------------------------------------------
def test_hub_datasets_never_run_loading_scripts(monkeypatch):
    datasets = pytest.importorskip("datasets")
    seen = {}

    def fake_load_dataset(name, **kwargs):
        seen.update(kwargs)
        raise FileNotFoundError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(Exception, match="cannot load Hugging Face dataset"):
        load_dataset("hf:someone/some-dataset", "train")
    assert seen.get("trust_remote_code") is False


# ---- item 14: --max-samples per split ---------------------------------------------------------------------------
def test_cli_max_samples_per_split(tmp_path, capsys):
    from critmass.cli._app import main

    base = ["extract", "timm:test_resnet", "textures", "--no-pretrained", "--image-size", "32", "--cache",
            str(tmp_path), "-q", "--num-workers", "0"]
    assert main([*base, "--max-samples", "train=30,test=12"]) == 0
    out = capsys.readouterr().out
    assert "train: 30 x" in out and "test: 12 x" in out
    assert main([*base, "--max-samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "train: 20 x" in out and "test: 20 x" in out
    for bad in ("train=x", "trian=3", "train=3,train=4"):
        assert main([*base, "--max-samples", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--max-samples" in err


# ---- items 16, 20: rows name weights, pooling and the dataset's class names ---------------------------------------
def test_result_rows_name_weights_pooling_and_classes(tmp_path):
    from critmass.features import extract
    from critmass.probes import run_probes

    fs = extract("timm:test_resnet", "textures", split=["train", "test"], cache=tmp_path, **KW)
    res = run_probes(fs, selectors=["random"], fractions=[0.5], seeds=1, save_weights=False)
    assert set(res.results["weights"]) == {fs["train"].manifest["weights"]}
    assert set(res.results["pooling"]) == {"auto"}
    names = dict(zip(res.per_class["class"], res.per_class["class_name"]))
    assert names == {0: "brick", 1: "grass", 2: "gravel"}
    # Two poolings of one architecture are two sets of rows.
    fs_max = extract("timm:test_resnet", "textures", split=["train", "test"], cache=tmp_path, layer="layer2",
                     pooling="max", **KW)
    res_max = run_probes(fs_max, selectors=["random"], fractions=[0.5], seeds=1, save_weights=False)
    assert set(res_max.results["pooling"]) == {"max"}
