"""Content fingerprints of file datasets, for the feature cache key.

``npz:``, ``imagefolder:``, ``csv:`` and ``textfolder:`` specs name a path whose contents a user can edit in place; keying the
cache by the path alone would hand back stale features. An npz file is hashed whole; an image folder
is keyed by its listing (relative path, size, mtime of every file), as ``make`` would, since hashing
every image of a large folder on each run costs more than the extraction it saves.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .._io import sha256_file

__all__ = ["dataset_fingerprint"]


def dataset_fingerprint(spec: str, root=None) -> dict | None:
    """What the contents of a file dataset are, or None for datasets not read from a user's files.

    ``npz:FILE``: SHA-256 and size of the file. ``imagefolder:DIR`` (relative to ``root`` if given, as
    the loader resolves it): SHA-256 over the sorted (relative path, size, mtime_ns) of every file
    under it. ``csv:FILE?...``: SHA-256 and size of the file (the options are part of the spec).
    ``textfolder:DIR``: SHA-256 over the relative path and contents of every .txt file (text is small
    enough to hash, so a copied folder keeps its key). The offline text corpora (``bbc-news``,
    ``spam-assassin``) return their package and version. Other sources (torchvision, hf, other
    aliases) return None: they are versioned by their own release, and listing a folder the size of
    ImageNet on every run would cost too much.
    """
    source, sep, name = str(spec).strip().partition(":")
    if not sep and source in ("bbc-news", "spam-assassin", "spam-assassin-groups"):
        from ._text import text_alias_fingerprint

        return text_alias_fingerprint(source)
    if not sep or not name:
        return None
    if source == "csv":
        from ._text import parse_csv_spec

        try:
            path = parse_csv_spec(name)[0]
        except Exception:  # noqa: BLE001 - a malformed spec is reported by the loader
            return None
        if root is not None and not path.is_absolute():
            path = Path(root).expanduser() / path
        if not path.is_file():
            return None
        return {"sha256": sha256_file(path), "size": path.stat().st_size}
    if source == "textfolder":
        from ._text import text_folder_digest

        base = Path(name).expanduser()
        if root is not None and not base.is_absolute():
            base = Path(root).expanduser() / base
        return text_folder_digest(base) if base.is_dir() else None
    if source == "npz":
        path = Path(name).expanduser()
        if not path.is_file():
            return None
        return {"sha256": sha256_file(path), "size": path.stat().st_size}
    if source == "imagefolder":
        base = Path(name).expanduser()
        if root is not None and not base.is_absolute():
            base = Path(root).expanduser() / base
        if not base.is_dir():
            return None
        return _listing_digest(base)
    return None


def _listing_digest(base: Path) -> dict:
    entries = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):  # ImageFolder follows links too
        dirnames.sort()
        for fname in filenames:
            full = os.path.join(dirpath, fname)
            try:
                st = os.stat(full)
            except OSError:  # a dangling link: not an image anyone can read
                continue
            entries.append((os.path.relpath(full, base).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
    entries.sort()
    h = hashlib.sha256()
    for rel, size, mtime in entries:
        h.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return {"listing_sha256": h.hexdigest(), "files": len(entries), "bytes": sum(e[1] for e in entries)}
