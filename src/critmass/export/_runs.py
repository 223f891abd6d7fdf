"""Reading one probe of a run directory: its results row, its saved subset and its trained head."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import check_fraction
from ..exceptions import ConfigError, DataError

__all__ = ["RunProbe", "read_probe"]

_PROBE_FIX = "re-run `critmass probe ... --out RUN_DIR` without --no-weights"


def read_format_json(path: Path, fmt: str, *, fix: str, format_fix: str | None = None) -> dict:
    """The JSON file critmass wrote beside an artefact (an export's config, a reducer's meta), checked to be
    valid JSON of format ``fmt``; otherwise a one-line :class:`DataError` ending in ``fix`` (``format_fix``
    for a wrong format)."""
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{str(path)!r} is not valid JSON ({exc}); {fix}") from None
    if meta.get("format") != fmt:
        raise DataError(f"{str(path)!r} has format {meta.get('format')!r}, expected {fmt!r}; {format_fix or fix}")
    return meta


@dataclass
class RunProbe:
    """One probe of a ``critmass probe`` run: the subset (or projection) and its linear head.

    ``coef`` (n_classes, k) and ``intercept`` act on the raw layer features (the probe's standardisation is
    folded into them when the run saves its weights): class scores are ``X[:, indices] @ coef.T + intercept``
    for column selectors and ``float32((X - mean) @ components) @ coef.T + intercept`` for projections.
    """

    run_dir: Path
    row: dict
    selector: str
    seed: int
    fraction: float
    k: int
    n_features: int
    classes: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    indices: np.ndarray | None = None
    components: np.ndarray | None = None
    mean: np.ndarray | None = None
    config: dict = field(default_factory=dict)
    weights_file: Path | None = None

    @property
    def is_projection(self) -> bool:
        return self.components is not None

    def reduce(self, X) -> np.ndarray:
        """The probe's input: ``X[:, indices]`` (float64) or the float32-rounded projection, as float64."""
        X = np.asarray(X)
        if self.is_projection:
            return ((X.astype(np.float64) - self.mean) @ self.components).astype(np.float32).astype(np.float64)
        return X[:, self.indices].astype(np.float64)

    def decision_function(self, X) -> np.ndarray:
        """Class scores of raw layer features ``X`` (n, n_features), float64, as the probe computes them."""
        return self.reduce(X) @ self.coef.T + self.intercept

    def predict(self, X) -> np.ndarray:
        return self.classes[np.argmax(self.decision_function(X), axis=1)]


def _results(run_dir: Path) -> pd.DataFrame:
    from ..metrics import read_results

    if not run_dir.is_dir():
        raise DataError(f"run directory {str(run_dir)!r} does not exist; pass the --out directory of `critmass probe`")
    if not (run_dir / "results.parquet").is_file():
        raise DataError(f"{str(run_dir)!r} has no results.parquet; pass the --out directory of `critmass probe`")
    return read_results(run_dir)


def _fmt_list(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def read_probe(run_dir, *, selector: str = "random", fraction: float = 1.0, seed: int | None = None) -> RunProbe:
    """The probe of ``selector`` at ``fraction`` and ``seed`` of a run directory, with its saved weights.

    ``seed=None`` takes the first seed the run has for that selector (deterministic selectors are recorded
    once, under the run's first seed). Raises one-line errors for a selector, fraction or seed that the run
    does not hold, or for missing or malformed weights files.
    """
    run_dir = Path(run_dir)
    res = _results(run_dir)
    if len(res["model"].unique()) > 1 or len(res["dataset"].unique()) > 1 or len(res["layer"].unique()) > 1:
        raise DataError(f"{str(run_dir)!r} holds several models, datasets or layers (a merged sweep table); export "
                        "from the run directory of a single `critmass probe`")
    sel_rows = res[res["selector"] == selector]
    if not len(sel_rows):
        raise ConfigError(f"selector {selector!r} is not in run {str(run_dir)!r} (has: "
                          f"{', '.join(sorted(res['selector'].astype(str).unique()))}); pass one of those")
    fraction = check_fraction(fraction)
    match = sel_rows[np.isclose(sel_rows["fraction"].to_numpy(float), fraction, rtol=0, atol=1e-9)]
    if not len(match):
        have = sorted(set(float(f) for f in sel_rows["fraction"]))
        raise ConfigError(f"fraction {fraction:g} is not in run {str(run_dir)!r} for selector {selector!r} (has: "
                          f"{_fmt_list(have)}); pass one of those, or probe it first")
    seeds = sorted(int(s) for s in match["seed"].unique())
    if seed is None:
        seed = seeds[0]
    elif int(seed) not in seeds:
        raise ConfigError(f"seed {seed} is not in run {str(run_dir)!r} for selector {selector!r} at fraction "
                          f"{fraction:g} (has: {_fmt_list(seeds)}); pass one of those")
    row = match[match["seed"] == int(seed)].iloc[0].to_dict()
    k, d = int(row["n_neurons"]), int(row["n_features"])
    rel = row.get("weights_file")
    path = run_dir / (rel if isinstance(rel, str) and rel else f"weights/{selector}-seed{int(seed)}.npz")
    if not path.is_file():
        raise DataError(f"weights file {str(path)!r} of the {selector} probe (seed {seed}) is missing; {_PROBE_FIX}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"cannot read weights file {str(path)!r} ({type(exc).__name__}); {_PROBE_FIX}") from None
    for name in (f"coef_{k}", f"intercept_{k}", "classes"):
        if name not in arrays:
            raise DataError(f"weights file {str(path)!r} has no {name!r} (the {k}-neuron probe); {_PROBE_FIX}")
    coef = arrays[f"coef_{k}"].astype(np.float64)
    intercept = arrays[f"intercept_{k}"].astype(np.float64)
    classes = arrays["classes"]
    kw = {}
    if "components" in arrays:
        comp, mean = arrays["components"], arrays.get("mean")
        if mean is None or comp.ndim != 2 or comp.shape[0] != d or comp.shape[1] < k or mean.shape != (d,):
            raise DataError(f"weights file {str(path)!r} holds a malformed projection (components "
                            f"{comp.shape}, layer of {d} neurons); {_PROBE_FIX}")
        kw = {"components": comp[:, :k].astype(np.float64), "mean": mean.astype(np.float64)}
    else:
        if f"indices_{k}" not in arrays:
            raise DataError(f"weights file {str(path)!r} has no 'indices_{k}'; {_PROBE_FIX}")
        idx = arrays[f"indices_{k}"].astype(np.int64)
        if idx.shape != (k,) or idx.min() < 0 or idx.max() >= d or len(np.unique(idx)) != k:
            raise DataError(f"weights file {str(path)!r}: indices_{k} are not {k} distinct neurons of {d}; {_PROBE_FIX}")
        kw = {"indices": idx}
    if coef.shape != (len(classes), k) or intercept.shape != (len(classes),):
        raise DataError(f"weights file {str(path)!r}: coef_{k} has shape {coef.shape}, expected ({len(classes)}, {k}); "
                        f"{_PROBE_FIX}")
    try:
        config = json.loads(row.get("config") or "{}")
    except ValueError:
        config = {}
    return RunProbe(run_dir=run_dir, row=row, selector=selector, seed=int(seed), fraction=float(row["fraction"]), k=k,
                    n_features=d, classes=classes, coef=coef, intercept=intercept, config=config, weights_file=path,
                    **kw)


def full_probe(run_dir) -> RunProbe:
    """The run's full-layer probe (``selector == 'all'``, fraction 1)."""
    return read_probe(run_dir, selector="all", fraction=1.0)
