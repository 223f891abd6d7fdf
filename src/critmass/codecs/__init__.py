"""Codecs: how embedding vectors are stored (bytes per vector) and searched.

``float32``, ``float16``, ``int8`` (scalar quantiser), ``binary`` (1 bit per dimension, Hamming search),
``binary-rerank`` (binary candidates re-ranked with the float vectors), ``pq`` / ``opq`` (product
quantisation). Every quantiser is trained on the gallery only. The neighbour probes
(:class:`~critmass.probes.KNNProbe`, :class:`~critmass.probes.RetrievalProbe`, ``codec=``), ``run_probes``
(``codecs=[...]``) and ``critmass compress --codec`` use them. A new codec is one module with a
:class:`Codec` subclass registered by :func:`register_codec`, imported below.
"""

from ._base import CODECS, DEFAULT_CODEC, Codec, FittedCodec, faiss_threads, import_faiss, list_codecs, make_codec
from ._base import pair_scores, parse_codecs
from ._base import register_codec
from . import _binary, _float, _pq, _scalar  # noqa: F401 - the built-in codecs register on import
from ._binary import pack_bits
from ._pq import DEFAULT_DSUB, DEFAULT_NBITS

__all__ = ["CODECS", "DEFAULT_CODEC", "DEFAULT_DSUB", "DEFAULT_NBITS", "Codec", "FittedCodec", "faiss_threads", "import_faiss",
           "list_codecs", "make_codec", "pair_scores", "parse_codecs", "register_codec", "pack_bits"]
