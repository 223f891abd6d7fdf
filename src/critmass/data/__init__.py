"""Downstream datasets: torchvision, image and text folders, CSV, Hugging Face, npz arrays, and offline data."""

from ._base import LabeledDataset, stratified_subset
from ._fingerprint import dataset_fingerprint
from ._sources import (ALIASES, DEBIAN_FASHION_MNIST, SOURCES, SPLITS, MissingSplit, data_home, list_dataset_sources,
                       load_dataset, load_splits)
from ._splits import train_val_indices
from . import _text  # noqa: F401,E402 - registers textfolder:, csv: and the offline text corpora

__all__ = ["LabeledDataset", "load_dataset", "load_splits", "MissingSplit", "list_dataset_sources", "train_val_indices",
           "stratified_subset", "data_home", "dataset_fingerprint", "SOURCES", "ALIASES", "SPLITS",
           "DEBIAN_FASHION_MNIST"]
