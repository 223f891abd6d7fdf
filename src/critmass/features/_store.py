"""On-disk feature cache: one directory per (model, weights, layer, dataset, preprocessing), one
sub-directory per split.

Layout of a cache entry::

    CACHE/<model>--<dataset>--<layer>-<key12>/
        entry.json                 what the entry was extracted from (human readable)
        train/features.npy         (n, d) float32 or float16, np.load(mmap_mode='r') works
        train/labels.npy           (n,) int64
        train/samples.npy          (n,) int64 index of each row in its source split (sample identities)
        train/manifest.json        written last: its presence means the split is complete
        test/...

While a split is being written, ``features.partial.npy`` / ``labels.partial.npy`` hold the rows and
``progress.json`` records how many leading rows are complete, so a killed extraction resumes from
the last complete chunk. The manifest stores shape, dtype and SHA-256 of both files; a split whose
files disagree with it is reported as corrupt, never read.

Writers of one split take an exclusive lock on ``<entry>/<split>.lock`` (beside the split directory,
never one of the files that get replaced) and re-read the manifest once they hold it: a second
extraction of the same entry waits for the first and then reads its result instead of truncating its
partial files. The holder removes the lock file before releasing it, so a finished cache holds no
lock files. Before the first row is written the whole split is checked against the free disk space
and allocated up front: a full disk is one error, not a SIGBUS from a sparse memory map.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from .._io import atomic_write_json, sha256_file, split_lock
from ..exceptions import CacheError, FeatureError

__all__ = ["FeatureSplit", "FeatureSet", "load_features", "SplitWriter", "FORMAT_VERSION", "sample_ids", "split_lock",
           "default_cache_dir", "entry_name", "entry_glob"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FEATURES, LABELS, MANIFEST, PROGRESS = "features.npy", "labels.npy", "manifest.json", "progress.json"
SAMPLES = "samples.npy"  # (n,) int64: each row's index in its source split (manifest['sample_pool'])
PARTIAL_FEATURES, PARTIAL_LABELS = "features.partial.npy", "labels.partial.npy"
_SPACE_MARGIN = 1 << 20  # npy headers, progress.json, manifest: well under a MiB


def default_cache_dir() -> Path:
    """The feature cache directory: ``$CRITMASS_CACHE``, else ``~/.cache/critmass/features``.

    Returns
    -------
    pathlib.Path
        Expanded (the directory may not exist yet).
    """
    return Path(os.environ.get("CRITMASS_CACHE", Path.home() / ".cache" / "critmass" / "features")).expanduser()


def _slug(text: str, n: int = 40) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text).rsplit("/", 1)[-1])
    return keep.strip("-")[:n] or "x"


def entry_name(model: str, dataset: str, layer: str, key: str) -> str:
    """The directory name of a cache entry: ``<model>--<dataset>--<layer>-<key12>`` (each part slugged)."""
    return f"{_slug(model)}--{_slug(dataset)}--{_slug(layer)}-{key[:12]}"


def entry_glob(dataset: str, layer: str | None = None) -> str:
    """Glob pattern of the cache entry directory names of ``dataset`` (and ``layer``), any model and key.

    Parameters
    ----------
    dataset : str
        The dataset spec the entries were extracted from.
    layer : str, optional
        The layer; None matches every layer.

    Returns
    -------
    str
        A pattern for ``Path.glob`` inside the cache directory, e.g. ``'*--digits--penultimate-*'``.
    """
    return f"*--{_slug(dataset)}--{_slug(layer) if layer is not None else '*'}-*"


@dataclass(frozen=True)
class FeatureSplit:
    """Features ``x`` (n_samples, n_neurons) and integer labels ``y`` of one split, plus its manifest."""

    x: np.ndarray
    y: np.ndarray
    manifest: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])


@dataclass(frozen=True)
class FeatureSet:
    """The splits of one (model, layer, dataset) feature set and what they were extracted from.

    ``meta`` holds at least ``model``, ``dataset`` and ``layer`` (strings) and ``source`` (the path).
    """

    splits: dict[str, FeatureSplit]
    meta: dict

    def __getitem__(self, split: str) -> FeatureSplit:
        try:
            return self.splits[split]
        except KeyError:
            raise FeatureError(
                f"feature set {self.meta.get('source', '')} has no {split!r} split (has: "
                f"{', '.join(self.splits) or 'none'}); extract it with `critmass extract ... --split {split}`"
            ) from None

    def __contains__(self, split: str) -> bool:
        return split in self.splits

    @property
    def n_features(self) -> int:
        return next(iter(self.splits.values())).n_features

    # Shortcuts for the common train/test case.
    @property
    def x_train(self):
        return self["train"].x

    @property
    def y_train(self):
        return self["train"].y

    @property
    def x_test(self):
        return self["test"].x

    @property
    def y_test(self):
        return self["test"].y


def load_features(path, *, splits=None, verify: bool = True, mmap: bool = True) -> FeatureSet:
    """Load a feature set from a cache entry directory, one of its split directories, or a ``.npz``.

    A ``.npz`` holds ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``) and may hold
    0-d string arrays ``model``, ``dataset``, ``layer``. With ``verify`` the cache files are checked
    against their manifest's SHA-256; shape and dtype are always checked.
    """
    path = Path(path)
    if not path.exists():
        raise FeatureError(f"feature path {str(path)!r} does not exist; pass a cache entry made by "
                           "`critmass extract` or a .npz with x_train, y_train, x_test, y_test")
    if path.is_file():
        if path.suffix != ".npz":
            raise FeatureError(f"{str(path)!r} is not a .npz file or cache directory; pass one of those")
        return _load_npz(path, splits)
    if (path / MANIFEST).exists() or (path / PROGRESS).exists():  # a split directory
        entry, names = path.parent, [path.name]
    else:
        entry = path
        names = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise FeatureError(f"{str(path)!r} holds no extracted split; run `critmass extract` first")
    if splits is not None:
        wanted, all_names = list(splits), names
        names = [s for s in names if s in wanted]
        if not names:
            raise FeatureError(f"feature set {str(entry)!r} has no {wanted[0]!r} split (has: {', '.join(all_names) or 'none'}); "
                               f"extract it with `critmass extract ... --split {wanted[0]}`")
    loaded = {name: read_split(entry / name, verify=verify, mmap=mmap) for name in names}
    first = next(iter(loaded.values())).manifest
    meta = {k: first.get(k) for k in ("model", "dataset", "layer", "pooling", "key")}
    meta["source"] = str(entry)
    return FeatureSet(loaded, meta)


def _load_npz(path: Path, splits) -> FeatureSet:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile/ValueError: a malformed file is a one-line error
        raise FeatureError(f"cannot read {str(path)!r} as .npz ({type(exc).__name__}: {exc})") from None
    with data:
        keys = set(data.files)
        names = [s for s in ("train", "val", "test") if f"x_{s}" in keys and f"y_{s}" in keys]
        if "train" not in names:
            raise FeatureError(
                f"{str(path)!r} must hold arrays x_train, y_train (and x_test, y_test); it holds {sorted(keys)}"
            )
        if splits is not None:
            names = [s for s in names if s in set(splits)]
        meta = {"model": f"npz:{path.stem}", "dataset": path.stem, "layer": "features"}
        for k in ("model", "dataset", "layer"):
            if k in keys and data[k].ndim == 0:
                meta[k] = str(data[k])
        meta["source"] = str(path)
        out = {}
        for s in names:
            x, y = np.asarray(data[f"x_{s}"]), np.asarray(data[f"y_{s}"])
            if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise FeatureError(
                    f"{str(path)!r}: x_{s} must be 2-D and y_{s} 1-D of the same length; got {x.shape} and {y.shape}"
                )
            out[s] = FeatureSplit(x, y, {**meta, "split": s})
    widths = {s.x.shape[1] for s in out.values()}
    if len(widths) > 1:
        raise FeatureError(f"{str(path)!r}: splits have different feature widths {sorted(widths)}; "
                           "all splits must come from the same layer")
    return FeatureSet(out, meta)


def read_manifest(split_dir: Path) -> dict | None:
    mpath = Path(split_dir) / MANIFEST
    if not mpath.exists():
        return None
    try:
        return json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"corrupt cache manifest {str(mpath)!r} ({exc}); delete {str(split_dir)!r} and re-extract") from None


def read_split(split_dir: Path, *, verify: bool = True, mmap: bool = True) -> FeatureSplit:
    """Read one complete split, checking it against its manifest."""
    split_dir = Path(split_dir)
    manifest = read_manifest(split_dir)
    if manifest is None:
        hint = " (an extraction was interrupted; run the same `critmass extract` again to resume)" if (
            split_dir / PROGRESS).exists() else ""
        raise CacheError(f"cache split {str(split_dir)!r} is incomplete: no {MANIFEST}{hint}")
    fix = f"delete {str(split_dir)!r} and run `critmass extract` again"
    try:
        x = np.load(split_dir / FEATURES, mmap_mode="r" if mmap else None, allow_pickle=False)
        y = np.load(split_dir / LABELS, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CacheError(f"corrupt cache split {str(split_dir)!r}: cannot read arrays ({exc}); {fix}") from None
    if list(x.shape) != list(manifest["shape"]) or str(x.dtype) != manifest["dtype"] or y.shape != (x.shape[0],):
        raise CacheError(
            f"corrupt cache split {str(split_dir)!r}: arrays have shape {x.shape}/{x.dtype}, manifest says "
            f"{tuple(manifest['shape'])}/{manifest['dtype']}; {fix}"
        )
    if verify:
        for name in (FEATURES, LABELS):
            if sha256_file(split_dir / name) != manifest["sha256"][name]:
                raise CacheError(f"corrupt cache split {str(split_dir)!r}: {name} checksum differs from the manifest; {fix}")
    return FeatureSplit(x, y, manifest)


class SplitWriter:
    """Write one split's features in chunks, resumable, committed atomically by :meth:`commit`.

    Rows ``[0, rows_done)`` are durable: the memmap is flushed before ``progress.json`` (written
    atomically) records them. :meth:`commit` checksums, renames the partial files into place and
    writes the manifest last, so a split directory with a manifest is always complete.
    """

    def __init__(self, split_dir, *, n_samples: int, key: str, dtype: str = "float32"):
        self.dir = Path(split_dir)
        self.n = int(n_samples)
        self.key = key
        self.dtype = np.dtype(dtype)
        self.rows_done = 0
        self.n_features: int | None = None
        self._x = self._y = None

    def resume(self) -> int:
        """Re-open an interrupted extraction with the same key; return the number of rows already done."""
        prog_path = self.dir / PROGRESS
        if not prog_path.exists():
            return 0
        try:
            prog = json.loads(prog_path.read_text())
            if prog.get("key") != self.key or prog.get("n") != self.n or prog.get("dtype") != self.dtype.name:
                raise ValueError("different extraction")
            x = open_memmap(self.dir / PARTIAL_FEATURES, mode="r+")
            y = open_memmap(self.dir / PARTIAL_LABELS, mode="r+")
            if x.shape != (self.n, prog["n_features"]) or y.shape != (self.n,):
                raise ValueError("shape mismatch")
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            self.discard()  # unusable leftovers: start over rather than trust them
            return 0
        self._x, self._y, self.n_features = x, y, int(prog["n_features"])
        self.rows_done = int(prog["rows_done"])
        return self.rows_done

    def _open(self, n_features: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n_features = int(n_features)
        needed = self.n * self.n_features * self.dtype.itemsize + self.n * 8 + _SPACE_MARGIN
        free = shutil.disk_usage(self.dir).free
        if needed > free:
            raise self._no_space(needed, free)
        try:
            self._x = open_memmap(self.dir / PARTIAL_FEATURES, mode="w+", dtype=self.dtype, shape=(self.n, self.n_features))
            self._y = open_memmap(self.dir / PARTIAL_LABELS, mode="w+", dtype=np.int64, shape=(self.n,))
            for name in (PARTIAL_FEATURES, PARTIAL_LABELS):  # sparse files would SIGBUS when the disk fills
                _allocate(self.dir / name)
        except OSError as exc:
            free = shutil.disk_usage(self.dir).free
            self.discard()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._no_space(needed, free) from None
            raise

    def _no_space(self, needed: int, free: int) -> CacheError:
        return CacheError(
            f"not enough disk space for cache split {str(self.dir)!r}: it needs {needed:,} bytes "
            f"({needed / 2**30:.2f} GiB), {free:,} bytes are free; free space there or point CRITMASS_CACHE "
            "(or --cache) at a disk with room"
        )

    def write(self, feats: np.ndarray, labels: np.ndarray) -> None:
        """Append a chunk of rows (``feats`` (b, d), ``labels`` (b,)) and make it durable."""
        if self._x is None:
            self._open(feats.shape[1])
        b = feats.shape[0]
        if feats.shape[1] != self.n_features:
            raise FeatureError(f"layer output width changed from {self.n_features} to {feats.shape[1]} between batches")
        if self.rows_done + b > self.n:
            raise FeatureError(f"dataset yielded more than the {self.n} samples it reported")
        if np.issubdtype(self.dtype, np.floating) and self.dtype.itemsize < 4:
            big = np.abs(feats).max(initial=0.0)
            if big > np.finfo(self.dtype).max:
                raise FeatureError(f"features reach {big:.3g}, beyond {self.dtype.name}; use --dtype float32")
        self._x[self.rows_done : self.rows_done + b] = feats
        self._y[self.rows_done : self.rows_done + b] = labels
        self._x.flush()
        self._y.flush()
        self.rows_done += b
        atomic_write_json(self.dir / PROGRESS, {"key": self.key, "n": self.n, "dtype": self.dtype.name,
                                                "n_features": self.n_features, "rows_done": self.rows_done})

    def commit(self, manifest: dict) -> dict:
        if self.rows_done != self.n:
            raise FeatureError(f"extraction produced {self.rows_done} of {self.n} rows; cannot commit")
        self._x.flush()
        self._y.flush()
        self._x = self._y = None
        os.replace(self.dir / PARTIAL_FEATURES, self.dir / FEATURES)
        os.replace(self.dir / PARTIAL_LABELS, self.dir / LABELS)
        manifest = {
            **manifest,
            "format_version": FORMAT_VERSION,
            "key": self.key,
            "shape": [self.n, self.n_features],
            "dtype": self.dtype.name,
            "sha256": {FEATURES: sha256_file(self.dir / FEATURES), LABELS: sha256_file(self.dir / LABELS)},
        }
        atomic_write_json(self.dir / MANIFEST, manifest)
        (self.dir / PROGRESS).unlink(missing_ok=True)
        return manifest

    def discard(self) -> None:
        self._x = self._y = None
        for name in (PARTIAL_FEATURES, PARTIAL_LABELS, PROGRESS):
            (self.dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # an empty split dir would read as an incomplete split
            self.dir.rmdir()
        self.rows_done = 0


def _allocate(path: Path) -> None:
    """Reserve the blocks of ``path`` now (ENOSPC here, not SIGBUS later); silently skipped where unsupported."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def save_arrays_as_entry(entry_dir, arrays: dict[str, tuple[np.ndarray, np.ndarray]], meta: dict) -> Path:
    """Write in-memory ``{split: (x, y)}`` as a cache entry (used by tests and by users who bring features)."""
    entry_dir = Path(entry_dir)
    for split, (x, y) in arrays.items():
        w = SplitWriter(entry_dir / split, n_samples=len(y), key=meta.get("key", "arrays"), dtype=str(np.asarray(x).dtype))
        w.discard()
        w.write(np.asarray(x), np.asarray(y))
        w.commit({**meta, "split": split})
    atomic_write_json(entry_dir / "entry.json", meta)
    return entry_dir


def sample_ids(fs: FeatureSet, split: str) -> tuple[str, np.ndarray] | None:
    """``(source split, row indices into it)`` of a cached split, or None where they were not recorded."""
    sp = fs[split]
    pool = sp.manifest.get("sample_pool")
    source = fs.meta.get("source")
    path = Path(source) / split / SAMPLES if source else None
    if pool is None or path is None or not path.is_file():
        return None
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CacheError(f"corrupt cache split {str(path.parent)!r}: cannot read {SAMPLES} ({exc}); delete it "
                         "and run `critmass extract` again") from None
    if ids.shape != (sp.n_samples,):
        raise CacheError(f"corrupt cache split {str(path.parent)!r}: {SAMPLES} has {ids.shape[0] if ids.ndim else 0} "
                         f"ids for {sp.n_samples} rows; delete it and run `critmass extract` again")
    return str(pool), ids
