"""Product quantisation: ``pq`` (FAISS ``IndexPQ``) and ``opq`` (a learned rotation first, ``OPQMatrix``).

A vector of ``k`` dimensions is cut into ``m`` sub-vectors, each stored as the index of its nearest of
``2^nbits`` centroids (``m x nbits / 8`` bytes); the centroids (and OPQ's rotation) are trained on the
gallery only, queries stay float (asymmetric distances).

The rule when the spec gives no ``m`` (``pq``, ``opq``): ``m = ceil(k / 4)`` sub-quantisers of 4 dimensions,
the vector padded with zero columns to ``4 m`` (zero columns change no distance), so every ``k`` works; that
is 2 bits per dimension at ``nbits = 8``. ``nbits`` is 8 unless given, lowered to ``floor(log2 n)`` for a
gallery of ``n < 256`` rows (k-means needs at least as many rows as centroids). An explicit ``m`` must
divide ``k`` (``pq16`` at ``k = 128``: 16 sub-vectors of 8), and explicit ``nbits`` need ``2^nbits`` rows.
Each sub-quantiser's k-means runs on a seeded subsample of at most ``64 x 2^nbits`` gallery rows (FAISS's
``max_points_per_centroid``; 16,384 rows at 8 bits).
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..exceptions import ConfigError
from ._base import Codec, import_faiss, register_codec
from ._faiss import FaissCodes, metric_type

__all__ = ["PQCodec", "OPQCodec", "DEFAULT_DSUB", "DEFAULT_NBITS"]

DEFAULT_DSUB = 4
DEFAULT_NBITS = 8
TRAIN_PER_CENTROID = 64
_MAX_NBITS = 12


@register_codec("pq")
class PQCodec(Codec):
    """Product quantisation (m = ceil(k / 4) sub-quantisers of 8 bits unless given: pqM, pqMxNBITS)."""

    faiss_symbols = ("IndexPQ",)
    rotate = False

    @classmethod
    def parse(cls, suffix):
        if not suffix:
            return {"m": None, "nbits": None}
        hit = re.fullmatch(r"(\d+)(?:x(\d+))?", suffix)
        if not hit or int(hit.group(1)) < 1 or (hit.group(2) and not 1 <= int(hit.group(2)) <= _MAX_NBITS):
            raise ConfigError(f"{cls.name} takes M sub-quantisers and optionally their bits: {cls.name}M or "
                              f"{cls.name}MxNBITS with NBITS in 1..{_MAX_NBITS} (e.g. {cls.name}16x8), or plain "
                              f"{cls.name} for the rule m = ceil(k / 4); got {cls.name + suffix!r}")
        return {"m": int(hit.group(1)), "nbits": int(hit.group(2)) if hit.group(2) else None}

    def resolve(self, k: int, n_gallery: int) -> tuple[int, int, int]:
        """``(m, nbits, padded width)`` for ``k`` dimensions and ``n_gallery`` training rows (one-line errors)."""
        m, nbits = self.options.get("m"), self.options.get("nbits")
        if m is None:
            m, width = math.ceil(k / DEFAULT_DSUB), DEFAULT_DSUB * math.ceil(k / DEFAULT_DSUB)
        else:
            if k % m:
                divisors = [d for d in range(1, k + 1) if k % d == 0]
                near = sorted(divisors, key=lambda d: abs(d - m))[:3]
                raise ConfigError(f"codec {self.spec!r}: {m} sub-quantisers do not divide k = {k} dimensions; pass "
                                  f"{' or '.join(f'{self.name}{d}' for d in sorted(near))} (divisors of {k}), or "
                                  f"plain {self.name!r} for the rule m = ceil(k / 4)")
            width = k
        if nbits is None:
            nbits = min(DEFAULT_NBITS, max(1, int(math.floor(math.log2(max(n_gallery, 2))))))
        elif n_gallery < 2**nbits:
            fit = max(1, int(math.floor(math.log2(max(n_gallery, 2)))))
            raise ConfigError(f"codec {self.spec!r}: {2**nbits} centroids per sub-quantiser need at least {2**nbits} "
                              f"gallery rows to train, the gallery has {n_gallery}; pass {self.name}{m}x{fit}")
        return int(m), int(nbits), int(width)

    def bytes_per_vector(self, k, n_gallery):
        m, nbits, _ = self.resolve(int(k), int(n_gallery))
        return -(-m * nbits // 8)

    def check_width(self, k, n_gallery=None):
        self.resolve(k, 2**_MAX_NBITS if n_gallery is None else n_gallery)

    def fit(self, gallery, metric="cosine", *, seed=0):
        faiss = import_faiss(f"codec {self.spec!r}")
        n, k = gallery.shape
        m, nbits, width = self.resolve(k, n)
        index = faiss.IndexPQ(width, m, nbits, metric_type(faiss, metric))
        index.pq.cp.seed = int(seed)
        index.pq.cp.min_points_per_centroid = 1  # small galleries are allowed (FAISS would only warn)
        # k-means trains on a seeded subsample of at most TRAIN_PER_CENTROID x 2^nbits gallery rows: more rows
        # barely move 2^nbits centroids of a few dimensions, and training time grows with them
        index.pq.cp.max_points_per_centroid = TRAIN_PER_CENTROID
        codebook = m * 2**nbits * (width // m) * 4
        params = {"m": m, "nbits": nbits, "dsub": width // m, "padded_to": width,
                  "max_train_rows": TRAIN_PER_CENTROID * 2**nbits}
        if self.rotate:
            opq = faiss.OPQMatrix(width, m)
            opq.pq = index.pq  # train the rotation with this quantiser's settings (seed, small galleries)
            index = faiss.IndexPreTransform(opq, index)
            codebook += width * width * 4
        train = np.ascontiguousarray(np.pad(np.asarray(gallery, dtype=np.float32), ((0, 0), (0, width - k))))
        index.train(train)
        return FaissCodes(index, gallery, metric, params, codebook, pad=width - k)

    def restore(self, arrays, k, metric="cosine"):
        import_faiss(f"codec {self.spec!r}")
        return FaissCodes.restore(arrays, k, metric)


@register_codec("opq")
class OPQCodec(PQCodec):
    """Product quantisation after a learned rotation (OPQ); parameters as pq."""

    faiss_symbols = ("IndexPQ", "OPQMatrix", "IndexPreTransform")
    rotate = True
