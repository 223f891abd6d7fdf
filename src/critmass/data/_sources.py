"""Dataset sources: ``torchvision:``, ``imagefolder:``, ``hf:``, ``npz:`` and offline aliases.

The text sources (``textfolder:``, ``csv:``, ``bbc-news``, ``spam-assassin``) live in ``_text.py`` and
register themselves here when :mod:`critmass.data` is imported.

A source is a function ``(name, split, *, root, download) -> LabeledDataset`` registered with
``@SOURCES.register("name")``; it returns the split as the dataset defines it ('train' / 'test', and
'val' where the dataset has an official one). :func:`load_dataset` adds the seeded validation split
carved from train and the stratified sub-sampling.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np

from .._io import atomic_path
from .._registry import Registry, parse_spec
from .._validation import closest
from ..exceptions import DataError, SpecError
from ._base import LabeledDataset, stratified_subset
from ._splits import train_val_indices

__all__ = ["SOURCES", "ALIASES", "load_dataset", "load_splits", "list_dataset_sources", "SPLITS", "data_home",
           "MissingSplit", "DEBIAN_FASHION_MNIST"]

SOURCES: Registry = Registry("dataset source")
ALIASES: dict[str, str] = {}
SPLITS = ("train", "val", "test")
_FIXED_SPLIT_SEED = 0  # test splits carved from datasets without one must not move with the user's seed
#: Where Debian's ``dataset-fashion-mnist`` package installs the files the ``fashion-mnist`` alias reads offline.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class MissingSplit(DataError):
    """The dataset does not offer this split (as opposed to a dataset that cannot be read at all)."""


def data_home() -> Path:
    """Where critmass keeps prepared data (``$CRITMASS_DATA`` or ``~/.cache/critmass/data``)."""
    return Path(os.environ.get("CRITMASS_DATA", Path.home() / ".cache" / "critmass" / "data")).expanduser()


class _Sample:
    """Picklable sample getters (DataLoader workers under the 'spawn' start method pickle the dataset)."""

    def __init__(self, source, key=None, convert=None):
        self.source, self.key, self.convert = source, key, convert

    def __call__(self, i):
        item = self.source[int(i)]
        if self.key is not None:
            item = item[self.key]
        return self.convert(item) if self.convert is not None else item


def _carve_test(targets, split: str, test_fraction: float = 0.2):
    """(indices of `split`) for datasets that ship one pool of labelled samples."""
    train_idx, test_idx = train_val_indices(targets, test_fraction, _FIXED_SPLIT_SEED)
    return train_idx if split == "train" else test_idx


# ---- torchvision ------------------------------------------------------------------------------------------
# name -> how its constructor selects a split: ("train_bool",), ("split", {our split: theirs}), or ("none",)
_TV = {
    "CIFAR10": ("train_bool",), "CIFAR100": ("train_bool",), "MNIST": ("train_bool",),
    "FashionMNIST": ("train_bool",), "KMNIST": ("train_bool",),
    "SVHN": ("split", {"train": "train", "test": "test"}),
    "STL10": ("split", {"train": "train", "test": "test"}),
    "Flowers102": ("split", {"train": "train", "val": "val", "test": "test"}),
    "DTD": ("split", {"train": "train", "val": "val", "test": "test"}),
    "OxfordIIITPet": ("split", {"train": "trainval", "test": "test"}),
    "Food101": ("split", {"train": "train", "test": "test"}),
    "GTSRB": ("split", {"train": "train", "test": "test"}),
    "FGVCAircraft": ("split", {"train": "trainval", "test": "test"}),
    "Places365": ("split", {"train": "train-standard", "test": "val"}),
    "ImageNet": ("split", {"train": "train", "test": "val"}),
    "EuroSAT": ("none",), "Caltech101": ("none",), "SUN397": ("none",),
}
_EXTRA_KW = {"OxfordIIITPet": {"target_types": "category"}, "Caltech101": {"target_type": "category"}}
_TARGET_ATTRS = ("targets", "labels", "_labels", "y", "_samples")


def _targets_of(ds) -> np.ndarray:
    for attr in _TARGET_ATTRS:
        val = getattr(ds, attr, None)
        if val is None:
            continue
        if attr == "_samples":  # (path, label) pairs (GTSRB, Food101-style)
            return np.asarray([lab for _, lab in val], dtype=np.int64)
        return np.asarray(val, dtype=np.int64)
    return np.asarray([ds[i][1] for i in range(len(ds))], dtype=np.int64)  # slow fallback


def _fashion_mnist_root() -> Path | None:
    """A torchvision-style root for Fashion-MNIST made from Debian's dataset-fashion-mnist, if installed."""
    if not DEBIAN_FASHION_MNIST.is_dir():
        return None
    root = data_home()
    raw = root / "FashionMNIST" / "raw"
    for gz in sorted(DEBIAN_FASHION_MNIST.glob("*-ubyte.gz")):
        dest = raw / gz.name[: -len(".gz")]
        if not dest.exists():
            with gzip.open(gz, "rb") as src, atomic_path(dest) as tmp, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
    return root


@SOURCES.register("torchvision", "torchvision:<Dataset> from --data-root (CIFAR10, CIFAR100, Flowers102, OxfordIIITPet, "
                  "DTD, SVHN, EuroSAT, Caltech101, SUN397, Places365, ImageNet, FashionMNIST, ...)")
def _torchvision(name, split, *, root=None, download=False):
    import torchvision.datasets as tvd

    if name not in _TV:
        raise SpecError(f"unknown torchvision dataset {name!r}{closest(name, _TV)}; supported: {', '.join(_TV)}")
    if root is None and name == "FashionMNIST" and not download:
        root = _fashion_mnist_root()
    if root is None:
        raise DataError(f"torchvision:{name} needs --data-root DIR (the folder holding the dataset); add --download "
                        "to fetch it there")
    root = Path(root).expanduser()
    kind = _TV[name]
    kwargs = dict(_EXTRA_KW.get(name, {}))
    if kind[0] == "train_bool":
        if split not in ("train", "test"):
            raise MissingSplit(f"torchvision:{name} has splits train, test (val is carved from train); got {split!r}")
        kwargs["train"] = split == "train"
    elif kind[0] == "split":
        if split not in kind[1]:
            raise MissingSplit(f"torchvision:{name} has splits {', '.join(kind[1])}; got {split!r}")
        kwargs["split"] = kind[1][split]
    if name != "ImageNet":  # ImageNet cannot be downloaded by torchvision
        kwargs["download"] = download
    try:
        ds = getattr(tvd, name)(str(root), **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        msg = str(exc).splitlines()[0][:150] if str(exc) else type(exc).__name__
        raise DataError(f"torchvision:{name} not found or corrupt under {str(root)!r} ({msg}); pass --data-root DIR "
                        "holding it, or add --download") from None
    targets = _targets_of(ds)
    classes = getattr(ds, "classes", None)
    indices = None
    if kind[0] == "none":
        if split not in ("train", "test"):
            raise MissingSplit(f"torchvision:{name} has splits train, test (a fixed 80/20 split); got {split!r}")
        indices = _carve_test(targets, split)
    info = {"spec": f"torchvision:{name}", "split": split, "root": str(root.resolve())}
    return LabeledDataset(_Sample(ds, 0), targets, classes=classes, modality="image", info=info, indices=indices)


# ---- image folders ----------------------------------------------------------------------------------------
@SOURCES.register("imagefolder", "imagefolder:<dir> with one sub-folder per class (or train/ and test/ "
                  "sub-folders holding those)")
def _imagefolder(name, split, *, root=None, download=False):
    from torchvision.datasets import ImageFolder

    base = Path(name).expanduser()
    if root is not None and not base.is_absolute():
        base = Path(root) / base
    if not base.is_dir():
        raise DataError(f"image folder {str(base)!r} does not exist; pass imagefolder:DIR with one sub-folder per class")
    has_splits = (base / "train").is_dir() and (base / "test").is_dir()
    folder = base / split if has_splits else base
    if has_splits and not folder.is_dir():
        raise MissingSplit(f"image folder {str(base)!r} has no {split!r} sub-folder; it has train, test")
    try:
        ds = ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"cannot read image folder {str(folder)!r}: {str(exc).splitlines()[0]}") from None
    indices = None if has_splits else _carve_test(ds.targets, split)
    if not has_splits and split not in ("train", "test"):
        raise MissingSplit(f"image folder {str(base)!r} has splits train, test (fixed 80/20); got {split!r}")
    info = {"spec": f"imagefolder:{base.resolve()}", "split": split}
    return LabeledDataset(_Sample(ds, 0), ds.targets, classes=ds.classes, modality="image", info=info, indices=indices)


# ---- npz arrays -------------------------------------------------------------------------------------------
def _to_sample(x):
    from PIL import Image

    if isinstance(x, (str, np.str_)):
        return str(x)
    arr = np.asarray(x)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.clip((arr - lo) / (hi - lo + 1e-12) * 255 if hi > 255 or lo < 0 or hi <= 1 else arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


@SOURCES.register("npz", "npz:<file> with arrays x, y (images as (N, H, W[, C]) or strings), or x_train/y_train/x_test/y_test")
def _npz(name, split, *, root=None, download=False):
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(f"npz file {str(path)!r} does not exist; pass npz:FILE with arrays x and y")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as exc:
        raise DataError(f"cannot read {str(path)!r} as .npz ({type(exc).__name__}); save it with np.savez") from None
    if f"x_{split}" in data and f"y_{split}" in data:
        x, y, indices = data[f"x_{split}"], data[f"y_{split}"], None
    elif "x" in data and "y" in data:
        x, y = data["x"], data["y"]
        if split not in ("train", "test"):
            raise MissingSplit(f"{str(path)!r} holds one pool x, y split 80/20 into train, test; got {split!r}")
        indices = _carve_test(y, split)
    else:
        raise DataError(f"{str(path)!r} must hold arrays x, y or x_{split}, y_{split}; it holds {sorted(data)}")
    if len(x) != len(y):
        raise DataError(f"{str(path)!r}: x has {len(x)} samples but y has {len(y)}")
    modality = "text" if x.dtype.kind in "US" else "image"
    info = {"spec": f"npz:{path.resolve()}", "split": split}
    return LabeledDataset(_Sample(x, convert=_to_sample), y, classes=None, modality=modality, info=info, indices=indices)


# ---- Hugging Face datasets --------------------------------------------------------------------------------
@SOURCES.register("hf", "hf:<dataset id or local dir> (local files, a save_to_disk dir, or the offline HF cache)")
def _hf(name, split, *, root=None, download=False):
    try:
        import datasets
    except ImportError:
        raise SpecError("hf: datasets need the datasets package; pip install 'critmass[hf]'") from None
    path = Path(name).expanduser()
    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            obj = datasets.load_from_disk(str(path))
        else:
            # Never run a dataset's loading script (datasets >= 4 no longer runs any and drops the flag).
            obj = datasets.load_dataset(name, cache_dir=root, trust_remote_code=False)
    except Exception as exc:
        raise DataError(f"cannot load Hugging Face dataset {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                        "pass a local directory or pre-populate the HF cache (HF_DATASETS_OFFLINE=1)") from None
    # Each of our splits maps to one source split: 'validation' is never also served as 'test'.
    names = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}
    indices = None
    if isinstance(obj, datasets.DatasetDict):
        avail = [s for s in names.get(split, ()) if s in obj]
        if avail:
            ds = obj[avail[0]]
        elif list(obj) == ["train"] and split in ("train", "test"):
            ds = obj["train"]
            indices = "carve"
        elif split == "test" and "train" in obj:
            raise MissingSplit(f"Hugging Face dataset {name!r} has splits {', '.join(obj)} and no test split; pass "
                               "--carve-test (carve_test=True) to hold out a fixed 20% of train as test")
        else:
            raise MissingSplit(f"Hugging Face dataset {name!r} has splits {', '.join(obj)}; got {split!r}")
    else:
        ds, indices = obj, "carve"
    feats = ds.features
    label_col = next((c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)), None) or next(
        (c for c in ("label", "labels", "fine_label", "target") if c in feats), None)
    image_col = next((c for c, f in feats.items() if isinstance(f, datasets.Image)), None)
    text_col = next((c for c in ("text", "sentence", "content", "document") if c in feats), None)
    if label_col is None or (image_col or text_col) is None:
        raise DataError(f"Hugging Face dataset {name!r}: cannot find label and image/text columns in {list(feats)}")
    targets = np.asarray(ds[label_col], dtype=np.int64)
    if indices == "carve":
        if split not in ("train", "test"):
            raise MissingSplit(f"Hugging Face dataset {name!r} has one split, carved 80/20 into train, test; got {split!r}")
        indices = _carve_test(targets, split)
    classes = feats[label_col].names if isinstance(feats[label_col], datasets.ClassLabel) else None
    col = image_col or text_col
    info = {"spec": f"hf:{name}", "split": split}
    return LabeledDataset(_Sample(ds, col), targets, classes=classes, modality="image" if image_col else "text",
                          info=info, indices=indices)


# ---- offline aliases: labelled data that ships with packages or Debian ------------------------------------
def _textures(split: str, patch: int = 64) -> LabeledDataset:
    """Brick / grass / gravel patches from scikit-image's bundled textures: a 3-class task.

    Each 512x512 image is cut into 64x64 patches; the left three quarters go to train, the right quarter to
    test, so train and test patches never overlap.
    """
    from PIL import Image
    from skimage import data as skdata

    names = ("brick", "grass", "gravel")
    images, labels = [], []
    for c, n in enumerate(names):
        img = getattr(skdata, n)()
        for col in range(0, img.shape[1], patch):
            if (col < img.shape[1] * 3 // 4) == (split == "train"):
                for row in range(0, img.shape[0], patch):
                    images.append(img[row : row + patch, col : col + patch])
                    labels.append(c)
    if split not in ("train", "test"):
        raise MissingSplit(f"textures has splits train, test; got {split!r}")
    info = {"spec": "textures", "split": split}
    return LabeledDataset(_Sample(images, convert=Image.fromarray), labels, classes=names, modality="image", info=info)


def _digits(split: str) -> LabeledDataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), fixed 80/20 split."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    if split not in ("train", "test"):
        raise MissingSplit(f"digits has splits train, test; got {split!r}")
    info = {"spec": "digits", "split": split}
    return LabeledDataset(_Sample(imgs, convert=Image.fromarray), d.target, classes=[str(i) for i in range(10)],
                          modality="image", info=info, indices=_carve_test(d.target, split))


def _fashion_mnist(split: str, root=None, download=False) -> LabeledDataset:
    if root is None and not download and _fashion_mnist_root() is None:
        raise DataError("Fashion-MNIST not found: apt-get install dataset-fashion-mnist, or pass --download "
                        "(with --data-root DIR) to fetch it")
    if root is None and download:
        root = data_home()
    ds = _torchvision("FashionMNIST", split, root=root, download=download)
    ds.info["spec"] = "fashion-mnist"
    return ds


_ALIAS_LOADERS = {
    "fashion-mnist": (_fashion_mnist, "Fashion-MNIST (70k 28x28 clothing images, 10 classes) from Debian's "
                      "dataset-fashion-mnist or --download"),
    "textures": (lambda split, root=None, download=False: _textures(split),
                 "brick / grass / gravel 64x64 patches from scikit-image (3 classes, 144 train / 48 test)"),
    "digits": (lambda split, root=None, download=False: _digits(split),
               "scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes)"),
}
ALIASES.update({k: v[1] for k, v in _ALIAS_LOADERS.items()})


def load_dataset(spec: str, split: str = "train", *, root=None, download: bool = False, val_fraction: float = 0.1,
                 seed: int = 0, max_samples: int | None = None, hold_out_val: bool = False,
                 carve_test: bool = False) -> LabeledDataset:
    """Load one split of a dataset as raw samples (PIL images or strings) with integer labels.

    Parameters
    ----------
    spec : ``torchvision:CIFAR10``, ``imagefolder:DIR``, ``hf:NAME_OR_DIR``, ``npz:FILE``, ``textfolder:DIR``,
        ``csv:FILE[?text=COL&label=COL]`` or an offline alias (``fashion-mnist``, ``textures``, ``digits``,
        ``bbc-news``, ``spam-assassin``, ``spam-assassin-groups``).
    split : ``train`` / ``test`` as the dataset defines them; ``val`` is the dataset's official validation
        split if it has one, else a seeded stratified ``val_fraction`` of train.
    hold_out_val : for ``split='train'`` of a dataset without an official validation split, return train
        minus the rows ``split='val'`` carves (as scikit-learn's ``train_test_split`` does), so the two never
        share a sample. :func:`load_splits` sets it whenever ``val`` is requested with ``train``.
    carve_test : for a dataset that has train but no test split (e.g. a Hugging Face dataset with only
        train and validation), ``test`` is a fixed 20% of train and ``train`` the rest. Without it such a
        ``test`` request is an error: a validation split is never silently served as test.
    root : data root for torchvision datasets; ``download`` lets torchvision fetch it there.
    max_samples : keep a seeded stratified subset of this many samples (for quick runs).

    Notes
    -----
    Every returned dataset's ``info['pool']`` names the source split its ``indices`` point into, so sample
    identities of two splits can be compared.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if root is not None and not Path(root).expanduser().exists() and not download:
        raise DataError(f"data root {str(root)!r} does not exist; pass an existing --data-root or add --download")
    source, name = parse_spec(spec, kind="dataset", sources=tuple(SOURCES.names()), aliases=tuple(ALIASES))

    def get(s):
        ds = _ALIAS_LOADERS[name][0](s, root=root, download=download) if not source else SOURCES.get(source)(
            name, s, root=root, download=download)
        ds.info.setdefault("pool", s)
        return ds

    def official(s):
        try:
            return get(s)
        except MissingSplit:
            return None

    def train_pool():
        """Train as the dataset defines it, minus the test rows carved from it with ``carve_test``."""
        train = get("train")
        if carve_test and official("test") is None:
            train = train.subset(_carve_test(train.targets, "train"), test_carved_from="train")
        return train

    def carved_val(train):
        return train_val_indices(train.targets, val_fraction, seed)

    if split == "test":
        ds = official("test")
        if ds is None:
            if not carve_test:
                get("test")  # re-raise the source's own message: which splits it has, how to get a test split
            train = get("train")
            ds = train.subset(_carve_test(train.targets, "test"), split="test", test_carved_from="train")
    elif split == "val":
        ds = official("val")
        if ds is None:
            train = train_pool()
            ds = train.subset(carved_val(train)[1], split="val", val_carved_from="train", val_fraction=val_fraction,
                              val_seed=seed)
    else:
        ds = train_pool()
        if hold_out_val and official("val") is None:
            ds = ds.subset(carved_val(ds)[0], val_held_out=True, val_fraction=val_fraction, val_seed=seed)
    if max_samples is not None:
        if int(max_samples) < 1:
            raise DataError(f"max_samples must be >= 1; got {max_samples}")
        if max_samples < len(ds):
            ds = ds.subset(stratified_subset(ds.targets, int(max_samples), seed), max_samples=int(max_samples), subset_seed=seed)
    if len(ds) == 0:
        raise DataError(f"{spec} split {split!r} is empty")
    return ds


def load_splits(spec: str, splits, *, max_samples=None, **kwargs) -> dict[str, LabeledDataset]:
    """:func:`load_dataset` for several splits that are used together: a carved ``val`` is held out of ``train``.

    ``max_samples`` is one number for every split or ``{split: n}``.
    """
    splits = [splits] if isinstance(splits, str) else list(splits)
    per_split = max_samples if isinstance(max_samples, dict) else {s: max_samples for s in splits}
    return {s: load_dataset(spec, s, max_samples=per_split.get(s), hold_out_val="val" in splits, **kwargs)
            for s in splits}


def list_dataset_sources() -> dict[str, str]:
    """Spec prefixes and offline aliases with one-line descriptions."""
    out = {f"{k}:": v for k, v in SOURCES.describe().items()}
    out.update(ALIASES)
    return out
