"""Every layer in one pass: :func:`extract_layers` (one forward pass, one ordinary cache entry per layer) and
:func:`profile` (per layer: full accuracy, the random-subset probe curve, DR(delta) with its CI, critical mass,
subset-vs-full CKA; across layers: the depth x depth CKA matrix), written into a run directory.

Run directory of :func:`profile`::

    OUT/profile.parquet     one row per layer (depth order): width, full accuracy, DR, CI, critical mass, CKA at k*
    OUT/layer_cka.parquet   layer x layer linear CKA (long: layer_a, layer_b, cka), on the train split
    OUT/results.parquet     the probes of every layer (``critmass report OUT`` reads it)
    OUT/per_class.parquet
    OUT/cka.parquet         subset-vs-full CKA of the probes' random subsets, every layer
    OUT/profile.json        config, seeds, versions, the cache entry of each layer, timings
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
from ..exceptions import ConfigError, FeatureError
from ._store import FeatureSet

__all__ = ["extract_layers", "profile", "Profile", "PROFILE_COLUMNS", "LAYER_CKA_COLUMNS", "DEFAULT_MAX_WIDTH"]

log = logging.getLogger(__name__)

#: ``profile``'s cap on a pooled layer's width (a flattened early conv map has 10^5 units per image).
DEFAULT_MAX_WIDTH = 8192
#: The joint feature-space Gram of all layers is used while it takes at most this many bytes; beyond it
#: the layer x layer CKA comes from per-layer n x n sample Grams.
GRAM_BYTES = 2 << 30

PROFILE_COLUMNS = (
    "model", "dataset", "layer", "depth", "width", "width_before_cap", "pooling", "solver", "delta",
    "full_accuracy", "dr", "dr_ci_low", "dr_ci_high", "critical_n_neurons", "critical_fraction", "reached",
    "test_accuracy_at_critical", "cka_at_critical", "n_seeds", "n_train", "entry",
)
LAYER_CKA_COLUMNS = ("model", "dataset", "split", "layer_a", "layer_b", "depth_a", "depth_b", "cka", "n_samples",
                     "method")


def extract_layers(
    model,
    dataset: str,
    *,
    layers: str | Sequence[str] = "stages",
    split="train",
    cache=None,
    data_root=None,
    download: bool = False,
    weights=None,
    pretrained: bool = True,
    pooling: str = "auto",
    max_width: int | None = DEFAULT_MAX_WIDTH,
    width_seed: int = 0,
    image_size: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    carve_test: bool = False,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    amp: str | None = None,
    channels_last: bool = False,
    progress: bool = True,
    verify: bool = True,
    max_seq_length: int | None = None,
    preprocessing: dict | None = None,
) -> dict[str, FeatureSet]:
    """Features of several layers of ``model`` from ONE forward pass per split, one cache entry per layer.

    Every layer's entry has exactly the key, directory, manifest and lock of a single-layer
    :func:`critmass.features.extract` with the same options (``max_width`` only counts for a layer wider than
    it), so ``probe``, ``cka`` and ``report`` read any of them and a later ``extract`` of one layer is a cache
    hit. Layers already in the cache are not computed; the others share one pass over the decoded images,
    each pooled inside its forward hook (memory stays ``batch x width`` per layer).

    Parameters
    ----------
    layers : ``'stages'`` (default: the model's stages, :func:`critmass.models._stages.stage_layers`),
        ``'all'`` (every block), a comma-separated string or a list of layer names.
    max_width, width_seed : a pooled output wider than ``max_width`` keeps ``max_width`` random units
        (seeded by ``width_seed``; a warning names the width); ``None``: no cap.
    Other parameters : as :func:`critmass.features.extract`.

    Returns
    -------
    dict of layer name -> FeatureSet, in the order of ``layers``.
    """
    from . import _requests
    from ._extract import (_check_options, _resolve_device, check_model_options, default_cache_dir, extract_entries,
                           request_options)

    splits = [split] if isinstance(split, str) else list(split)
    per_split_max = _check_options(splits, batch_size=batch_size, dtype=dtype, amp=amp, max_samples=max_samples,
                                   max_width=max_width, width_seed=width_seed)
    model_options = check_model_options(model, max_seq_length=max_seq_length, preprocessing=preprocessing)
    cache = Path(cache).expanduser() if cache is not None else default_cache_dir()
    from ..data._fingerprint import dataset_fingerprint

    content = dataset_fingerprint(dataset, data_root)
    opts = dict(pooling=pooling, image_size=image_size, max_samples=max_samples, seed=seed, val_fraction=val_fraction,
                carve_test=carve_test, dtype=dtype, amp=amp, max_width=max_width, width_seed=width_seed, **model_options)

    def request(name):
        return _requests.request_key(model, dataset, weights=weights, pretrained=pretrained, data_root=data_root,
                                     dataset_content=content, **request_options(name, splits, **opts))

    explicit = not (isinstance(layers, str) and layers.strip() in ("stages", "all"))
    if explicit:  # every layer served before: no model, no torch
        names = [p.strip() for p in layers.split(",")] if isinstance(layers, str) else list(layers)
        hits = {}
        for name in names:
            key = request(name)
            hit = _requests.lookup(cache, key, splits, verify=verify) if key is not None else None
            if hit is None:
                break
            hits[name] = hit
        else:
            if names and len(set(names)) == len(names):
                return hits

    from ..models import Backbone, load_model
    from ..models._stages import resolve_layers
    from ._extract import MultiLayerReader

    _resolve_device(device)
    backbone = model if isinstance(model, Backbone) else load_model(
        model, pretrained=pretrained, weights=weights, image_size=image_size, **model_options)
    names = resolve_layers(backbone, layers)
    MultiLayerReader(backbone, names, pooling)  # validates the pooling before any data is touched

    def make_read(which, units):
        return MultiLayerReader(backbone, which, pooling, units=units)

    out = extract_entries(
        backbone, names, make_read, dataset, splits=splits, cache=cache, data_root=data_root, download=download,
        pooling=pooling, max_samples=max_samples, per_split_max=per_split_max, seed=seed, val_fraction=val_fraction,
        carve_test=carve_test, content=content, batch_size=batch_size, num_workers=num_workers, device=device,
        dtype=dtype, amp=amp, channels_last=channels_last, progress=progress, verify=verify, max_width=max_width,
        width_seed=width_seed)
    for name, fs in out.items():
        key = request(name)
        if key is not None:
            _requests.record(cache, key, fs)
    return out


# ------------------------------------------------------------------------------------------------ profile
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


def _joint_stats(xs: list, chunk_rows: int = 4096):
    """GramStats of the column-concatenated layers, in one pass over their rows (float64)."""
    from ..similarity import GramAccumulator
    from ..similarity._gram import column_means

    n = xs[0].shape[0]
    means = np.concatenate([column_means(x, max(1, chunk_rows)) for x in xs])
    acc = GramAccumulator(mean=means)
    for s in range(0, n, chunk_rows):
        acc.partial_fit(np.concatenate([np.asarray(x[s : s + chunk_rows], dtype=np.float64) for x in xs], axis=1))
    return acc.stats()


def _block_stats(stats, lo: int, hi: int):
    """The GramStats of columns ``lo:hi`` of a joint GramStats (a diagonal block: that layer alone)."""
    from ..similarity import GramStats

    return GramStats(n_samples=stats.n_samples, mean=stats.mean[lo:hi], gram=np.ascontiguousarray(stats.gram[lo:hi, lo:hi]),
                     fourth=None, constant=stats.constant[lo:hi])


def _layer_cka(xs: list, names: list[str]) -> tuple[np.ndarray, list, str]:
    """(L x L linear CKA, per-layer GramStats or None, method) of the layers' features of the same samples.

    ``features``: one joint centred Gram ``C`` of the concatenated layers (one pass); its diagonal blocks are
    each layer's own Gram (reused for the subset-vs-full CKA) and CKA(i, j) = ||C_ij||_F^2 / (||C_ii||_F
    ||C_jj||_F). ``samples`` (layers too wide for that in memory): centred n x n Grams K_i, CKA(i, j) =
    <K_i, K_j> / (||K_i|| ||K_j||).
    """
    from ..similarity._estimators import _sample_gram

    widths = [int(x.shape[1]) for x in xs]
    n = int(xs[0].shape[0])
    total = sum(widths)
    L = len(xs)
    if 8 * total * total <= GRAM_BYTES:
        stats = _joint_stats(xs)
        bounds = np.cumsum([0, *widths])
        blocks = [_block_stats(stats, bounds[i], bounds[i + 1]) for i in range(L)]
        sq = stats.gram * stats.gram
        cross = np.array([[sq[bounds[i]:bounds[i + 1], bounds[j]:bounds[j + 1]].sum() for j in range(L)]
                          for i in range(L)])
        method = "features"
    elif 8 * n * n * L <= 2 * GRAM_BYTES:
        grams = []
        for x, name in zip(xs, names):
            k, _ = _sample_gram(x, f"layer {name!r} features", None)
            grams.append(k)
        cross = np.array([[float(np.vdot(grams[i], grams[j])) for j in range(L)] for i in range(L)])
        blocks = [None] * L
        method = "samples"
    else:
        raise FeatureError(
            f"layer x layer CKA of {L} layers ({total} features in all) on {n} samples does not fit in "
            f"{GRAM_BYTES / 2**30:.0f} GiB either way; lower --max-width or pass --max-samples")
    diag = np.sqrt(np.clip(np.diag(cross), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        mat = cross / np.outer(diag, diag)
    dead = [names[i] for i in range(L) if not diag[i] > 0]
    if dead:
        log.warning("layer(s) %s have zero variance on these samples: their CKA is NaN", ", ".join(dead))
    return mat, blocks, method


def _subset_cka_rows(fs: FeatureSet, stats, *, fractions, seeds, val_fraction, val_seed) -> pd.DataFrame:
    """The rows :func:`critmass.similarity.cka_curve` gives for the random selector, from a Gram already built."""
    from ..similarity import CKA_COLUMNS, gram_stats
    from ..similarity._curve import _resolve_input
    from ..similarity._estimators import _subset_values, _subset_weights
    from ..subsets import plan_subsets, size_fractions

    x, x_fit, keys, carved = _resolve_input(fs, "train", val_fraction, val_seed)
    d = int(x.shape[1])
    if x_fit is None:
        x_fit = x
    fitted = plan_subsets(["random"], seeds, size_fractions(list(fractions), d), x_fit)
    n_fit = int(x_fit.shape[0])
    if stats is None:
        stats = gram_stats(x)
    rows = []
    for f in fitted:
        biased, _ = _subset_values(stats, _subset_weights(f.indices, d), debiased=False, on_constant="nan")
        for j, (k, fracs) in enumerate(zip(f.sizes, f.fractions)):
            for frac in fracs:
                rows.append({**keys, "selector": f.selector, "fraction": float(frac), "n_neurons": int(k),
                             "n_features": d, "seed": int(f.seed), "cka": float(biased[j]), "cka_debiased": np.nan,
                             "n_fit": n_fit, "val_fraction": float(carved), "val_seed": int(val_seed)})
    df = pd.DataFrame(rows, columns=list(CKA_COLUMNS))
    for col in ("model", "dataset", "layer", "split", "selector"):
        df[col] = df[col].astype("string")
    return df.astype({"fraction": "float64", "n_neurons": "int64", "n_features": "int64", "seed": "int64",
                      "cka": "float64", "cka_debiased": "float64", "n_fit": "int64", "val_fraction": "float64",
                      "val_seed": "int64"})


def _check_delta(delta) -> float:
    from ..metrics._common import check_delta

    return check_delta(delta)


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
    **extract_options,
) -> Profile:
    """Profile diffused redundancy across depth: every requested layer of ``model`` on ``dataset``.

    One forward pass per split extracts every layer (:func:`extract_layers`, ordinary cache entries). Then per
    layer: the full-layer probe and the random-subset probe curve (:func:`critmass.probes.run_probes`,
    ``selectors=['random']``), DR(delta) with its bootstrap CI over seeds and the critical mass k*
    (:func:`critmass.metrics.dr`), and the subset-vs-full CKA of the probes' own subsets; across layers the
    linear CKA of every pair of layers on the train split. The subset-vs-full and layer x layer CKA both come
    from one joint Gram matrix of all layers (one pass over the cached features).

    Parameters
    ----------
    out : path
        Run directory (see the module docstring); ``critmass report OUT`` adds the depth figures.
    layers : ``'stages'``, ``'all'`` or names; see :func:`extract_layers`.
    fractions, seeds, solver, alphas : as :func:`critmass.probes.run_probes`.
    delta, n_boot, random_state : as :func:`critmass.metrics.dr` (``random_state`` seeds the bootstrap).
    probe_val_fraction, val_seed : the validation share the probes carve from train (and its seed).
    probe_device : device of the probes.
    split : extracted splits; ``train`` and ``test`` are needed.
    extract_options : passed to :func:`extract_layers` (``pooling``, ``max_width``, ``width_seed``,
        ``image_size``, ``max_samples``, ``seed``, ``cache``, ``batch_size``, ``device``, ...).

    Returns
    -------
    Profile
    """
    from ..metrics import dr
    from ..probes import SOLVERS, run_probes

    delta = _check_delta(delta)
    seed_list = parse_seeds(seeds)
    if solver not in SOLVERS:
        from .._validation import closest

        raise ConfigError(f"unknown solver {solver!r}{closest(str(solver), SOLVERS)}; use one of {', '.join(SOLVERS)}")
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
        r = run_probes(fs, selectors=["random"], fractions=fractions, seeds=seed_list, solver=solver, alphas=alphas,
                       val_fraction=probe_val_fraction, val_seed=val_seed, device=probe_device, save_weights=False)
        res.append(r.results)
        pcs.append(r.per_class)
    results = pd.concat(res, ignore_index=True)
    per_class = pd.concat(pcs, ignore_index=True)
    t_probe = time.perf_counter() - t1

    t2 = time.perf_counter()
    xs = [fs["train"].x for fs in fsets.values()]
    mat, blocks, method = _layer_cka(xs, names)
    ckas = [_subset_cka_rows(fs, blocks[i], fractions=fractions, seeds=seed_list, val_fraction=probe_val_fraction,
                             val_seed=val_seed) for i, fs in enumerate(fsets.values())]
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
        sub = cka[(cka["layer"] == name) & (cka["n_neurons"] == k)]
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


def read_profile(run_dir) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """``(profile.parquet, layer_cka.parquet)`` of a run directory, or None when it holds no profile."""
    path = Path(run_dir)
    if not (path / "profile.parquet").is_file():
        return None
    from ..exceptions import DataError

    try:
        prof = pd.read_parquet(path / "profile.parquet")
        lc = pd.read_parquet(path / "layer_cka.parquet") if (path / "layer_cka.parquet").is_file() else None
    except Exception as exc:  # noqa: BLE001 - a malformed file is one line
        raise DataError(f"cannot read the profile tables in {path} ({type(exc).__name__}); run `critmass profile` "
                        "again into that directory") from None
    missing = [c for c in ("layer", "depth", "width", "full_accuracy", "dr", "dr_ci_low", "dr_ci_high")
               if c not in prof.columns]
    if missing:
        raise DataError(f"{path / 'profile.parquet'} lacks columns {missing}; run `critmass profile` again")
    return prof, lc
