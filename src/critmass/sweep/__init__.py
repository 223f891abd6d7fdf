"""Sweeps: the paper's grid (models x layers x datasets x selectors x fractions x seeds x solvers) from one
YAML config, split into keyed units that run locally, on Ray or on Slurm, resume after a kill and
recompute only what a config change touches.

* Optional sections add unit kinds: ``profile`` (every stage of a model, one extraction pass),
  ``neurons`` (which neurons a ranking picks, their stability and overlap across datasets), ``inversion``
  (partial inversion of a few images per dataset) and ``export`` (the critical-mass subset as a slim model,
  with what it saves); their tables are merged into the run directory (:data:`EXTRA_TABLES`).
* :func:`load_config` / :class:`SweepConfig`: the validated config (errors name key and line).
* :func:`plan_sweep` / :class:`Plan`: the units and which of them are done.
* :func:`run_sweep` / :class:`SweepResult`: run what is not done and merge the shards into
  ``results.parquet``, ``per_class.parquet`` and ``cka.parquet``.
* :class:`LocalExecutor`, :class:`RayExecutor`, :class:`SlurmExecutor`: the backends, registered by name
  (:func:`register_executor`, :func:`list_executors`); a new backend is one module with one registered
  :class:`Executor` subclass, imported here.
"""

from ._config import SweepConfig, load_config
from ._backends import Executor, list_executors, register_executor
from ._executors import LocalExecutor, RayExecutor, SlurmExecutor, make_executor  # registers local, ray, slurm
from ._plan import (
    KINDS,
    CkaUnit,
    ExportUnit,
    ExtractUnit,
    InversionUnit,
    NeuronsUnit,
    Plan,
    ProbeUnit,
    ProfileUnit,
    Unit,
    model_modality,
    neuron_rankings,
    plan_sweep,
    shape_model,
)
from ._run import EXTRA_TABLES, SweepResult, merge_shards, run_sweep
from ._units import execute_unit

__all__ = [
    "EXTRA_TABLES",
    "KINDS",
    "CkaUnit",
    "ExportUnit",
    "InversionUnit",
    "NeuronsUnit",
    "ProfileUnit",
    "model_modality",
    "neuron_rankings",
    "shape_model",
    "Executor",
    "ExtractUnit",
    "LocalExecutor",
    "Plan",
    "ProbeUnit",
    "RayExecutor",
    "SlurmExecutor",
    "SweepConfig",
    "SweepResult",
    "Unit",
    "execute_unit",
    "list_executors",
    "load_config",
    "make_executor",
    "merge_shards",
    "plan_sweep",
    "register_executor",
    "run_sweep",
]
