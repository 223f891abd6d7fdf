"""The paper's partial loss (``partial_loss.py``), its regularised variant, and the fake ReLU."""

from __future__ import annotations

import torch

__all__ = ["EPS", "relative_error", "partial_loss", "regularised_alpha", "FakeReLU", "fake_relu", "fake_clamp"]

#: Added to the denominators, as the paper's code does.
EPS = 1e-10


def relative_error(r: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``||m (r - r_t)||_2 / (||m r_t||_2 + 1e-10)`` per row of ``(B, D)`` representations.

    Parameters
    ----------
    r, target : torch.Tensor
        ``(B, D)`` representations of the inversions and of their targets.
    mask : torch.Tensor
        ``(D,)`` or ``(B, D)`` 0/1 weights over the neurons.

    Returns
    -------
    torch.Tensor
        ``(B,)`` relative errors; 0 where the mask is empty.

    Examples
    --------
    >>> import torch
    >>> r, t = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[1.0, 0.0, 3.0]])
    >>> round(float(relative_error(r, t, torch.tensor([0.0, 1.0, 1.0]))), 4)  # sqrt(4 + 9) / 3
    1.2019
    """
    mask = mask.to(r.dtype)
    num = torch.linalg.vector_norm(mask * (r - target), dim=-1)
    return num / (torch.linalg.vector_norm(mask * target, dim=-1) + EPS)


def regularised_alpha(r: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The paper's alpha, fixed at the first step: subset term / rest term, per target (0 where the rest is empty)."""
    with torch.no_grad():
        sub = relative_error(r, target, mask)
        rest = relative_error(r, target, 1 - mask.to(r.dtype))
        return torch.where(rest > 0, sub / rest.clamp_min(EPS), torch.zeros_like(sub))


def partial_loss(r: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, alpha=None) -> torch.Tensor:
    """Per-target loss: the relative error on the selected neurons; with ``alpha``, minus ``alpha`` times the
    relative error on the unselected ones (the "regularised" variant that pushes the rest of the layer away).

    Returns a ``(B,)`` tensor; sum it for one backward pass over a batch of independent targets.
    """
    loss = relative_error(r, target, mask)
    if alpha is not None:
        loss = loss - alpha * relative_error(r, target, 1 - mask.to(r.dtype))
    return loss


class FakeReLU(torch.autograd.Function):
    """A clamp in the forward pass (ReLU: ``[0, inf)``, ReLU6: ``[0, 6]``), the identity in the backward pass,
    so the gradient reaches neurons that sit at zero (the paper's ``fake_relu``)."""

    @staticmethod
    def forward(ctx, x, low=0.0, high=None):
        return x.clamp(min=low, max=high)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def fake_relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU forward, identity gradient.

    >>> import torch
    >>> x = torch.tensor([-1.0, 2.0], requires_grad=True)
    >>> fake_relu(x).sum().backward(); x.grad.tolist()
    [1.0, 1.0]
    """
    return FakeReLU.apply(x, 0.0, None)


def fake_clamp(x: torch.Tensor, low: float = 0.0, high: float | None = None) -> torch.Tensor:
    return FakeReLU.apply(x, low, high)
