"""Upstream training data in memory: the images as the model's own eval transform sees them, as uint8."""

from __future__ import annotations

import numpy as np
import torch

from ..data import load_dataset, stratified_subset
from ..exceptions import ConfigError, DataError

__all__ = ["ImageTensors", "split_transform", "load_images"]


class ImageTensors:
    """``x`` (N, C, H, W) uint8 and ``y`` (N,) int64, with the names of the (relabelled) classes."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: list[str], source_classes: list[int]):
        self.x, self.y, self.classes, self.source_classes = x, y, classes, source_classes

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] as float32 (torchvision's ``to_tensor``: uint8 / 255) and their labels."""
        return self.x[idx].float().div(255), self.y[idx]


def split_transform(cfg: dict):
    """timm's eval transform of ``cfg`` split before ``ToTensor``: ``(pil_part, mean, std)``.

    ``pil_part`` resizes and crops a PIL image; the rest (``to_tensor`` then ``Normalize``) is done on
    batches with the same float32 operations, so training sees exactly what ``critmass extract`` feeds.
    """
    from timm.data import create_transform
    from torchvision import transforms as T

    tf = create_transform(**cfg, is_training=False)
    steps = list(getattr(tf, "transforms", [tf]))
    if len(steps) < 2 or not isinstance(steps[-1], T.Normalize) or "ToTensor" not in type(steps[-2]).__name__:
        raise ConfigError(f"cannot split the model's eval transform {tf!r} into PIL steps, ToTensor and Normalize; "
                          "choose a timm architecture with a standard image transform")
    return T.Compose(steps[:-2]), tuple(float(m) for m in steps[-1].mean), tuple(float(s) for s in steps[-1].std)


def load_images(spec: str, split: str, *, pil_transform, classes=None, max_samples=None, seed: int = 0, root=None,
                download: bool = False) -> ImageTensors:
    """Load a split, keep ``classes`` (relabelled 0..K-1 in the order given), sub-sample it (seeded,
    stratified) and apply ``pil_transform`` to every image once."""
    ds = load_dataset(spec, split, root=root, download=download)
    if ds.modality != "image":
        raise DataError(f"{spec} is a {ds.modality} dataset; critmass train needs images")
    targets = ds.targets
    present = sorted(int(c) for c in np.unique(targets))
    if classes is None:
        classes = present
    missing = [c for c in classes if c not in present]
    if missing:
        raise DataError(f"data.classes {missing} are not labels of {spec} split {split!r} (it has {present[0]}.."
                        f"{present[-1]}); list class ids it has")
    keep = np.nonzero(np.isin(targets, classes))[0]
    if max_samples is not None and max_samples < len(keep):
        keep = keep[stratified_subset(targets[keep], int(max_samples), seed)]
    ds = ds.subset(keep)
    remap = {c: i for i, c in enumerate(classes)}
    images = []
    for i in range(len(ds)):
        img, _ = ds[i]
        if img.mode != "RGB":  # as extraction does (critmass.models: grayscale -> RGB before the transform)
            img = img.convert("RGB")
        images.append(np.asarray(pil_transform(img), dtype=np.uint8))
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise DataError(f"{spec} images have different sizes after the transform ({sorted(shapes)[:3]}); "
                        "check model.image_size")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([remap[int(t)] for t in ds.targets], dtype=torch.int64)
    names = [str(ds.classes[c]) if c < len(ds.classes) else str(c) for c in classes]
    return ImageTensors(x, y, names, list(classes))
