"""Which GEMM the CPU probe path's large products run on: torch's (Intel MKL in the CPU wheels) or numpy's
(OpenBLAS in its wheels), through zero-copy ``torch.from_numpy`` / ``.numpy()`` views.

MKL's single-precision GEMM runs at about half speed on AMD EPYC (REFERENCE.md, "BLAS on AMD CPUs"), while
on Intel it is the faster one. The backend is chosen once per process:

* ``CRITMASS_BLAS=torch`` or ``CRITMASS_BLAS=numpy`` forces it (anything else but ``auto`` / empty is an error);
* else a short measurement (a few hundred milliseconds) of both libraries on the shapes the probes use,
  cached per machine in ``.blas.json`` beside the feature cache (``$CRITMASS_CACHE``), keyed by CPU model,
  torch and numpy versions and torch's thread count. numpy must be at least :data:`MARGIN` times faster
  (geometric mean over the shapes) before torch is left, so an Intel CPU keeps MKL.

:func:`matmul` and :func:`addmm_` are the products: with the ``torch`` backend (and for every GPU tensor, every
other dtype, tensors needing gradients) they are exactly ``a @ b`` / ``c.addmm_(a, b)``, so nothing changes
numerically. With ``numpy`` the CPU float32 / float64 products run in ``np.matmul`` on views of the same memory.
The probes run them inside :func:`products`, which holds OpenBLAS to one thread (``threadpoolctl``, restored
after): the probe path alternates those products with torch's own operations every few microseconds, and two
thread pools on the same cores stall each other (OpenBLAS's idle workers spin while torch's OpenMP threads wait
for a core); on 2 cores a probe curve at 2 torch threads ran 7-8x slower with both pools at 2 threads. The
measurement that chooses times both libraries on one thread: forked probe workers run one thread each, and the
per-core speed is what differs between CPUs.

The float64 Gram / covariance builds of CKA, PCA, ridge and the selectors (``Z^T Z`` summed over row chunks)
are a second operation, ``"gram"``, with its own choice from the same measurement. The OpenBLAS side is BLAS
``syrk`` accumulating in place (SciPy's ``dsyrk`` with ``beta=1``: half the flops of a general product, and no
temporary to add), which torch has no call for; it is kept unless torch's in-place general product
(``addmm_``) is :data:`MARGIN` times faster on :data:`GRAM_SHAPES`. :class:`GramSum` (a running sum),
:func:`gram` and :func:`cross` are those builds; on OpenBLAS they run limited to torch's thread count for the
call (and restored after), so a sweep unit or forked worker told to use one thread builds its Gram matrix on
one thread instead of one per core in every process; inside :func:`products` (a probe fit) on one thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write_json
from .exceptions import ConfigError

__all__ = ["BACKENDS", "OPS", "MARGIN", "backend", "describe", "summary", "matmul", "addmm_", "products", "GramSum",
           "gram", "cross", "measure", "cpu_model", "reset", "cache_path", "resolution"]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "numpy")
#: numpy must be this many times faster than torch (geometric mean over :data:`SHAPES`) to be chosen.
MARGIN = 1.2
#: (m, k, n) of the measured float32 products: a probe's data pass, a thin-block logits product, a square one.
SHAPES = ((4500, 1280, 10), (4500, 128, 150), (1024, 1024, 1024))
#: (n, d) of the measured float64 Gram builds ``y.T @ y``: a chunk of rows of a mid-width layer.
GRAM_SHAPES = ((4096, 512),)
#: The two operations with a backend each: the probe path's products and the float64 Gram builds.
OPS = ("gemm", "gram")
_ENV = "CRITMASS_BLAS"
_CACHE_VERSION = 4

_lock = threading.Lock()
_backend: str | None = None  # resolved once per process
_gram_backend: str | None = None  # resolved with _backend
_single = 0  # depth of products() blocks: OpenBLAS on one thread inside them
_info: dict = {}  # how it was resolved: source ('env', 'cache', 'measured'), timings, key
_controller = None  # threadpoolctl's controller of the OpenBLAS libraries, made on first use
_FLOATS = (torch.float32, torch.float64)


def reset() -> None:
    """Forget the resolved backend (tests; the next product resolves it again)."""
    global _backend, _gram_backend, _info
    with _lock:
        _backend, _gram_backend, _info = None, None, {}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cache_path() -> Path:
    """``.blas.json`` in the critmass cache directory (``$CRITMASS_CACHE``, else ``~/.cache/critmass/features``)."""
    base = os.environ.get("CRITMASS_CACHE") or Path.home() / ".cache" / "critmass" / "features"
    return Path(base).expanduser() / ".blas.json"


def _key(threads: int) -> str:
    return f"{cpu_model()} | torch {torch.__version__} | numpy {np.__version__} | threads {threads}"


def _env_choice() -> str | None:
    raw = os.environ.get(_ENV)
    value = (raw or "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in BACKENDS:
        raise ConfigError(f"{_ENV}={raw!r} is not a BLAS backend; valid values: torch, numpy (or auto / unset)")
    return value


def _openblas():
    global _controller
    if _controller is None:
        import scipy.linalg.blas  # noqa: F401 - SciPy's own OpenBLAS (the Gram builds' syrk) must be loaded first
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(internal_api="openblas")
    return _controller


@contextlib.contextmanager
def products():
    """A ``with`` block for the probe path, whose OpenBLAS calls alternate with torch's own operations: inside
    it the Gram builds run OpenBLAS on one thread, and so do the products on the numpy backend (restored
    after), so OpenBLAS's idle workers never compete with torch's OpenMP threads for the cores."""
    global _single
    with _limited(1) if backend() == "numpy" else contextlib.nullcontext():
        _single += 1
        try:
            yield
        finally:
            _single -= 1


def _gram_threads() -> int:
    """OpenBLAS threads of a Gram build: torch's count, one inside :func:`products`."""
    return 1 if _single else torch.get_num_threads()


def _seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _limited(threads: int):
    """OpenBLAS limited to ``threads`` for a ``with`` block (restored after)."""
    return _openblas().limit(limits=threads)


def _syrk(y: np.ndarray) -> np.ndarray:
    return y.T @ y  # numpy sees one buffer and its transpose: BLAS syrk, both triangles filled


def _syrk_into(c: np.ndarray, y: np.ndarray) -> None:
    """``c += y.T @ y`` in the upper triangle of the Fortran-ordered float64 ``c``, in place (SciPy's dsyrk)."""
    from scipy.linalg.blas import dsyrk

    # BLAS reads Fortran order: y.T of a C-ordered y is y^T in it (trans=0: y^T y), a Fortran-ordered y is y
    # (trans=1: y^T y); neither is copied, nor is a Fortran-ordered c with overwrite_c.
    if y.flags.f_contiguous and not y.flags.c_contiguous:
        r = dsyrk(1.0, y, beta=1.0, c=c, trans=1, lower=0, overwrite_c=1)
    else:
        r = dsyrk(1.0, np.ascontiguousarray(y).T, beta=1.0, c=c, trans=0, lower=0, overwrite_c=1)
    if r is not c:  # pragma: no cover - f2py copies only when c is not Fortran-ordered float64
        c[...] = r


def _torch_gram_into(c: np.ndarray, y: np.ndarray) -> None:
    t = torch.from_numpy(y)
    torch.from_numpy(c).addmm_(t.T, t)


def measure(shapes=SHAPES, reps: int = 3, gram_shapes=GRAM_SHAPES) -> dict:
    """Best-of-``reps`` seconds of torch's and numpy's float32 product on each ``(m, k, n)`` of ``shapes``, both on
    one thread (what a forked probe worker runs, and numpy's count inside :func:`products` whatever torch's), and
    of their float64 Gram build ``c += y.T @ y`` on each ``(n, d)`` of ``gram_shapes``, both at torch's thread
    count (as :class:`GramSum` runs them), interleaved so a load change hits both. ``ratio`` / ``gram_ratio``: the
    geometric mean of torch's time over numpy's (> 1: numpy faster). ``threads``: torch's count."""
    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)

    def timed(fn_t, fn_n, args_t, args_n):
        fn_t(*args_t), fn_n(*args_n)  # warm-up (thread pools, first-touch)
        tt, tn = float("inf"), float("inf")
        for _ in range(reps):
            tt = min(tt, _seconds(fn_t, *args_t))
            tn = min(tn, _seconds(fn_n, *args_n))
        return tt, tn

    rows, grams = [], []
    torch.set_num_threads(1)  # the choice is made per core: the per-core speed is what differs between CPUs
    try:
        with _limited(1):
            for m, k, n in shapes:
                an = rng.random((m, k), dtype=np.float32)
                bn = rng.random((k, n), dtype=np.float32)
                tt, tn = timed(torch.matmul, np.matmul, (torch.from_numpy(an), torch.from_numpy(bn)), (an, bn))
                rows.append({"shape": [m, k, n], "torch_s": tt, "numpy_s": tn,
                             "torch_gflops": 2e-9 * m * k * n / tt, "numpy_gflops": 2e-9 * m * k * n / tn})
    finally:
        torch.set_num_threads(threads)
    with _limited(threads):
        for n, d in gram_shapes:
            y = rng.random((n, d))
            ct, cn = np.zeros((d, d), order="F"), np.zeros((d, d), order="F")
            tt, tn = timed(_torch_gram_into, _syrk_into, (ct, y), (cn, y))
            grams.append({"shape": [n, d], "torch_s": tt, "numpy_s": tn})

    def geo(rs):
        return float(np.exp(np.mean([np.log(r["torch_s"] / r["numpy_s"]) for r in rs]))) if rs else 1.0

    return {"threads": threads, "ratio": geo(rows), "shapes": rows, "gram_ratio": geo(grams), "gram_shapes": grams}


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - no load average on this platform
        return None


def _read_cache(path: Path, key: str) -> tuple[str, str] | None:
    """``(gemm, gram)`` backends of ``key`` in the cache, None when absent (or from an older cache)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != _CACHE_VERSION:
            return None
        entry = data["entries"][key]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    choice = entry.get("backend") if isinstance(entry, dict) else None
    gram_choice = entry.get("gram_backend") if isinstance(entry, dict) else None
    return (choice, gram_choice) if choice in BACKENDS and gram_choice in BACKENDS else None


def _write_cache(path: Path, key: str, entry: dict) -> None:
    try:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != _CACHE_VERSION or not isinstance(data.get("entries"), dict):
                raise ValueError
        except (OSError, ValueError, AttributeError):
            data = {"version": _CACHE_VERSION, "entries": {}}
        data["entries"][key] = entry
        atomic_write_json(path, data)
    except OSError as exc:  # a read-only cache only costs a measurement per process
        logger.debug("could not write the BLAS choice to %s: %s", path, exc)


def _resolve() -> str:
    global _backend, _gram_backend, _info
    with _lock:
        if _backend is not None:
            return _backend
        forced = _env_choice()
        threads = torch.get_num_threads()
        if forced is not None:
            choice, gram_choice, info = forced, forced, {"source": "env"}
        else:
            key, path = _key(threads), cache_path()
            cached = _read_cache(path, key)
            info = {"source": "cache", "key": key}
            if cached is None:
                m = measure()
                choice = "numpy" if m["ratio"] >= MARGIN else "torch"
                gram_choice = "torch" if m["gram_ratio"] <= 1.0 / MARGIN else "numpy"
                info = {"source": "measured", "key": key, **m}
                _write_cache(path, key, {"backend": choice, "gram_backend": gram_choice, "ratio": m["ratio"],
                                         "gram_ratio": m["gram_ratio"], "shapes": m["shapes"],
                                         "gram_shapes": m["gram_shapes"], "margin": MARGIN,
                                         "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                         "load_average": _load()})
            else:
                choice, gram_choice = cached
            logger.info("BLAS backend: %s, Gram builds %s (%s)", choice, gram_choice, info["source"])
        _backend, _gram_backend, _info = choice, gram_choice, info
    return choice


def backend(op: str = "gemm") -> str:
    """The process's backend for ``op`` (``'gemm'``: the probe path's products, ``'gram'``: the float64 Gram
    builds), ``'torch'`` or ``'numpy'`` (resolved on first use)."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}; got {op!r}")
    if _backend is None:
        _resolve()
    return _backend if op == "gemm" else _gram_backend


def resolution() -> dict:
    """How the backend was chosen (``source``: env / cache / measured, and the timings when measured)."""
    backend()
    return dict(_info)


def _library(name: str, op: str = "gemm") -> str:
    if name == "torch":
        if torch.backends.mkl.is_available():
            return "mkl"
        for part in torch.__config__.show().replace(",", "\n").splitlines():
            if "BLAS_INFO=" in part:
                return part.split("=", 1)[1].strip() or "unknown"
        return "unknown"
    try:
        if op == "gram":  # the Gram builds call SciPy's BLAS (dsyrk), its own OpenBLAS
            import scipy

            blas = scipy.__config__.CONFIG["Build Dependencies"]["blas"]
        else:
            blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        lib, ver = str(blas.get("name", "")), str(blas.get("version", ""))
        if "openblas" in lib.lower():
            lib = "openblas"
        ver = ".".join(ver.split(".")[:3])
        return f"{lib} {ver}".strip() or "unknown"
    except Exception:  # noqa: BLE001 - old numpy: no structured config
        return "unknown"


def describe(name: str | None = None, *, op: str = "gemm") -> str:
    """``'torch (mkl)'`` / ``'numpy (openblas 0.3.31)'``: a backend (the process's for ``op`` unless ``name``)
    and its library."""
    name = backend(op) if name is None else name
    return f"{name} ({_library(name, op)})"


def summary() -> str:
    """Both choices, as recorded in ``versions()['blas']``: ``'torch (mkl); gram numpy (openblas 0.3.30)'`` (the
    Gram builds' OpenBLAS is SciPy's)."""
    return f"{describe()}; gram {describe(op='gram')}"


def _np2(t: torch.Tensor) -> np.ndarray:
    """A numpy view of ``t`` that BLAS can read (numpy's matmul falls back to a slow loop on other strides)."""
    x = t.numpy()
    if x.ndim == 2:
        s0, s1 = x.strides
        it = x.itemsize
        if not ((s1 == it and s0 % it == 0 and s0 >= max(x.shape[1], 1) * it)
                or (s0 == it and s1 % it == 0 and s1 >= max(x.shape[0], 1) * it)):
            x = np.ascontiguousarray(x)
    return x


def _np_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)


def _on_numpy(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.device.type == "cpu" and b.device.type == "cpu" and a.dtype == b.dtype and a.dtype in _FLOATS
            and a.dim() == 2 and b.dim() == 2 and not (a.requires_grad or b.requires_grad))


def matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` of 2-D tensors on the process's backend (``torch.matmul`` unless it is numpy and both are CPU
    float32 / float64 tensors of one dtype). ``out``: the result's tensor (then returned). Run it inside
    :func:`products` where torch's own operations follow."""
    if a.device.type != "cpu" or (_backend if _backend is not None else _resolve()) == "torch" \
            or not _on_numpy(a, b):
        return a @ b if out is None else torch.matmul(a, b, out=out)
    if out is None:
        return torch.from_numpy(_np_matmul(_np2(a), _np2(b)))
    _np_matmul(_np2(a), _np2(b), out=out.numpy())
    return out


def addmm_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``c += a @ b`` in place (``c.addmm_(a, b)`` on the torch backend); returns ``c``."""
    if c.device.type != "cpu" or (_backend if _backend is not None else _resolve()) == "torch" \
            or not _on_numpy(a, b) or c.dtype != a.dtype or c.requires_grad:
        return c.addmm_(a, b)
    cn = c.numpy()
    cn += _np_matmul(_np2(a), _np2(b))
    return c


def _check_gram_operand(y) -> np.ndarray:
    if not (isinstance(y, np.ndarray) and y.ndim == 2 and y.dtype in (np.float32, np.float64)):
        raise TypeError("gram / cross / GramSum take 2-D float32 or float64 numpy arrays")
    return y if y.strides[0] >= 0 and y.strides[1] >= 0 else np.ascontiguousarray(y)


class GramSum:
    """A running float64 sum of ``y.T @ y`` over row chunks ``y`` of width ``d`` on the process's Gram backend,
    accumulated in place (one ``d x d`` buffer, no temporary per chunk).

    :meth:`add` adds a chunk, :meth:`add_outer` a rank-one term, :meth:`value` returns the symmetric sum (a new
    array; more chunks may follow). On OpenBLAS only the upper triangle is accumulated (``dsyrk``).
    ``MemoryError`` is the caller's to word."""

    __slots__ = ("_c", "d")

    def __init__(self, d: int):
        self.d = int(d)
        self._c = np.zeros((self.d, self.d), order="F")

    def add(self, y: np.ndarray) -> GramSum:
        """``sum += y.T @ y`` for a ``(b, d)`` chunk (float64; a float32 chunk is converted)."""
        y = _check_gram_operand(y)
        if y.shape[1] != self.d:
            raise ValueError(f"chunk has {y.shape[1]} columns; this sum has {self.d}")
        if y.dtype != np.float64:
            y = y.astype(np.float64)
        if backend("gram") == "torch":
            _torch_gram_into(self._c, y)
        else:
            with _limited(_gram_threads()):
                _syrk_into(self._c, y)
        return self

    def add_outer(self, v: np.ndarray, scale: float = 1.0) -> GramSum:
        """``sum += scale * outer(v, v)``."""
        from scipy.linalg.blas import dsyr

        v = np.ascontiguousarray(v, dtype=np.float64)
        r = dsyr(float(scale), v, a=self._c, lower=0, overwrite_a=1)  # the upper triangle, in place
        if r is not self._c:  # pragma: no cover - f2py copies only a non-Fortran a
            self._c[...] = r
        return self

    def value(self) -> np.ndarray:
        """The symmetric ``d x d`` sum (C-ordered, a copy)."""
        out = np.triu(self._c)
        out += np.triu(self._c, 1).T
        return out


def gram(y: np.ndarray) -> np.ndarray:
    """``y.T @ y`` of a 2-D float numpy array on the process's Gram backend (on numpy one ``syrk`` with
    OpenBLAS at torch's thread count for the call)."""
    y = _check_gram_operand(y)
    if backend("gram") == "torch":
        t = torch.from_numpy(y)
        return (t.T @ t).numpy()
    with _limited(_gram_threads()):
        return _syrk(y)


def cross(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a.T @ b`` of 2-D float numpy arrays with the same rows, on the Gram backend (a cross-covariance build);
    with ``out``, ``out += a.T @ b``."""
    a, b = _check_gram_operand(a), _check_gram_operand(b)
    if backend("gram") == "torch":
        g = (torch.from_numpy(a).T @ torch.from_numpy(b)).numpy()
    else:
        with _limited(_gram_threads()):
            g = a.T @ b
    if out is None:
        return g
    out += g
    return out
