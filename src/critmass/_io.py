"""Atomic file writes: a reader never sees a half-written file, and a crash (even of the machine) after
the write returns never leaves a renamed-but-empty one: contents are fsynced before the rename and the
directory after it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_path", "sha256_file"]

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # reading the umask means setting it; put it straight back


def _fsync(path, *, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a directory's entries) to disk, whoever wrote it."""
    if directory and os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    # Read-only suffices on POSIX; Windows needs a writable handle to flush.
    fd = os.open(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    The caller may write the temporary file any way (``open``, ``np.save``, ``DataFrame.to_parquet``): its
    contents are fsynced here before the rename, and the directory after it, so ``path`` is durable on return.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give results the permissions a plain open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync(tmp)  # before the rename: else a crash can leave `path` renamed but empty
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)  # the rename itself
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)  # atomic_path fsyncs it


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sha256_file(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
