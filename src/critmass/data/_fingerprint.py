"""Content fingerprints of file datasets, for the feature cache key.

``npz:``, ``imagefolder:``, ``csv:`` and ``textfolder:`` specs name a path whose contents a user can edit in place; keying the
cache by the path alone would hand back stale features. An npz file is hashed whole; an image folder
is keyed by its listing (relative path, size, mtime of every file), as ``make`` would, since hashing
every image of a large folder on each run costs more than the extraction it saves.
"""

from __future__ import annotations

from pathlib import Path

from .._io import listing_digest, sha256_file

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

    Parameters
    ----------
    spec : str
        A dataset spec (``npz:FILE``, ``imagefolder:DIR``, an alias, ...).
    root : path, optional
        The data root relative folder specs are resolved against.

    Returns
    -------
    dict or None
        JSON-able content identity (part of the feature cache key), or None where the spec has none.
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
        return listing_digest(base)
    return None
