"""The sweep config: a YAML file validated by pydantic, refused with the key and line of every error.

A config names the grid (models x layers x datasets x selectors x fractions x seeds x solvers), the
CKA cells, where results go and how units are executed. Everything is checked before any work runs:
unknown keys, wrong types, fractions outside (0, 1], unknown selectors / solvers / spec prefixes,
duplicate entries, missing weights files or data roots. Each error is reported as
``FILE line N: path.to.key: what is wrong (closest: ...)``, all of them on one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .._config import dotted as _dotted
from .._config import format_errors, read_config
from .._config import resolve_path as _resolve_path
from .._defaults import (
    DEFAULT_FRACTIONS,
    DEFAULT_ON_CONSTANT,
    DEFAULT_SEEDS,
    DEFAULT_VAL_FRACTION,
    DEFAULT_VAL_SEED,
    parse_seeds,
)
from .._validation import check_fraction, closest
from ..exceptions import ConfigError, CritmassError
from ._backends import _one_of, list_executors

__all__ = [
    "CkaOptions",
    "DatasetEntry",
    "ExecutorOptions",
    "ExportOptions",
    "InversionOptions",
    "NeuronsOptions",
    "ProfileOptions",
    "ModelEntry",
    "ProbeOptions",
    "Resources",
    "SweepConfig",
    "load_config",
]

_PAPER_FRACTIONS = DEFAULT_FRACTIONS  # the one grid of critmass._defaults
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

Split = Literal["train", "val", "test"]
Fraction = Annotated[float, AfterValidator(lambda v: check_fraction(v))]
Selector = Annotated[str, AfterValidator(lambda v: _check_selector(v))]
Solver = Annotated[str, AfterValidator(lambda v: _check_solver(v))]
ExecutorKind = Annotated[str, AfterValidator(lambda v: _check_executor(v))]


def _check_device(value: str) -> str:
    if not _DEVICE.match(str(value)):
        raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N; got {value!r}")
    return str(value)


def _unique(values: list, what: str) -> list:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} is listed twice; list each once")
        seen.add(v)
    return values


class _Section(BaseModel):
    # Unknown keys are refused (a typo must not silently fall back to a default).
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelEntry(_Section):
    """One backbone of the grid: a spec, its weights and the layers to read."""

    spec: str = Field(description="Model spec: timm:NAME, torchvision:NAME, hf:DIR, sbert:DIR or an offline alias.")
    name: str | None = Field(None, description="Label in the result tables (default: the spec); must be unique.")
    weights: Path | None = Field(None, description="Local state dict (.pth/.pt/.safetensors) for the architecture.")
    pretrained: bool = Field(True, description="Load the source's pretrained weights (ignored with `weights`).")
    layers: list[str] = Field(default_factory=lambda: ["penultimate"], min_length=1,
        description="Layers to extract: penultimate or module names.")
    pooling: str = Field("auto", description="Pooling of conv maps / tokens: auto, avg, max, flatten, cls, mean.")
    image_size: PositiveInt | None = Field(None, description="Override the input resolution (px).")
    max_seq_length: PositiveInt | None = Field(None,
        description="Text models: truncate inputs to this many tokens (default: the model's own).")
    preprocessing: dict[str, Any] | None = Field(None,
        description="onnx: models: input options over the file's sidecar (mean, std, scale, bgr, channels_last, "
                    "size), as `critmass extract --mean --std --scale --bgr --nhwc`.")
    max_width: PositiveInt | None = Field(None,
        description="A pooled layer wider than this (e.g. a flattened conv map) keeps this many seeded random "
                    "units (the paper's sampling of flattened maps); default: no cap.")
    width_seed: NonNegativeInt = Field(0, description="Seed of the units kept by max_width.")
    batch_size: PositiveInt | None = Field(None,
        description="Extraction batch size of this model (default: the top-level one).")
    datasets: list[str] | None = Field(None, min_length=1,
        description="Names of the datasets this model runs on (default: every dataset); e.g. image models on "
                    "the image tasks and text encoders on the text tasks of one sweep.")

    def runs_on(self, dataset_label: str) -> bool:
        return self.datasets is None or dataset_label in self.datasets

    @field_validator("spec")
    @classmethod
    def _spec(cls, v: str) -> str:
        from .._registry import parse_spec
        from ..models import ALIASES, SOURCES

        parse_spec(v, kind="model", sources=tuple(SOURCES.names()), aliases=tuple(ALIASES))
        return v.strip()

    @model_validator(mode="after")
    def _loading_options(self):
        """Options of one kind of model, refused here (with the key) for a spec that is not of that kind."""
        from ..models import ALIASES

        source = self.spec.split(":", 1)[0] if ":" in self.spec else ALIASES[self.spec][1]
        if self.preprocessing and source != "onnx":
            raise ValueError(f"preprocessing applies to onnx: models; {self.spec} takes its preprocessing from its "
                             "own config (image_size still applies)")
        if self.max_seq_length is not None and source in ("timm", "torchvision"):  # onnx: may be a text graph
            raise ValueError(f"max_seq_length applies to text models; {self.spec} reads images")
        if self.preprocessing:
            from ..exceptions import ConfigError
            from ..models import check_preprocessing

            try:
                check_preprocessing(self.preprocessing, where="preprocessing")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    @field_validator("pooling")
    @classmethod
    def _pooling(cls, v: str) -> str:
        from ..models import POOLINGS

        if v not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {v!r}{closest(v, POOLINGS)}")
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[str]) -> list[str]:
        return _unique(v, "layer")

    @property
    def label(self) -> str:
        return self.name or self.spec


class DatasetEntry(_Section):
    """One downstream dataset: a spec, where its files are and which splits to extract."""

    spec: str = Field(description="Dataset spec: torchvision:NAME, imagefolder:DIR, hf:NAME, npz:FILE or an alias.")
    name: str | None = Field(None, description="Label in the result tables (default: the spec); must be unique.")
    root: Path | None = Field(None, description="Data root of torchvision datasets.")
    splits: list[Split] = Field(default_factory=lambda: ["train", "test"], min_length=1,
        description="Splits to extract (probes need train and test).")
    max_samples: PositiveInt | dict[Split, PositiveInt] | None = Field(
        None, description="A seeded stratified subset of this many samples per split (or {split: n}).")
    seed: NonNegativeInt = Field(0, description="Seed of the sub-sampling and of a carved val split.")
    val_fraction: float = Field(0.1, gt=0, lt=1,
        description="Share of train carved as 'val' when the dataset has none.")
    download: bool = Field(False, description="Let torchvision download the dataset into root.")

    @field_validator("spec")
    @classmethod
    def _spec(cls, v: str) -> str:
        from .._registry import parse_spec
        from ..data import ALIASES, SOURCES

        parse_spec(v, kind="dataset", sources=tuple(SOURCES.names()), aliases=tuple(ALIASES))
        return v.strip()

    @field_validator("splits")
    @classmethod
    def _splits(cls, v: list[str]) -> list[str]:
        return _unique(v, "split")

    @property
    def label(self) -> str:
        return self.name or self.spec


class ProbeOptions(_Section):
    """Options of :func:`critmass.probes.run_probes` shared by every probe unit."""

    alphas: NonNegativeFloat | list[NonNegativeFloat] | None = Field(None,
        description="Penalty grid (default: the solver's).")
    val_fraction: float = Field(DEFAULT_VAL_FRACTION, ge=0, lt=1,
        description="Validation share carved from train when there is no val split.")
    val_seed: NonNegativeInt = Field(DEFAULT_VAL_SEED, description="Seed of the carved validation split.")
    refit: bool = Field(False, description="Refit on train + val after choosing the penalty.")
    save_weights: bool = Field(True, description="Keep the probe weights in each unit's shard directory.")
    device: str = Field("auto", description="Device of the probes (auto: CUDA when the worker has one).")
    solver_options: dict[str, Any] = Field(default_factory=dict,
        description="Extra estimator parameters, e.g. {max_iter: 50}.")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _check_device(v)


class CkaOptions(_Section):
    """Subset-vs-full CKA cells (``cka: false`` turns them off)."""

    enabled: bool = Field(True, description="Compute CKA of every selector x fraction x seed against the full layer.")
    debiased: bool = Field(False, description="Also the debiased estimator.")
    split: Split = Field("train", description="Split CKA is computed on (selectors are fitted on train).")
    on_constant: Literal["raise", "nan"] = Field(DEFAULT_ON_CONSTANT,
        description="What a subset of only constant neurons gives.")
    selectors: list[Selector] | None = Field(None,
        description="Selectors of the CKA cells (default: the top-level ones).")

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, v):
        return {"enabled": v} if isinstance(v, bool) else v

    @field_validator("selectors")
    @classmethod
    def _selectors(cls, v):
        return None if v is None else _unique(v, "selector")


class ProfileOptions(_Section):
    """Depth: DR, critical mass and CKA of every stage of each model on each dataset (one unit per model and
    dataset; the stages are extracted in the same pass as the model's layers)."""

    layers: str | list[str] = Field("stages", description="stages (the model's stages, `critmass layers MODEL "
                                    "--stages`), all (every block) or a list of layer names.")
    selectors: list[Selector] = Field(default_factory=lambda: ["random"], min_length=1,
        description="Selectors probed at every layer (random always).")
    fractions: list[Fraction] | None = Field(None, description="Fractions per layer (default: the top-level ones).")
    seeds: list[NonNegativeInt] | None = Field(None, description="Seeds per layer (default: the top-level ones).")
    solver: Solver = Field("logistic", description="The probe solver of the depth table.")
    delta: float = Field(0.9, gt=0, le=1, description="Share of the full layer's accuracy for DR.")
    n_boot: NonNegativeInt = Field(1000, description="Bootstrap resamples of the seeds for the DR CI.")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, v):
        if v is None:
            return None
        try:
            return parse_seeds(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class NeuronsOptions(_Section):
    """Which neurons: each neuron ranking's top neurons per dataset, their bootstrap stability and their overlap
    across the datasets of one model and layer (one unit per model, layer, solver and ranking)."""

    selectors: list[Selector] | None = Field(None, description="Neuron rankings (default: every top-level "
                                             "selector that ranks neurons: fscore, greedy, probe-weight, ...).")
    k: list[PositiveInt] = Field(default_factory=lambda: [8, 32], min_length=1,
        description="Subset sizes of the stability and the overlap; the largest is the top-k listed.")
    n_boot: NonNegativeInt = Field(20, description="Bootstrap resamples of the fit rows (0: no stability).")
    random_state: NonNegativeInt = Field(0, description="Seed of the bootstrap.")


class InversionOptions(_Section):
    """Partial inversion of a few images of each dataset (image models; one unit per model and dataset)."""

    layer: str = Field("penultimate", description="Layer to invert.")
    selectors: list[str] = Field(default_factory=lambda: ["random", "norm-max", "norm-min"], min_length=1,
        description="Column selectors of the matched neurons.")
    fractions: list[Fraction] = Field(default_factory=lambda: [0.05, 0.2, 0.5], min_length=1,
        description="Fractions of the layer matched.")
    n_images: PositiveInt = Field(3, description="Images per dataset (the first of its test split).")
    split: Split = Field("test", description="Split the images are taken from.")
    steps: PositiveInt = Field(200, description="Optimisation steps (the paper: 5000).")
    optimizer: Literal["normgrad", "sign", "adam"] = Field("normgrad", description="normgrad (the paper's), "
                                                           "sign or adam.")
    image_size: PositiveInt | None = Field(None, description="Input size (default: the model's own).")
    seeds: list[NonNegativeInt] = Field(default_factory=lambda: [0], min_length=1,
        description="Seeds of the noise images and the random masks.")

    @field_validator("selectors")
    @classmethod
    def _selectors(cls, v):
        from ..invert import check_selector

        try:
            return [check_selector(s) for s in _unique(v, "selector")]
        except CritmassError as exc:
            raise ValueError(str(exc)) from None


class ExportOptions(_Section):
    """Spend it: export the critical-mass subset of each model and dataset and measure what it saves."""

    selector: Selector = Field("random", description="Whose critical mass is exported (a column selector).")
    solver: Solver | None = Field(None, description="Whose probe (default: the first top-level solver).")
    delta: float = Field(0.9, gt=0, le=1, description="Share of the full layer's accuracy that sets k*.")
    prune: bool = Field(True, description="Image models: remove the unselected channels from the backbone "
                        "(torch-pruning); text models export the reduction and head alone.")
    n_boot: NonNegativeInt = Field(1000, description="Bootstrap resamples of the accuracy-cost CI.")


def _optional_section(v):
    """``false`` / ``null`` turns a section off; ``true`` or ``{}`` turns it on with its defaults."""
    if v is False or v is None:
        return None
    return {} if v is True else v


class Resources(_Section):
    """What one unit asks of a Ray or Slurm worker."""

    cpus: PositiveInt = Field(1, description="CPU cores per unit.")
    gpus: NonNegativeFloat | None = Field(
        None, description="GPUs per unit (fractions pack several units on one GPU); default: 1 for extraction "
        "units when the device is cuda (ray: also auto on a cluster with GPUs), else 0.")


class SlurmOptions(_Section):
    """Extra submitit parameters per unit kind (``slurm_partition``, ``timeout_min``, ``mem_gb``, ...)."""

    extract: dict[str, Any] = Field(default_factory=dict, description="Parameters of the extraction job arrays.")
    analysis: dict[str, Any] = Field(default_factory=dict, description="Parameters of the probe / CKA job arrays.")


class ExecutorOptions(_Section):
    """Where units run; ``critmass sweep --executor/--workers/--address`` override these."""

    kind: ExecutorKind = Field("local", description="A registered executor: local (processes), ray or slurm "
                               "(submitit) built in (critmass.sweep.list_executors()).")
    workers: PositiveInt | None = Field(None, description="Local worker processes (default: every core).")
    address: str | None = Field(None, description="Ray cluster address (default: RAY_ADDRESS or a local instance).")
    cluster: Literal["slurm", "local", "debug"] | None = Field(
        None, description="submitit cluster (default: slurm when available); local/debug run jobs on this machine.")
    extract: Resources = Field(default_factory=Resources, description="Resources of an extraction unit.")
    analysis: Resources = Field(default_factory=lambda: Resources(gpus=0),
        description="Resources of a probe or CKA unit.")
    slurm: SlurmOptions = Field(default_factory=SlurmOptions, description="Extra submitit parameters per unit kind.")


def _check_executor(kind: str) -> str:
    # The registry holds the names (critmass.sweep._backends); the message is pydantic's own for a choice.
    names = list_executors()
    if kind not in names:
        raise ValueError(f"Input should be {_one_of(names, quote=True)}; got {kind!r}")
    return kind


def _check_selector(name: str) -> str:
    from ..subsets import list_selectors

    valid = list_selectors()
    if name not in valid:
        raise ValueError(f"unknown selector {name!r}{closest(name, valid)}; valid: {', '.join(valid)}")
    return name


def _check_solver(name: str) -> str:
    from ..probes import list_solvers  # the solver registry (torch-free: names only)

    valid = list_solvers()
    if name not in valid:
        raise ValueError(f"unknown solver {name!r}{closest(name, valid)}; valid: {', '.join(valid)}")
    return name


class SweepConfig(_Section):
    """A whole study: the grid, the analysis options, the output directory and the executor.

    Relative paths are taken relative to the working directory of :func:`load_config` (or its
    ``base_dir``) and stored absolute, so workers on other machines see the same files.
    """

    name: str | None = Field(None, description="Name of the sweep (default: the config file's stem).")
    output: Path | None = Field(None, description="Run directory (default: runs/<name>).")
    cache: Path | None = Field(None,
        description="Feature cache (default: $CRITMASS_CACHE or ~/.cache/critmass/features).")
    device: str = Field("auto", description="Extraction device: auto, cpu, cuda, cuda:N.")
    batch_size: PositiveInt = Field(64, description="Extraction batch size (images per forward pass).")
    num_workers: NonNegativeInt | None = Field(None, description="DataLoader workers per extraction.")
    dtype: Literal["float32", "float16"] = Field("float32", description="Feature dtype on disk.")
    amp: Literal["bf16", "fp16"] | None = Field(None, description="Autocast during extraction (GPU).")
    models: list[ModelEntry] = Field(min_length=1, description="Backbones and their layers.")
    datasets: list[DatasetEntry] = Field(min_length=1, description="Downstream datasets.")
    selectors: list[Selector] = Field(default_factory=lambda: ["random"], min_length=1,
        description="Neuron selectors (critmass.subsets.list_selectors()).")
    fractions: list[Fraction] = Field(default_factory=lambda: list(_PAPER_FRACTIONS),
        description="Fractions of the layer in (0, 1] (default: the paper's 15).")
    n_neurons: list[PositiveInt] | None = Field(None, description="Absolute subset sizes, in addition to fractions.")
    seeds: list[NonNegativeInt] = Field(default_factory=lambda: parse_seeds(DEFAULT_SEEDS), min_length=1,
        description="Seeds of the random selectors (an int N means 0..N-1; default 5: 0..4).")
    solvers: list[Solver] = Field(default_factory=lambda: ["logistic"],
        description="Probe solvers, any registered (critmass.probes.list_solvers()); [] for CKA only.")
    codecs: list[str] = Field(default_factory=lambda: ["float32"], min_length=1,
        description="How the neighbour solvers (knn, retrieval) store the gallery vectors "
                    "(critmass.codecs: float32, float16, int8, binary, binary-rerank, pq, opq); every probe of "
                    "those solvers runs once per codec. The linear solvers fit float32 features.")
    probes: ProbeOptions = Field(default_factory=ProbeOptions, description="Probe options.")
    cka: CkaOptions = Field(default_factory=CkaOptions, description="CKA on/off and options.")
    executor: ExecutorOptions = Field(default_factory=ExecutorOptions, description="Execution backend.")
    profile: ProfileOptions | None = Field(None, description="Depth profile units (off unless given).")
    neurons: NeuronsOptions | None = Field(None, description="Which-neurons units (off unless given).")
    inversion: InversionOptions | None = Field(None, description="Partial-inversion units (off unless given).")
    export: ExportOptions | None = Field(None, description="Export-the-critical-mass units (off unless given).")

    @field_validator("profile", "neurons", "inversion", "export", mode="before")
    @classmethod
    def _sections(cls, v):
        return _optional_section(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _check_device(v)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, v):
        # The one seed rule of every command (critmass._defaults.parse_seeds), as a pydantic error.
        try:
            return parse_seeds(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("seeds", "fractions", "n_neurons")
    @classmethod
    def _no_repeats(cls, v, info):
        return None if v is None else _unique(v, info.field_name.rstrip("s"))

    @field_validator("selectors", "solvers")
    @classmethod
    def _no_repeated_names(cls, v, info):
        return _unique(v, info.field_name.rstrip("s"))

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, v):
        from ..codecs import parse_codecs

        try:
            return parse_codecs(_unique(v, "codec"))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _something_to_do(self):
        if not self.fractions and not self.n_neurons:
            raise ValueError("no subset sizes: give fractions (e.g. [0.1, 0.5, 1.0]) or n_neurons")
        if not self.solvers and not self.cka.enabled:
            raise ValueError("nothing to compute: solvers is empty and cka is off; add a solver or turn cka on")
        if self.codecs != ["float32"]:
            from ..probes import solver_spec

            if not any(solver_spec(s).family == "neighbours" for s in self.solvers):
                raise ValueError(f"codecs {self.codecs} apply to the neighbour solvers; add knn or retrieval to "
                                 "solvers, or drop codecs")
        return self

    _filename: str = PrivateAttr("<dict>")
    _lines: dict = PrivateAttr(default_factory=dict)

    # ------------------------------------------------------------------ derived values
    def error(self, path: tuple, msg: str) -> ConfigError:
        """A :class:`ConfigError` naming the config file, the line of ``path`` and the key."""
        lines = self._lines
        line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)
        where = f" line {line}" if line is not None else ""
        return ConfigError(f"invalid sweep config {self._filename}{where}: {_dotted(path)}: {msg}")

    @property
    def cka_selectors(self) -> list[str]:
        return list(self.cka.selectors or self.selectors)

    def resolved(self) -> dict:
        """The config with every default filled in, as plain JSON-able data."""
        return self.model_dump(mode="json")


# ------------------------------------------------------------------------------------------ loading
def _check_semantics(cfg: SweepConfig, lines: dict, filename: str, base: Path, check_paths: bool) -> SweepConfig:
    """Cross-entry checks pydantic cannot place on a line by itself: names, files, splits."""

    cfg._filename, cfg._lines = filename, lines

    def fail(path: tuple, msg: str):
        raise cfg.error(path, msg)

    cfg.output = _resolve_path(cfg.output, base)
    cfg.cache = _resolve_path(cfg.cache, base)
    for kind, entries in (("models", cfg.models), ("datasets", cfg.datasets)):
        seen: dict[str, int] = {}
        for i, e in enumerate(entries):
            if e.label in seen:
                fail((kind, i, "name" if e.name else "spec"),
                     f"{kind[:-1]} {e.label!r} is also entry {seen[e.label]}; give each entry a distinct `name:`")
            seen[e.label] = i
    labels = [d.label for d in cfg.datasets]
    for i, m in enumerate(cfg.models):
        for name in m.datasets or []:
            if name not in labels:
                fail(("models", i, "datasets"), f"dataset {name!r} is not one of this sweep's datasets "
                     f"({', '.join(labels)}){closest(name, labels)}; use a dataset's name (its spec unless it sets `name:`)")
    for e in (*cfg.models, *cfg.datasets):
        e.name = e.label  # the resolved config states every name
    for i, m in enumerate(cfg.models):
        m.weights = _resolve_path(m.weights, base)
        if check_paths and m.weights is not None and not m.weights.is_file():
            fail(("models", i, "weights"), f"weights file {str(m.weights)!r} does not exist; give the path to a "
                 ".pth/.pt/.safetensors state dict")
    for i, d in enumerate(cfg.datasets):
        d.root = _resolve_path(d.root, base)
        if check_paths and d.root is not None and not d.root.exists() and not d.download:
            fail(("datasets", i, "root"),
                 f"data root {str(d.root)!r} does not exist; fix the path or set download: true")
        if cfg.solvers and not {"train", "test"} <= set(d.splits):
            fail(("datasets", i, "splits"), f"probes need the train and test splits; got {d.splits}; add the missing "
                 "split(s) or set solvers: []")
        if cfg.cka.enabled and cfg.cka.split not in d.splits:
            fail(("datasets", i, "splits"), f"cka.split is {cfg.cka.split!r} but this dataset extracts {d.splits}; "
                 f"add {cfg.cka.split!r} or change cka.split")
        if cfg.profile is not None and not {"train", "test"} <= set(d.splits):
            fail(("datasets", i, "splits"), f"the profile section probes every stage, which needs the train and test "
                 f"splits; got {d.splits}; add the missing split(s) or drop profile:")
        if isinstance(d.max_samples, dict) and not set(d.max_samples) <= set(d.splits):
            extra = sorted(set(d.max_samples) - set(d.splits))
            fail(("datasets", i, "max_samples"),
                 f"max_samples names split(s) {extra} that are not in splits {d.splits}")
    _check_sections(cfg, fail)
    return cfg


def neuron_rankings(selectors) -> list[str]:
    """The selectors of a list that rank neurons by the data (what the which-neurons units read)."""
    from ..subsets import make_selector

    return [s for s in selectors if s not in ("all", "random", "prefix") and not make_selector(s).is_projection]


def _check_sections(cfg: SweepConfig, fail) -> None:
    """The optional sections read the probes' subsets: what they name must be probed."""
    from ..subsets import make_selector

    for section in ("neurons", "export"):
        if getattr(cfg, section) is not None and not cfg.solvers:
            fail((section,), f"{section} reads the probes' subsets, but solvers is empty; add a solver or drop {section}:")
        if getattr(cfg, section) is not None and not cfg.probes.save_weights:
            fail(("probes", "save_weights"), f"{section} reads the subsets the probes save; set save_weights: true "
                 f"or drop {section}:")
    if cfg.neurons is not None and cfg.solvers:
        rankings = neuron_rankings(cfg.selectors)
        if cfg.neurons.selectors is None and not rankings:
            fail(("neurons",), f"no selector of this sweep ranks neurons ({', '.join(cfg.selectors)}); add one such "
                 "as fscore, greedy or probe-weight to selectors, or drop neurons:")
        for j, sel in enumerate(cfg.neurons.selectors or []):
            if sel not in rankings:
                why = "is not one of this sweep's selectors" if sel not in cfg.selectors else "ranks no neurons"
                fail(("neurons", "selectors", j), f"{sel!r} {why}; the neuron rankings probed here: "
                     f"{', '.join(rankings) or 'none'}")
    if cfg.export is not None and cfg.solvers:
        e = cfg.export
        if e.selector not in cfg.selectors:
            fail(("export", "selector"), f"{e.selector!r} is not one of this sweep's selectors "
                 f"({', '.join(cfg.selectors)}); export one of them")
        if make_selector(e.selector).is_projection:
            fail(("export", "selector"), f"{e.selector!r} is a projection; export a subset of neurons (random, fscore, ...)")
        if e.solver is not None and e.solver not in cfg.solvers:
            fail(("export", "solver"), f"{e.solver!r} is not one of this sweep's solvers ({', '.join(cfg.solvers)})")
        from ..probes import solver_spec

        if solver_spec(e.solver or cfg.solvers[0]).family == "neighbours":
            fail(("export", "solver"), "export needs a linear probe head; give a linear solver (logistic, ridge, sgd)")


def load_config(source, *, base_dir=None, check_paths: bool = True) -> SweepConfig:
    """Read and validate a sweep config.

    Parameters
    ----------
    source : path, dict or SweepConfig
        A YAML file (parsed with ``yaml.safe_load`` semantics), a mapping with the same keys, or an
        already validated config (returned as is).
    base_dir : path, optional
        Directory relative paths in the config are resolved against (default: the working directory).
    check_paths : bool, default True
        Refuse ``weights`` files and data ``root`` directories that do not exist (``False`` validates a
        config on a machine without the data).

    Returns
    -------
    SweepConfig
        With absolute paths, ``name`` defaulting to the file's stem and ``output`` to ``runs/<name>``.

    Raises
    ------
    ConfigError
        Naming the file, line and key of every problem, e.g.
        ``invalid sweep config demo.yaml: line 7: models[0].weigths: unknown key (closest: weights); ...``.

    Examples
    --------
    >>> cfg = load_config({"models": [{"spec": "timm:resnet18"}], "datasets": [{"spec": "digits"}],
    ...                    "fractions": [0.1, 1.0], "output": "/tmp/run"})
    >>> cfg.models[0].layers, cfg.seeds, cfg.solvers
    (['penultimate'], [0, 1, 2, 3, 4], ['logistic'])
    """
    if isinstance(source, SweepConfig):
        return source
    base = Path(base_dir).expanduser().resolve() if base_dir is not None else Path.cwd()
    data, filename, stem, lines = read_config(source, kind="sweep", example="examples/demo.yaml",
                                              model_class=SweepConfig)
    stem = stem or "sweep"
    if data is None:
        raise ConfigError(f"sweep config {filename} is empty; it needs at least `models:` and `datasets:` "
                          "(see examples/demo.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"sweep config {filename} must be a mapping of keys (models:, datasets:, ...); "
                          f"got a {type(data).__name__}")
    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, data, lines, filename, root=SweepConfig)) from None
    except CritmassError as exc:  # a validator's own check escaped pydantic's wrapping
        raise ConfigError(f"invalid sweep config {filename}: {exc}") from None
    if cfg.name is None:
        cfg.name = stem
    if cfg.output is None:
        cfg.output = Path("runs") / cfg.name
    return _check_semantics(cfg, lines, filename, base, check_paths)
