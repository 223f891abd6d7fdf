"""Feature sets for CKA: loading them, checking that two hold the same samples, and CKA between them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..exceptions import ConfigError, FeatureError
from ..features import FeatureSet, load_features
from ._estimators import cka

__all__ = ["cka_between"]


def _recorded_dataset(fs: FeatureSet) -> str | None:
    """The dataset a feature set records, or None when a .npz without one defaulted to its file stem."""
    ds = fs.meta.get("dataset")
    src = fs.meta.get("source") or ""
    if src.endswith(".npz") and fs.meta.get("model") == f"npz:{Path(src).stem}" and ds == Path(src).stem:
        return None
    return ds


def _as_feature_set(features, splits) -> FeatureSet:
    if isinstance(features, FeatureSet):
        return features
    if isinstance(features, (str, os.PathLike)):
        return load_features(features, splits=splits)
    raise ConfigError(
        f"expected a feature set (cache entry directory, .npz path or FeatureSet); got {type(features).__name__}"
    )


def _check_same_samples(a: FeatureSet, b: FeatureSet, split: str) -> None:
    """Refuse two feature sets that are not the same samples in the same order."""
    sa, sb = a[split], b[split]
    name_a, name_b = a.meta.get("source", "A"), b.meta.get("source", "B")
    fix = "extract both from the same dataset split (same subset and order)"
    if sa.n_samples != sb.n_samples:
        raise FeatureError(f"{name_a} has {sa.n_samples} {split} samples but {name_b} has {sb.n_samples}; {fix}")
    da, db = _recorded_dataset(a), _recorded_dataset(b)
    if da is not None and db is not None and da != db:
        raise FeatureError(f"{name_a} was extracted from dataset {da!r} but {name_b} from {db!r}; {fix}")
    ma, mb = sa.manifest.get("split", split), sb.manifest.get("split", split)
    if ma != mb:
        raise FeatureError(f"{name_a} holds split {ma!r} but {name_b} holds {mb!r}; {fix}")
    ya, yb = np.asarray(sa.y), np.asarray(sb.y)
    if not np.array_equal(ya, yb):
        diff = np.nonzero(ya != yb)[0]
        raise FeatureError(
            f"the {split} labels of {name_a} and {name_b} differ at {diff.size} of {ya.size} rows (first at row "
            f"{int(diff[0])}), so the samples are different or in a different order; {fix}"
        )


def cka_between(features_a, features_b, *, split: str = "train", debiased: bool = False, method: str = "auto",
                chunk_size: int | None = None) -> float:
    """Linear CKA between two feature sets of the same samples (cross-model or cross-layer).

    Parameters
    ----------
    features_a, features_b : FeatureSet or path
        Cache entry directories, ``.npz`` files or loaded :class:`~critmass.features.FeatureSet` s.
    split : str, default "train"
        Which split of both to compare.
    debiased, method, chunk_size
        As in :func:`cka`.

    Returns
    -------
    float

    Raises
    ------
    FeatureError
        The two sets are not the same samples in the same order: different sample counts, recorded
        datasets or split names, or different label sequences.
    """
    a, b = _as_feature_set(features_a, [split]), _as_feature_set(features_b, [split])
    _check_same_samples(a, b, split)
    return cka(a[split].x, b[split].x, debiased=debiased, method=method, chunk_size=chunk_size)
