"""``int8``: one byte per dimension, FAISS's trained 8-bit scalar quantiser."""

from __future__ import annotations

import numpy as np

from ._base import Codec, import_faiss, register_codec
from ._faiss import FaissCodes, metric_type

__all__ = ["Int8Codec"]


@register_codec("int8")
class Int8Codec(Codec):
    """One byte per dimension: FAISS's 8-bit scalar quantiser (``QT_8bit``), each dimension's range
    (minimum and maximum) trained on the gallery; queries stay float (asymmetric search)."""

    faiss_symbols = ("IndexScalarQuantizer",)

    def bytes_per_vector(self, k, n_gallery):
        return int(k)

    def fit(self, gallery, metric="cosine", *, seed=0):
        faiss = import_faiss(f"codec {self.spec!r}")
        d = gallery.shape[1]
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, metric_type(faiss, metric))
        index.train(np.ascontiguousarray(gallery, dtype=np.float32))
        # the trained ranges: a minimum and a width per dimension, float32
        return FaissCodes(index, gallery, metric, {"range": "min-max of the gallery"}, 8 * d)

    def restore(self, arrays, k, metric="cosine"):
        import_faiss(f"codec {self.spec!r}")
        return FaissCodes.restore(arrays, k, metric)
