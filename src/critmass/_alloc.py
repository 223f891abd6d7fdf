"""Keep freed memory in the process while a CPU forward pass runs (glibc).

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and hands it
back to the kernel on ``free``. A CPU forward pass allocates and frees activations of that size in every batch
(EfficientNet-Lite0 at 224 px, batch 32: its first expanded map alone is 154 MB), so every batch page-faults
all of them in again and the kernel zeroes each page: most of such a pass is spent in the kernel. With
``M_MMAP_MAX = 0`` (blocks come from the heap) and a trim threshold that keeps it, the blocks are reused with
about the same peak memory and the same features. Both settings are needed: raising only the mmap threshold is
capped at 32 MiB, below a large activation, and the trim threshold alone changes nothing (the docs' benchmarks
page has the measurements). PyTorch's CPU tuning guide suggests another
allocator (jemalloc, tcmalloc) for this; setting glibc's own two knobs needs nothing preloaded.

The settings hold only inside :func:`heap_reuse`. On exit mmap is allowed again, and ``malloc_trim(0)`` returns
the freed heap to the system. Any ``mallopt`` turns glibc's dynamic mmap threshold off for good, so the exit
sets the values that threshold reaches once a large block has been freed (as in any forward pass): mmap
threshold 32 MiB, trim threshold 64 MiB. The defaults of a fresh process (128 KiB) would map every block
over 128 KiB afresh in the work that follows in the same process. Elsewhere (not glibc, or
``CRITMASS_HEAP_REUSE=0``) it does nothing. glibc falls back to ``mmap`` by itself when the heap cannot grow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["heap_reuse"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # malloc.h
# On exit: glibc's dynamic threshold after a large free (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, trim 2x it).
_AFTER_MMAP_THRESHOLD = 32 * 1024 * 1024
_AFTER_TRIM = 2 * _AFTER_MMAP_THRESHOLD
_DEFAULT_MMAP_MAX = 65536
_KEEP = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can be given
ENV = "CRITMASS_HEAP_REUSE"

_lock = threading.Lock()
_depth = 0
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") and hasattr(lib, "gnu_get_libc_version"):
                    lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                    lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                    _libc = lib
            except OSError:  # musl and friends: no glibc to tune
                pass
    return _libc or None


def enabled() -> bool:
    """Whether :func:`heap_reuse` changes anything here: glibc, and ``CRITMASS_HEAP_REUSE`` not ``0``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off") and _glibc() is not None


@contextmanager
def heap_reuse(active: bool = True) -> Iterator[bool]:
    """Within the block, large blocks come from (and go back to) the heap instead of fresh mappings.

    Nested and concurrent uses share one setting, restored when the last one exits. Yields whether it is in
    effect. ``active=False`` (e.g. a GPU pass, whose activations are not malloc's) does nothing.
    """
    global _depth
    lib = _glibc() if active and enabled() else None
    if lib is not None:
        with _lock:
            if _depth == 0 and not (lib.mallopt(_M_MMAP_MAX, 0) and lib.mallopt(_M_TRIM_THRESHOLD, _KEEP)):
                lib.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                log.debug("mallopt refused the heap-reuse settings; leaving malloc as it is")
                lib = None
            else:
                _depth += 1
    if lib is None:
        yield False
        return
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                lib.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP_THRESHOLD)
                lib.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM)
                lib.malloc_trim(0)
