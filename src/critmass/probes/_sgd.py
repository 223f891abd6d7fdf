"""The paper's probe protocol on cached features: a linear layer trained with SGD, best-validation checkpoint.

Nanda et al. (2023) train ``nn.Linear`` on (a subset of) the frozen penultimate layer with SGD (lr 0.1,
momentum 0.9, weight decay 5e-4 for CIFAR / Places365 and 1e-4 for Flowers, Pets, ImageNet), batch 256,
cross-entropy, lr x0.1 every 10 epochs for 50 epochs (or every 20 for 100), keeping the epoch with the best
validation accuracy. They recompute features with augmentation at every step; a cached-feature version
approximates that with several cached augmented views of each training image (``X`` of shape
``(n_views, n, d)``): every epoch draws one view per image.

All probes of a chain (sizes x weight decays) are trained together as one wide linear layer whose weight
matrix is masked to each probe's columns; they see the same minibatches, so a batched fit follows the same
trajectory as separate fits.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _blas as blas
from .._validation import check_positive_int
from ..exceptions import ConfigError
from ._base import Chain, ChainFit, Data, ProbabilisticProbe

__all__ = ["SGDProbe"]


class SGDProbe(ProbabilisticProbe):
    r"""Linear probe(s) trained with minibatch SGD + momentum, as in the paper, on cached features.

    Minimises mean cross-entropy with weight decay ``alpha`` on weights *and* bias (``torch.optim.SGD``
    over ``nn.Linear``'s parameters, the paper's code): each step ``g = grad + alpha * param``,
    ``buf = momentum * buf + g``, ``param -= lr_t * buf``, with ``lr_t = lr * lr_decay ** (epoch // lr_step)``.
    Weights start at zero. After every epoch the validation accuracy of every probe is measured and the
    best epoch's weights are kept (without validation data: the last epoch).

    Parameters
    ----------
    alphas : float or sequence of float, default 5e-4
        Weight decay (the paper: 5e-4 for CIFAR / Places365, 1e-4 for the others); several values are
        compared on validation.
    subsets : list of int arrays, optional
        Column subsets, one probe each, trained together; ``None``: one probe on all columns.
    epochs : int, default 50
    lr : float, default 0.1
    momentum : float, default 0.9
    lr_step : int, default 10
        Epochs between learning-rate decays (the paper: 10 for 50 epochs, 20 for 100).
    lr_decay : float, default 0.1
    batch_size : int, default 256
    standardize : bool, default True
        Standardise features with training statistics (the paper used raw features; pass False for that).
    val_fraction : float, default 0.1
        Share of the training rows held out for the best-epoch checkpoint when no ``X_val`` is given.
    refit : bool, default False
        Retrain on train + validation for the chosen weight decay (then the last epoch is kept).
    device : str, default 'auto'
    random_state : int, default 0
        Seeds the validation split, the minibatch order and the view draws.

    Attributes
    ----------
    coef_, intercept_, reg_, coefs_, intercepts_, regs_, regs_applied_, scores_, choice_margins_, val_scores_,
    train_scores_
        As in :class:`~critmass.probes.LogisticProbe` (``regs_applied_`` equals ``regs_``).
    n_iter_ : ndarray (n_subsets,)
        The kept epoch (1-based) of each probe.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> probe = SGDProbe(epochs=10, lr_step=5, device="cpu").fit(X[:1500], y[:1500])
    >>> probe.score(X[1500:], y[1500:]) > 0.85
    True
    """

    _solver = "sgd"
    _views = True
    _val_always = True
    _seeded_fit = True  # random_state also orders the minibatches: run_probes fits each seed on its own

    def __init__(self, alphas=5e-4, *, subsets=None, epochs: int = 50, lr: float = 0.1, momentum: float = 0.9,
                 lr_step: int = 10, lr_decay: float = 0.1, batch_size: int = 256, standardize: bool = True,
                 val_fraction: float = 0.1, refit: bool = False, device: str = "auto",
                 random_state: int | None = 0):
        self.alphas = alphas
        self.subsets = subsets
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.lr_step = lr_step
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.standardize = standardize
        self.val_fraction = val_fraction
        self.refit = refit
        self.device = device
        self.random_state = random_state

    def _prepare(self, data: Data):
        check_positive_int(self.epochs, name="epochs")
        check_positive_int(self.lr_step, name="lr_step")
        check_positive_int(self.batch_size, name="batch_size")
        for name in ("lr", "momentum", "lr_decay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0) or (name == "lr" and v == 0):
                raise ConfigError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}; got {v!r}")

    def _fit_chain(self, ctx, data: Data, chain: Chain, problems) -> ChainFit:
        dev, dt = data.X.device, data.X.dtype
        C, P = data.n_classes, len(problems)
        head = torch.from_numpy(chain.head).to(dev)
        Xc = data.X.index_select(2, head)  # (n_views, n, k_max)
        n_views, n, kmax = Xc.shape
        Xv = data.X_val.index_select(1, head) if data.X_val is not None else None
        sizes = torch.tensor([k for k, _ in problems], device=dev)
        wd = torch.tensor([a for _, a in problems], dtype=dt, device=dev).repeat_interleave(C)  # per column
        mask = (torch.arange(kmax, device=dev)[:, None] < sizes[None, :]).to(dt).repeat_interleave(C, dim=1)
        W = torch.zeros((kmax, P * C), dtype=dt, device=dev)
        b = torch.zeros(P * C, dtype=dt, device=dev)
        bufW, bufb = torch.zeros_like(W), torch.zeros_like(b)
        best_W, best_b = W.clone(), b.clone()
        best_acc = torch.full((P,), -1.0, dtype=torch.float64, device=dev)
        best_epoch = np.zeros(P, dtype=np.int64)
        # The same seed for every chain: a subset's result does not depend on how subsets were batched.
        gen = torch.Generator().manual_seed(self._split_seed())
        bs, mom = int(self.batch_size), float(self.momentum)
        prow = torch.arange(P, device=dev)
        for epoch in range(int(self.epochs)):
            lr = float(self.lr) * float(self.lr_decay) ** (epoch // int(self.lr_step))
            perm = torch.randperm(n, generator=gen).to(dev)
            view = torch.randint(n_views, (n,), generator=gen).to(dev) if n_views > 1 else None
            for s in range(0, n, bs):
                idx = perm[s : s + bs]
                xb = Xc[view[idx], idx] if view is not None else Xc[0, idx]
                yb = data.y[idx]
                B = len(idx)
                prob = torch.softmax((blas.matmul(xb, W) + b).view(B, P, C), dim=2)
                prob[torch.arange(B, device=dev)[:, None], prow[None, :], yb[:, None]] -= 1.0
                D = prob.view(B, P * C) / B
                gW = blas.matmul(xb.T, D).mul_(mask).add_(W * wd)
                gb = D.sum(0).add_(b * wd)
                W.sub_(bufW.mul_(mom).add_(gW), alpha=lr)
                b.sub_(bufb.mul_(mom).add_(gb), alpha=lr)
            if Xv is not None:
                acc = self._accuracy(Xv, data.y_val, W, b, P, C)
                better = acc > best_acc
                if bool(better.any()):
                    cols = better.repeat_interleave(C)
                    best_W = torch.where(cols[None, :], W, best_W)
                    best_b = torch.where(cols, b, best_b)
                    best_acc = torch.where(better, acc, best_acc)
                    best_epoch[better.cpu().numpy()] = epoch + 1
        if Xv is None:
            best_W, best_b, best_epoch[:] = W, b, int(self.epochs)
        train_acc = self._accuracy(Xc[0], data.y, best_W, best_b, P, C)
        Wn = best_W.double().cpu().numpy().reshape(kmax, P, C)
        bn = best_b.double().cpu().numpy().reshape(P, C)
        nan = np.full(P, np.nan)
        return ChainFit(W=[Wn[:k, p] for p, (k, _) in enumerate(problems)], b=bn,
                        train_accuracy=train_acc.cpu().numpy(),
                        val_accuracy=best_acc.cpu().numpy() if Xv is not None else nan, n_iter=best_epoch)

    @staticmethod
    def _accuracy(X, y, W, b, P, C, chunk: int = 4096):
        correct = torch.zeros(P, dtype=torch.float64, device=X.device)
        for a in range(0, X.shape[0], chunk):
            Z = (blas.matmul(X[a : a + chunk], W) + b).view(-1, P, C)
            correct += (Z.argmax(2) == y[a : a + chunk, None]).sum(0)
        return correct / X.shape[0]
