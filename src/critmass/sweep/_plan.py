"""Planning: split a sweep's grid into keyed work units and find which are already done.

Three unit kinds, two stages:

* :class:`ExtractUnit`, one per feature-cache entry (model, layer, dataset and what selects its
  samples) with the union of the splits its datasets ask for: the GPU-heavy forward passes, written
  into the shared feature cache once and read by every analysis unit of that entry. Keyed like the
  entry it writes, so two units of a sweep never write the same entry at once. A model with several
  layers has ONE extraction unit per dataset entry for all of them (one pass over the decoded images,
  :func:`critmass.features.extract_layers`); its status records ``entry`` as ``{layer: path}``.
* :class:`ProbeUnit`, one per (extraction, solver, selector, seed) holding every fraction (the
  probes of one seed's nested subsets share one fit); a deterministic selector (all, prefix, pca,
  pca-least, norm-*) is one unit recorded with the first seed. Per-seed units give a cluster many
  small tasks, lose at most one seed's work when killed, and adding a seed runs only the new seed.
* :class:`CkaUnit`, one per extraction holding every selector x fraction x seed cell: one pass over
  the samples builds the Gram statistics that all cells share, so splitting it would repeat the
  expensive part.

A unit's key hashes everything that determines its output (for analysis units that includes the
identity of the features they read, with their dataset entry's own splits) and the critmass version;
labels (``name:``), devices, batch sizes and the executor are not part of it. A unit is done when its shard directory holds a ``status.json`` with
``status: ok`` (written last, atomically), so a re-run skips it, a changed config gives changed keys
only to the units it changes, and a killed sweep resumes with the units that had not finished.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from .._defaults import CHOICE_RULE
from .._env import versions
from ..codecs import DEFAULT_CODEC
from ..probes import solver_registration, solver_spec
from ..subsets import make_selector
from ._config import SweepConfig, load_config, neuron_rankings

__all__ = [
    "STATUS_FILE",
    "KINDS",
    "CkaUnit",
    "ExportUnit",
    "ExtractUnit",
    "InversionUnit",
    "NeuronsUnit",
    "Plan",
    "ProfileUnit",
    "ProbeUnit",
    "Unit",
    "model_modality",
    "neuron_rankings",
    "plan_sweep",
    "read_status",
    "shape_model",
    "unit_key",
]

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
#: Files a finished unit of each kind leaves in its shard (besides the status).
OUTPUTS = {"extract": (), "probe": ("results.parquet", "per_class.parquet"), "cka": ("cka.parquet",),
           "profile": ("profile.parquet", "layer_cka.parquet", "results.parquet"), "neurons": ("neurons.parquet",),
           "inversion": ("invert.parquet",), "export": ("export.parquet",)}
#: Unit kinds in the order of the plan and of :meth:`Plan.describe`.
KINDS = ("extract", "probe", "cka", "profile", "neurons", "inversion", "export")


def _version() -> str:
    from .. import __version__

    return __version__


def unit_key(kind: str, payload: dict) -> str:
    """16 hex digits of SHA-256 over the unit kind, its inputs and the critmass version."""
    blob = json.dumps({"kind": kind, "critmass": _version(), **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Unit:
    """A unit of work: its kind, key, a human-readable label and what its worker needs (plain data)."""

    kind: str
    key: str
    label: str
    #: Key of the extraction an analysis unit reads (``None`` for extraction units).
    extract_key: str | None = None
    #: Labels of the result rows: model / dataset names and layer (the key does not depend on them).
    model: str = ""
    dataset: str = ""
    layer: str = ""
    #: Everything the worker passes to extract / run_probes / cka_curve.
    params: dict = field(default_factory=dict, compare=False)
    #: The feature cache entry directory, filled in by the driver once the extraction is done.
    entry: str | None = field(default=None, compare=False)
    #: Keys of analysis units whose shards this unit reads (it runs once they are done).
    after: tuple = ()

    def shard_dir(self, run_dir) -> Path:
        """``RUN_DIR/shards/<kind>/<key>``: this unit's own files and nobody else's."""
        return Path(run_dir) / "shards" / self.kind / self.key

    def log_file(self, run_dir) -> Path:
        return Path(run_dir) / "logs" / self.kind / f"{self.key}.log"


class ExtractUnit(Unit):
    """Marker type of extraction units (``kind == 'extract'``)."""


class ProbeUnit(Unit):
    """Marker type of probe units (``kind == 'probe'``)."""


class CkaUnit(Unit):
    """Marker type of CKA units (``kind == 'cka'``)."""


class ProfileUnit(Unit):
    """Marker type of depth-profile units (``kind == 'profile'``): every stage of a model on one dataset."""


class NeuronsUnit(Unit):
    """Marker type of which-neurons units (``kind == 'neurons'``): a ranking's top neurons, stability, overlap."""


class InversionUnit(Unit):
    """Marker type of partial-inversion units (``kind == 'inversion'``): a few images of one dataset."""


class ExportUnit(Unit):
    """Marker type of export units (``kind == 'export'``): the critical-mass subset as a slim model."""


def read_status(unit: Unit, run_dir) -> dict | None:
    """The unit's ``status.json``, or ``None`` when absent, unreadable or of another key."""
    path = unit.shard_dir(run_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("key") == unit.key else None


def _weights_stamp(path) -> list | None:
    # Size and mtime, not a hash: a replaced checkpoint changes the key without reading gigabytes.
    try:
        st = os.stat(path)
    except (TypeError, OSError):  # no weights, or a file not there yet (validated with check_paths=False)
        return None
    return [st.st_size, st.st_mtime_ns]


def _entry_complete(entry, splits) -> bool:
    """Every split of the entry (or of each layer's entry, ``{layer: path}``) is complete."""
    if isinstance(entry, dict):
        return bool(entry) and all(_entry_complete(e, splits) for e in entry.values())
    return bool(entry) and all((Path(entry) / s / "manifest.json").is_file() for s in splits)


@dataclass
class Plan:
    """The units of a sweep, in execution order (extractions first), and the state of each.

    ``state[key]`` is ``'done'`` (a shard with ``status: ok``), ``'failed'`` (a previous run recorded an
    error: it runs again) or ``'todo'``.
    """

    config: SweepConfig
    run_dir: Path
    units: list[Unit]
    state: dict[str, str]
    entries: dict[str, str] = field(default_factory=dict)  # extraction key -> cache entry, when done

    def of_kind(self, kind: str) -> list[Unit]:
        return [u for u in self.units if u.kind == kind]

    @property
    def todo(self) -> list[Unit]:
        return [u for u in self.units if self.state[u.key] != "done"]

    def count_cells(self) -> dict[str, int]:
        """Probes (one per selector x size x seed, plus one full-layer probe per extraction and solver) and
        CKA cells (selector x size x seed) of the whole grid."""
        cfg = self.config
        sizes = len(cfg.fractions) + len(cfg.n_neurons or [])
        n_feature_sets = sum(len(m.layers) * sum(m.runs_on(d.label) for d in cfg.datasets)
                             for m in cfg.models)  # one full-layer probe each
        probes = sum(sizes * len(u.params["seeds"]) for u in self.of_kind("probe"))
        probes += n_feature_sets * len(cfg.solvers)
        cells = sum(sizes * len(cfg.seeds) * len(u.params["selectors"]) for u in self.of_kind("cka"))
        return {"probes": probes, "cka_cells": cells}

    def describe(self) -> str:
        """A few lines: what the grid is, how many units of each kind, how many are done."""
        cfg = self.config
        layers = sum(len(m.layers) for m in cfg.models)
        sizes = len(cfg.fractions) + len(cfg.n_neurons or [])
        cells = self.count_cells()
        lines = [
            f"sweep {cfg.name!r} -> {self.run_dir}",
            (f"  grid: {len(cfg.models)} model(s) / {layers} layer(s) x {len(cfg.datasets)} dataset(s)"
             f"{'' if all(m.datasets is None for m in cfg.models) else ' (paired as each model lists)'} x "
             f"{len(cfg.selectors)} selector(s) x {sizes} size(s) x {len(cfg.seeds)} seed(s) x "
             f"{len(cfg.solvers)} solver(s); CKA {'on' if cfg.cka.enabled else 'off'}"),
        ]
        what = {"extract": "extractions", "probe": f"probe units ({cells['probes']} probes)",
                "cka": f"CKA units ({cells['cka_cells']} CKA cells)", "profile": "depth-profile units",
                "neurons": "which-neurons units", "inversion": "partial-inversion units", "export": "export units"}
        for kind in KINDS:
            units = self.of_kind(kind)
            if not units and kind not in ("extract", "probe", "cka"):
                continue
            done = sum(self.state[u.key] == "done" for u in units)
            failed = sum(self.state[u.key] == "failed" for u in units)
            extra = f", {failed} failed before" if failed else ""
            lines.append(f"  {len(units):>5} {what[kind]}: {done} done, {len(units) - done} to run{extra}")
        lines.append(f"  {len(self.todo)} of {len(self.units)} units to run")
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """One row per unit: kind, key, label, state."""
        return pd.DataFrame([{"kind": u.kind, "key": u.key, "label": u.label, "model": u.model, "dataset": u.dataset,
                              "layer": u.layer, "state": self.state[u.key]} for u in self.units],
                            columns=["kind", "key", "label", "model", "dataset", "layer", "state"])


def plan_sweep(config, *, out=None, check_layers: bool = False) -> Plan:
    """Split a sweep config into keyed units and look up which are done in the run directory.

    Parameters
    ----------
    config : path, dict or SweepConfig
        See :func:`critmass.sweep.load_config`.
    out : path, optional
        Run directory (default: the config's ``output``).
    check_layers : bool, default False
        Build each model (random init, no download) and refuse layer names it does not have.

    Returns
    -------
    Plan
    """
    cfg = load_config(config)
    run_dir = Path(out).expanduser().resolve() if out is not None else Path(cfg.output)
    if check_layers:
        _check_layers(cfg)
    libs = versions(("torch", "torchvision", "timm", "transformers", "sentence-transformers"))
    seeds = list(cfg.seeds)
    fractions = sorted({float(f) for f in cfg.fractions})
    n_neurons = sorted({int(k) for k in cfg.n_neurons}) if cfg.n_neurons else None
    probe_opts = {k: v for k, v in cfg.probes.model_dump(mode="json").items() if k != "device"}

    extracts: dict[str, Unit] = {}  # cache-entry key -> its one extraction unit
    analysis: list[Unit] = []
    seen: dict[str, tuple] = {}
    # (model, dataset, layer, solver, selector) -> [(seed, probe unit key)]; the reference unit of each group
    probe_keys: dict[tuple, list[tuple[int, str]]] = {}
    reference_keys: dict[tuple, str] = {}
    entry_keys: dict[tuple, str] = {}  # (model, dataset) -> its extraction unit
    export_sel = cfg.export.selector if cfg.export is not None else None
    export_solver = (cfg.export.solver or cfg.solvers[0]) if cfg.export is not None and cfg.solvers else None
    for i, m in enumerate(cfg.models):
        # The profile's stages are read in the same pass as the model's own layers (one pass per dataset).
        ext_layers = list(dict.fromkeys([*m.layers, *(_profile_layers(m, cfg) if cfg.profile else [])]))
        for layer in m.layers:
            for j, d in enumerate(cfg.datasets):
                if not m.runs_on(d.label):  # the model entry names the datasets it runs on
                    continue
                # The features this dataset entry reads (as before: the analysis keys of finished runs stay).
                ext_id = {
                    "model": m.spec, "weights": str(m.weights) if m.weights else None,
                    "weights_stamp": _weights_stamp(m.weights), "pretrained": m.pretrained, "pooling": m.pooling,
                    "image_size": m.image_size, "layer": layer, "dataset": d.spec,
                    "root": str(d.root) if d.root else None, "splits": sorted(d.splits),
                    "max_samples": d.max_samples, "seed": d.seed,
                    "val_fraction": d.val_fraction if "val" in d.splits else None,
                    "dtype": cfg.dtype, "amp": cfg.amp, "libs": libs, **_model_options(m),
                }
                fid = unit_key("extract", ext_id)
                if fid in seen:  # two entries that differ only in name / batch size: one would shadow the other
                    (i0, j0) = seen[fid]
                    path, other = (("models", i), f"models[{i0}]") if i != i0 else (("datasets", j), f"datasets[{j0}]")
                    raise cfg.error(path, f"gives the same features as {other} (only names or batch sizes differ); "
                                    "remove one of them")
                seen[fid] = (i, j)
                # All layers of a model share one extraction unit (one pass); one layer keeps its old key.
                multi = len(ext_layers) > 1
                ekey = unit_key("extract", _entry_identity(m, d, list(ext_layers) if multi else layer, cfg, libs))
                entry_keys[(m.label, d.label)] = ekey
                where = f"{m.label} | {d.label} | {layer}"
                ext = extracts.get(ekey)
                if ext is None:
                    layers_txt = ", ".join(m.layers) + (f" + {len(ext_layers) - len(m.layers)} profiled"
                                                        if len(ext_layers) > len(m.layers) else "")
                    extracts[ekey] = ExtractUnit(
                        kind="extract", key=ekey, label=f"extract {m.label} | {d.label} | {layers_txt}",
                        model=m.label, dataset=d.label, layer=layers_txt, params={
                            "model": m.spec, "dataset": d.spec, **({"layers": list(ext_layers)} if multi else
                                                                  {"layer": layer}), "split": list(d.splits),
                            "cache": str(cfg.cache) if cfg.cache else None,
                            "data_root": str(d.root) if d.root else None, "download": d.download,
                            "weights": str(m.weights) if m.weights else None, "pretrained": m.pretrained,
                            "pooling": m.pooling, "image_size": m.image_size, "max_samples": d.max_samples,
                            "seed": d.seed, "val_fraction": d.val_fraction,
                            "batch_size": m.batch_size or cfg.batch_size, "num_workers": cfg.num_workers,
                            "device": cfg.device, "dtype": cfg.dtype, "amp": cfg.amp, **_model_options(m),
                        })
                else:  # another dataset entry of the same cache entry: one unit extracts the union of splits
                    p = dict(ext.params, split=[*ext.params["split"], *(s for s in d.splits
                                                                     if s not in ext.params["split"])],
                             download=ext.params["download"] or d.download)
                    names = ext.dataset.split(", ")
                    if d.label not in names:
                        names.append(d.label)
                    extracts[ekey] = replace(ext, dataset=", ".join(names), params=p,
                                             label=f"extract {m.label} | {', '.join(names)} | {ext.layer}")
                for solver in cfg.solvers:
                    # codecs apply to the neighbour solvers; float32 alone leaves the unit keys as they were
                    codecs = ({"codecs": list(cfg.codecs)} if cfg.codecs != [DEFAULT_CODEC]
                              and solver_spec(solver).family == "neighbours" else {})
                    reference = True  # the first unit fits the full layer (the metrics' reference); the rest not
                    for sel in cfg.selectors:
                        fixed = make_selector(sel).deterministic  # fitted once: one unit, first seed
                        for seed_group in ([seeds[:1]] if fixed else [[s] for s in seeds]):
                            # the export's probe fits the full layer too: its shard is a whole run to export from
                            full = reference or (sel == export_sel and solver == export_solver
                                                 and seed_group[0] == seeds[0])
                            pid = {"extract": fid, "solver": solver, "selector": sel, "seeds": seed_group,
                                   "fractions": fractions, "n_neurons": n_neurons, **probe_opts, **codecs,
                                   **({} if full else {"full_layer": False})}
                            pkey = unit_key("probe", {**pid, "choice_rule": CHOICE_RULE})
                            group = (m.label, d.label, layer, solver)
                            if reference:
                                reference_keys[group] = pkey
                            probe_keys.setdefault((*group, sel), []).append((seed_group[0], pkey))
                            reference = False
                            seed_txt = "" if fixed else f" seed {seed_group[0]}"
                            analysis.append(ProbeUnit(
                                kind="probe", key=pkey,
                                extract_key=ekey,
                                label=f"probe {where} | {solver} {sel}{seed_txt}", model=m.label, dataset=d.label,
                                layer=layer, params={**pid, "device": cfg.probes.device, "splits": list(d.splits),
                                                     # a solver registered at run time, for spawned workers
                                                     "solver_registration": solver_registration(solver)}))
                if cfg.cka.enabled:
                    cid = {"extract": fid, "selectors": cfg.cka_selectors, "fractions": fractions,
                           "n_neurons": n_neurons, "seeds": seeds, "debiased": cfg.cka.debiased,
                           "split": cfg.cka.split, "on_constant": cfg.cka.on_constant,
                           # the selectors are fitted on the probes' fit rows: same subsets as the probes
                           "val_fraction": cfg.probes.val_fraction, "val_seed": cfg.probes.val_seed}
                    analysis.append(CkaUnit(kind="cka", key=unit_key("cka", cid), extract_key=ekey,
                                            label=f"cka {where} | {', '.join(cfg.cka_selectors)}", model=m.label,
                                            dataset=d.label, layer=layer, params=cid))
    analysis += _later_units(cfg, extracts, entry_keys, probe_keys, reference_keys, libs)
    units: list[Unit] = list(extracts.values())
    units += analysis

    state: dict[str, str] = {}
    entries: dict[str, str] = {}
    units_by_key = {u.key: u for u in units}
    for u in units:
        st = read_status(u, run_dir)
        ok = st is not None and st.get("status") == "ok" and all(
            (u.shard_dir(run_dir) / name).is_file() for name in OUTPUTS[u.kind])
        state[u.key] = "done" if ok else ("todo" if st is None or st.get("status") == "ok" else "failed")
        if u.kind == "extract" and st is not None and st.get("status") == "ok":
            entries[u.key] = st.get("entry")
    # An extraction whose cache entry was deleted is done only if nothing still needs its features.
    pending_users = {u.extract_key for u in analysis if state[u.key] != "done"}
    pending_users |= {units_by_key[k].extract_key for u in analysis if state[u.key] != "done" for k in u.after
                      if k in units_by_key}  # a unit reading a probe's shard refits on its features
    for u in units:
        if u.kind == "extract" and state[u.key] == "done" and u.key in pending_users \
                and not _entry_complete(entries.get(u.key), u.params["split"]):
            state[u.key] = "todo"
            entries.pop(u.key, None)
    return Plan(config=cfg, run_dir=run_dir, units=units, state=state, entries=entries)


@functools.lru_cache(maxsize=64)
def _model_facts(spec: str, image_size, weights) -> tuple[str, tuple]:
    """(modality, stage layers) of a model spec, from the model built at random init (no download)."""
    from ..models import list_stages

    bb = shape_model(spec, image_size, weights)
    return str(bb.modality), tuple(list_stages(bb))


def shape_model(spec: str, image_size=None, weights=None):
    """The model at random init, for its shape and module names (no download); sources that always load their
    local weights (sentence-transformers) load them."""
    from ..exceptions import WeightsError
    from ..models import load_model

    kwargs = {"image_size": image_size, "weights": weights}
    try:
        return load_model(spec, pretrained=False, **kwargs)
    except WeightsError:
        return load_model(spec, **kwargs)


def model_modality(spec: str, image_size=None, weights=None) -> str:
    """``'image'`` or ``'text'`` of a model spec: from its source where that says (timm, torchvision, sbert and
    the offline aliases of those), else from the model built by :func:`shape_model` (cached)."""
    from ..models import ALIASES

    source = spec.split(":", 1)[0] if ":" in spec else (ALIASES[spec][1] if spec in ALIASES else None)
    if source in ("timm", "torchvision"):
        return "image"
    if source == "sbert":
        return "text"
    return _model_facts(spec, image_size, weights)[0]


def _facts(m):
    return _model_facts(m.spec, m.image_size, str(m.weights) if m.weights else None)


def _profile_layers(m, cfg: SweepConfig) -> list[str]:
    """The layer names the profile section asks of a model entry (``stages`` resolved on the model)."""
    layers = cfg.profile.layers
    if layers == "stages":
        return list(_facts(m)[1])
    if isinstance(layers, str):
        if layers == "all":
            from ..models import resolve_layers

            return resolve_layers(shape_model(m.spec, m.image_size, str(m.weights) if m.weights else None), "all")
        return [x.strip() for x in layers.split(",") if x.strip()]
    return list(layers)


def _modality(m) -> str:
    return model_modality(m.spec, m.image_size, str(m.weights) if m.weights else None)


def _later_units(cfg: SweepConfig, extracts: dict, entry_keys: dict, probe_keys: dict, reference_keys: dict,
                 libs: dict) -> list[Unit]:
    """The depth-profile, which-neurons, partial-inversion and export units of the config's optional sections."""
    out: list[Unit] = []
    version = {"libs": libs}
    pairs = [(m, d) for m in cfg.models for d in cfg.datasets if m.runs_on(d.label)]
    solver0 = cfg.solvers[0] if cfg.solvers else None
    if cfg.profile is not None:
        p = cfg.profile
        for m, d in pairs:
            ekey = entry_keys[(m.label, d.label)]
            ext = extracts[ekey].params
            layers = _profile_layers(m, cfg)
            options = {"layers": layers, "selectors": list(p.selectors), "fractions":
                       sorted({float(f) for f in (p.fractions or cfg.fractions)}), "seeds": list(p.seeds or cfg.seeds),
                       "solver": p.solver, "delta": p.delta, "n_boot": p.n_boot, "alphas": cfg.probes.alphas,
                       "val_fraction": cfg.probes.val_fraction, "val_seed": cfg.probes.val_seed}
            extract_options = {k: v for k, v in ext.items() if k not in ("model", "dataset", "layers", "layer", "split")}
            key = unit_key("profile", {"entry": _entry_identity(m, d, layers, cfg, libs), "splits": sorted(d.splits),
                                       **options, "choice_rule": CHOICE_RULE})
            out.append(ProfileUnit(kind="profile", key=key, label=f"profile {m.label} | {d.label} | {len(layers)} layers",
                                   extract_key=ekey, model=m.label, dataset=d.label, layer=", ".join(layers),
                                   params={"model": m.spec, "dataset": d.spec, "split": list(d.splits), **options,
                                           "device": cfg.probes.device, "extract_options": extract_options}))
    if cfg.neurons is not None and solver0 is not None:
        n = cfg.neurons
        for m in cfg.models:
            datasets = [d for d in cfg.datasets if m.runs_on(d.label)]
            for layer in m.layers:
                for sel in (n.selectors or neuron_rankings(cfg.selectors)):
                    shards = [(d.label, probe_keys[(m.label, d.label, layer, solver0, sel)][0][1]) for d in datasets]
                    params = {"selector": sel, "k": sorted(n.k), "n_boot": n.n_boot, "random_state": n.random_state,
                              "probes": [k for _, k in shards], "datasets": [lab for lab, _ in shards]}
                    key = unit_key("neurons", {**{k: v for k, v in params.items() if k != "datasets"}, **version})
                    out.append(NeuronsUnit(kind="neurons", key=key, label=f"neurons {m.label} | {layer} | {sel}",
                                           model=m.label, dataset=", ".join(lab for lab, _ in shards), layer=layer,
                                           params=params, after=tuple(k for _, k in shards)))
    if cfg.inversion is not None:
        v = cfg.inversion
        images = [m for m in cfg.models if _modality(m) == "image"]
        if not images:
            raise cfg.error(("inversion",), "partial inversion synthesises images, and no model of this sweep is an "
                            "image model; drop inversion:")
        for m, d in pairs:
            if m not in images:  # text encoders are left out (logged: the plan shows the units there are)
                log.info("inversion: %s is not an image model; left out", m.label)
                continue
            options = v.model_dump(mode="json")
            params = {"model": m.spec, "weights": str(m.weights) if m.weights else None, "pretrained": m.pretrained,
                      "pooling": m.pooling, "dataset": d.spec, **options,
                      "image_size": v.image_size or m.image_size, "device": cfg.device}
            where = {"root": str(d.root)} if d.root else {}  # counted only when set: keys without one stay
            key = unit_key("inversion", {**{k: val for k, val in params.items() if k != "device"}, **where,
                                         "weights_stamp": _weights_stamp(m.weights), **version})
            params.update(where, download=d.download)
            out.append(InversionUnit(kind="inversion", key=key, label=f"inversion {m.label} | {d.label} | {v.layer}",
                                     model=m.label, dataset=d.label, layer=v.layer, params=params))
    if cfg.export is not None and solver0 is not None:
        e = cfg.export
        solver = e.solver or solver0
        for m, d in pairs:
            for layer in m.layers:
                group = (m.label, d.label, layer, solver)
                runs = probe_keys[(*group, e.selector)]
                after = tuple(dict.fromkeys([reference_keys[group], *(k for _, k in runs)]))
                params = {"selector": e.selector, "solver": solver, "delta": e.delta, "prune": e.prune,
                          "n_boot": e.n_boot, "probes": list(after), "export_probe": runs[0][1], "seed": runs[0][0],
                          "weights": str(m.weights) if m.weights else None, "image": _modality(m) == "image"}
                key = unit_key("export", {**params, **version})
                out.append(ExportUnit(kind="export", key=key, label=f"export {m.label} | {d.label} | {layer} | "
                                      f"{e.selector} k*", model=m.label, dataset=d.label, layer=layer, params=params,
                                      after=after))
    return out


_LATER_MODEL_OPTIONS = ("max_seq_length", "preprocessing", "max_width", "width_seed")


def _model_options(m) -> dict:
    """The model entry's loading / width options that are set, as extraction parameters."""
    out = {k: getattr(m, k) for k in ("max_seq_length", "preprocessing", "max_width") if getattr(m, k)}
    if m.max_width:
        out["width_seed"] = m.width_seed
    return out


def _entry_identity(m, d, layer: str, cfg: SweepConfig, libs: dict) -> dict:
    """What selects the feature-cache entry a (model, layer, dataset entry) is extracted into.

    Dataset entries that differ only in which of train / test they list share one entry (and one
    extraction unit); a carved val split changes train (it is held out of it), so asking for val is part
    of the identity, with the fraction and seed that carve it. The sample seed counts only with
    ``max_samples``, as in the cache. Every other option of the model and dataset entries counts, so a
    new option is never silently shared.
    """
    # Options added later count only when set: the keys of runs made before them stay.
    model = m.model_dump(mode="json", exclude={"name", "layers", "batch_size", *_LATER_MODEL_OPTIONS})
    model.update(_model_options(m))
    if m.weights:
        model["pretrained"] = None  # ignored with a weights file
    model["weights_stamp"] = _weights_stamp(m.weights)
    data = d.model_dump(mode="json", exclude={"name", "splits", "download", "seed", "val_fraction"})
    data["sample_seed"] = d.seed if d.max_samples else None
    data["val"] = [d.val_fraction, d.seed] if "val" in d.splits else None
    return {"entry": 1, "model": model, "layer": layer, "dataset": data, "dtype": cfg.dtype, "amp": cfg.amp,
            "libs": libs}


def _check_layers(cfg: SweepConfig) -> None:
    """Refuse layer names a model does not have, before anything runs (models built at random init)."""
    from ..exceptions import LayerNotFoundError, SpecError
    from ..models import list_layers

    for i, m in enumerate(cfg.models):
        extra = (list(cfg.profile.layers) if cfg.profile is not None and isinstance(cfg.profile.layers, list) else []) \
            + ([cfg.inversion.layer] if cfg.inversion is not None else [])
        if all(layer == "penultimate" for layer in [*m.layers, *extra]) and m.spec.count(":") == 0:
            continue  # offline aliases: nothing to check without loading weights
        try:
            valid = set(list_layers(m.spec, pretrained=False, image_size=m.image_size))
        except SpecError as exc:
            raise cfg.error(("models", i, "spec"), str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - weights / hub trouble: the extraction unit reports it
            log.info("layer names of %s not checked (%s: %s)", m.spec, type(exc).__name__, exc)
            continue
        asked = [(("models", i, "layers", j), layer) for j, layer in enumerate(m.layers)]
        if cfg.profile is not None and isinstance(cfg.profile.layers, list):
            asked += [(("profile", "layers", j), layer) for j, layer in enumerate(cfg.profile.layers)]
        if cfg.inversion is not None and _modality(m) == "image":
            asked.append((("inversion", "layer"), cfg.inversion.layer))
        for path, layer in asked:
            if layer not in valid:
                from .._validation import closest

                err = cfg.error(path, f"layer {layer!r} not in {m.spec}"
                                f"{closest(layer, sorted(valid))}; run `critmass layers {m.spec}`")
                raise LayerNotFoundError(str(err))
