"""Multinomial logistic-regression probes: many subsets and penalties fitted at once with a batched,
preconditioned L-BFGS in torch (CPU or GPU).

Why it is fast (see REFERENCE.md, "The maths that makes critmass fast"):

* **Preconditioning by nested Cholesky factors.** For a chain of nested subsets (one seed's random
  prefixes ``order[:k]``) and a penalty ``alpha``, one Cholesky ``G[head, head] + mu I = L L^T`` of the
  standardised Gram matrix serves every size: the leading ``k x k`` block of ``L`` is the factor of the
  ``k``-prefix. Each probe is optimised over ``V`` with ``W = L_k^{-T} V`` (a triangular solve, never a pass
  over the data); with ``mu = max(alpha * n_classes, 3 x mean eigenvalue of G)`` the Hessian in ``V`` is
  well conditioned in the high-variance directions that slow plain L-BFGS down, without amplifying the
  noise directions. The objective itself is unchanged (the penalty is applied to ``W``).
* **Batching.** All sizes and penalties of a chain are optimised together: one pass over the data per
  step computes every probe's logits with one matrix product per block of columns between consecutive
  sizes, so the data are read once, not once per probe. L-BFGS runs per problem (own history, own line
  search), so a batched fit follows the same iterates as separate fits.
* **Fusing chains.** Those per-block products are thin (10 classes x a few problems) and run at a
  fraction of the machine's speed. Problems of several chains (seeds) are therefore also fitted together
  with their weights scattered into the rows of the union of columns, one wide product for all: on a GPU
  every problem (kernel launches, not flops, are what costs there), on a CPU the subsets of at least half
  the columns (there the extra zeros cost fewer flops than the thin products lose in speed).
* **float32** data and weights; the Gram matrix accumulated in float64 (float32 products over chunks of
  4,096 samples added into a float64 sum: the rounding error is bounded by the chunk, not by n, at the
  cost of the float32 product), factorisations in float64, and the loss that drives the line search
  summed over samples (and chunks) in float64: a float32 total cannot resolve changes below ~1e-7 of
  itself, which is what the Armijo test and the ``ftol`` rule compare near the optimum (a float32 sum
  stops the line search early, further from scikit-learn's optimum).

* **Regularisation path.** A subset's penalties are fitted from the strongest to the weakest, each
  warm-started from the previous solution (glmnet's and ``LogisticRegressionCV``'s path), in stages that
  batch every subset's problem at that penalty; a subset's path stops once its validation accuracy has
  clearly fallen past its peak (half a binomial standard error below the best so far, at least one
  sample), so the weakest penalties, which take the most iterations on nearly separable features, are
  fitted only where they can still win: far less solver work than fitting the whole grid from zero, at
  the same test accuracy within noise (``benchmarks/probes.py`` compares both). ``path=False`` fits the
  whole grid.

Warm starts across sizes are deliberately not used: a prefix started from the next smaller solution
already meets the gradient tolerance on nearly separable features while its loss is still far above the
optimum (and so does its test accuracy), and fitting all sizes at once reads
the data once per step instead of once per size.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .. import _blas as blas
from .._validation import check_positive_int
from ..exceptions import ConfigError
from ._base import ChainFit, Data, ProbabilisticProbe
from ._choice import tie_band

__all__ = ["LogisticProbe", "DEFAULT_LOGISTIC_ALPHAS", "alpha_from_C", "C_from_alpha"]

logger = logging.getLogger(__name__)

#: Default penalty grid (mean cross-entropy + alpha/2 ||W||^2 on standardised features).
DEFAULT_LOGISTIC_ALPHAS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)

_MU_EIG = 3.0  # preconditioner shift floor, in units of the mean eigenvalue of the Gram matrix
_LOGIT_BUDGET = 2**25  # float32 entries of one logits chunk (128 MiB): bounds memory for many classes
_FUSE_MIN_CHAINS = 2  # on a CPU, fuse large subsets only when at least this many chains have some
_DENSE_ALL = None  # None: every problem in the dense layout on GPUs only (tests force it on the CPU)
_STATE_BUDGET = 2**28  # float32 entries of L-BFGS state per batch (1 GiB): problems beyond it run in turns
_GRAM_CHUNK = 4096  # samples per float32 product of the Gram matrix (summed in float64)
_LIVE_DIAG = 1e-10  # columns whose Gram diagonal is below this share of the largest are constant
# A regularisation path stops once a penalty's validation accuracy trails the path's best by more than this
# many binomial standard errors of the best (at least one sample: ``tie_band``, the choice rule's band).
# 0.5 stops late enough that a noisy dip of a sample or two does not end a path before its peak, and early
# enough to skip most of the weakest (slowest) penalties; 0 (stop at any drop) ends paths on such noise.
_PATH_MARGIN_SE = 0.5


def gram64(XT: torch.Tensor, chunk: int = _GRAM_CHUNK) -> torch.Tensor:
    """``X^T X / n`` (float64, on ``XT``'s device) of the (U, n) data ``XT``: float32 products over chunks of
    ``chunk`` samples accumulated in float64, so the rounding error is that of one chunk whatever n is
    (one float32 product of all samples would err in proportion to n). On a CPU numpy turns each
    ``B @ B.T`` into one syrk (half the flops of torch's gemm), so the chunked float32 products cost about
    what one float32 product does, and far less than float64 products.
    (The Gram matrix only preconditions the logistic problems; float32 products are ample for that.)"""
    U, n = XT.shape
    if XT.device.type == "cpu":
        A = XT.numpy()
        G = np.zeros((U, U))
        for c0 in range(0, n, chunk):
            B = np.ascontiguousarray(A[:, c0 : c0 + chunk])
            G += B @ B.T
        return torch.from_numpy(G / max(n, 1))
    G = torch.zeros((U, U), dtype=torch.float64, device=XT.device)
    for c0 in range(0, n, chunk):
        B = XT[:, c0 : c0 + chunk]
        G += (B @ B.T).double()
    return G / max(n, 1)


def _groups(sizes, n_classes: int, history: int, rows: int = 0) -> list[np.ndarray]:
    """Split problems (sorted by size) into consecutive batches whose L-BFGS state (and, in the dense
    layout, weights and gradients over ``rows`` rows) fits the budget."""
    groups, cur = [], []
    for j, k in enumerate(sizes):
        if cur and (len(cur) + 1) * n_classes * ((k + 1) * (2 * history + 8) + 3 * rows) > _STATE_BUDGET:
            groups.append(np.array(cur))
            cur = []
        cur.append(j)
    groups.append(np.array(cur))
    return groups


def alpha_from_C(C: float, n_samples: int) -> float:
    """The ``alpha`` equivalent to scikit-learn's ``LogisticRegression(C=C)`` fitted on ``n_samples`` rows."""
    return 1.0 / (float(C) * int(n_samples))


def C_from_alpha(alpha: float, n_samples: int) -> float:
    """scikit-learn's ``C`` equivalent to ``alpha`` for a fit on ``n_samples`` rows (inf for alpha=0)."""
    return float("inf") if alpha == 0 else 1.0 / (float(alpha) * int(n_samples))


# --------------------------------------------------------------------------------------------- L-BFGS
def batched_lbfgs(fun, theta: torch.Tensor, *, max_iter: int, tol: float, history: int = 10,
                  gamma0: float = 1.0, ftol: float = 1e-9, c1: float = 1e-4, max_ls: int = 30,
                  min_iter=0):
    """Minimise ``P`` independent smooth objectives at once with L-BFGS.

    ``fun(theta_rows, idx)`` returns ``(loss (q,), grad (q, M), gmax (q,))`` for the problems ``idx``
    (a sorted int64 numpy array); ``gmax`` is the max-abs gradient used for the stopping rule
    ``gmax <= tol`` (scikit-learn's ``gtol``). Every problem has its own curvature history, initial
    scaling ``gamma`` and Armijo backtracking line search; only unconverged problems are evaluated.
    A problem also stops when its loss decreases by less than ``ftol * |loss|``, but not before
    ``min_iter`` iterations (per problem, or one number): a warm-started problem's first steps, from
    steepest descent with the initial scaling, can be short without being near the optimum.

    Returns ``(theta, n_iter)`` with ``n_iter`` the iterations each problem took.
    """
    P, M = theta.shape
    dev, dt = theta.device, theta.dtype
    all_idx = np.arange(P)
    f, g, gmax = fun(theta, all_idx)
    active = (gmax > tol).cpu().numpy()
    n_iter = np.zeros(P, dtype=np.int64)
    min_iter = np.broadcast_to(np.asarray(min_iter, dtype=np.int64), (P,))
    S = torch.zeros((history, P, M), device=dev, dtype=dt)
    Y = torch.zeros_like(S)
    rho = torch.zeros((history, P), device=dev, dtype=dt)
    gamma = torch.full((P,), float(gamma0), device=dev, dtype=dt)
    ptr, n_pairs = 0, 0
    for _ in range(max_iter):
        idx_np = np.nonzero(active)[0]
        if idx_np.size == 0:
            break
        full = idx_np.size == P
        idx = slice(None) if full else torch.from_numpy(idx_np).to(dev)

        # Two-loop recursion on the active problems (views, not copies, when all are active).
        gi = g[idx].clone()  # copies: the state is updated in place below
        q = gi.clone()
        slots = [(ptr - 1 - j) % history for j in range(min(n_pairs, history))]  # newest first
        # The active problems' history gathered once (one copy each of S, Y, rho), not once per pair and loop
        # (otherwise each iteration would make dozens of small copies, each a fixed per-operation cost).
        Sa, Ya, rhoa = (S, Y, rho) if full else (S[:, idx], Y[:, idx], rho[:, idx])
        coefs = []
        for h in slots:
            a = rhoa[h] * torch.linalg.vecdot(Sa[h], q)
            q.addcmul_(a[:, None], Ya[h], value=-1.0)
            coefs.append(a)
        r = gamma[idx][:, None] * q
        for h, a in zip(reversed(slots), reversed(coefs)):
            bcoef = rhoa[h] * torch.linalg.vecdot(Ya[h], r)
            r.addcmul_(Sa[h], (a - bcoef)[:, None])
        del Sa, Ya, rhoa  # free the copies before the line search's evaluations allocate
        d = r.neg_()
        gd = (gi * d).sum(1)
        bad = gd >= 0
        if bool(bad.any()):  # not a descent direction: restart that problem from scaled steepest descent
            d[bad] = -gamma0 * gi[bad]
            gd = (gi * d).sum(1)
            for h in range(history):
                rho_h = rho[h, idx]
                rho_h[bad] = 0
                rho[h, idx] = rho_h

        # Armijo backtracking per problem; only the problems that fail are evaluated again.
        th0, f0, gm0 = theta[idx].clone(), f[idx].clone(), gmax[idx].clone()
        t = torch.ones(idx_np.size, device=dev, dtype=dt)
        th1 = th0 + d
        f1, g1, gm1 = fun(th1, idx_np)
        ok = f1 <= f0 + c1 * t * gd
        for _ls in range(max_ls):
            if bool(ok.all()):
                break
            fail = torch.nonzero(~ok).squeeze(1)
            t[fail] *= 0.5
            th_f = th0[fail] + t[fail, None] * d[fail]
            ff, gf, gmf = fun(th_f, idx_np[fail.cpu().numpy()])
            th1[fail], f1[fail], g1[fail], gm1[fail] = th_f, ff, gf, gmf
            ok[fail] = ff <= f0[fail] + c1 * t[fail] * gd[fail]

        s = th1 - th0
        yv = g1 - gi
        sy, yy = (s * yv).sum(1), (yv * yv).sum(1)
        good = ok & (sy > 1e-10 * yy) & (yy > 0)
        zero = torch.zeros((), device=dev, dtype=dt)
        S[ptr, idx] = torch.where(good[:, None], s, zero)
        Y[ptr, idx] = torch.where(good[:, None], yv, zero)
        rho[ptr, idx] = torch.where(good, 1.0 / torch.where(good, sy, torch.ones_like(sy)), zero)
        gamma[idx] = torch.where(good, sy / torch.where(good, yy, torch.ones_like(yy)), gamma[idx].clone())
        ptr, n_pairs = (ptr + 1) % history, n_pairs + 1

        okm = ok[:, None]
        theta[idx] = torch.where(okm, th1, th0)
        f[idx] = torch.where(ok, f1, f0)
        g[idx] = torch.where(okm, g1, gi)
        gmax[idx] = torch.where(ok, gm1, gm0)
        n_iter[idx_np] += 1
        decrease = f0 - f1
        early = torch.from_numpy(n_iter[idx_np] < min_iter[idx_np]).to(dev)
        still = ok & (gm1 > tol) & ((decrease > ftol * f1.abs()) | early)
        active[idx_np] = still.cpu().numpy()
    return theta, n_iter


# ------------------------------------------------------------------------------------------ objective
class _Objective:
    """Mean cross-entropy + alpha/2 ||W||^2 of many problems, for :func:`batched_lbfgs`.

    Problem ``p`` belongs to a chain of nested subsets and sees that chain's first ``sizes[p]`` columns
    with penalty ``alphas[p]``. Its parameters are ``theta_p = [vec(V) (k_max * C), b (C)]``, with
    ``W = L^{-T} V`` for the chain's factor ``L`` of that penalty (rows beyond ``sizes[p]`` stay 0: their
    gradient is 0). ``factors[(chain, alpha)] = (rows, lower)``: ``rows`` (k_c,) are the chain's columns
    as rows of ``XT``, ``lower`` the Cholesky factor over them; problems sharing a factor share one
    triangular solve per evaluation (zero rows past a problem's size solve to zero rows).

    Two layouts of the data pass:

    * ``blocked`` (one chain; ``XT`` holds its columns in chain order, problems sorted by size): one
      product per block of rows between consecutive sizes, each feeding the problems at least that large.
      No wasted flops, but blocks that feed few problems are thin, slow matrix products.
    * dense (any chains; ``XT`` holds the union of columns): every problem's weights are scattered into
      the union's rows (zeros elsewhere) and one wide product serves all of them. For large subsets of
      several chains (random prefixes of several seeds) this trades up to 2x the flops for products that
      run several times faster, and reads the data once per step instead of once per chain.
    """

    def __init__(self, XT, y, n_classes, sizes, alphas, keys, factors, *, blocked: bool):
        self.XT, self.y = XT, y
        self.U, self.n = XT.shape
        self.C = int(n_classes)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.kmax = int(self.sizes.max())
        self.M = self.kmax * self.C + self.C
        self.blocked = blocked
        dev, dt = XT.device, XT.dtype
        self.alphas = torch.as_tensor(np.asarray(alphas, dtype=np.float64), dtype=dt, device=dev)
        self._keys = list(dict.fromkeys(keys))  # distinct factors, and each problem's factor id
        self._key_of = np.array([self._keys.index(k) for k in keys], dtype=np.int64)
        # Triangular solves use leading blocks [:k, :k]; as column-major views (transposes of contiguous
        # matrices) LAPACK reads them in place, where row-major slices would be copied on every call.
        self.factors = {key: (torch.as_tensor(rows, device=dev), lo.contiguous().T, lo.T.contiguous().T)
                        for key, (rows, lo) in factors.items()}
        self._arange_C = torch.arange(self.C, device=dev)

    def _parts(self, idx: np.ndarray):
        """Per factor among the problems ``idx``: (key, local positions, their sizes, k of the solve)."""
        ids = self._key_of[idx]
        out = []
        for kid in np.unique(ids):
            loc = np.nonzero(ids == kid)[0]
            ks = self.sizes[idx[loc]]
            out.append((self._keys[kid], loc, ks, int(ks.max())))
        return out

    def _solve_all(self, theta, idx, parts):
        """``W`` (q, kmax_q, C) of the problems ``idx``: one triangular solve per factor."""
        q, C = theta.shape[0], self.C
        km = int(self.sizes[idx].max())
        V = theta[:, : self.kmax * C].view(q, self.kmax, C)
        W = torch.zeros((q, km, C), dtype=theta.dtype, device=theta.device)
        for key, loc, _, kg in parts:
            t = torch.from_numpy(loc).to(theta.device)
            rhs = V[t, :kg].permute(1, 0, 2).reshape(kg, len(loc) * C)
            Wg = torch.linalg.solve_triangular(self.factors[key][1][:kg, :kg], rhs, upper=True)
            W[t, :kg] = Wg.view(kg, len(loc), C).permute(1, 0, 2)
        return W

    def weights(self, theta, idx):
        """``W`` (q, k_max_q, C) in chain order and ``b`` (q, C) of the problems ``idx``."""
        return self._solve_all(theta, idx, self._parts(idx)), theta[:, self.kmax * self.C :]

    def _dense_index(self, key, t, kg):
        """Row and column indices of the problems at local positions ``t`` (sharing factor ``key``) in the
        dense layout's (U, q*C) weights."""
        rows = self.factors[key][0][:kg]
        return rows[:, None], (t[:, None] * self.C + self._arange_C).reshape(1, -1)

    def _prologue(self, theta, idx):
        """What a data pass needs: the factor parts, ``W``, ``b``, the weights as rows of ``XT`` (rows, q*C)
        and the blocks of the pass."""
        parts = self._parts(idx)
        W = self._solve_all(theta, idx, parts)
        q, km, C = W.shape
        if self.blocked:
            # Blocks (r0, r1, a): rows r0:r1 feed the problems from position a/C on (those with k >= r1).
            ks = self.sizes[idx]
            uniq = np.unique(ks)
            starts = np.searchsorted(ks, uniq, side="left")
            lows = np.concatenate([[0], uniq[:-1]])
            blocks = [(int(r0), int(r1), int(s) * C) for r0, r1, s in zip(lows, uniq, starts)]
            Wflat = W.permute(1, 0, 2).reshape(km, q * C)
        else:
            blocks = [(0, self.U, 0)]
            Wflat = torch.zeros((self.U, q * C), dtype=W.dtype, device=W.device)
            for key, loc, _, kg in parts:
                t = torch.from_numpy(loc).to(W.device)
                Wflat[self._dense_index(key, t, kg)] = W[t, :kg].permute(1, 0, 2).reshape(kg, -1)
        return parts, W, theta[:, self.kmax * C :], Wflat, blocks

    def logits(self, Wflat, blocks, XT, c0, c1):
        """Logits (q*C, c1-c0) of every problem for samples ``c0:c1``: one product per block of rows."""
        r0, r1, _ = blocks[0]
        out = blas.matmul(Wflat[r0:r1].T, XT[r0:r1, c0:c1])
        for r0, r1, a in blocks[1:]:
            blas.addmm_(out[a:], Wflat[r0:r1, a:].T, XT[r0:r1, c0:c1])
        return out

    def _chunk(self, q):
        return max(256, _LOGIT_BUDGET // max(1, q * self.C))

    def __call__(self, theta, idx):
        q, C, n, dev = theta.shape[0], self.C, self.n, theta.device
        parts, W, b, Wflat, blocks = self._prologue(theta, idx)
        gWflat = torch.zeros_like(Wflat)
        loss = torch.zeros(q, dtype=torch.float64, device=dev)  # per-sample CE summed in float64
        gb = torch.zeros((q, C), dtype=theta.dtype, device=dev)
        step = self._chunk(q)
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            nc = c1 - c0
            Z = self.logits(Wflat, blocks, self.XT, c0, c1).view(q, C, nc).add_(b[:, :, None])
            yc = self.y[c0:c1]
            lse = torch.logsumexp(Z, dim=1)
            ar = torch.arange(nc, device=dev)
            loss += (lse - Z[:, yc, ar]).double().sum(1)
            Z.sub_(lse[:, None, :]).exp_()  # softmax, in place
            Z[:, yc, ar] -= 1.0  # d(CE)/d(logits) = softmax - onehot
            gb += Z.sum(2)
            D = Z.view(q * C, nc)
            for r0, r1, a in blocks:
                gWflat[r0:r1, a:] += blas.matmul(self.XT[r0:r1, c0:c1], D[a:].T)
        loss /= n
        gb /= n
        alph = self.alphas[torch.from_numpy(idx).to(dev)]
        loss += 0.5 * alph.double() * W.double().square().sum((1, 2))
        gmax = gb.abs().amax(1)
        # Chain rule through W = L^{-T} V: dV = L^{-1} dW on each problem's own k rows (the rest stay 0).
        gV = torch.zeros((q, self.kmax, C), dtype=theta.dtype, device=dev)
        for key, loc, ks, kg in parts:
            t = torch.from_numpy(loc).to(dev)
            if self.blocked:
                gW = gWflat[:kg].view(kg, q, C)[:, t]
            else:
                gW = gWflat[self._dense_index(key, t, kg)].view(kg, len(loc), C)
            gW = gW / n + alph[t][None, :, None] * W[t, :kg].permute(1, 0, 2)
            inside = (torch.arange(kg, device=dev)[:, None] < torch.from_numpy(ks).to(dev)[None, :])[:, :, None]
            gW = gW * inside  # rows past a problem's size are not its parameters
            gmax[t] = torch.maximum(gmax[t], gW.abs().amax((0, 2)))
            gVg = torch.linalg.solve_triangular(self.factors[key][2][:kg, :kg], gW.reshape(kg, -1), upper=False)
            gV[t, :kg] = (gVg.view(kg, len(loc), C) * inside).permute(1, 0, 2)
        return loss, torch.cat([gV.reshape(q, -1), gb], dim=1), gmax

    def evaluate(self, theta, XT, y, *, loss: bool = True):
        """Accuracy and mean cross-entropy (no penalty; None unless ``loss``) of every problem on ``(XT, y)``
        (laid out like the training data). The fits need only the accuracies: the choice is on counts."""
        q, C = theta.shape[0], self.C
        _, _, b, Wflat, blocks = self._prologue(theta, np.arange(q))
        n = XT.shape[1]
        correct = torch.zeros(q, dtype=torch.float64, device=theta.device)
        ce = torch.zeros(q, dtype=torch.float64, device=theta.device) if loss else None
        step = self._chunk(q)
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            Z = self.logits(Wflat, blocks, XT, c0, c1).view(q, C, c1 - c0).add_(b[:, :, None])
            yc = y[c0:c1]
            correct += (Z.argmax(1) == yc[None, :]).sum(1)
            if loss:
                ar = torch.arange(c1 - c0, device=Z.device)
                ce += (torch.logsumexp(Z, 1) - Z[:, yc, ar]).double().sum(1)
        return (correct / n).cpu().numpy(), (ce / n).cpu().numpy() if loss else None


def _cholesky(G: torch.Tensor, mu: float, floor: float = 1e-7) -> torch.Tensor:
    """Lower Cholesky factor of ``G + mu I`` (``mu`` at least ``floor`` x mean diagonal); the jitter
    grows tenfold until the factorisation succeeds."""
    scale = max(float(G.diagonal().abs().mean()) if G.shape[0] else 1.0, 1e-12)
    jitter = max(mu, floor * scale) or 1e-12 * scale
    A = G.clone()
    diag = A.diagonal()
    for _ in range(12):
        diag.copy_(G.diagonal() + jitter)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            return L
        jitter *= 10.0
    raise FloatingPointError("cannot factorise the Gram matrix (non-finite features?)")


class LogisticProbe(ProbabilisticProbe):
    r"""Multinomial L2-regularised logistic regression probe(s), fitted by batched L-BFGS in torch.

    Objective, on features standardised with the training rows' mean and standard deviation::

        (1/n) sum_i CE(softmax(x_i W + b), y_i) + (alpha / 2) ||W||_F^2

    (intercept not penalised). This is scikit-learn's ``LogisticRegression(C=C)`` objective divided by
    ``C n``, so ``alpha = 1 / (C * n_train)`` (:func:`alpha_from_C`). It is also the objective that SGD
    with ``weight_decay=alpha`` minimises. With two classes the softmax has two weight vectors, which
    equals a binary logistic regression with ``C = 2 / (alpha n)``.

    Parameters
    ----------
    alphas : float or sequence of float, default (1e-5, ..., 1e-1)
        Penalty grid; with several values each subset's alpha is chosen on validation accuracy by the
        one-standard-error rule: the strongest penalty whose count of correct validation samples is within
        one binomial standard error (at least one sample) of the best count (:mod:`critmass.probes._choice`).
        ``choice_margins_`` says how many samples each choice is from flipping.
    subsets : list of int arrays, optional
        Column subsets, one probe each (batched). ``None`` fits one probe on all columns. Subsets that
        are nested as sets (random prefixes of one permutation) share one factorisation and one data
        pass per step.
    standardize : bool, default True
        Scale columns to unit variance (columns are always centred; the intercept absorbs that).
    val_fraction : float, default 0.1
        Share of the training rows held out to choose alpha when no ``X_val`` is passed to ``fit``.
    refit : bool, default False
        After choosing alpha, refit on train + validation (DINOv2's protocol). By default the probe
        trained on the training part is kept (the paper's protocol: train on 90%, select on 10%).
    max_iter : int, default 100
        L-BFGS iterations per problem.
    tol : float, default 1e-5
        Stop a problem when the max-abs gradient of the objective falls below ``tol`` (scikit-learn's
        ``tol`` for lbfgs, whose default is 1e-4). Tighter than scikit-learn's because on weakly
        regularised, nearly separable features (wide layers) a gradient of 1e-4 still leaves the
        weights far from the optimum, and where the iterates stop then depends on the solver's path:
        at 1e-4 our test accuracy differed from scikit-learn's by 0.3 points on average (up to 1.1);
        at 1e-5 by 0.1 (up to 0.4), at ~35% more iterations.
    ftol : float, default 1e-7
        A problem also stops when one iteration lowers its objective by less than ``ftol x objective``
        (scipy's ``ftol`` rule, relative). 1e-7 keeps every probe's objective within 1e-5 (relative) of
        a tightly converged scikit-learn solution (``tol=1e-12``) on digits; the earlier rule
        (``tol x max(1, objective)``, absolute below an objective of 1) left gaps up to 2e-3 on
        well-fitted probes whose objective is far below 1.
    history : int, default 10
        L-BFGS memory.
    path : bool, default True
        Fit each subset's penalties as a regularisation path: strongest first, each warm-started from the
        previous penalty's solution, stopping once validation accuracy has clearly peaked (see
        ``path_patience``). The penalties past the stop are not fitted: their ``val_scores_`` are NaN and
        they are never chosen. ``False`` fits every penalty from zero (the exhaustive grid search).
    path_patience : int, default 0
        How many penalties past the first one that trails the path's best validation accuracy by more than
        half a binomial standard error (at least one sample) are still fitted before the path stops; -1
        never stops early (every penalty fitted, still warm-started).
    device : str, default 'auto'
        'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'.
    random_state : int, default 0
        Seeds the validation split carved from the training rows.

    Attributes
    ----------
    coef_ : ndarray (n_classes, n_features_in_)
        Weights on the raw features (single probe, ``subsets=None``).
    intercept_ : ndarray (n_classes,)
    reg_ : float
        The chosen alpha.
    reg_applied_ : float
        The penalty the fit applied, in the units of ``reg_`` (always ``reg_`` here; RidgeProbe records
        a larger one when it had to add jitter to factorise).
    coefs_, intercepts_, regs_, regs_applied_ : per-subset versions (lists / arrays over subsets)
    scores_ : ndarray (n_subsets,)
        Validation accuracy of each subset's chosen probe (NaN without validation).
    choice_margins_ : ndarray (n_subsets,)
        How far each choice of penalty is from the rule's boundaries, in validation samples (NaN: nothing
        was chosen, e.g. one penalty or no validation data). A choice with a margin below ~2.5 samples can
        flip on another CPU or thread count.
    val_scores_ : ndarray (n_subsets, n_alphas)
        Validation accuracy for every alpha of ``alphas_``.
    train_scores_ : ndarray (n_subsets,)
        Accuracy on the rows the probe was fitted on.
    n_iter_ : ndarray (n_subsets,)
        L-BFGS iterations of the chosen problem (from its warm start, on a regularisation path).
    classes_, n_features_in_, mean_, scale_, subsets_, alphas_, n_train_, n_val_

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> probe = LogisticProbe(alphas=1e-3, device="cpu").fit(X[:1500], y[:1500])
    >>> probe.score(X[1500:], y[1500:]) > 0.9
    True
    """

    _solver = "logistic"
    _transposed = True

    def __init__(self, alphas=DEFAULT_LOGISTIC_ALPHAS, *, subsets=None, standardize: bool = True,
                 val_fraction: float = 0.1, refit: bool = False, max_iter: int = 100, tol: float = 1e-5,
                 ftol: float = 1e-7, history: int = 10, path: bool = True, path_patience: int = 0, device: str = "auto",
                 random_state: int | None = 0):
        self.alphas = alphas
        self.subsets = subsets
        self.standardize = standardize
        self.val_fraction = val_fraction
        self.refit = refit
        self.max_iter = max_iter
        self.tol = tol
        self.ftol = ftol
        self.history = history
        self.path = path
        self.path_patience = path_patience
        self.device = device
        self.random_state = random_state

    def _prepare(self, data: Data):
        check_positive_int(self.max_iter, name="max_iter")
        check_positive_int(self.history, name="history")
        if not isinstance(self.path, (bool, np.bool_)):
            raise ConfigError(f"path must be True or False; got {self.path!r}")
        if isinstance(self.path_patience, bool) or not isinstance(self.path_patience, (int, np.integer)) \
                or self.path_patience < -1:
            raise ConfigError(f"path_patience must be an integer >= 0 (or -1: never stop the path early); "
                              f"got {self.path_patience!r}")
        if not (isinstance(self.tol, (int, float)) and np.isfinite(self.tol) and self.tol >= 0):
            raise ConfigError(f"tol must be a finite number >= 0; got {self.tol!r}")
        if not (isinstance(self.ftol, (int, float)) and np.isfinite(self.ftol) and self.ftol >= 0):
            raise ConfigError(f"ftol must be a finite number >= 0; got {self.ftol!r}")
        # One Gram matrix of the standardised union of columns serves every chain (a permutation of it).
        return gram64(data.X)  # data.X is (U, n)

    def _fit_chains(self, gram, data: Data, chains, problems_list):
        dev, dt, C = data.X.device, data.X.dtype, data.n_classes
        U = data.X.shape[0]

        def factors(c, alphas, km):
            """Preconditioner factors of chain ``c`` over its first ``km`` columns, {(c, alpha): (rows, L)}.

            G + mu I: the Hessian is ~ s G + alpha I with s the softmax curvature (1/C at the start, smaller
            once predictions are confident), so mu = alpha / s equalises it; but mu must not fall far below
            the typical eigenvalue of G either: whitening low-variance (noise) directions makes early iterates
            fit noise first, and on nearly separable features (common for wide layers) L-BFGS then needs more
            iterations to reach the same test accuracy. mu >= 3x the mean eigenvalue (of the whole chain) was
            best in our measurements (REFERENCE.md: "The maths that makes critmass fast"). The factor of a
            leading block is the leading block of the factor, so only the ``km`` columns in use are factored.
            The mean is over the chain's non-constant columns (a constant column is a zero row and column of
            G, not a direction of the data): on standardised features it is then 1 for every chain, so a
            subset gets the same preconditioner whether it is fitted alone or batched with others.
            """
            head = torch.from_numpy(chains[c].head).to(dev)
            diag = gram[head, head]  # the chain's diagonal
            live = diag > _LIVE_DIAG * float(diag.max()) if len(head) else diag > 0
            mean_eig = float(diag[live].mean()) if bool(live.any()) else 1.0
            G = gram[head[:km]][:, head[:km]]
            by_mu = {}  # penalties with the same shift share one factorisation (all default ones do)
            for a in alphas:
                mu = max(a * C, _MU_EIG * mean_eig)
                if mu not in by_mu:
                    by_mu[mu] = _cholesky(G, mu).to(dt)
            return {(c, a): (head[:km], by_mu[max(a * C, _MU_EIG * mean_eig)]) for a in alphas}

        out = [_Collected(len(p), C) for p in problems_list]
        # Which problems share one data pass over all columns (dense layout): on a GPU all of them (the
        # wasted flops of padding small subsets cost less than launching a product per block and chain); on
        # a CPU the large subsets of several chains (e.g. the 50-100% fractions of every seed), whose
        # products become wide and fast. The rest are fitted chain by chain on a gathered copy of its columns.
        dense_all = dev.type != "cpu" if _DENSE_ALL is None else _DENSE_ALL
        large = [(c, j) for c, problems in enumerate(problems_list) for j, (k, _) in enumerate(problems)
                 if dense_all or 2 * k >= U]
        if not dense_all and len({c for c, _ in large}) < _FUSE_MIN_CHAINS:
            large = []
        if large:
            used = {}
            for c in sorted({c for c, _ in large}):
                mine = [problems_list[c][j] for cc, j in large if cc == c]
                used.update(factors(c, sorted({a for _, a in mine}), max(k for k, _ in mine)))
            self._fit_group(data, data.X, data.X_val, large, problems_list, used, out, blocked=False)
            del used
        taken = set(large)
        for c, (chain, problems) in enumerate(zip(chains, problems_list)):
            rest = [(c, j) for j in range(len(problems)) if (c, j) not in taken]
            if rest:
                km = max(problems[j][0] for _, j in rest)
                rows = torch.from_numpy(chain.head[:km]).to(dev)
                XT = data.X[rows]  # row gather: contiguous (k_max, n), so the factors index it by position
                XvT = data.X_val[rows] if data.X_val is not None else None
                local = {key: (torch.arange(km, device=dev), lo)
                         for key, (_, lo) in factors(c, sorted({problems[j][1] for _, j in rest}), km).items()}
                self._fit_group(data, XT, XvT, rest, problems_list, local, out, blocked=True)
                del XT, XvT, local
            yield out[c].chain_fit()  # chain by chain, so progress shows

    def _fit_group(self, data: Data, XT, XvT, members, problems_list, factors, out, *, blocked: bool) -> None:
        """Fit the problems ``members`` ((chain, position) pairs) with batched L-BFGS into ``out``.

        With ``path=True`` the penalties of one subset (one chain and size: a *line*) are fitted from the
        strongest to the weakest in stages, each problem warm-started from its line's previous solution;
        a line stops once its validation accuracy has clearly peaked (``path_patience``). Problems of all
        lines at one stage share the data passes. With ``path=False`` every problem starts from zero and
        all are fitted at once."""
        lines: dict = {}
        for c, j in members:
            k, a = problems_list[c][j]
            lines.setdefault((c, k), []).append((a, j))
        order = sorted(lines)  # by chain, then size
        for key in order:
            lines[key].sort(key=lambda aj: -aj[0])  # strongest penalty first
        if not self.path:
            self._fit_stage(data, XT, XvT, [(c, j) for c, j in members], problems_list, factors, out,
                            blocked=blocked, warm=None)
            return
        n_val = len(data.y_val) if data.y_val is not None else 0
        patience = int(self.path_patience)
        state = {key: {"pos": 0, "best": -1.0, "since": 0, "prev": None} for key in order}
        while True:
            stage = [key for key in order if state[key]["pos"] < len(lines[key])]
            if not stage:
                break
            mem = [(key[0], lines[key][state[key]["pos"]][1]) for key in stage]
            warm = [state[key]["prev"] for key in stage]
            self._fit_stage(data, XT, XvT, mem, problems_list, factors, out, blocked=blocked, warm=warm)
            for key, (c, j) in zip(stage, mem):
                st = state[key]
                o = out[c]
                st["prev"] = (o.W[j], o.b[j])
                st["pos"] += 1
                if n_val and patience >= 0:
                    correct = round(float(o.val_accuracy[j]) * n_val)
                    if correct > st["best"]:
                        st["best"], st["since"] = correct, 0
                    elif correct < st["best"] - tie_band(st["best"], n_val, _PATH_MARGIN_SE):
                        st["since"] += 1  # clearly below the best so far (ties and near-ties go on)
                    if st["since"] > patience:
                        st["pos"] = len(lines[key])

    def _fit_stage(self, data: Data, XT, XvT, members, problems_list, factors, out, *, blocked: bool,
                   warm) -> None:
        """Fit the problems ``members`` at once (in batches that fit memory); ``warm``: per member None or
        the ``(W, b)`` (standardised units, chain order) to start from."""
        C = data.n_classes
        warm = [None] * len(members) if warm is None else list(warm)
        order = sorted(range(len(members)), key=lambda i: (problems_list[members[i][0]][members[i][1]][0], members[i]))
        members, warm = [members[i] for i in order], [warm[i] for i in order]  # by size
        sizes = [problems_list[c][j][0] for c, j in members]
        for grp in _groups(sizes, C, int(self.history), rows=0 if blocked else XT.shape[0]):
            mem = [members[i] for i in grp]
            ks = [sizes[i] for i in grp]
            kg = max(ks)
            alphas = [problems_list[c][j][1] for c, j in mem]
            keys = [(c, a) for (c, _), a in zip(mem, alphas)]
            used = {key: (rows[:kg], lo[:kg, :kg]) for key, (rows, lo) in factors.items() if key in set(keys)}
            obj = _Objective(XT[:kg] if blocked else XT, data.y, C, ks, alphas, keys, used, blocked=blocked)
            theta = torch.zeros((len(mem), obj.M), dtype=data.X.dtype, device=data.X.device)
            started = np.zeros(len(mem), dtype=bool)
            for i, g in enumerate(grp):
                if warm[g] is not None:  # V = L^T W for this problem's own factor (W = L^{-T} V)
                    W0, b0 = warm[g]
                    k = ks[i]
                    lo = used[keys[i]][1][:k, :k]
                    W0 = torch.as_tensor(np.asarray(W0), dtype=lo.dtype, device=lo.device)
                    theta[i, : k * C] = (lo.T @ W0).reshape(-1)
                    theta[i, obj.kmax * C :] = torch.as_tensor(np.asarray(b0), dtype=lo.dtype, device=lo.device)
                    started[i] = True
            theta, its = batched_lbfgs(obj, theta, max_iter=int(self.max_iter), tol=float(self.tol),
                                       history=int(self.history), gamma0=float(C), ftol=float(self.ftol),
                                       min_iter=np.where(started, 2, 0))
            W, b = obj.weights(theta, np.arange(len(mem)))
            Wn, bn = W.double().cpu().numpy(), b.double().cpu().numpy()
            train = obj.evaluate(theta, XT[:kg] if blocked else XT, data.y, loss=False)[0]
            val = (obj.evaluate(theta, XvT[:kg] if blocked else XvT, data.y_val, loss=False)
                   if XvT is not None else None)
            for i, ((c, j), k) in enumerate(zip(mem, ks)):
                o = out[c]
                o.W[j], o.b[j], o.n_iter[j], o.train_accuracy[j] = Wn[i, :k], bn[i], its[i], train[i]
                if val is not None:
                    o.val_accuracy[j] = val[0][i]


class _Collected:
    """A chain's results, filled problem by problem (possibly by several fits)."""

    def __init__(self, P: int, C: int):
        self.W, self.b = [None] * P, np.zeros((P, C))
        self.train_accuracy, self.val_accuracy = np.zeros(P), np.full(P, np.nan)
        self.n_iter = np.zeros(P, dtype=np.int64)

    def chain_fit(self) -> ChainFit:
        return ChainFit(W=self.W, b=self.b, train_accuracy=self.train_accuracy, val_accuracy=self.val_accuracy,
                        n_iter=self.n_iter)
