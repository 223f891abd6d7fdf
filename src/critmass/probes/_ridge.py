"""Closed-form ridge-classifier probes from one Gram matrix.

With standardised (centred) training features ``X`` (n x D), ``G = X^T X / n`` and ``B = X^T Y / n``
(``Y`` the +-1 one-hot targets) are computed once; the probe on a subset ``S`` is
``W_S = (G[S, S] + alpha I)^{-1} B[S]`` and its intercept the mean of ``Y``: no pass over the data per
subset. For a chain of nested subsets one Cholesky of ``G[head, head] + alpha I`` per alpha solves every
prefix (the leading block of the factor is the prefix's factor); otherwise one eigendecomposition of
``G[S, S]`` per subset gives every alpha at once. Whichever is cheaper is used.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .. import _blas as blas
from ._base import BaseProbe, Chain, ChainFit, Data

__all__ = ["RidgeProbe", "DEFAULT_RIDGE_ALPHAS"]

logger = logging.getLogger(__name__)

#: Warn when the jitter that made a Cholesky factorisation succeed exceeds this share of alpha.
_JITTER_WARN = 1e-3


def _shifted_cholesky(G: torch.Tensor, alpha: float) -> tuple[torch.Tensor, float]:
    """Lower Cholesky factor of ``G + s I`` and the shift ``s`` applied: ``alpha`` when that factorises
    (``G`` is PSD, so it does unless ``alpha`` is below the rounding of ``G``), else ``alpha`` plus a
    jitter growing tenfold from ``k * eps`` x the mean diagonal."""
    k = G.shape[0]
    scale = max(float(G.diagonal().abs().mean()) if k else 1.0, 1e-300)
    A = G.clone()
    diag = A.diagonal()
    jitter = 0.0
    for _ in range(16):
        diag.copy_(G.diagonal() + (alpha + jitter))
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            return L, float(alpha + jitter)
        jitter = max(10.0 * jitter, max(k, 1) * float(torch.finfo(G.dtype).eps) * scale)
    raise FloatingPointError("cannot factorise the Gram matrix (non-finite features?)")


#: Default penalty grid: (1/2n)||Y - XW - b||^2 + (alpha/2)||W||^2 on standardised features.
DEFAULT_RIDGE_ALPHAS = tuple(10.0 ** np.arange(-4, 4))


class RidgeProbe(BaseProbe):
    r"""Ridge classifier probe(s) on one-hot (+-1) targets, solved from one Gram matrix for every subset.

    Objective, on features standardised with the training rows' statistics::

        (1 / (2 n)) ||Y - X W - 1 b^T||_F^2 + (alpha / 2) ||W||_F^2,   Y[i, c] = +1 if y_i = c else -1

    i.e. scikit-learn's ``RidgeClassifier(alpha=alpha * n_train)`` (its alpha multiplies the *summed*
    squared error) on the same standardised features; predictions are ``argmax(X W + b)``. For two
    classes both columns are kept (scikit-learn keeps one; the predictions agree).

    Parameters
    ----------
    alphas : float or sequence of float, default 1e-4 ... 1e3 (8 values)
        Penalty grid (> 0), chosen per subset on validation accuracy by the probes' one-standard-error rule
        (:mod:`critmass.probes._choice`): the strongest penalty within one binomial standard error of the
        best; ``choice_margins_`` records how far each choice is from flipping.
    subsets, standardize, val_fraction, refit, device, random_state
        As in :class:`~critmass.probes.LogisticProbe`.

    Attributes
    ----------
    coef_, intercept_, reg_, coefs_, intercepts_, regs_, scores_, choice_margins_, val_scores_,
    train_scores_, ...
        As in :class:`~critmass.probes.LogisticProbe` (``n_iter_`` is 0).
    regs_applied_ : ndarray (n_subsets,)  (``reg_applied_`` for a single probe)
        The penalty actually applied, in the units of ``regs_``: ``alpha`` plus the jitter a Cholesky
        factorisation needed when ``G + alpha I`` was numerically singular (a warning is logged when the
        jitter exceeds 0.1% of alpha); equal to ``regs_`` otherwise.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> probe = RidgeProbe(alphas=1.0, device="cpu").fit(X[:1500], y[:1500])
    >>> probe.score(X[1500:], y[1500:]) > 0.85
    True
    """

    _solver = "ridge"
    _dtype = torch.float64
    _transposed = True
    _alpha_strictly_positive = True

    def __init__(self, alphas=DEFAULT_RIDGE_ALPHAS, *, subsets=None, standardize: bool = True,
                 val_fraction: float = 0.1, refit: bool = False, device: str = "auto",
                 random_state: int | None = 0):
        self.alphas = alphas
        self.subsets = subsets
        self.standardize = standardize
        self.val_fraction = val_fraction
        self.refit = refit
        self.device = device
        self.random_state = random_state

    @staticmethod
    def _targets(y, n_classes, dtype):
        Y = torch.full((len(y), n_classes), -1.0, dtype=dtype, device=y.device)
        Y[torch.arange(len(y), device=y.device), y] = 1.0
        return Y

    def _prepare(self, data: Data):
        XT, n = data.X, data.X.shape[1]  # (U, n)
        Y = self._targets(data.y, data.n_classes, XT.dtype)
        if XT.device.type == "cpu":  # the Gram backend's syrk (A A^T: half the flops of torch's gemm)
            G = torch.from_numpy(blas.gram(XT.numpy().T))
        else:
            G = XT @ XT.T
        return G / n, blas.matmul(XT, Y) / n, Y.mean(0)  # float64 throughout (RidgeProbe._dtype)

    def _fit_chain(self, ctx, data: Data, chain: Chain, problems) -> ChainFit:
        G, B, ybar = ctx
        dev, dt = data.X.device, data.X.dtype
        head = torch.from_numpy(chain.head).to(dev)
        Gc, Bc = G[head][:, head], B[head]
        sizes = sorted({k for k, _ in problems})
        alphas = sorted({a for _, a in problems})
        kmax = len(chain.head)
        W: dict[tuple[int, float], torch.Tensor] = {}
        applied = {a: a for a in alphas}  # the penalty each alpha's factorisation actually applied
        # Cholesky ~ k^3/3 flops per alpha for the whole chain; eigh ~ 4 k^3 per size for every alpha.
        if len(sizes) > 1 and len(alphas) * kmax**3 / 3 < 4 * sum(k**3 for k in sizes):
            for a in alphas:
                L, applied[a] = _shifted_cholesky(Gc, a)  # exact unless G + alpha I is numerically singular
                Z = torch.linalg.solve_triangular(L, Bc, upper=False)  # forward substitution, shared by prefixes
                for k, a2 in problems:
                    if a2 == a:
                        W[(k, a)] = torch.linalg.solve_triangular(L[:k, :k].T, Z[:k], upper=True)
            worst = max(alphas, key=lambda a: (applied[a] - a) / a)
            if applied[worst] - worst > _JITTER_WARN * worst:
                logger.warning(
                    "ridge: G + alpha I of a %d-neuron chain was numerically singular at alpha=%.3g; factorised "
                    "with alpha=%.3g instead (recorded in regs_applied_ / reg_applied); use larger alphas",
                    kmax, worst, applied[worst])
        else:
            for k in sizes:
                lam, Q = torch.linalg.eigh(Gc[:k, :k])
                QB = Q.T @ Bc[:k]
                for k2, a in problems:
                    if k2 == k:
                        W[(k, a)] = Q @ (QB / (lam.clamp_min(0) + a)[:, None])

        XcT = data.X[head]  # (k_max, n): row gathers of the transposed layout are cheap
        XvT = data.X_val[head] if data.X_val is not None else None
        P = len(problems)
        val_acc = np.full(P, np.nan)
        index = {p: j for j, p in enumerate(problems)}
        if XvT is not None:
            for k in sizes:  # one product per size for all its alphas
                js = [index[(k, a)] for a in alphas if (k, a) in index]
                Wcat = torch.stack([W[problems[j]] for j in js]).permute(1, 0, 2).reshape(k, -1)
                Zv = blas.matmul(XvT[:k].T, Wcat).view(-1, len(js), data.n_classes) + ybar
                val_acc[js] = (Zv.argmax(2) == data.y_val[:, None]).double().mean(0).cpu().numpy()

        def train_accuracy(js):
            # js is sorted by size: one product per block of columns between consecutive sizes.
            C = data.n_classes
            ks = np.array([problems[j][0] for j in js])
            Z = torch.zeros((XcT.shape[1], len(js) * C), dtype=dt, device=dev)
            lo = 0
            for k in np.unique(ks):
                a = int(np.searchsorted(ks, k))
                Wb = torch.cat([W[problems[j]][lo:k] for j in js[a:]], dim=1)
                Z[:, a * C :] += blas.matmul(XcT[lo:k].T, Wb)
                lo = int(k)
            Z = Z.view(-1, len(js), C) + ybar
            return (Z.argmax(2) == data.y[:, None]).double().mean(0).cpu().numpy()

        b = np.tile(ybar.cpu().numpy(), (P, 1))
        return ChainFit(W=[W[p].cpu().numpy() for p in problems], b=b, train_accuracy=train_accuracy,
                        val_accuracy=val_acc, n_iter=np.zeros(P, dtype=np.int64),
                        reg_applied=np.array([applied[a] for _, a in problems]))
