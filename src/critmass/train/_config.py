"""The training config of ``critmass train``: YAML validated by pydantic, refused with the key and line.

The same rules as sweep configs (:mod:`critmass._config` reads both): unknown keys, wrong types and bad
values are reported as ``invalid train config FILE: line N: path.to.key: what is wrong (closest: ...)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .._config import dotted, format_errors, read_config, resolve_path
from .._validation import closest
from ..exceptions import ConfigError, CritmassError

__all__ = ["TrainConfig", "load_train_config", "ModelOptions", "DataOptions", "OptimOptions", "MatryoshkaOptions",
           "AdversarialOptions", "RUN_KEYS"]

#: Keys that say where and how fast a run goes, not what it trains: they may change between a kill and a resume.
RUN_KEYS = ("name", "output", "checkpoint_every", "threads", "device", "eval_batch_size")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelOptions(_Section):
    """The backbone: a timm architecture, its constructor kwargs, the penultimate width and the input size."""

    arch: str = Field("convnext_atto", description="timm architecture (timm.list_models()).")
    kwargs: dict[str, Any] = Field(default_factory=dict,
        description="timm constructor kwargs (JSON values), e.g. {depths: [1, 1, 1, 1], dims: [16, 32, 64, 128]}.")
    width: PositiveInt | None = Field(None, description="Penultimate width W: timm's head_hidden_size (a Linear to W "
                                      "neurons + GELU before the classifier; ConvNeXt and other NormMlp heads).")
    image_size: PositiveInt = Field(32, description="Input resolution (px); recorded in the checkpoint, so "
                                    "`critmass extract` uses it without --image-size.")

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        import timm

        v = v.strip().removeprefix("timm:")
        if not timm.is_model(v):
            raise ValueError(f"unknown timm architecture {v!r}{closest(v, timm.list_models())}")
        return v

    @field_validator("kwargs")
    @classmethod
    def _kwargs(cls, v: dict) -> dict:
        for key in ("num_classes", "head_hidden_size", "pretrained", "pretrained_cfg_overlay"):
            if key in v:
                raise ValueError(f"{key!r} is set by critmass train (num_classes from data.classes, head_hidden_size "
                                 "from model.width, the input size from model.image_size); remove it")
        try:
            json.dumps(v)
        except TypeError:
            raise ValueError("kwargs must be plain YAML values (numbers, strings, lists, mappings)") from None
        return v


class DataOptions(_Section):
    """The upstream task: a dataset spec, optionally a subset of its classes and of its samples."""

    spec: str = Field(description="Dataset spec: fashion-mnist, npz:FILE, imagefolder:DIR, torchvision:NAME, ...")
    root: Path | None = Field(None, description="Data root of torchvision datasets.")
    download: bool = Field(False, description="Let torchvision download the dataset into root.")
    classes: list[NonNegativeInt] | None = Field(None, min_length=2,
        description="Train on these class ids only (relabelled 0..K-1 in this order); default all.")
    max_samples: PositiveInt | None = Field(None, description="Seeded stratified subset of the training split.")
    test_max_samples: PositiveInt | None = Field(None, description="Seeded stratified subset of the test split.")
    seed: NonNegativeInt = Field(0, description="Seed of the sub-sampling (not of the training).")

    @field_validator("spec")
    @classmethod
    def _spec(cls, v: str) -> str:
        from .._registry import parse_spec
        from ..data import ALIASES, SOURCES

        parse_spec(v, kind="dataset", sources=tuple(SOURCES.names()), aliases=tuple(ALIASES))
        return v.strip()

    @field_validator("classes")
    @classmethod
    def _classes(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"a class is listed twice in {v}; list each once")
        return v


class OptimOptions(_Section):
    """Optimiser, schedule and length of the run."""

    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd (momentum, nesterov) or adamw.")
    lr: PositiveFloat = Field(0.05, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (adamw: beta1).")
    nesterov: bool = Field(True, description="Nesterov momentum (sgd).")
    weight_decay: NonNegativeFloat = Field(5e-4, description="Weight decay of every parameter.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="Learning-rate schedule after warm-up.")
    warmup_steps: NonNegativeInt = Field(0, description="Linear warm-up steps.")
    epochs: PositiveInt = Field(3, description="Passes over the training set.")
    batch_size: PositiveInt = Field(128, description="Images per step (the last partial batch of an epoch is dropped).")
    max_steps: PositiveInt | None = Field(None, description="Stop after this many steps (a cap on epochs x steps).")


class MatryoshkaOptions(_Section):
    """Matryoshka (MRL) training: one linear head per nested prefix of the penultimate, summed cross-entropy."""

    dims: list[PositiveInt] | None = Field(None, description="Prefix lengths (default 8, 16, ..., width).")
    weights: list[NonNegativeFloat] | None = Field(None, description="Weight of each prefix's loss (default 1).")

    @model_validator(mode="after")
    def _lengths(self):
        if self.dims is not None:
            if any(b <= a for a, b in zip(self.dims, self.dims[1:])):
                raise ValueError(f"dims must be strictly increasing; got {self.dims}")
            if self.weights is not None and len(self.weights) != len(self.dims):
                raise ValueError(f"weights has {len(self.weights)} entries but dims has {len(self.dims)}; give one "
                                 "weight per prefix")
        return self


class AdversarialOptions(_Section):
    """PGD adversarial training (torchattacks): every training batch is replaced by its PGD examples."""

    norm: Literal["Linf", "L2"] = Field("Linf", description="Threat model.")
    eps: PositiveFloat = Field(description="Budget in [0, 1] pixel units (Linf e.g. 0.03, L2 e.g. 0.5).")
    alpha: PositiveFloat | None = Field(None, description="Step size (default 2.5 * eps / steps).")
    steps: PositiveInt = Field(3, description="PGD steps per batch.")
    random_start: bool = Field(True, description="Start from a random point of the ball.")
    eval_samples: NonNegativeInt = Field(500, description="Test images whose PGD accuracy is reported at the end.")


class TrainConfig(_Section):
    """One training run of a backbone on an upstream task, with the factors of diffused redundancy."""

    name: str | None = Field(None, description="Name of the run (default: the config file's stem).")
    output: Path | None = Field(None, description="Run directory (default: runs/train/<name>-seed<seed>).")
    seed: NonNegativeInt = Field(0, description="Seed of the initialisation, data order, dropout and PGD starts.")
    model: ModelOptions = Field(default_factory=ModelOptions, description="The backbone.")
    data: DataOptions = Field(description="The upstream task.")
    optim: OptimOptions = Field(default_factory=OptimOptions, description="Optimiser and schedule.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout rate on the penultimate features.")
    decov: NonNegativeFloat = Field(0.0, description="DeCov strength alpha on the penultimate batch covariance.")
    matryoshka: MatryoshkaOptions | None = Field(None, description="Matryoshka training (true for the defaults).")
    adversarial: AdversarialOptions | None = Field(None, description="PGD adversarial training.")
    checkpoint_every: PositiveInt = Field(200, description="Steps between checkpoints (and at every epoch end).")
    threads: PositiveInt | None = Field(None, description="torch CPU threads (default: torch's).")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="cpu (bit-for-bit reproducible), cuda or auto.")
    eval_batch_size: PositiveInt = Field(512, description="Images per forward pass when evaluating.")

    @field_validator("matryoshka", mode="before")
    @classmethod
    def _mrl_bool(cls, v):
        if v is True:
            return {}
        return None if v is False else v

    _filename: str = PrivateAttr("<dict>")
    _lines: dict = PrivateAttr(default_factory=dict)

    def error(self, path: tuple, msg: str) -> ConfigError:
        """A :class:`ConfigError` naming the config file, the line of ``path`` and the key."""
        line = next((self._lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self._lines), None)
        where = f" line {line}" if line is not None else ""
        return ConfigError(f"invalid train config {self._filename}{where}: {dotted(path)}: {msg}")

    def resolved(self) -> dict:
        """Every key with its default filled in, as JSON data."""
        return self.model_dump(mode="json")

    def identity(self) -> dict:
        """What determines the trained weights: the resolved config without :data:`RUN_KEYS`."""
        return {k: v for k, v in self.resolved().items() if k not in RUN_KEYS}

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def _format_errors(exc: ValidationError, data, lines: dict, filename: str) -> str:
    """Each pydantic error with its YAML line and dotted key, joined into one line (as for sweep configs)."""
    return format_errors(exc, data, lines, filename, root=TrainConfig, kind_name="train")


def load_train_config(source, *, base_dir=None, seed: int | None = None, output=None) -> TrainConfig:
    """Read and validate a training config (a YAML path, a mapping or a :class:`TrainConfig`).

    ``seed`` and ``output`` override the config's. Relative paths resolve against ``base_dir``
    (default: the working directory). Errors name the file, line and key, e.g.
    ``invalid train config plain.yaml: line 4: optim.lr: Input should be greater than 0; got -1``.

    Examples
    --------
    >>> cfg = load_train_config({"data": {"spec": "digits"}, "optim": {"epochs": 1}}, seed=3)
    >>> cfg.model.arch, cfg.seed, cfg.output.name
    ('convnext_atto', 3, 'train-seed3')
    """
    if isinstance(source, TrainConfig):
        cfg = source.model_copy(deep=True)
        cfg._filename, cfg._lines = source._filename, source._lines
    else:
        data, filename, stem, lines = read_config(source, kind="train", example="examples/factors/configs/",
                                                  model_class=TrainConfig)
        stem = stem or "train"
        if not isinstance(data, dict):
            raise ConfigError(f"train config {filename} must be a mapping of keys (model:, data:, optim:, ...); got "
                              f"{'nothing' if data is None else type(data).__name__}")
        try:
            cfg = TrainConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, data, lines, filename)) from None
        except CritmassError as exc:
            raise ConfigError(f"invalid train config {filename}: {exc}") from None
        cfg._filename, cfg._lines = filename, lines
        if cfg.name is None:
            cfg.name = stem
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
        cfg.seed = int(seed)
    base = Path(base_dir).expanduser().resolve() if base_dir is not None else Path.cwd()
    if output is not None:
        cfg.output = Path(output)
    if cfg.output is None:
        cfg.output = Path("runs") / "train" / f"{cfg.name}-seed{cfg.seed}"
    cfg.output = resolve_path(cfg.output, base)
    cfg.data.root = resolve_path(cfg.data.root, base)
    if cfg.data.spec.startswith("npz:"):
        p = resolve_path(Path(cfg.data.spec[4:]), base)
        cfg.data.spec = f"npz:{p}"
    return cfg
