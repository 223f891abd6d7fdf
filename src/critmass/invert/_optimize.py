"""The optimisation of the input: the paper's normalised-gradient steps (an unconstrained L2 attack step of size 1,
clamped to [0, 1]), signed-gradient steps, or Adam; a batch of independent targets in one pass; best iterate kept."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._validation import check_positive_int
from ..exceptions import ConfigError
from ._loss import partial_loss, regularised_alpha

__all__ = ["OPTIMIZERS", "DEFAULT_STEP_SIZES", "Optimised", "optimise"]

log = logging.getLogger(__name__)

#: ``normgrad``: x <- clamp(x - s g / ||g||_2, 0, 1) per image (the paper's step, s = 1); ``sign``:
#: x <- clamp(x - s sign(g), 0, 1); ``adam``: torch.optim.Adam with learning rate s, then the clamp.
OPTIMIZERS = ("normgrad", "sign", "adam")
DEFAULT_STEP_SIZES = {"normgrad": 1.0, "sign": 1 / 255, "adam": 0.01}


@dataclass
class Optimised:
    """The best iterate per target: ``images`` (B, 3, H, W) in [0, 1], its ``loss`` (B,) and ``step`` (B,),
    and the loss of the starting images ``loss_start`` (B,)."""

    images: torch.Tensor
    loss: torch.Tensor
    step: torch.Tensor
    loss_start: torch.Tensor


def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    return name


def optimise(forward: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor, *, regularised: bool = False, steps: int = 5000, optimizer: str = "normgrad",
             step_size: float | None = None, progress: bool = True, desc: str = "invert") -> Optimised:
    """Minimise :func:`partial_loss` of ``forward(x)`` against ``target`` over the images ``x``, from ``start``.

    The loss of every iterate (the start included) is evaluated; per target the iterate of lowest loss is kept.
    ``regularised``: alpha is fixed at the first step to the ratio of the subset term to the rest term.
    """
    check_optimizer(optimizer)
    steps = int(steps) if steps == 0 else check_positive_int(steps, name="steps")
    s = float(DEFAULT_STEP_SIZES[optimizer] if step_size is None else step_size)
    if not s > 0:
        raise ConfigError(f"step_size must be positive; got {step_size!r}")
    x = start.detach().clone().clamp_(0, 1).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=s) if optimizer == "adam" else None
    alpha = None
    best_x = x.detach().clone()
    best_loss = torch.full((x.shape[0],), float("inf"), device=x.device)
    best_step = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    loss_start = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc, leave=False)
    try:
        for step in range(steps + 1):
            r = forward(x)
            if step == 0 and regularised:
                alpha = regularised_alpha(r, target, mask)
            loss = partial_loss(r, target, mask, alpha)
            with torch.no_grad():
                if step == 0:
                    loss_start = loss.detach().clone()
                better = loss < best_loss
                best_loss = torch.where(better, loss, best_loss)
                best_step = torch.where(better, torch.full_like(best_step, step), best_step)
                best_x[better] = x.detach()[better]
            if step == steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), x)
            with torch.no_grad():
                if opt is not None:
                    x.grad = grad
                    opt.step()
                elif optimizer == "sign":
                    x -= s * grad.sign()
                else:
                    norm = torch.linalg.vector_norm(grad.flatten(1), dim=1).view(-1, *([1] * (x.ndim - 1)))
                    x -= s * grad / (norm + 1e-10)
                x.clamp_(0, 1)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach().mean()):.4f}", best=f"{float(best_loss.mean()):.4f}")
    finally:
        if bar is not None:
            bar.close()
    return Optimised(images=best_x, loss=best_loss, step=best_step, loss_start=loss_start)
