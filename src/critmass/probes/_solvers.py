"""The solver registry: the one list of probe solvers that the CLI, sweeps, ``profile``, the parallel fitter and
the result tables read.

A solver is an estimator class (a scikit-learn classifier over column subsets) plus what the pipeline
needs to know about it, declared on the class:

* ``family``: ``'linear'`` (a :class:`~critmass.probes.BaseProbe`: a penalty grid chosen on validation,
  weights per subset) or ``'neighbours'`` (kNN-style: nothing learned but the settings chosen on
  validation; its rows fill the ``knn_*`` / ``recall_at_*`` columns);
* ``forkable``: its fits may run in forked single-thread worker processes (``n_jobs > 1``), which pays
  for solvers dominated by small tensor operations (the L-BFGS probes) but not for BLAS-bound ones;
* ``score_label``: what the ``test_accuracy`` column means for it (printed by ``critmass probe``);
* the options it takes: its constructor parameters other than the ones :func:`~critmass.probes.run_probes`
  sets itself (:data:`RUN_PARAMS`), listed by :func:`solver_spec`.

The registry itself imports nothing heavy, so config validation (``critmass sweep`` configs) can list the
names without importing torch: the built-in solvers are registered by ``'module:Class'`` and imported on
first use. A new solver is one file (its class) plus one call::

    from critmass.probes import BaseProbe, register_solver

    @register_solver("toy", family="linear")
    class ToyProbe(BaseProbe):
        ...
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass

from .._registry import Registry
from ..exceptions import ConfigError, SpecError

__all__ = ["SOLVERS", "FAMILIES", "RUN_PARAMS", "SolverSpec", "register_solver", "solver_spec", "list_solvers",
           "solver_registration", "ensure_solver"]

#: What run_probes calls on every solver's estimator (BaseProbe and KNNProbe implement them).
_RUN_METHODS = ("_run_fit", "_row_values", "_check_options")
_MISSING = object()

FAMILIES = ("linear", "neighbours")

#: Estimator parameters that :func:`critmass.probes.run_probes` sets itself (from the plan, its own
#: arguments or the split): never solver options. ``alphas`` has its own argument / flag.
RUN_PARAMS = ("subsets", "random_state", "val_fraction", "refit", "device", "alphas")


@dataclass(frozen=True)
class SolverSpec:
    """What the pipeline knows of one registered solver (:func:`solver_spec`)."""

    name: str
    estimator: type
    family: str
    forkable: bool
    score_label: str
    options: tuple[str, ...]  # the solver_options it takes (constructor parameters not in RUN_PARAMS)

    @property
    def has_penalty(self) -> bool:
        """Whether it searches a penalty grid (``alphas``) chosen on validation."""
        return "alphas" in inspect.signature(self.estimator.__init__).parameters


class _SolverRegistry(Registry, Mapping):
    """A :class:`~critmass._registry.Registry` of estimator classes that is also a read-only mapping
    ``name -> class`` (``SOLVERS['logistic'] is LogisticProbe``), importing lazily registered classes on
    first use. ``get(name)`` raises a one-line :class:`~critmass.exceptions.SpecError` for an unknown name;
    ``get(name, default)`` returns ``default`` instead, as a dict's."""

    def get(self, name: str, default=_MISSING) -> type:
        if default is not _MISSING and name not in self._entries:
            return default
        entry = super().get(name)
        if isinstance(entry, str):  # 'module:Class', imported on first use (its module registers nothing)
            module, _, attr = entry.partition(":")
            try:
                entry = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as err:
                raise SpecError(f"solver {name!r} is registered as {self._entries[name]!r}, which cannot be "
                                f"imported ({type(err).__name__}: {err}); fix its register_solver call") from None
            _check_run_methods(name, entry)
            self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> type:
        return self.get(name)

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self):
        return self.names()

    def items(self):
        return [(n, self.get(n)) for n in self.names()]

    def values(self):
        return [self.get(n) for n in self.names()]

    __contains__ = Registry.__contains__

    def unregister(self, name: str) -> None:
        """Remove a solver (tests register toy solvers and take them away again)."""
        self._entries.pop(name, None)
        self._docs.pop(name, None)
        _META.pop(name, None)


#: Every probe solver by name (a mapping name -> estimator class).
SOLVERS: _SolverRegistry = _SolverRegistry("solver")
_META: dict[str, dict] = {}


def register_solver(name: str, estimator=None, *, family: str, forkable: bool = False,
                    score_label: str = "test accuracy", doc: str = ""):
    """Register a probe solver under ``name``; as a decorator of the estimator class, or called with the class
    (or a ``'module:Class'`` string, imported on first use).

    Parameters
    ----------
    name : str
        The solver's name in ``run_probes(solver=...)``, ``critmass probe --solver`` and sweep configs.
    estimator : type or str, optional
        The estimator class; omit it to use the function as a class decorator.
    family : {'linear', 'neighbours'}
        How :func:`~critmass.probes.run_probes` drives it (see the module docstring).
    forkable : bool, default False
        Whether ``n_jobs='auto'`` may split its fits over forked worker processes.
    score_label : str, default 'test accuracy'
        What its ``test_accuracy`` column measures, in words.
    doc : str, optional
        One line for listings (default: the first line of the class docstring).
    """
    if family not in FAMILIES:
        raise ConfigError(f"solver family must be one of {', '.join(FAMILIES)}; got {family!r}")

    def deco(cls):
        if isinstance(cls, str):
            module, sep, attr = cls.partition(":")
            if not (sep and module and attr.isidentifier()):
                raise ConfigError(f"a solver registered by name must be 'package.module:Class'; got {cls!r}")
        else:
            _check_run_methods(name, cls)
        SOLVERS.register(name, doc=doc)(cls)
        _META[name] = {"family": family, "forkable": bool(forkable), "score_label": score_label}
        return cls

    return deco if estimator is None else deco(estimator)


def _check_run_methods(name: str, cls) -> None:
    missing = [m for m in _RUN_METHODS if not hasattr(cls, m)]
    if missing:
        raise ConfigError(f"solver {name!r}: {getattr(cls, '__name__', cls)} lacks {', '.join(missing)}; subclass "
                          "critmass.probes.BaseProbe (linear) or KNNProbe (neighbours)")


def solver_registration(name: str) -> dict | None:
    """How to register ``name`` again in another process (a sweep's spawned, Ray or SLURM workers): None for
    the built-in solvers (every process has them), else ``{'target': 'module:Class', family, forkable,
    score_label}``."""
    if name in _BUILTIN:
        return None
    cls = SOLVERS.get(name)
    return {"target": f"{cls.__module__}:{cls.__qualname__}", **_META[name]}


def ensure_solver(name: str, registration: dict | None) -> None:
    """Register ``name`` from :func:`solver_registration`'s record when this process does not know it yet."""
    if name in SOLVERS or not registration:
        return
    register_solver(name, registration["target"], family=registration["family"],
                    forkable=registration.get("forkable", False),
                    score_label=registration.get("score_label", "test accuracy"))


def solver_spec(name: str) -> SolverSpec:
    """The :class:`SolverSpec` of a registered solver; an unknown name raises a one-line
    :class:`~critmass.exceptions.SpecError` listing the valid ones."""
    cls = SOLVERS.get(name)
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    options = tuple(p for p in params if p not in RUN_PARAMS and p not in getattr(cls, "_run_fixed", ()))
    return SolverSpec(name, cls, options=options, **_META[name])


def list_solvers(family: str | None = None) -> list[str]:
    """Names of the registered solvers (of one ``family`` when given), in registration order."""
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"solver family must be one of {', '.join(FAMILIES)}; got {family!r}")
    return [n for n in SOLVERS.names() if family is None or _META[n]["family"] == family]


# The built-in solvers, by 'module:Class' so that listing their names imports no torch.
register_solver("logistic", "critmass.probes._logistic:LogisticProbe", family="linear", forkable=True,
                doc="multinomial L2 logistic regression (batched L-BFGS, penalty path)")
register_solver("ridge", "critmass.probes._ridge:RidgeProbe", family="linear",
                doc="closed-form ridge classifier from one Gram matrix")
register_solver("sgd", "critmass.probes._sgd:SGDProbe", family="linear",
                doc="the paper's SGD protocol (best-validation checkpoint)")
register_solver("knn", "critmass.probes._knn:KNNProbe", family="neighbours", score_label="kNN accuracy",
                doc="k-nearest-neighbour accuracy (k and metric chosen on validation)")
register_solver("retrieval", "critmass.probes._retrieval:RetrievalProbe", family="neighbours",
                score_label="recall@1", doc="recall@k and mAP of same-label gallery rows")
_BUILTIN = frozenset(SOLVERS.names())
