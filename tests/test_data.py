"""Datasets: torchvision on-disk formats, image folders, npz, Hugging Face, offline aliases, splits."""

import pickle

import numpy as np
import pytest
from PIL import Image

from critmass.data import load_dataset, stratified_subset, train_val_indices
from critmass.exceptions import DataError, SpecError


def write_cifar10(root, n_train=20, n_test=10, seed=0):
    """Write the real CIFAR-10 python format: pickled dict batches of uint8 rows (3x32x32, channel-major)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    data = {}
    for name, n in [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(base / name, "wb") as fh:
            pickle.dump({"data": x, "labels": y}, fh)  # as torchvision reads them (latin1 str keys)
        data[name] = (x, y)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh)
    return data


def test_torchvision_cifar10_from_written_batches(tmp_path, monkeypatch):
    import torchvision

    written = write_cifar10(tmp_path)
    # torchvision checks the official files' MD5s; ours are genuine-format but different bytes.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    train = load_dataset("torchvision:CIFAR10", "train", root=tmp_path)
    test = load_dataset("torchvision:CIFAR10", "test", root=tmp_path)
    assert len(train) == 20 and len(test) == 10 and train.classes[3] == "class3"
    img, label = test[4]
    x, y = written["test_batch"]
    assert label == y[4]
    np.testing.assert_array_equal(np.asarray(img), x[4].reshape(3, 32, 32).transpose(1, 2, 0))
    np.testing.assert_array_equal(train.targets[:4], written["data_batch_1"][1])


def test_torchvision_missing_root_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"not found or corrupt under .*--data-root DIR.*--download"):
        load_dataset("torchvision:CIFAR10", "train", root=tmp_path)
    with pytest.raises(DataError, match="needs --data-root"):
        load_dataset("torchvision:CIFAR100", "train")
    with pytest.raises(DataError, match="data root .* does not exist"):
        load_dataset("torchvision:CIFAR10", "train", root=tmp_path / "nope")
    with pytest.raises(SpecError, match="unknown torchvision dataset 'CIFAR11'.*closest: CIFAR10"):
        load_dataset("torchvision:CIFAR11", "train", root=tmp_path)
    with pytest.raises(SpecError, match="unknown dataset 'cifar10'"):
        load_dataset("cifar10")


def _write_pngs(folder, n_per_class, classes=("cat", "dog"), seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / c / f"{i}.png")


def test_imagefolder_with_and_without_split_folders(tmp_path):
    _write_pngs(tmp_path / "a" / "train", 4)
    _write_pngs(tmp_path / "a" / "test", 2)
    tr, te = (load_dataset(f"imagefolder:{tmp_path / 'a'}", s) for s in ("train", "test"))
    assert (len(tr), len(te)) == (8, 4) and tr.classes == ["cat", "dog"]
    assert tr[0][0].size == (12, 12)

    _write_pngs(tmp_path / "b", 10)
    tr, te = (load_dataset(f"imagefolder:{tmp_path / 'b'}", s) for s in ("train", "test"))
    assert len(tr) + len(te) == 20 and len(te) == 4
    assert not set(tr.indices) & set(te.indices)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'zzz'}")


def test_npz_images_and_text(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=rng.integers(0, 256, (30, 9, 9), dtype=np.uint8), y=np.arange(30) % 3)
    ds = load_dataset(f"npz:{tmp_path / 'img.npz'}", "train")
    assert len(ds) == 24 and ds.modality == "image" and ds[0][0].size == (9, 9)
    np.savez(tmp_path / "txt.npz", x_train=np.array(["a", "b", "c"]), y_train=np.array([0, 1, 0]),
             x_test=np.array(["d"]), y_test=np.array([1]))
    ds = load_dataset(f"npz:{tmp_path / 'txt.npz'}", "test")
    assert ds.modality == "text" and ds[0] == ("d", 1)
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="must hold arrays x, y"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    imgs = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": imgs[:4], "label": [0, 1, 0, 1]}, features=feats),
        "test": datasets.Dataset.from_dict({"image": imgs[4:], "label": [1, 0]}, features=feats),
    })
    dd.save_to_disk(str(tmp_path / "hfds"))
    ds = load_dataset(f"hf:{tmp_path / 'hfds'}", "test")
    assert len(ds) == 2 and ds.classes == ["a", "b"] and list(ds.targets) == [1, 0]
    np.testing.assert_array_equal(np.asarray(ds[0][0]), np.asarray(imgs[4]))


def test_offline_aliases():
    tr, te = load_dataset("textures", "train"), load_dataset("textures", "test")
    assert (len(tr), len(te)) == (144, 48) and tr.classes == ["brick", "grass", "gravel"]
    assert np.bincount(tr.targets).tolist() == [48, 48, 48]
    d = load_dataset("digits", "train")
    assert len(d) + len(load_dataset("digits", "test")) == 1797


def test_val_split_is_seeded_stratified_and_inside_train():
    tr = load_dataset("digits", "train")
    va = load_dataset("digits", "val", seed=3)
    assert set(va.indices) <= set(tr.indices)
    np.testing.assert_array_equal(va.indices, load_dataset("digits", "val", seed=3).indices)
    assert not np.array_equal(va.indices, load_dataset("digits", "val", seed=4).indices)
    # Stratified: every class's share in val is close to its share in train.
    share_tr = np.bincount(tr.targets, minlength=10) / len(tr)
    share_va = np.bincount(va.targets, minlength=10) / len(va)
    assert np.abs(share_tr - share_va).max() < 0.02


def test_train_val_indices_partition_and_match_cached_carving():
    y = np.repeat(np.arange(5), [50, 30, 20, 10, 2])
    tr, va = train_val_indices(y, 0.1, seed=1)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(y)))
    for c in range(5):  # each class keeps a training sample and gets ~10% in val
        assert (y[tr] == c).sum() >= 1
        assert abs((y[va] == c).sum() - max(1, round(0.1 * (y == c).sum()))) <= 1


def test_stratified_subset_keeps_class_proportions():
    y = np.repeat(np.arange(4), [400, 300, 200, 100])
    idx = stratified_subset(y, 100, seed=0)
    assert len(idx) == 100 and np.bincount(y[idx]).tolist() == [40, 30, 20, 10]
    assert np.array_equal(idx, stratified_subset(y, 100, seed=0))


def test_fashion_mnist_from_debian_package():
    from critmass.data._sources import DEBIAN_FASHION_MNIST

    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10_000 and len(test.classes) == 10 and test[0][0].size == (28, 28)
    sub = load_dataset("fashion-mnist", "train", max_samples=500, seed=0)
    assert len(sub) == 500 and np.bincount(sub.targets).tolist() == [50] * 10


def test_datasets_pickle_for_spawned_dataloader_workers(tmp_path):
    # macOS and Windows start DataLoader workers with 'spawn', which pickles the dataset.
    import pickle

    _write_pngs(tmp_path / "f", 3)
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 4, 4), dtype=np.uint8), y=np.arange(10) % 2)
    for spec in ("textures", "digits", f"imagefolder:{tmp_path / 'f'}", f"npz:{tmp_path / 'a.npz'}"):
        ds = load_dataset(spec, "train")
        back = pickle.loads(pickle.dumps(ds))
        np.testing.assert_array_equal(np.asarray(back[0][0]), np.asarray(ds[0][0]))
