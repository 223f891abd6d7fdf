"""Atomic file writes: a reader never sees a half-written file, and a crash (even of the machine) after
the write returns never leaves a renamed-but-empty one: contents are fsynced before the rename and the
directory after it. Also the inter-process lock the feature cache and the unpacked models share
(:func:`split_lock`) and the listing digest of a folder (:func:`listing_digest`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_path", "sha256_file", "split_lock", "listing_digest",
           "fsync", "UMASK"]

log = logging.getLogger(__name__)

UMASK = os.umask(0o022)
os.umask(UMASK)  # reading the umask means setting it; put it straight back


def fsync(path, *, directory: bool = False) -> None:
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
        os.chmod(tmp, 0o666 & ~UMASK)
        fsync(tmp)  # before the rename: else a crash can leave `path` renamed but empty
        os.replace(tmp, path)
        fsync(path.parent, directory=True)  # the rename itself
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


@contextlib.contextmanager
def split_lock(path):
    """Hold an exclusive inter-process lock on ``path`` (waiting for another holder).

    POSIX: ``flock`` on a file that the holder unlinks before releasing; a waiter that then wakes on the
    unlinked inode sees the path no longer names it and retries, so the lock stays exclusive and no lock
    file outlives its holders. Elsewhere: :class:`filelock.FileLock`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        from filelock import FileLock

        with FileLock(str(path)):
            yield
        return
    fd = _flock(path, fcntl)
    try:
        yield
    finally:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still holding it: see the docstring
        finally:
            os.close(fd)  # releases the lock


def _flock(path: Path, fcntl) -> int:
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    log.info("waiting for another process writing %s", path.with_suffix(""))
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the previous holder removed this inode; lock the current one


def listing_digest(base: Path) -> dict:
    """SHA-256 over the sorted (relative path, size, mtime_ns) of every file under ``base`` (links followed),
    with the file count and total bytes: a folder's identity without reading its files."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):  # ImageFolder follows links too
        dirnames.sort()
        for fname in filenames:
            full = os.path.join(dirpath, fname)
            try:
                st = os.stat(full)
            except OSError:  # a dangling link: not a file anyone can read
                continue
            entries.append((os.path.relpath(full, base).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
    entries.sort()
    h = hashlib.sha256()
    for rel, size, mtime in entries:
        h.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return {"listing_sha256": h.hexdigest(), "files": len(entries), "bytes": sum(e[1] for e in entries)}
