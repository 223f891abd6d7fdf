"""A fitted codec whose codes live in a FAISS index that searches them (scalar and product quantisers)."""

from __future__ import annotations

import numpy as np

from ._base import FittedCodec

__all__ = ["FaissCodes", "metric_type"]


def metric_type(faiss, metric: str):
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


class FaissCodes(FittedCodec):
    """Gallery codes held by a trained FAISS index (``sa_encode`` / ``sa_decode`` define them); ``pad`` zero
    columns are appended to every vector first (product quantisers need a width their sub-quantisers divide)."""

    def __init__(self, index, gallery: np.ndarray, metric: str, params: dict, codebook_bytes: int, pad: int = 0):
        self.index, self.metric, self.params, self.pad = index, metric, params, int(pad)
        self.k = int(gallery.shape[1])
        g = self._padded(gallery)
        self.codes = index.sa_encode(g)
        index.add(g)
        self.code_size = int(index.sa_code_size())
        self.codebook_bytes = int(codebook_bytes)

    def _padded(self, X) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.pad:
            X = np.ascontiguousarray(np.pad(X, ((0, 0), (0, self.pad))))
        return X

    def query_vectors(self, queries):
        return self._padded(queries)

    def reconstruct(self, ids=None):
        codes = self.codes if ids is None else self.codes[np.asarray(ids)]
        return self.index.sa_decode(np.ascontiguousarray(codes))

    def decode(self, codes) -> np.ndarray:
        """Vectors (n, k) from codes (the zero padding dropped)."""
        return self.index.sa_decode(np.ascontiguousarray(codes, dtype=np.uint8))[:, : self.k]

    def encode(self, X):
        return self.index.sa_encode(self._padded(X))

    def search(self, queries, k):
        k = min(int(k), self.index.ntotal)
        scores, ids = self.index.search(self._padded(queries), k)
        return (-scores if self.metric == "l2" else scores), ids

    def codebook_arrays(self) -> dict:
        """The trained quantiser without its codes, serialised by FAISS (``faiss_index``), and the padding."""
        import faiss

        empty = faiss.clone_index(self.index)
        empty.reset()
        return {"faiss_index": faiss.serialize_index(empty), "pad": np.array(self.pad)}

    @classmethod
    def restore(cls, arrays: dict, k: int, metric: str) -> "FaissCodes":
        import faiss

        self = cls.__new__(cls)
        self.index = faiss.deserialize_index(np.ascontiguousarray(arrays["faiss_index"], dtype=np.uint8))
        self.metric, self.params, self.k, self.pad = metric, {}, int(k), int(arrays["pad"])
        self.codes = np.empty((0, self.index.sa_code_size()), dtype=np.uint8)
        self.code_size, self.codebook_bytes = int(self.index.sa_code_size()), 0
        return self
