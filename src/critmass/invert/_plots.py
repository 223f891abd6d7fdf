"""Figures of a partial inversion: the image grid and the rest-of-layer error against the fraction
(matplotlib without pyplot)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

__all__ = ["plot_grid", "plot_rest_error", "save_png"]

_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _hwc(img: np.ndarray) -> np.ndarray:
    return np.clip(np.transpose(img, (1, 2, 0)), 0, 1)


def plot_grid(result, *, selector: str | None = None, seed: int | None = None):
    """One row per target: the target, then the inversion at each fraction (ascending), then the full-layer one.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    keys = list(result.partial)
    selector = keys[0][0] if selector is None else selector
    seed = keys[0][2] if seed is None else seed
    fractions = sorted(f for s, f, sd in keys if s == selector and sd == seed)
    cols = [("target", result.targets)] + [(f"{selector} {f:g}", result.partial[(selector, f, seed)])
                                           for f in fractions]
    if seed in result.full:
        cols.append(("full layer", result.full[seed]))
    n = len(result.targets)
    fig = Figure(figsize=(1.6 * len(cols), 1.6 * n + 0.3), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, len(cols), squeeze=False))
    for i in range(n):
        for j, (title, imgs) in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(_hwc(imgs[i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(str(result.names[i])[:18], fontsize=7)
    return fig


def plot_rest_error(table):
    """Mean rest-of-layer error at the end against the fraction, one line per selector, with the full-layer
    reference (dashed) and the noise floor (dotted) measured on the same masks.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    df = table.dropna(subset=["rest_error_end"])
    for i, (sel, g) in enumerate(df.groupby("selector", sort=False)):
        colour = _PALETTE[i % len(_PALETTE)]
        for kind, style in (("partial", "-o"), ("full", "--"), ("noise", ":")):
            m = g[g["inversion"] == kind].groupby("fraction")["rest_error_end"].mean()
            if len(m):
                label = {"partial": sel, "full": f"{sel}: full-layer inversion", "noise": f"{sel}: noise seed"}[kind]
                ax.plot(m.index, m.values, style, color=colour, label=label, markersize=4)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of neurons matched")
    ax.set_ylabel("rest-of-layer relative L2 error")
    if len(df):
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no unselected neurons (fraction 1 only)", ha="center", va="center", transform=ax.transAxes)
    return fig


def save_png(fig, path, dpi: int = 150) -> Path:
    """Render ``fig`` to PNG and write it atomically."""
    from .._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
