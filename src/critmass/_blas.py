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
numerically. With ``numpy`` the CPU float32 / float64 products run in ``np.matmul`` on views of the same memory,
with OpenBLAS's threads kept equal to torch's (``threadpoolctl``) so forked workers that run one torch thread
also run one OpenBLAS thread.
"""

from __future__ import annotations

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

__all__ = ["BACKENDS", "MARGIN", "backend", "describe", "matmul", "addmm_", "measure", "cpu_model", "reset",
           "cache_path", "sync_threads", "resolution"]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "numpy")
#: numpy must be this many times faster than torch (geometric mean over :data:`SHAPES`) to be chosen.
MARGIN = 1.2
#: (m, k, n) of the measured float32 products: a probe's data pass, a thin-block logits product, a square one.
SHAPES = ((4500, 1280, 10), (4500, 128, 150), (1024, 1024, 1024))
_ENV = "CRITMASS_BLAS"
_CACHE_VERSION = 1

_lock = threading.Lock()
_backend: str | None = None  # resolved once per process
_info: dict = {}  # how it was resolved: source ('env', 'cache', 'measured'), timings, key
_numpy = False  # _backend == "numpy", read on every product
_synced = -1  # the OpenBLAS thread count last set (to torch's)
_controller = None  # threadpoolctl's controller of the OpenBLAS libraries, made on first use
_FLOATS = (torch.float32, torch.float64)


def reset() -> None:
    """Forget the resolved backend (tests; the next product resolves it again)."""
    global _backend, _numpy, _synced, _info
    with _lock:
        _backend, _numpy, _synced, _info = None, False, -1, {}


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
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(internal_api="openblas")
    return _controller


def sync_threads() -> int:
    """Set OpenBLAS's thread count to torch's (if it changed since the last call); returns it."""
    global _synced
    n = torch.get_num_threads()
    if n != _synced:
        _openblas().limit(limits=n)  # applied now, kept for the process (never restored)
        _synced = n
    return n


def _seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(shapes=SHAPES, reps: int = 3) -> dict:
    """Best-of-``reps`` seconds of torch's and numpy's float32 product on each ``(m, k, n)`` of ``shapes``
    at torch's thread count (OpenBLAS limited to it for the measurement only), interleaved so a load
    change hits both; ``ratio`` is the geometric mean of torch's time over numpy's (> 1: numpy faster)."""
    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    rows = []
    with _openblas().limit(limits=threads):
        for m, k, n in shapes:
            an = rng.random((m, k), dtype=np.float32)
            bn = rng.random((k, n), dtype=np.float32)
            at, bt = torch.from_numpy(an), torch.from_numpy(bn)
            torch.matmul(at, bt), np.matmul(an, bn)  # warm-up (thread pools, first-touch)
            tt, tn = float("inf"), float("inf")
            for _ in range(reps):
                tt = min(tt, _seconds(torch.matmul, at, bt))
                tn = min(tn, _seconds(np.matmul, an, bn))
            rows.append({"shape": [m, k, n], "torch_s": tt, "numpy_s": tn,
                         "torch_gflops": 2e-9 * m * k * n / tt, "numpy_gflops": 2e-9 * m * k * n / tn})
    ratio = float(np.exp(np.mean([np.log(r["torch_s"] / r["numpy_s"]) for r in rows])))
    return {"threads": threads, "ratio": ratio, "shapes": rows}


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - no load average on this platform
        return None


def _read_cache(path: Path, key: str) -> str | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))["entries"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    choice = entry.get("backend") if isinstance(entry, dict) else None
    return choice if choice in BACKENDS else None


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
    global _backend, _numpy, _info
    with _lock:
        if _backend is not None:
            return _backend
        forced = _env_choice()
        threads = torch.get_num_threads()
        if forced is not None:
            choice, info = forced, {"source": "env"}
        else:
            key, path = _key(threads), cache_path()
            choice = _read_cache(path, key)
            info = {"source": "cache", "key": key}
            if choice is None:
                m = measure()
                choice = "numpy" if m["ratio"] >= MARGIN else "torch"
                info = {"source": "measured", "key": key, **m}
                _write_cache(path, key, {"backend": choice, "ratio": m["ratio"], "shapes": m["shapes"],
                                         "margin": MARGIN, "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                         "load_average": _load()})
            logger.info("BLAS backend: %s (%s)", choice, info["source"])
        _backend, _info, _numpy = choice, info, choice == "numpy"
    if _numpy:
        sync_threads()
    return choice


def backend() -> str:
    """The process's backend, ``'torch'`` or ``'numpy'`` (resolved on first use)."""
    return _backend if _backend is not None else _resolve()


def resolution() -> dict:
    """How the backend was chosen (``source``: env / cache / measured, and the timings when measured)."""
    backend()
    return dict(_info)


def _library(name: str) -> str:
    if name == "torch":
        if torch.backends.mkl.is_available():
            return "mkl"
        for part in torch.__config__.show().replace(",", "\n").splitlines():
            if "BLAS_INFO=" in part:
                return part.split("=", 1)[1].strip() or "unknown"
        return "unknown"
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        lib, ver = str(blas.get("name", "")), str(blas.get("version", ""))
        if "openblas" in lib.lower():
            lib = "openblas"
        ver = ".".join(ver.split(".")[:3])
        return f"{lib} {ver}".strip() or "unknown"
    except Exception:  # noqa: BLE001 - old numpy: no structured config
        return "unknown"


def describe(name: str | None = None) -> str:
    """``'torch (mkl)'`` / ``'numpy (openblas 0.3.31)'``: a backend (the process's unless ``name``) and its
    library."""
    name = backend() if name is None else name
    return f"{name} ({_library(name)})"


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


def _on_numpy(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.device.type == "cpu" and b.device.type == "cpu" and a.dtype == b.dtype and a.dtype in _FLOATS
            and a.dim() == 2 and b.dim() == 2 and not (a.requires_grad or b.requires_grad))


def matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` of 2-D tensors on the process's backend (``torch.matmul`` unless it is numpy and both are CPU
    float32 / float64 tensors of one dtype). ``out``: the result's tensor (then returned)."""
    if a.device.type != "cpu" or (_backend if _backend is not None else _resolve()) == "torch" \
            or not _on_numpy(a, b):
        return a @ b if out is None else torch.matmul(a, b, out=out)
    if _synced != torch.get_num_threads():
        sync_threads()
    if out is None:
        return torch.from_numpy(np.matmul(_np2(a), _np2(b)))
    np.matmul(_np2(a), _np2(b), out=out.numpy())
    return out


def addmm_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``c += a @ b`` in place (``c.addmm_(a, b)`` on the torch backend); returns ``c``."""
    if c.device.type != "cpu" or (_backend if _backend is not None else _resolve()) == "torch" \
            or not _on_numpy(a, b) or c.dtype != a.dtype or c.requires_grad:
        return c.addmm_(a, b)
    if _synced != torch.get_num_threads():
        sync_threads()
    cn = c.numpy()
    cn += np.matmul(_np2(a), _np2(b))
    return c
