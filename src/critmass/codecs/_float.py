"""Float codecs: ``float32`` (the vectors as they are, 4 bytes per dimension) and ``float16`` (2 bytes per
dimension, FAISS's fp16 scalar quantiser: nothing to train)."""

from __future__ import annotations

import numpy as np

from ._base import Codec, FittedCodec, import_faiss, register_codec
from ._faiss import FaissCodes, metric_type

__all__ = ["Float32Codec", "Float16Codec"]


class _Float32Codes(FittedCodec):
    def __init__(self, gallery, metric):
        self.gallery = np.ascontiguousarray(gallery, dtype=np.float32)
        self.metric, self.params, self.codebook_bytes = metric, {}, 0
        self.k = int(gallery.shape[1])
        self.code_size = 4 * self.k

    @property
    def codes(self):
        return self.gallery.view(np.uint8)

    def reconstruct(self, ids=None):
        return self.gallery if ids is None else self.gallery[np.asarray(ids)]

    def decode(self, codes):
        return np.ascontiguousarray(codes, dtype=np.uint8).view(np.float32)

    def encode(self, X):
        return np.ascontiguousarray(X, dtype=np.float32).view(np.uint8)

    def search(self, queries, k):
        k = min(int(k), len(self.gallery))
        q = np.ascontiguousarray(queries, dtype=np.float32)
        s = q @ self.gallery.T
        if self.metric == "l2":
            s = 2 * s - (self.gallery * self.gallery).sum(1)[None, :] - (q * q).sum(1)[:, None]
        ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, ids, 1), ids


@register_codec("float32")
class Float32Codec(Codec):
    """The vectors as they are: 4 bytes per dimension (the reference)."""

    def bytes_per_vector(self, k, n_gallery):
        return 4 * int(k)

    def fit(self, gallery, metric="cosine", *, seed=0):
        return _Float32Codes(gallery, metric)

    def restore(self, arrays, k, metric="cosine"):
        return _Float32Codes(np.zeros((0, int(k)), dtype=np.float32), metric)


@register_codec("float16")
class Float16Codec(Codec):
    """Half precision: 2 bytes per dimension (FAISS ``IndexScalarQuantizer`` ``QT_fp16``)."""

    faiss_symbols = ("IndexScalarQuantizer",)

    def bytes_per_vector(self, k, n_gallery):
        return 2 * int(k)

    def fit(self, gallery, metric="cosine", *, seed=0):
        faiss = import_faiss(f"codec {self.spec!r}")
        d = gallery.shape[1]
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, metric_type(faiss, metric))
        return FaissCodes(index, gallery, metric, {}, 0)

    def restore(self, arrays, k, metric="cosine"):
        import_faiss(f"codec {self.spec!r}")
        return FaissCodes.restore(arrays, k, metric)
