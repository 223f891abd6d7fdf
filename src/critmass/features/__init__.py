"""Feature extraction and the on-disk feature cache."""

from ._store import FeatureSet, FeatureSplit, load_features, sample_ids, save_arrays_as_entry

__all__ = ["FeatureSet", "FeatureSplit", "load_features", "sample_ids", "save_arrays_as_entry", "extract"]


def __getattr__(name):  # torch-heavy extraction loads lazily
    if name == "extract":
        from ._extract import extract

        return extract
    raise AttributeError(name)
