"""The depth profile of a model: every layer in one forward pass, then DR, critical mass and CKA across depth.

:func:`profile` (``critmass profile MODEL DATASET --out RUN_DIR``) writes ``profile.parquet``,
``layer_cka.parquet`` and the usual run tables; :func:`read_profile` reads them back and ``critmass report``
draws them. The one-pass multi-layer extraction it starts from is :func:`critmass.features.extract_layers`.

This stage sits above ``features``, ``probes``, ``similarity`` and ``metrics`` and uses only their public
functions.
"""

from ._profile import LAYER_CKA_COLUMNS, PROFILE_COLUMNS, Profile, profile
from ._read import read_profile

__all__ = ["profile", "Profile", "read_profile", "PROFILE_COLUMNS", "LAYER_CKA_COLUMNS"]
