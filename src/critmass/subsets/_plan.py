"""One definition of every selector's subsets, shared by the probes and by CKA.

:func:`plan_subsets` fits each selector once per seed (deterministic selectors once) on the *fit rows*
(train minus the carved validation rows, :func:`probe_fit_rows`) and returns, per (selector, seed), the
subsets of every size in raw feature units (:class:`FittedSubset`):

* column selectors (``random``, ``prefix``, ``norm-*``, ``all``) are fitted on the raw fit rows and give
  nested column indices ``order_[:k]``;
* projection selectors (``pca``, ``pca-least``, ``randproj``, ``randproj-uniform``) are fitted on the
  fit rows standardised as the probes standardise them (``standard_scale``: mean ``mu``, scale
  ``sigma``), and their k-dimensional view is expressed back in raw units::

      ((X - mu) / sigma - m) @ V[:, :k]  ==  (X - mean) @ components[:, :k]
      with  components = V / sigma[:, None],  mean = mu + sigma * m

  (``m`` is the selector's own mean in the standardised space). The projected columns are not rescaled
  again, so a projection onto all D directions is an invertible map of the full layer's probe input.

``critmass probe`` saves exactly these arrays (``weights/<selector>-seed<seed>.npz``: ``indices_<k>``, or
``components`` and ``mean``) and ``critmass cka`` computes CKA of exactly these subsets, so rows of
``results.parquet`` and ``cka.parquet`` with the same selector and seed mean the same subset.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._defaults import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED
from .._validation import check_fraction, resolve_sizes
from ..exceptions import ConfigError
from ._selectors import make_selector

__all__ = ["FittedSubset", "fit_selector", "plan_subsets", "probe_fit_rows", "size_fractions"]


@dataclass
class FittedSubset:
    """The subsets of one selector and seed at every size, in raw feature units.

    ``sizes[i]`` neurons (or dimensions) stand for the fractions ``fractions[i]``. Column selectors set
    ``indices`` (``indices[i]`` = the first ``sizes[i]`` entries of one ordering); projections set
    ``components`` (``(D, max(sizes))`` float64) and ``mean`` (``(D,)``): the k-dimensional view of raw
    features ``X`` is ``(X - mean) @ components[:, :k]``. ``deterministic`` selectors do not depend on
    the seed (fitted once, under the first seed).
    """

    selector: str
    seed: int
    deterministic: bool
    sizes: list
    fractions: list
    indices: list | None = None
    components: np.ndarray | None = None
    mean: np.ndarray | None = None

    @property
    def is_projection(self) -> bool:
        return self.components is not None

    def transform(self, X, k: int) -> np.ndarray:
        """The k-dimensional view of raw features ``X`` that the probes see (before their own scaling of
        column subsets), float64."""
        if k not in self.sizes:
            raise ConfigError(f"size {k} is not one of the planned sizes {self.sizes} of selector {self.selector!r}")
        if self.is_projection:
            return (np.asarray(X, dtype=np.float64) - self.mean) @ self.components[:, :k]
        return np.asarray(X, dtype=np.float64)[:, self.indices[self.sizes.index(k)]]


def size_fractions(fractions, n_features: int, n_neurons=None) -> dict[int, list[float]]:
    """``{k: [fractions giving k]}`` for fractions in (0, 1] (``k = max(1, round(f D))``) and integer
    neuron counts (recorded as fraction ``k / D``), in either ``fractions`` or ``n_neurons``."""
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (Sequence, np.ndarray)):
        raise ConfigError(f"fractions must be a list of numbers in (0, 1]; got {fractions!r}")
    items = list(fractions) + [int(k) for k in (n_neurons or [])]
    out: dict[int, list[float]] = {}
    for f, k in zip(items, resolve_sizes(items, n_features)):
        frac = k / n_features if isinstance(f, numbers.Integral) and not isinstance(f, bool) else check_fraction(f)
        out.setdefault(k, [])
        if frac not in out[k]:
            out[k].append(frac)
    if not out:
        raise ConfigError("no subset sizes: pass at least one fraction in (0, 1] or n_neurons")
    return out


def probe_fit_rows(y_train, *, has_val: bool, val_fraction=DEFAULT_VAL_FRACTION, val_seed=DEFAULT_VAL_SEED):
    """The training rows the probes (and so the selectors) are fitted on, as ``run_probes`` defines them.

    Returns ``(rows, carved)``: ``rows`` is ``None`` for every train row (the feature set has its own
    ``val`` split, or ``val_fraction`` is 0), else train minus the seeded, stratified ``val_fraction``
    carved by :func:`critmass.data.train_val_indices`; ``carved`` is the share actually held out
    (0.0 when none).
    """
    if has_val or not val_fraction:
        return None, 0.0
    from ..data import train_val_indices

    rows, _ = train_val_indices(np.asarray(y_train), float(val_fraction), seed=int(val_seed))
    return rows, float(val_fraction)


def _standard_space(X_fit):
    from .._standardize import standard_scale  # the probes' standardisation, so both paths share it

    return standard_scale([X_fit], [None])


def fit_selector(name: str, seed: int, X_fit, size_fracs: dict, *, scale=None, y_fit=None) -> FittedSubset:
    """Fit one selector for one seed on the fit rows ``X_fit`` and return its subsets of the planned sizes.

    Parameters
    ----------
    name : str
        A selector name (:func:`critmass.subsets.list_selectors`).
    seed : int
        Its ``random_state``.
    X_fit : array-like of shape (n_fit, D)
        The raw fit rows (see :func:`probe_fit_rows`).
    size_fracs : dict
        ``{k: [fractions]}`` from :func:`size_fractions`; ``'all'`` always gives ``k = D`` (fraction 1).
    scale : (mean, sigma), optional
        The probes' standardisation of ``X_fit`` (computed when a projection needs it and none is given).
    y_fit : array-like of shape (n_fit,), optional
        The labels of the fit rows, for the supervised selectors (``requires_y``; refused without them).
    """
    d = int(X_fit.shape[1])
    sel = make_selector(name, random_state=seed)
    deterministic = bool(type(sel).deterministic)
    if sel.is_projection:
        mu, sigma = scale if scale is not None else _standard_space(X_fit)
        sel.fit((np.asarray(X_fit, dtype=np.float64) - mu) / sigma)
    else:
        sel.fit(X_fit, y_fit) if sel.requires_y else sel.fit(X_fit)
    ks = [d] if name == "all" else [k for k in sorted(size_fracs) if k <= sel.max_size]
    if not ks:
        raise ConfigError(f"selector {name!r} offers at most {sel.max_size} dimensions; pass smaller sizes")
    fracs = [[1.0] if name == "all" else list(size_fracs[k]) for k in ks]
    if sel.is_projection:
        comps = np.asarray(sel.components_[:, : max(ks)], dtype=np.float64) / sigma[:, None]
        return FittedSubset(name, int(seed), deterministic, ks, fracs, components=comps,
                            mean=mu + sigma * np.asarray(sel.mean_, dtype=np.float64))
    order = np.asarray(sel.order_)
    return FittedSubset(name, int(seed), deterministic, ks, fracs, indices=[order[:k].copy() for k in ks])


def plan_subsets(selectors: Sequence[str], seeds: Sequence[int], size_fracs: dict, X_fit, y_fit=None
                 ) -> list[FittedSubset]:
    """Fit every selector for every seed (deterministic selectors once, under ``seeds[0]``) on ``X_fit``.

    The one planner of the probes (:func:`critmass.probes.run_probes`) and of the CKA curve
    (:func:`critmass.similarity.cka_curve`); see the module docstring for what the subsets are. The
    probes' standardisation of ``X_fit`` is computed once, when the first projection needs it.
    ``y_fit`` (the fit rows' labels) goes to the supervised selectors, which are refused without it.
    Unknown selector names, and supervised selectors without labels, fail before anything is fitted.
    """
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("seeds is empty; pass at least one seed")
    protos = {name: make_selector(name) for name in selectors}
    need_y = [name for name, p in protos.items() if p.requires_y]
    if need_y and y_fit is None:
        raise ConfigError(f"selector(s) {', '.join(need_y)} rank neurons by the task's labels and got none; pass "
                          "the fit rows' labels (plan_subsets(..., y_fit); cka_curve(..., y=)), or use label-free "
                          "selectors")
    if y_fit is not None and len(y_fit) != X_fit.shape[0]:
        raise ConfigError(f"y_fit has {len(y_fit)} labels but X_fit has {X_fit.shape[0]} rows; pass the fit rows' "
                          "labels")
    scale = None
    out = []
    for name in selectors:
        if protos[name].is_projection and scale is None:
            scale = _standard_space(X_fit)
        for seed in ([seeds[0]] if type(protos[name]).deterministic else seeds):
            out.append(fit_selector(name, seed, X_fit, size_fracs, scale=scale, y_fit=y_fit))
    return out
