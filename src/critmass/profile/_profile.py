"""The depth profile: every layer of a model in one forward pass, then per layer the full accuracy, the
random-subset probe curve, DR(delta) with its CI, the critical mass and the subset-vs-full CKA, and across
layers the depth x depth CKA matrix, written into a run directory.

Run directory of :func:`profile`::

    OUT/profile.parquet     one row per layer (depth order): width, full accuracy, DR, CI, critical mass, CKA at k*
    OUT/layer_cka.parquet   layer x layer linear CKA (long: layer_a, layer_b, cka), on the train split
    OUT/results.parquet     the probes of every layer (``critmass report OUT`` reads it)
    OUT/per_class.parquet
    OUT/cka.parquet         subset-vs-full CKA of the probes' random subsets, every layer
    OUT/profile.json        config, seeds, versions, the cache entry of each layer, timings

Built on the public functions of the stages below it: :func:`critmass.features.extract_layers`,
:func:`critmass.probes.run_probes`, :func:`critmass.similarity.cka_matrix`,
:func:`critmass.similarity.cka_curve` and :func:`critmass.metrics.dr`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._defaults import DEFAULT_FRACTIONS, DEFAULT_SEEDS, DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED, parse_seeds
from .._env import versions
from .._io import atomic_path, atomic_write_json
from .._validation import closest
from ..exceptions import ConfigError, FeatureError
from ..features import extract_layers
from ..metrics import check_delta, dr
from ..similarity import cka_curve, cka_matrix

__all__ = ["profile", "Profile", "PROFILE_COLUMNS", "LAYER_CKA_COLUMNS"]

log = logging.getLogger(__name__)

PROFILE_COLUMNS = (
    "model", "dataset", "layer", "depth", "width", "width_before_cap", "pooling", "solver", "delta",
    "full_accuracy", "dr", "dr_ci_low", "dr_ci_high", "critical_n_neurons", "critical_fraction", "reached",
    "test_accuracy_at_critical", "cka_at_critical", "n_seeds", "n_train", "entry",
)
LAYER_CKA_COLUMNS = ("model", "dataset", "split", "layer_a", "layer_b", "depth_a", "depth_b", "cka", "n_samples",
                     "method")


@dataclass
class Profile:
    """What :func:`profile` wrote: the tables and the run directory."""

    out: Path
    profile: pd.DataFrame
    layer_cka: pd.DataFrame
    results: pd.DataFrame
    cka: pd.DataFrame
    entries: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def matrix(self) -> pd.DataFrame:
        """The layer x layer CKA as a square frame, rows and columns in depth order."""
        order = list(self.profile["layer"])
        return self.layer_cka.pivot(index="layer_a", columns="layer_b", values="cka").reindex(index=order,
                                                                                          columns=order)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def _check_solver(solver: str) -> None:
    """Refuse an unknown solver by name before any extraction (any registered solver can be profiled: DR reads
    its ``test_accuracy``, the kNN accuracy or recall@1 for the neighbour solvers, as ``critmass dr`` does)."""
    from ..probes import list_solvers

    valid = list_solvers()
    if solver not in valid:
        raise ConfigError(f"unknown solver {solver!r}{closest(str(solver), valid)}; use one of {', '.join(valid)}")


def profile(
    model,
    dataset: str,
    *,
    out,
    layers: str | Sequence[str] = "stages",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds=DEFAULT_SEEDS,
    solver: str = "logistic",
    delta: float = 0.9,
    n_boot: int = 1000,
    alphas=None,
    probe_val_fraction: float = DEFAULT_VAL_FRACTION,
    val_seed: int = DEFAULT_VAL_SEED,
    random_state: int = 0,
    probe_device: str = "auto",
    split: Sequence[str] = ("train", "test"),
    selectors: Sequence[str] = ("random",),
    **extract_options,
) -> Profile:
    """Profile diffused redundancy across depth: every requested layer of ``model`` on ``dataset``.

    One forward pass per split extracts every layer (:func:`critmass.features.extract_layers`, ordinary cache
    entries). Then per layer: the full-layer probe and the random-subset probe curve
    (:func:`critmass.probes.run_probes`, ``selectors=['random']``), DR(delta) with its bootstrap CI over seeds
    and the critical mass k* (:func:`critmass.metrics.dr`), and the subset-vs-full CKA of the probes' own
    subsets; across layers the linear CKA of every pair of layers on the train split. The subset-vs-full and
    layer x layer CKA both come from one joint Gram matrix of all layers (one pass over the cached features):
    :func:`critmass.similarity.cka_matrix` builds it and hands each layer's block to
    :func:`critmass.similarity.cka_curve`.

    Parameters
    ----------
    out : path
        Run directory (see the module docstring); ``critmass report OUT`` adds the depth figures.
    layers : ``'stages'``, ``'all'`` or names; see :func:`critmass.features.extract_layers`.
    fractions, seeds, alphas : as :func:`critmass.probes.run_probes`.
    solver : str, default "logistic"
        Any registered solver (``critmass.probes.list_solvers()``); for the neighbour solvers DR reads the kNN
        accuracy or recall@1 curve, as ``critmass dr`` does.
    delta, n_boot, random_state : as :func:`critmass.metrics.dr` (``random_state`` seeds the bootstrap).
    probe_val_fraction, val_seed : the validation share the probes carve from train (and its seed).
    probe_device : device of the probes.
    split : extracted splits; ``train`` and ``test`` are needed.
    selectors : selectors probed (and compared by CKA) at every layer; ``random`` is always included, since
        the depth table (``profile.parquet``) reports DR and k* of random subsets. The others (e.g. ``greedy``,
        ``fscore``) go into ``results.parquet`` / ``cka.parquet`` for ``critmass dr`` and ``critmass report``.
    extract_options : passed to :func:`critmass.features.extract_layers` (``pooling``, ``max_width``,
        ``width_seed``, ``image_size``, ``max_samples``, ``seed``, ``cache``, ``batch_size``, ``device``, ...).

    Returns
    -------
    Profile
    """
    from ..probes import run_probes

    delta = check_delta(delta)
    seed_list = parse_seeds(seeds)
    _check_solver(solver)
    from ..subsets import make_selector

    selectors = list(dict.fromkeys(["random", *([selectors] if isinstance(selectors, str) else selectors)]))
    for name in selectors:
        make_selector(name)  # unknown names fail before the extraction
    splits = [split] if isinstance(split, str) else list(split)
    if "train" not in splits or "test" not in splits:
        raise ConfigError(f"profile needs the train and test splits; got --split {','.join(splits)}; "
                          "pass --split train,test (or train,val,test)")
    out = Path(out).expanduser()
    t0 = time.perf_counter()
    fsets = extract_layers(model, dataset, layers=layers, split=splits, **extract_options)
    t_extract = time.perf_counter() - t0
    names = list(fsets)

    t1 = time.perf_counter()
    res, pcs = [], []
    for name, fs in fsets.items():
        log.info("probing layer %s (%d features)", name, fs.n_features)
        r = run_probes(fs, selectors=selectors, fractions=fractions, seeds=seed_list, solver=solver, alphas=alphas,
                       val_fraction=probe_val_fraction, val_seed=val_seed, device=probe_device, save_weights=False)
        res.append(r.results)
        pcs.append(r.per_class)
    results = pd.concat(res, ignore_index=True)
    per_class = pd.concat(pcs, ignore_index=True)
    t_probe = time.perf_counter() - t1

    t2 = time.perf_counter()
    xs = [fs["train"].x for fs in fsets.values()]
    joint = cka_matrix(xs, names=names)
    mat, method = joint.matrix, joint.method
    # The probes' random subsets against each full layer, from that layer's block of the joint Gram (no new pass).
    ckas = [cka_curve(fs, selectors=selectors, fractions=fractions, seeds=seed_list, split="train", on_constant="nan",
                      val_fraction=probe_val_fraction, val_seed=val_seed, stats=joint.stats[i])
            for i, fs in enumerate(fsets.values())]
    cka = pd.concat(ckas, ignore_index=True)
    t_cka = time.perf_counter() - t2

    drs = dr(results, delta, selector="random", n_boot=n_boot, random_state=random_state)
    first = next(iter(fsets.values()))
    model_name, dataset_name = str(first.meta.get("model")), str(first.meta.get("dataset"))
    rows = []
    for depth, (name, fs) in enumerate(fsets.items()):
        man = fs["train"].manifest
        row = drs[drs["layer"] == name]
        if len(row) != 1:
            raise FeatureError(f"no DR row for layer {name!r}; the probe results are incomplete")
        r = row.iloc[0]
        k = int(r["critical_n_neurons"])
        sub = cka[(cka["layer"] == name) & (cka["n_neurons"] == k) & (cka["selector"] == "random")]
        cap = man.get("width_cap") or {}
        rows.append({
            "model": model_name, "dataset": dataset_name, "layer": name, "depth": depth, "width": fs.n_features,
            "width_before_cap": int(cap.get("width", fs.n_features)), "pooling": str(man.get("pooling")),
            "solver": solver, "delta": delta, "full_accuracy": float(r["full_accuracy"]), "dr": float(r["dr"]),
            "dr_ci_low": float(r["dr_ci_low"]), "dr_ci_high": float(r["dr_ci_high"]), "critical_n_neurons": k,
            "critical_fraction": float(r["critical_fraction"]), "reached": bool(r["reached"]),
            "test_accuracy_at_critical": float(r["test_accuracy_at_critical"]),
            # k* = width when no subset reaches the threshold: the full layer, CKA 1 by definition
            "cka_at_critical": float(sub["cka"].mean()) if len(sub) else (1.0 if k == fs.n_features else np.nan),
            "n_seeds": int(r["n_seeds"]), "n_train": int(fs["train"].n_samples), "entry": str(fs.meta["source"]),
        })
    prof = pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))
    n = int(xs[0].shape[0])
    lc = pd.DataFrame([{"model": model_name, "dataset": dataset_name, "split": "train", "layer_a": a, "layer_b": b,
                        "depth_a": i, "depth_b": j, "cka": float(mat[i, j]), "n_samples": n, "method": method}
                       for i, a in enumerate(names) for j, b in enumerate(names)], columns=list(LAYER_CKA_COLUMNS))

    out.mkdir(parents=True, exist_ok=True)
    for fname, df in (("results.parquet", results), ("per_class.parquet", per_class), ("cka.parquet", cka),
                      ("layer_cka.parquet", lc), ("profile.parquet", prof)):
        _write_parquet(df, out / fname)
    seconds = {"extract": round(t_extract, 3), "probes": round(t_probe, 3), "cka": round(t_cka, 3)}
    config = {
        "model": model if isinstance(model, str) else getattr(model, "spec", str(model)), "dataset": dataset,
        "layers": names, "layers_requested": layers if isinstance(layers, str) else list(layers), "split": splits,
        "fractions": [float(f) for f in fractions], "seeds": seed_list, "solver": solver, "delta": delta,
        "selectors": selectors,
        "n_boot": n_boot, "alphas": alphas, "probe_val_fraction": probe_val_fraction, "val_seed": val_seed,
        "random_state": random_state, "layer_cka_method": method,
        "extract": {k: (str(v) if isinstance(v, Path) else v) for k, v in extract_options.items()},
    }
    atomic_write_json(out / "profile.json", {
        "config": config, "entries": {k: str(fs.meta["source"]) for k, fs in fsets.items()}, "seconds": seconds,
        "versions": versions(("critmass", "torch", "torchvision", "timm", "numpy", "scikit-learn", "pandas")),
    })
    atomic_write_json(out / "versions.json", versions(("critmass", "torch", "torchvision", "timm", "numpy",
                                                       "scikit-learn", "pandas")))
    return Profile(out=out, profile=prof, layer_cka=lc, results=results, cka=cka,
                   entries={k: str(fs.meta["source"]) for k, fs in fsets.items()}, seconds=seconds)
