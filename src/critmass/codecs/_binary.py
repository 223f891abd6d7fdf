"""Binary codes: one bit per dimension, searched by Hamming distance (FAISS ``IndexBinaryFlat``).

A vector's bit ``j`` is ``x_j - m_j > 0``, ``m`` the gallery's mean (the only thing trained, on the gallery
only); the bits are packed 8 to a byte (``k`` bits take ``ceil(k / 8)`` bytes, the last byte padded with
zero bits in every code, which leaves Hamming distances unchanged). Queries are binarised the same way.
The similarity reported is ``1 - 2 h / k`` for Hamming distance ``h``: the cosine of the +-1 vectors, so
DINO-weighted votes and score-based metrics stay on a cosine scale; its order is Hamming's.

``binary-rerank`` (``binary-rerankR``, default R = 10) re-ranks the ``R x k`` nearest Hamming candidates with
the float vectors, which it must keep: its bytes per vector count them (``ceil(k / 8) + 4 k``).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_positive_int
from ..exceptions import ConfigError
from ._base import Codec, FittedCodec, import_faiss, register_codec

__all__ = ["BinaryCodec", "BinaryRerankCodec", "pack_bits"]


def pack_bits(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(n, ceil(k / 8)) uint8: the bits ``X - mean > 0``, packed big-endian within each byte (numpy's packbits)."""
    bits = np.asarray(X, dtype=np.float64) - np.asarray(mean, dtype=np.float64)[None, :] > 0
    return np.packbits(bits, axis=1)


class _BinaryCodes(FittedCodec):
    def __init__(self, gallery, metric, mean=None):
        faiss = import_faiss("codec 'binary'")
        self.metric, self.k = metric, int(gallery.shape[1])
        self.mean = np.asarray(gallery, dtype=np.float64).mean(0) if mean is None else np.asarray(mean, np.float64)
        self.codes = pack_bits(gallery, self.mean)
        self.code_size = int(self.codes.shape[1])
        self.index = faiss.IndexBinaryFlat(8 * self.code_size)
        self.index.add(self.codes)
        self.codebook_bytes = 4 * self.k  # the mean, float32
        self.params = {"threshold": "gallery mean", "score": "1 - 2 hamming / k"}

    @property
    def score_metric(self):
        return "cosine"  # +-1 / sqrt(k) vectors: their inner product is 1 - 2 h / k

    def encode(self, X):
        return pack_bits(X, self.mean)

    def codebook_arrays(self):
        return {"mean": self.mean}

    def decode(self, codes):
        """+-1 / sqrt(k) vectors (n, k) from packed codes."""
        bits = np.unpackbits(np.ascontiguousarray(codes, dtype=np.uint8), axis=1)[:, : self.k]
        return ((2.0 * bits - 1.0) / np.sqrt(self.k)).astype(np.float32)

    def query_vectors(self, queries):
        return self.decode(self.encode(queries))

    def reconstruct(self, ids=None):
        return self.decode(self.codes if ids is None else self.codes[np.asarray(ids)])

    def hamming_search(self, queries, k):
        k = min(int(k), self.index.ntotal)
        dist, ids = self.index.search(self.encode(queries), k)
        return dist, ids

    def search(self, queries, k):
        dist, ids = self.hamming_search(queries, k)
        return (1.0 - 2.0 * dist.astype(np.float32) / self.k), ids


@register_codec("binary")
class BinaryCodec(Codec):
    """One bit per dimension (value minus the gallery mean > 0), Hamming search."""

    faiss_symbols = ("IndexBinaryFlat",)

    def bytes_per_vector(self, k, n_gallery):
        return -(-int(k) // 8)

    def fit(self, gallery, metric="cosine", *, seed=0):
        return _BinaryCodes(gallery, metric)

    def restore(self, arrays, k, metric="cosine"):
        return _BinaryCodes(np.zeros((0, int(k)), dtype=np.float32), metric, mean=arrays["mean"])


class _RerankCodes(FittedCodec):
    def __init__(self, gallery, metric, factor, mean=None):
        self.binary = _BinaryCodes(gallery, metric, mean=mean)
        self.gallery = np.ascontiguousarray(gallery, dtype=np.float32)
        self.metric, self.factor, self.k = metric, int(factor), int(gallery.shape[1])
        self.code_size = self.binary.code_size + 4 * self.k
        self.codes = np.concatenate([self.binary.codes, self.gallery.view(np.uint8)], axis=1)
        self.codebook_bytes = self.binary.codebook_bytes
        self.params = {**self.binary.params, "rerank_factor": self.factor, "rerank": "float32 vectors"}

    def encode(self, X):
        return np.concatenate([self.binary.encode(X), np.ascontiguousarray(X, dtype=np.float32).view(np.uint8)], 1)

    def decode(self, codes):
        return np.ascontiguousarray(np.asarray(codes, dtype=np.uint8)[:, self.binary.code_size:]).view(np.float32)

    def codebook_arrays(self):
        return self.binary.codebook_arrays()

    def reconstruct(self, ids=None):
        return self.gallery if ids is None else self.gallery[np.asarray(ids)]

    def search(self, queries, k):
        k = min(int(k), len(self.gallery))
        _, cand = self.binary.hamming_search(queries, min(len(self.gallery), self.factor * k))
        sc = self.pair_scores(queries, cand)
        order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sc, order, 1).astype(np.float32), np.take_along_axis(cand, order, 1)


@register_codec("binary-rerank")
class BinaryRerankCodec(Codec):
    """Binary Hamming candidates (R x k, default R = 10) re-ranked with the float32 vectors it keeps."""

    faiss_symbols = ("IndexBinaryFlat",)

    def bytes_per_vector(self, k, n_gallery):
        return -(-int(k) // 8) + 4 * int(k)

    def canonical(self):
        factor = int(self.options["factor"])
        return self.name if factor == 10 else f"{self.name}{factor}"

    @classmethod
    def parse(cls, suffix):
        if not suffix:
            return {"factor": 10}
        if not suffix.isdigit() or int(suffix) < 1:
            raise ConfigError(f"binary-rerank takes a re-rank factor R >= 1 (binary-rerankR, e.g. binary-rerank10); "
                              f"got 'binary-rerank{suffix}'")
        return {"factor": int(suffix)}

    def fit(self, gallery, metric="cosine", *, seed=0):
        return _RerankCodes(gallery, metric, check_positive_int(self.options["factor"], name="rerank factor"))

    def restore(self, arrays, k, metric="cosine"):
        return _RerankCodes(np.zeros((0, int(k)), dtype=np.float32), metric, self.options["factor"],
                            mean=arrays["mean"])
