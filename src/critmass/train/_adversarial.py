"""Adversarial training examples: PGD under an L2 or Linf budget, through torchattacks (imported lazily)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..exceptions import ConfigError

__all__ = ["PGD", "NORMS"]

NORMS = ("Linf", "L2")


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise ConfigError("adversarial training needs torchattacks: pip install --no-deps torchattacks "
                          "(its pinned requests is not needed)") from None
    return torchattacks


class PGD:
    """Projected gradient descent examples (Madry et al. 2018) from ``torchattacks.PGD`` / ``PGDL2``.

    Images must be in [0, 1] and the model must normalise them itself (e.g. :class:`Penultimate`
    with ``mean`` / ``std``); the examples stay in [0, 1] and within ``eps`` of the input in the
    chosen norm (per sample). The random start draws from torch's global RNG: seed it for
    reproducible examples. The model is attacked in eval mode and given back in the mode it was in.

    Parameters
    ----------
    norm : 'Linf' or 'L2'
    eps : float > 0
        Budget in pixel units of [0, 1] images (e.g. 8/255 for Linf, 0.5 for L2).
    alpha : float > 0, optional
        Step size (default ``2.5 * eps / steps``, Madry et al.).
    steps : int >= 1
    random_start : bool
        Start from a uniformly random point in the ball.
    """

    def __init__(self, norm: str = "Linf", eps: float = 8 / 255, *, alpha: float | None = None, steps: int = 7,
                 random_start: bool = True):
        if norm not in NORMS:
            raise ConfigError(f"PGD norm must be one of {', '.join(NORMS)}; got {norm!r}")
        for name, v in (("eps", eps), ("alpha", 1.0 if alpha is None else alpha)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"PGD {name} must be a positive number; got {v!r}")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ConfigError(f"PGD steps must be a positive integer; got {steps!r}")
        self.norm, self.eps, self.steps, self.random_start = norm, float(eps), int(steps), bool(random_start)
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / self.steps

    def attack(self, model: nn.Module):
        """The torchattacks attack object on ``model``."""
        ta = _torchattacks()
        cls = ta.PGD if self.norm == "Linf" else ta.PGDL2
        return cls(model, eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=self.random_start)

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ConfigError(f"PGD needs images in [0, 1]; got values in [{float(images.min()):.3g}, "
                              f"{float(images.max()):.3g}]; normalise inside the model (Penultimate(mean=, std=))")
        return self.attack(model)(images, labels).detach()

    def __repr__(self) -> str:
        return (f"PGD(norm={self.norm!r}, eps={self.eps:g}, alpha={self.alpha:g}, steps={self.steps}, "
                f"random_start={self.random_start})")
