"""What a codec is: how one subset's vectors are stored (bytes per vector) and searched.

A codec is fitted on the gallery's vectors only (the quantiser's ranges, means or codebooks never see a
query), encodes them into ``codes`` (``n x code_size`` bytes, what a vector database would store), and
answers the searches of the neighbour probes. Every codec's scores are similarities (larger is nearer)
between the query as the codec sees it (:meth:`FittedCodec.query_vectors`) and the gallery rows as the codes
reconstruct them (:meth:`FittedCodec.reconstruct`), so a brute-force search over those two arrays is the
codec's search, which the tests check against FAISS's.

Codec specs are strings: a registered name, optionally followed by the parameters its class parses
(``pq16x6``: 16 sub-quantisers of 6 bits; ``binary-rerank20``: re-rank 20 x k Hamming candidates).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .._registry import Registry
from .._validation import closest
from ..exceptions import ConfigError

__all__ = ["Codec", "FittedCodec", "CODECS", "register_codec", "make_codec", "parse_codecs", "list_codecs",
           "DEFAULT_CODEC", "import_faiss", "faiss_threads"]

#: Name -> codec class. Registering a name twice is an error.
CODECS: Registry[type] = Registry("codec")
DEFAULT_CODEC = "float32"
_FAISS_FIX = "install it with `pip install 'critmass[knn]'` (faiss-cpu), or use codec float32"


def import_faiss(what: str):
    """The faiss module, or a one-line ConfigError naming ``what`` needs it and the fix."""
    try:
        import faiss
    except ImportError:
        raise ConfigError(f"{what} needs faiss, which is not installed; {_FAISS_FIX}") from None
    return faiss


@contextlib.contextmanager
def faiss_threads():
    """FAISS's OpenMP threads follow torch's setting (``torch.set_num_threads`` / ``--threads``) for the block:
    OpenMP threads that outnumber the cores left to them spin instead of working."""
    try:
        import faiss
    except ImportError:
        yield
        return
    import torch

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(torch.get_num_threads()))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def register_codec(name: str):
    """Class decorator: register a :class:`Codec` subclass under ``name`` (a new codec is one file plus this)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", name):
        raise ConfigError(f"a codec name is lower-case letters, digits and '-', starting with a letter; "
                          f"got {name!r}")

    def deco(cls):
        cls.name = name
        return CODECS.register(name)(cls)

    return deco


def list_codecs() -> list[str]:
    """The registered codec names."""
    return sorted(CODECS.names())


class FittedCodec:
    """A codec trained on one gallery (n x k vectors): its codes and its search.

    Subclasses set ``codes`` (n, code_size) uint8, ``code_size``, ``codebook_bytes``, ``params`` and
    implement :meth:`query_vectors`, :meth:`reconstruct` and :meth:`search`.
    """

    metric: str  # 'cosine' (inner product of the vectors) or 'l2'
    codes: np.ndarray
    code_size: int
    codebook_bytes: int
    params: dict

    @property
    def bytes_per_vector(self) -> int:
        """What is stored per gallery vector (the codebook, shared by all, is :attr:`codebook_bytes`)."""
        return int(self.code_size)

    @property
    def score_metric(self) -> str:
        """The metric of :meth:`query_vectors` against :meth:`reconstruct` ('cosine': inner product)."""
        return self.metric

    def query_vectors(self, queries: np.ndarray) -> np.ndarray:
        """The queries as the search compares them (float32); float queries by default (asymmetric search)."""
        return np.ascontiguousarray(queries, dtype=np.float32)

    def reconstruct(self, ids=None) -> np.ndarray:
        """The gallery rows ``ids`` (all by default) as the codes give them back, float32."""
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, gallery ids), each (n_queries, k), nearest first."""
        raise NotImplementedError

    def pair_scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Similarities of each query to the gallery rows ``ids[i]`` (n_queries, m) under this codec."""
        q = self.query_vectors(queries)
        return pair_scores(q, ids, self.reconstruct, self.score_metric)

    def encode(self, X: np.ndarray) -> np.ndarray:
        """Codes (n, code_size) uint8 of new vectors, with the gallery's quantiser."""
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Vectors (n, k) float32 as the codes give them back."""
        raise NotImplementedError

    def codebook_arrays(self) -> dict:
        """What :meth:`Codec.restore` needs to encode new vectors as the gallery was (saved by ``compress``)."""
        return {}


def pair_scores(queries: np.ndarray, ids: np.ndarray, rows, metric: str, budget: int = 1 << 24) -> np.ndarray:
    """Similarities (n_queries, m) of each query to the gallery rows ``ids[i]``; ``rows(ids)`` gives those rows
    as vectors. In float64, over query chunks of at most ``budget`` gathered values (a re-ranking of
    thousands of candidates per query must not gather them all at once)."""
    n, m = ids.shape
    out = np.empty((n, m))
    step = max(1, budget // max(1, m * queries.shape[1]))
    for a in range(0, n, step):
        q = np.asarray(queries[a : a + step], dtype=np.float64)
        block = ids[a : a + step]
        g = np.asarray(rows(block.ravel()), dtype=np.float64).reshape(*block.shape, -1)
        ip = np.einsum("qd,qmd->qm", q, g)
        if metric == "l2":
            ip = 2 * ip - (q * q).sum(1)[:, None] - np.einsum("qmd,qmd->qm", g, g)
        out[a : a + step] = ip
    return out


class Codec:
    """A storage format of embedding vectors; :meth:`fit` trains it on a gallery.

    Subclasses register with :func:`register_codec`, parse their parameters from the spec's suffix in
    :meth:`parse` and return a :class:`FittedCodec` from :meth:`fit`.
    """

    name: ClassVar[str] = ""
    #: FAISS names the codec needs; a FAISS build lacking one is refused in one line.
    faiss_symbols: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: str | None = None, **params):
        self.spec = spec or self.name
        self.options = params

    @classmethod
    def parse(cls, suffix: str) -> dict:
        """Parameters from what follows the name in a spec ('' for none); refuse anything else in one line."""
        if suffix:
            raise ConfigError(f"codec {cls.name!r} takes no parameters; got {cls.name + suffix!r}; pass {cls.name!r}")
        return {}

    def check(self) -> None:
        """Refuse a codec the installed FAISS lacks (one line, naming codecs that work)."""
        if not self.faiss_symbols:
            return
        faiss = import_faiss(f"codec {self.spec!r}")
        missing = [s for s in self.faiss_symbols if not hasattr(faiss, s)]
        if missing:
            ok = [n for n in list_codecs() if all(hasattr(faiss, s) for s in CODECS.get(n).faiss_symbols)]
            raise ConfigError(f"codec {self.spec!r} needs faiss.{missing[0]}, which the installed faiss "
                              f"{getattr(faiss, '__version__', '?')} lacks; valid here: {', '.join(ok)}")

    def check_width(self, k: int, n_gallery: int | None = None) -> None:
        """Refuse parameters that do not fit ``k`` dimensions (and ``n_gallery`` training rows) in one line."""

    def bytes_per_vector(self, k: int, n_gallery: int) -> int:
        """What the codec stores per vector of ``k`` dimensions trained on ``n_gallery`` rows (no training)."""
        raise NotImplementedError

    def fit(self, gallery: np.ndarray, metric: str = "cosine", *, seed: int = 0) -> FittedCodec:
        """Train on ``gallery`` (n, k) float32 only and encode it; ``metric`` is that of its searches."""
        raise NotImplementedError

    def restore(self, arrays: dict, k: int, metric: str = "cosine") -> FittedCodec:
        """An encoder (no gallery) from :meth:`FittedCodec.codebook_arrays` of a fitted codec of width ``k``."""
        raise NotImplementedError

    def canonical(self) -> str:
        """The spec that names these parameters (two spellings of one codec are one row key)."""
        return self.spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def make_codec(spec) -> Codec:
    """A :class:`Codec` from a spec string (``'int8'``, ``'pq16x8'``) or a Codec instance (returned as is).

    The name is the longest registered name the spec starts with; the codec's class parses the rest.
    """
    if isinstance(spec, Codec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a codec is a name such as {', '.join(list_codecs())}; got {spec!r}")
    text = spec.strip()
    names = sorted((n for n in CODECS.names() if text.startswith(n)), key=len, reverse=True)
    if not names:
        raise ConfigError(f"unknown codec {text!r}{closest(text, CODECS.names())}; valid: {', '.join(list_codecs())}"
                          " (pq and opq take a suffix, e.g. pq16x8)")
    cls = CODECS.get(names[0])
    codec = cls(text, **cls.parse(text[len(names[0]):]))
    codec.spec = codec.canonical()
    return codec


def parse_codecs(codecs) -> list[str]:
    """A checked, duplicate-free list of codec specs from a spec, a comma-separated string or a list
    (None: ``['float32']``)."""
    if codecs is None:
        return [DEFAULT_CODEC]
    items = [c.strip() for c in codecs.split(",")] if isinstance(codecs, str) else \
        list(codecs) if isinstance(codecs, Sequence) else None
    if not items or any(not isinstance(c, str) or not c for c in items):
        raise ConfigError(f"codecs must be a non-empty list of codec names ({', '.join(list_codecs())}); got {codecs!r}")
    codecs = [make_codec(c) for c in items]
    for c in codecs:
        c.check()
    return list(dict.fromkeys(c.spec for c in codecs))
