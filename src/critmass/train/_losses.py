"""Training factors of diffused redundancy as modules for your own training loop.

``DeCov`` (Cogswell et al. 2016) penalises the off-diagonal batch covariance of the penultimate features,
``MatryoshkaLoss`` (Kusupati et al. 2022) trains nested prefixes of the embedding, ``PenultimateDropout``
drops penultimate neurons, ``WidthProjection`` sets the penultimate width and :class:`Penultimate`
splits a timm classifier at its penultimate layer so all of them can be applied there.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..exceptions import ConfigError

__all__ = ["DeCov", "MatryoshkaLoss", "PenultimateDropout", "WidthProjection", "Penultimate", "nested_dims"]


def _features_2d(h: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(h, torch.Tensor) or h.ndim != 2:
        shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ConfigError(f"{who} needs penultimate features of shape (batch, neurons); got {shape}; "
                          "pool or flatten them first")
    return h


class DeCov(nn.Module):
    """DeCov penalty ``alpha * 0.5 * (||C||_F^2 - ||diag C||_2^2)`` of a batch of features.

    ``C = 1/N sum_n (h_n - mean)(h_n - mean)^T`` is the (biased, 1/N) batch covariance of the
    ``(N, D)`` features, as in Cogswell et al. (2016); the penalty is the sum of its squared
    off-diagonal entries over 2. It is computed from the D x D covariance or, when the batch is
    smaller than the layer, from the N x N Gram matrix of the centred batch (the same number:
    ``||C||_F = ||Hc Hc^T||_F / N``). A batch of one sample has zero covariance and gives 0.

    Parameters
    ----------
    alpha : float >= 0
        Strength of the penalty (the paper sweeps ``10^-k``).

    Examples
    --------
    >>> h = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # cov = [[1, -1], [-1, 1]]
    >>> float(DeCov(alpha=2.0)(h))                   # 2 * 0.5 * ((1 + 1 + 1 + 1) - (1 + 1))
    2.0
    """

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha < 0:
            raise ConfigError(f"DeCov alpha must be a finite number >= 0; got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = _features_2d(h, "DeCov")
        n, d = h.shape
        if n < 2 or self.alpha == 0:
            return h.sum() * 0.0  # keeps the graph (and the device / dtype)
        hc = h - h.mean(dim=0, keepdim=True)
        if n < d:
            g = hc @ hc.T
            fro2 = g.pow(2).sum() / (n * n)
        else:
            c = hc.T @ hc / n
            fro2 = c.pow(2).sum()
        diag2 = (hc.pow(2).sum(dim=0) / n).pow(2).sum()
        return self.alpha * 0.5 * (fro2 - diag2)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


def nested_dims(n_features: int, smallest: int = 8) -> list[int]:
    """The Matryoshka nesting ``[8, 16, 32, ..., D]``: powers of two below ``D``, then ``D`` itself."""
    if n_features < 1:
        raise ConfigError(f"nested_dims needs at least one feature; got {n_features}")
    dims, d = [], max(1, int(smallest))
    while d < n_features:
        dims.append(d)
        d *= 2
    return dims + [int(n_features)]


class MatryoshkaLoss(nn.Module):
    """Matryoshka representation loss: ``sum_m w_m CE(W_m h[:, :d_m] + b_m, y)`` over nested prefixes.

    One linear head per prefix length ``d_m`` of the ``(N, D)`` features, each trained with
    cross-entropy; the losses are summed with weights ``w_m`` (all 1 by default).

    Parameters
    ----------
    in_features : int
        Width D of the features (the penultimate layer).
    num_classes : int
        Number of classes of every head.
    dims : sequence of int, optional
        Strictly increasing prefix lengths in [1, D] (default :func:`nested_dims`: 8, 16, ..., D).
    weights : sequence of float, optional
        Non-negative weight of each prefix's loss (default 1 each).
    full_head : nn.Linear, optional
        Use this ``Linear(D, num_classes)`` (e.g. the model's own classifier) as the head of the
        full-length prefix instead of a new one; needs ``dims[-1] == D``. It then appears among this
        module's parameters too: deduplicate when building an optimizer (``{id(p): p ...}``).
    """

    def __init__(self, in_features: int, num_classes: int, dims: Sequence[int] | None = None, *,
                 weights: Sequence[float] | None = None, full_head: nn.Linear | None = None):
        super().__init__()
        if in_features < 1 or num_classes < 2:
            raise ConfigError(f"MatryoshkaLoss needs in_features >= 1 and num_classes >= 2; got {in_features}, "
                              f"{num_classes}")
        dims = nested_dims(in_features) if dims is None else [int(d) for d in dims]
        if not dims or any(b <= a for a, b in zip(dims, dims[1:])) or dims[0] < 1 or dims[-1] > in_features:
            raise ConfigError(f"Matryoshka dims must be strictly increasing prefix lengths in [1, {in_features}]; "
                              f"got {dims}; e.g. {nested_dims(in_features)}")
        if weights is None:
            weights = [1.0] * len(dims)
        weights = [float(w) for w in weights]
        if len(weights) != len(dims) or any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
            raise ConfigError(f"Matryoshka weights must be {len(dims)} finite non-negative numbers, not all 0 (one "
                              f"per prefix in {dims}); got {weights}")
        heads = [nn.Linear(d, num_classes) for d in dims]
        if full_head is not None:
            if dims[-1] != in_features or tuple(full_head.weight.shape) != (num_classes, in_features):
                raise ConfigError(f"full_head must be Linear({in_features}, {num_classes}) and dims must end at "
                                  f"{in_features}; got {tuple(full_head.weight.shape)} and dims {dims}")
            heads[-1] = full_head
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.dims, self.weights = dims, weights
        self.heads = nn.ModuleList(heads)
        self.shares_full_head = full_head is not None

    def prefix_logits(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every prefix head, in the order of ``dims``."""
        h = _features_2d(h, "MatryoshkaLoss")
        if h.shape[1] != self.in_features:
            raise ConfigError(f"MatryoshkaLoss was built for {self.in_features} features; got {h.shape[1]}")
        return [head(h[:, :d]) for d, head in zip(self.dims, self.heads)]

    def forward(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = [F.cross_entropy(z, target) for z in self.prefix_logits(h)]
        return sum(w * loss for w, loss in zip(self.weights, losses))

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights}"


class PenultimateDropout(nn.Dropout):
    """Dropout on the penultimate features (the input of the classifier); identity in eval mode."""

    def __init__(self, p: float = 0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
            raise ConfigError(f"dropout rate must be in [0, 1); got {p!r}")
        super().__init__(p=float(p))


_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}


class WidthProjection(nn.Sequential):
    """Set the penultimate width: ``act(Linear(in_features, width))`` in front of the classifier.

    The same block as timm's ``head_hidden_size`` (ConvNeXt's head: ``pre_logits.fc`` + GELU), which
    ``critmass train``'s ``model.width`` uses, so the trained model stays a plain timm model.
    """

    def __init__(self, in_features: int, width: int, act: str = "gelu"):
        if act not in _ACTS:
            raise ConfigError(f"unknown activation {act!r}; valid: {', '.join(_ACTS)}")
        if width < 1 or in_features < 1:
            raise ConfigError(f"WidthProjection needs in_features and width >= 1; got {in_features}, {width}")
        super().__init__()
        self.fc = nn.Linear(in_features, width)
        self.act = _ACTS[act]()


class Penultimate(nn.Module):
    """A timm classifier split at its penultimate layer, with input normalisation inside.

    ``forward(x)`` returns logits of images ``x`` in [0, 1] (what adversarial attacks need);
    ``features_and_logits(x)`` returns ``(penultimate, logits)``, with :class:`PenultimateDropout`
    applied to the penultimate features before the classifier in training mode. The penultimate is
    timm's ``forward_head(forward_features(x), pre_logits=True)``, the layer ``critmass extract``
    reads, and the classifier ``get_classifier()``.
    """

    def __init__(self, model: nn.Module, *, mean=None, std=None, dropout: float = 0.0):
        super().__init__()
        for attr in ("forward_features", "forward_head", "get_classifier"):
            if not hasattr(model, attr):
                raise ConfigError(f"Penultimate needs a timm model (with {attr}); got {type(model).__name__}")
        self.model = model
        self.dropout = PenultimateDropout(dropout)
        channels = None if mean is None else len(mean)
        self.register_buffer("mean", None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1),
                             persistent=False)
        self.register_buffer("std", None if std is None else torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1),
                             persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        # The same float32 ops as torchvision's Normalize (x - mean) / std, so features match extraction.
        return x if self.mean is None else (x - self.mean) / self.std

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.forward_head(m.forward_features(self.normalize(x)), pre_logits=True)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.penultimate(x)
        return h, self.model.get_classifier()(self.dropout(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]
