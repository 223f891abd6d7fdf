"""``compress``: keep k neurons (or k principal directions) of stored embeddings; ``apply_reducer``: the same
reduction of new queries.

A reducer directory holds::

    embeddings.npy       the reduced embeddings (n, k) in the requested dtype
    reducer.npz          indices (k,) int64, or components (D, k) float64 and mean (D,) float64
    reducer.safetensors  the same arrays
    reducer.json         selector, seed, k, n_features, dtypes, what it was fitted on (path, SHA-256), versions
    savings.json         bytes per vector and for the whole gallery, query cost, variance retained

With a codec (``codec='int8'``, ``'binary'``, ``'pq'``, ... of :mod:`critmass.codecs`) the reduced vectors are
encoded: ``codes.npy`` (n, code_size) uint8 replaces ``embeddings.npy``, ``codebook.npz`` holds what encodes
new vectors the same way (the trained quantiser, or the binary threshold), trained on the gallery only;
``reducer.json`` records the codec, its parameters and code size, and ``apply_reducer`` returns codes.

The selectors are those of :mod:`critmass.subsets` (``make_selector``), fitted on the raw embeddings (no
standardisation: a retrieval gallery keeps its own metric). The reduced vector of ``x`` is ``x[indices]``, or
``(x - mean) @ components`` computed in float64; both are then cast to the output dtype.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._env import versions
from .._io import atomic_path, atomic_write_bytes, atomic_write_json, sha256_file
from .._validation import check_features, resolve_sizes
from ..exceptions import ConfigError, DataError
from ._runs import read_format_json

__all__ = ["compress", "apply_reducer", "load_reducer", "Reducer", "CompressResult", "DTYPES"]

DTYPES = ("float32", "float16")
FORMAT = "critmass-reducer/1"
_CHUNK = 1 << 14


@dataclass
class Reducer:
    """A fitted reduction of D-dimensional embeddings to k values."""

    selector: str
    n_features: int
    k: int
    dtype: str = "float32"
    seed: int | None = None
    indices: np.ndarray | None = None
    components: np.ndarray | None = None
    mean: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    codec: object | None = None  # a fitted critmass.codecs encoder; None: the reduced floats are stored

    @property
    def is_projection(self) -> bool:
        return self.components is not None

    def arrays(self) -> dict:
        if self.is_projection:
            return {"components": self.components, "mean": self.mean}
        return {"indices": self.indices}

    def transform(self, X, dtype: str | None = None) -> np.ndarray:
        """Reduce ``X`` (n, D) -> (n, k) in ``dtype`` (default the reducer's), chunked over rows."""
        X = _check_embeddings(X, "embeddings")
        if X.shape[1] != self.n_features:
            raise DataError(f"embeddings have {X.shape[1]} dimensions but the reducer was fitted on {self.n_features}; "
                            "apply it to embeddings of the same model and layer")
        out = np.empty((X.shape[0], self.k), dtype=_check_dtype(dtype or self.dtype))
        self._fill(X, out)
        return out

    def _fill(self, X, out) -> None:
        for s in range(0, X.shape[0], _CHUNK):
            block = np.asarray(X[s : s + _CHUNK])
            if self.is_projection:
                out[s : s + len(block)] = (block.astype(np.float64) - self.mean) @ self.components
            else:
                out[s : s + len(block)] = block[:, self.indices]


@dataclass
class CompressResult:
    out: Path
    reducer: Reducer
    savings: dict
    files: dict
    seconds: float = float("nan")


def _check_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return np.dtype(dtype)


def _check_embeddings(X, name: str):
    return check_features(X, name=name)


def _load_npy(path, name: str):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{name} file {str(path)!r} does not exist; pass a .npy of shape (n, D)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read {str(path)!r} as .npy ({type(exc).__name__}); save it with np.save") from None
    return _check_embeddings(arr, f"{name} {path.name}")


def _resolve_keep(keep, d: int) -> int:
    if isinstance(keep, str):
        text = keep.strip()
        try:
            keep = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise ConfigError(f"--keep must be a number of neurons (e.g. 128) or a fraction (e.g. 0.25); got {keep!r}") from None
    if isinstance(keep, float) and keep >= 1 and keep.is_integer():
        keep = int(keep)
    return resolve_sizes([keep], d)[0]


def _variance_retained(X_fit, red: Reducer, selector=None) -> float:
    """Share of the fit rows' total variance that the k kept values carry (float64)."""
    ev = getattr(selector, "explained_variance_", None)
    if red.is_projection and ev is not None:  # PCA: the eigenvalues it was fitted with
        total = float(ev.sum())
        return float(ev[: red.k].sum()) / total if total > 0 else float("nan")
    if red.is_projection:
        from ..subsets import covariance

        _, cov = covariance(X_fit)
        total = float(np.trace(cov))
        kept = float(np.einsum("dk,de,ek->", red.components, cov, red.components))
        return kept / total if total > 0 else float("nan")
    n, d = X_fit.shape
    s1, s2 = np.zeros(d), np.zeros(d)
    for a in range(0, n, _CHUNK):
        block = np.asarray(X_fit[a : a + _CHUNK], dtype=np.float64)
        s1 += block.sum(0)
    mean = s1 / n
    for a in range(0, n, _CHUNK):
        s2 += np.square(np.asarray(X_fit[a : a + _CHUNK], dtype=np.float64) - mean).sum(0)
    total = float(s2.sum())
    return float(s2[red.indices].sum()) / total if total > 0 else float("nan")


def compress(embeddings, *, keep, selector: str = "random", fit_on=None, seed: int = 0, dtype: str = "float32",
             out, fit_labels=None, codec: str | None = None) -> CompressResult:
    """Reduce stored embeddings to ``keep`` neurons (or principal directions) and save the reducer.

    Parameters
    ----------
    embeddings : path or array (n, D)
        The gallery (``.npy``; memory-mapped).
    keep : int or float
        Number of values kept per vector, or a fraction of D in (0, 1) (``k = max(1, round(f * D))``).
    selector : str
        A selector of :mod:`critmass.subsets`: 'random', 'prefix', 'pca' (also 'norm-max', 'randproj', ...).
    fit_on : path or array, optional
        Rows the selector is fitted on (e.g. a training set); default the embeddings themselves.
    fit_labels : path or array, optional
        Labels of the rows the selector is fitted on (``.npy`` or a 1-D array, one per row), for the supervised
        selectors (``fscore``, ``greedy``, ``probe-weight``, ``attribution``); refused by the others.
    seed : int
        Seed of random selectors (recorded).
    dtype : {'float32', 'float16'}
        Dtype of the reduced embeddings.
    out : path
        Directory for ``embeddings.npy``, ``reducer.{npz,safetensors,json}`` and ``savings.json``.
    codec : str, optional
        Encode the reduced vectors with a codec of :mod:`critmass.codecs` ('float16', 'int8', 'binary',
        'binary-rerank', 'pq', 'opq', 'pq16x8', ...), trained on the gallery: ``codes.npy`` and ``codebook.npz``
        are written instead of ``embeddings.npy`` (``dtype`` must then stay float32).

    Returns
    -------
    CompressResult
    """
    from ..subsets import make_selector
    from ._savings import storage_savings

    t0 = time.perf_counter()
    out_dtype = _check_dtype(dtype)
    coder = None
    if codec is not None and codec != "float32":
        from ..codecs import make_codec

        coder = make_codec(codec)
        coder.check()
        if dtype != "float32":
            raise ConfigError(f"--dtype {dtype} and --codec {codec} both set the stored format; pass one "
                              "(--codec float16 is half precision)")
    if selector == "all":
        raise ConfigError("selector 'all' keeps every neuron, so nothing is compressed; pass random, prefix or pca")
    sel = make_selector(selector, random_state=int(seed))  # unknown names fail here
    src = Path(embeddings) if not isinstance(embeddings, np.ndarray) else None
    X = _load_npy(src, "embeddings") if src is not None else _check_embeddings(embeddings, "embeddings")
    d = int(X.shape[1])
    k = _resolve_keep(keep, d)
    fit_src = None
    if fit_on is None:
        X_fit = X
    else:
        fit_src = Path(fit_on) if not isinstance(fit_on, np.ndarray) else None
        X_fit = _load_npy(fit_src, "--fit-on") if fit_src is not None else _check_embeddings(fit_on, "fit_on")
        if X_fit.shape[1] != d:
            raise DataError(f"--fit-on rows have {X_fit.shape[1]} dimensions but the embeddings have {d}; pass rows "
                            "of the same model and layer")
    y_fit = None
    if fit_labels is not None:
        if not sel.requires_y:
            raise ConfigError(f"--fit-labels gives labels to a supervised selector; {selector!r} uses none: drop it")
        y_fit = (np.load(Path(fit_labels), allow_pickle=False) if isinstance(fit_labels, (str, Path))
                 else np.asarray(fit_labels))
        if np.ndim(y_fit) != 1 or len(y_fit) != X_fit.shape[0]:
            raise DataError(f"--fit-labels holds {np.shape(y_fit)} labels but the selector is fitted on "
                            f"{X_fit.shape[0]} rows; pass one label per row of {'--fit-on' if fit_on is not None else 'EMBEDDINGS'}")
    elif sel.requires_y:
        raise ConfigError(f"selector {selector!r} ranks dimensions by the task's labels; pass --fit-labels FILE.npy "
                          f"(one label per row of {'--fit-on' if fit_on is not None else 'EMBEDDINGS'})")
    if coder is not None:
        coder.check_width(k, int(X.shape[0]))
    sel.fit(X_fit, y_fit) if sel.requires_y else sel.fit(X_fit)
    idx, proj = sel.subset(k)
    meta = {"format": FORMAT, "selector": selector, "seed": int(seed) if not sel.deterministic else None,
            "k": k, "n_features": d, "dtype": dtype, "input_dtype": str(X.dtype), "n_fit": int(X_fit.shape[0]),
            "fit_on": str(fit_src.resolve()) if fit_src is not None else ("embeddings" if src is not None else "array"),
            "fit_on_sha256": sha256_file(fit_src) if fit_src is not None else (sha256_file(src) if src else None),
            "fit_labels": (None if fit_labels is None else str(Path(fit_labels).resolve())
                           if isinstance(fit_labels, (str, Path)) else "array"),
            "fit_labels_sha256": sha256_file(fit_labels) if isinstance(fit_labels, (str, Path)) else None,
            "embeddings": str(src.resolve()) if src is not None else None, "n_vectors": int(X.shape[0]),
            "reduced": "x[indices]" if idx is not None else "(x - mean) @ components (float64)",
            "versions": versions()}
    red = Reducer(selector=selector, n_features=d, k=k, dtype=dtype, seed=meta["seed"],
                  indices=None if idx is None else np.asarray(idx, dtype=np.int64),
                  components=None if proj is None else np.ascontiguousarray(proj, dtype=np.float64),
                  mean=None if proj is None else np.asarray(sel.mean_, dtype=np.float64), meta=meta)

    out = Path(out)
    stored = {"k": k, "itemsize_reduced": out_dtype.itemsize}
    if coder is not None:  # train on the reduced gallery only, then store its codes
        from ..codecs import faiss_threads

        with faiss_threads():
            fitted = coder.fit(red.transform(X, "float32"), "cosine", seed=int(seed))
        red.codec = fitted
        meta["codec"] = {"spec": coder.spec, "name": coder.name, "params": fitted.params,
                         "code_size": int(fitted.code_size), "codebook_bytes": int(fitted.codebook_bytes),
                         "trained_on": "the reduced gallery (embeddings)"}
        stored = {"k": int(fitted.code_size), "itemsize_reduced": 1}
    out.mkdir(parents=True, exist_ok=True)
    # The stored vectors first, reducer.json (what marks a complete directory) last; the other format's file
    # from an earlier run into this directory goes, so the directory holds one gallery.
    files = {}
    if coder is not None:
        target = out / "codes.npy"
        with atomic_path(target, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(fitted.codes, dtype=np.uint8))  # a handle: np.save adds no suffix
        files["codes"] = target
        stale = ["embeddings.npy"]
    else:
        emb = out / "embeddings.npy"
        _write_npy(red, X, emb, out_dtype)
        files["embeddings"] = emb
        stale = ["codes.npy", "codebook.npz"]
    for name in stale:
        (out / name).unlink(missing_ok=True)
    files = {**_save_reducer(red, out), **files}
    savings = {"selector": selector, "seed": meta["seed"], "k": k, "n_features": d,
               "codec": None if coder is None else meta["codec"],
               "storage": storage_savings(d, stored["k"], itemsize_full=X.dtype.itemsize,
                                          itemsize_reduced=stored["itemsize_reduced"], n_vectors=int(X.shape[0])),
               "reducer_bytes": int(sum(a.nbytes for a in red.arrays().values())) +
               (0 if coder is None else int(fitted.codebook_bytes)),
               "query_flops": int(d * k) if red.is_projection else 0,
               "flop_convention": "multiply-accumulates of the reduction of one query",
               "variance_retained": _variance_retained(X_fit, red, sel)}
    atomic_write_json(out / "savings.json", savings)
    files["savings"] = out / "savings.json"
    return CompressResult(out=out, reducer=red, savings=savings, files=files, seconds=time.perf_counter() - t0)


def _write_npy(red: Reducer, X, path: Path, dtype) -> None:
    from numpy.lib.format import open_memmap

    with atomic_path(path, suffix=".npy") as tmp:
        mm = open_memmap(tmp, mode="w+", dtype=dtype, shape=(X.shape[0], red.k))
        red._fill(X, mm)
        mm.flush()
        del mm


def _save_reducer(red: Reducer, out: Path) -> dict:
    from safetensors.numpy import save

    out.mkdir(parents=True, exist_ok=True)
    arrays = red.arrays()
    with atomic_path(out / "reducer.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    atomic_write_bytes(out / "reducer.safetensors", save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                                         metadata={"format": FORMAT}))
    files = {"npz": out / "reducer.npz", "safetensors": out / "reducer.safetensors", "json": out / "reducer.json"}
    if red.codec is not None:
        with atomic_path(out / "codebook.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **red.codec.codebook_arrays())
        files["codebook"] = out / "codebook.npz"
    atomic_write_json(out / "reducer.json", red.meta)  # last: a directory with reducer.json is complete
    return files


def _read_npz(path: Path, writer: str) -> dict:
    """Every array of an .npz a reducer wrote; a one-line error naming the command to re-run."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {n: z[n] for n in z.files}
    except Exception as exc:  # noqa: BLE001 - missing, truncated, not an npz: any of them means re-run it
        raise DataError(f"cannot read {str(path)!r} ({type(exc).__name__}); re-run {writer}") from None


def load_reducer(path) -> Reducer:
    """A reducer written by :func:`compress`: its directory, or its ``reducer.json`` / ``.npz`` /
    ``.safetensors`` (the JSON beside it is read too)."""
    path = Path(path)
    base = path if path.is_dir() else path.parent
    js = base / "reducer.json"
    if not js.is_file():
        raise DataError(f"{str(path)!r} is not a reducer (no reducer.json beside it); pass the --out directory of "
                        "`critmass compress`")
    meta = read_format_json(js, FORMAT, fix="re-run `critmass compress`")
    arrays = None
    if path.suffix == ".safetensors" or (path.is_dir() and not (base / "reducer.npz").is_file()):
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(base / "reducer.safetensors"))
        except Exception as exc:
            raise DataError(f"cannot read {str(base / 'reducer.safetensors')!r} ({type(exc).__name__}); re-run "
                            "`critmass compress`") from None
    else:
        arrays = _read_npz(base / "reducer.npz", "`critmass compress`")
    d, k = int(meta["n_features"]), int(meta["k"])
    red = _reducer_from(meta, arrays, base, d, k)
    if meta.get("codec"):
        from ..codecs import make_codec

        book = _read_npz(base / "codebook.npz", "`critmass compress --codec`")
        red.codec = make_codec(meta["codec"]["spec"]).restore(book, k)
    return red


def _reducer_from(meta, arrays, base, d: int, k: int) -> Reducer:
    if "components" in arrays:
        comp, mean = arrays["components"], arrays.get("mean")
        if comp.shape != (d, k) or mean is None or mean.shape != (d,):
            raise DataError(f"reducer {str(base)!r}: components {comp.shape} do not match n_features={d}, k={k}")
        return Reducer(meta["selector"], d, k, meta["dtype"], meta.get("seed"), components=comp.astype(np.float64),
                       mean=mean.astype(np.float64), meta=meta)
    idx = arrays.get("indices")
    if idx is None or idx.shape != (k,) or idx.min() < 0 or idx.max() >= d:
        raise DataError(f"reducer {str(base)!r}: indices do not match n_features={d}, k={k}")
    return Reducer(meta["selector"], d, k, meta["dtype"], meta.get("seed"), indices=idx.astype(np.int64), meta=meta)


def apply_reducer(reducer, embeddings, *, out=None, dtype: str | None = None) -> np.ndarray:
    """Reduce new embeddings (queries) the way ``reducer`` reduced the gallery; with ``out`` write a ``.npy``.

    A reducer written with a codec returns (and writes) the queries' codes, (n, code_size) uint8, encoded with the
    gallery's codebook.
    """
    red = reducer if isinstance(reducer, Reducer) else load_reducer(reducer)
    X = _load_npy(embeddings, "embeddings") if not isinstance(embeddings, np.ndarray) else \
        _check_embeddings(embeddings, "embeddings")
    if X.shape[1] != red.n_features:
        raise DataError(f"embeddings have {X.shape[1]} dimensions but the reducer was fitted on {red.n_features}; "
                        "apply it to embeddings of the same model and layer")
    if red.codec is not None:
        if dtype not in (None, "float32"):
            raise ConfigError(f"this reducer stores {red.meta['codec']['spec']} codes; drop --dtype")
        from ..codecs import faiss_threads

        with faiss_threads():
            codes = np.ascontiguousarray(red.codec.encode(red.transform(X, "float32")), dtype=np.uint8)
        if out is not None:
            with atomic_path(Path(out), suffix=".npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, codes)
        return codes
    out_dtype = _check_dtype(dtype or red.dtype)
    if out is not None:
        _write_npy(red, X, Path(out), out_dtype)
        return np.load(out, mmap_mode="r")
    return red.transform(X, out_dtype.name)
