"""The study of one model: the paper's settings as an ordinary sweep config, and how long it will take.

:func:`study_config` turns ``(model, datasets, options)`` into a sweep config (a dict that
:func:`critmass.sweep.load_config` accepts, so ``--config-out`` writes a file ``critmass sweep`` re-runs);
:func:`estimate` prices its units from a short calibration on this machine (one forward batch of the
model, one probe fit, one inversion step); :func:`fit_budget` scales the settings down step by step
until the estimate fits a time budget and says what it cut.
"""

from __future__ import annotations

import copy
import functools
import re
import time
from dataclasses import dataclass, field

from .._defaults import DEFAULT_FRACTIONS, DEFAULT_SEEDS
from ..exceptions import ConfigError

__all__ = ["PARTS", "SUPERVISED", "STUDY_DEFAULTS", "QUICK", "BUDGET_STEPS", "Estimate", "study_config", "estimate",
           "fit_budget", "parse_budget", "model_modality"]

#: The parts of a study beyond the probe curves and CKA (each one sweep section).
PARTS = ("profile", "neurons", "inversion", "export")
#: Supervised neuron rankings the study compares with random neurons (the best of them is reported).
SUPERVISED = ("fscore", "greedy", "attribution")

#: The default study: the paper's settings where it has them.
STUDY_DEFAULTS = {
    "fractions": list(DEFAULT_FRACTIONS),  # the paper's 15
    "seeds": DEFAULT_SEEDS,  # the paper's 5
    "max_samples": None,  # the datasets' full offline train and test splits
    "image_size": None,  # the model's own
    "selectors": ["random", "pca", *SUPERVISED],
    "profile": {"layers": "stages", "selectors": ["random"], "n_boot": 1000},
    "neurons": {"k": [8, 32], "n_boot": 20},
    # Three test images per dataset; 200 normalised-gradient steps (the paper's 5,000 with --inversion-steps 5000).
    "inversion": {"n_images": 3, "steps": 200, "selectors": ["random", "norm-max", "norm-min"],
                  "fractions": [0.05, 0.2, 0.5], "split": "test"},
    "export": {"selector": "random", "delta": 0.9, "prune": True, "n_boot": 1000},
}

#: ``--quick``: a smoke version that finishes in a couple of minutes on 2 cores.
QUICK = {
    "fractions": [0.01, 0.05, 0.2, 0.5, 1.0],
    "seeds": 2,
    "max_samples": {"train": 600, "test": 300},
    "image_size": 64,
    "profile": {"n_boot": 100},
    "neurons": {"k": [4, 8], "n_boot": 5},
    "inversion": {"n_images": 2, "steps": 10, "fractions": [0.2]},
    "export": {"n_boot": 100},
}


def parse_budget(text) -> float | None:
    """``'1h'``, ``'90m'``, ``'45min'``, ``'3600s'``, ``'1h30m'`` or plain seconds -> seconds (None: no budget)."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s?)?", s)
        if not s or parts is None or not any(parts.groups()):
            raise ConfigError(f"--budget must be a duration such as 1h, 90m, 1h30m or 3600s; got {text!r}")
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + sec
    if not seconds > 0:
        raise ConfigError(f"--budget must be positive; got {text!r}")
    return seconds


def model_modality(model: str) -> str:
    """``'image'`` or ``'text'`` of a model spec (:func:`critmass.sweep.model_modality`; no download)."""
    from ..sweep import model_modality as modality

    return modality(model)


def _parts(model: str, parts) -> list[str]:
    """The parts to run: all that apply to the model by default; forcing one that does not is an error."""
    text = model_modality(model) == "text"
    if parts is None:
        return [p for p in PARTS if not (text and p == "inversion")]
    chosen = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p and p.strip()]
    for p in chosen:
        if p not in PARTS:
            from .._validation import closest

            raise ConfigError(f"unknown study part {p!r}{closest(p, PARTS)}; choose from {', '.join(PARTS)} "
                              "(the probe curves and CKA always run)")
    if text and "inversion" in chosen:
        raise ConfigError(f"partial inversion synthesises images, and {model} is a text encoder; drop inversion from "
                          "--parts (the study leaves it out for text models by default)")
    return list(dict.fromkeys(chosen))


def study_config(model: str, datasets, *, out, quick: bool = False, parts=None, data_root=None, cache=None,
                 image_size: int | None = None, max_samples=None, seeds=None, fractions=None, selectors=None,
                 inversion_steps: int | None = None, weights=None, pretrained: bool = True, device: str = "auto",
                 batch_size: int | None = None, workers: int | None = None, name: str | None = None) -> dict:
    """The study of ``model`` on ``datasets`` as a sweep config (plain data, every setting stated).

    Parameters
    ----------
    model : str
        A model spec (``efficientnet-lite0``, ``timm:vit_small_patch16_224``, ``all-minilm-l6-v2``, ...).
    datasets : str or list of str
        Dataset specs (comma-separated or a list): offline aliases, ``torchvision:NAME`` (with ``data_root``), ...
    out : path
        The run directory.
    quick : bool
        The smoke settings of :data:`QUICK` instead of the paper's.
    parts : list of str, optional
        Which of :data:`PARTS` to run (default: all that apply; inversion is left out for text models).
    image_size, max_samples, seeds, fractions, selectors, inversion_steps
        Override the defaults (``max_samples``: an int or ``{split: n}``; ``selectors``: the subsets compared,
        default random, pca and the supervised rankings fscore, greedy, attribution; ``random`` is always kept).

    Returns
    -------
    dict
        A sweep config: ``critmass.sweep.load_config(study_config(...))`` validates it.
    """
    names = [d.strip() for d in (datasets.split(",") if isinstance(datasets, str) else datasets) if d and d.strip()]
    if not names:
        raise ConfigError("--datasets needs at least one dataset spec, e.g. fashion-mnist,digits,textures")
    chosen = _parts(model, parts)
    base = copy.deepcopy(STUDY_DEFAULTS)
    if quick:
        for key, val in QUICK.items():
            if isinstance(val, dict) and isinstance(base[key], dict):
                base[key].update(val)
            else:
                base[key] = val
    if selectors is not None:
        chosen_sel = [x.strip() for x in (selectors.split(",") if isinstance(selectors, str) else selectors) if x]
        base["selectors"] = list(dict.fromkeys(["random", *chosen_sel]))  # random: DR, export and diffuseness
    text = model_modality(model) == "text"
    size = image_size if image_size is not None else (None if text else base["image_size"])
    samples = max_samples if max_samples is not None else base["max_samples"]
    entry = {"spec": model, "pretrained": pretrained, **({"weights": str(weights)} if weights else {}),
             **({"image_size": size} if size and not text else {}), **({"batch_size": batch_size} if batch_size else {})}
    data = [{"spec": n, **({"root": str(data_root)} if data_root and n.startswith("torchvision:") else {}),
             **({"max_samples": samples} if samples else {})} for n in names]
    cfg = {
        "name": name or f"study-{_slug(model)}",
        "output": str(out),
        **({"cache": str(cache)} if cache else {}),
        "device": device,
        "models": [entry],
        "datasets": data,
        "selectors": list(base["selectors"]),
        "fractions": list(fractions if fractions is not None else base["fractions"]),
        "seeds": seeds if seeds is not None else base["seeds"],
        "solvers": ["logistic"],
        "cka": {"enabled": True, "selectors": list(base["selectors"])},
        "executor": {"kind": "local", **({"workers": workers} if workers else {})},
    }
    from ..sweep import neuron_rankings

    if parts is None and not neuron_rankings(cfg["selectors"]):  # which neurons reads the rankings' subsets: none compared, none asked
        chosen = [p for p in chosen if p != "neurons"]
    for part in chosen:
        section = dict(base[part])
        if part == "inversion" and inversion_steps is not None:
            section["steps"] = int(inversion_steps)
        if part == "inversion" and size:
            section["image_size"] = size
        cfg[part] = section
    return cfg


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "model"


# ------------------------------------------------------------------------------------------ the estimate
@dataclass
class Estimate:
    """Seconds per unit kind of a plan (on this machine, from the calibration), and in all."""

    seconds: dict[str, float]
    units: dict[str, int]
    workers: int
    calibration: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Wall-clock estimate: extraction is serial (one pass at a time), analysis spreads over the workers."""
        extract = self.seconds.get("extract", 0.0)
        rest = sum(v for k, v in self.seconds.items() if k != "extract")
        return extract + rest / max(1, self.workers)

    def describe(self) -> str:
        lines = [f"estimated time on this machine: {_fmt(self.total)} ({self.workers} worker(s); from a calibration "
                 "of one forward batch, one probe fit and one inversion step; rough: the run's summary.json has the "
                 "measured seconds per kind)"]
        for kind, secs in self.seconds.items():
            lines.append(f"  {kind:<9} {self.units.get(kind, 0):>5} unit(s) to run  ~{_fmt(secs)} of worker time")
        return "\n".join(lines)


def _fmt(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@functools.lru_cache(maxsize=8)
def _calibrate(model: str, dataset: str, root, image_size, batch_size: int, threads: int) -> dict:
    """The rates the estimate scales, measured here with the torch threads a sweep worker gets: seconds per
    sample of one forward batch of the model's extraction path on the study's first dataset (after a warm-up),
    of one logistic probe fit per (sample x neuron x class), and of one inversion step (forward + backward)
    per image."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        return _measure(model, dataset, root, image_size, batch_size)
    finally:
        torch.set_num_threads(previous)


def _measure(model: str, dataset: str, root, image_size, batch_size: int) -> dict:
    import numpy as np
    import torch

    from ..data import load_dataset

    out: dict = {}
    from ..sweep import shape_model

    bb = shape_model(model, image_size)
    out["modality"] = str(bb.modality)
    ds = load_dataset(dataset, split="test", root=root)
    n = min(int(batch_size), 32, len(ds))
    items = [ds[i][0] for i in range(n)]
    batch = bb.collate([bb.preprocess(x) if bb.preprocess is not None else x for x in items])
    torch.manual_seed(0)
    def fastest(fn, repeats: int) -> float:
        # The first calls pay one-off costs (allocator, BLAS and autograd set-up): warm up, then the fastest repeat.
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    with torch.inference_mode():
        feats = bb.penultimate(batch)
        out["extract_s_per_sample"] = fastest(lambda: bb.penultimate(batch), 2) / n
    out["width"] = int(feats.shape[-1])
    if bb.modality == "image" and isinstance(batch, torch.Tensor):
        xi = batch[:1].clone().requires_grad_(True)

        def step():
            xi.grad = None
            bb.penultimate(xi).float().sum().backward()

        step()
        out["invert_s_per_step_image"] = fastest(step, 3)
    from ..probes import LogisticProbe

    rng = np.random.default_rng(0)
    m, d, c = 2000, 128, 10
    xs, ys = rng.standard_normal((m, d)).astype(np.float32), rng.integers(0, c, m)
    out["probe_s_per_cell"] = fastest(lambda: LogisticProbe().fit(xs, ys), 1) / (m * (d + 16) * c)
    return out


def estimate(plan, *, workers: int | None = None, calibration: dict | None = None, todo_only: bool = True) -> Estimate:
    """Worker seconds per unit kind of the plan's units that are not done (``todo_only=False``: all of them), from
    :func:`_calibrate`'s rates and each unit's size (images, neurons, classes, subsets, steps). Rough by design: it prices the plan before it runs and
    lets ``--budget`` compare settings; the run's ``summary.json`` has the measured seconds per kind."""
    import os

    cfg = plan.config
    m = cfg.models[0]
    workers = workers or cfg.executor.workers or os.cpu_count() or 1
    d0 = cfg.datasets[0]
    cal = calibration or _calibrate(m.spec, d0.spec, str(d0.root) if d0.root else None, m.image_size,
                                    m.batch_size or cfg.batch_size, max(1, (os.cpu_count() or 1) // int(workers)))
    sizes = {d.label: _dataset_size(d) for d in cfg.datasets}
    width = cal.get("width", 1024)
    seconds: dict[str, float] = {}
    units: dict[str, int] = {}
    n_sizes = len(cfg.fractions) + len(cfg.n_neurons or [])
    mean_frac = sum(cfg.fractions) / max(1, len(cfg.fractions))
    for u in (plan.todo if todo_only else plan.units):
        n_train, n_test, n_classes = sizes.get(u.dataset.split(", ")[0], (1000, 500, 10))
        if u.kind == "extract":
            secs = (n_train + n_test) * cal["extract_s_per_sample"] * (1.15 if "layers" in u.params else 1.0)
        elif u.kind == "probe":
            # per fit: the data passes (samples x neurons x classes, at least 4: a binary task costs about as much)
            # and a fixed cost (the penalty search's set-up and bookkeeping, the measured studies' rate)
            fits = n_sizes * len(u.params["seeds"])
            full = n_train * width * max(n_classes, 4) * cal["probe_s_per_cell"] if u.params.get("full_layer", True) \
                else 0
            secs = fits * (n_train * (mean_frac * width + 16) * max(n_classes, 4) * cal["probe_s_per_cell"]
                           + PROBE_FIXED_S) + full
        elif u.kind == "cka":
            secs = 1e-9 * n_train * width * width + 0.01 * n_sizes * len(cfg.seeds) * len(u.params["selectors"])
        elif u.kind == "profile":
            p = u.params
            fits = len(p["layers"]) * len(p["fractions"]) * len(p["seeds"])
            secs = fits * (n_train * (0.3 * width * mean_frac + 16) * max(n_classes, 4) * cal["probe_s_per_cell"]
                           + PROBE_FIXED_S)
        elif u.kind == "neurons":  # one ranking refit per resample and dataset (the measured studies' rate)
            secs = 5.0 + 0.7 * u.params["n_boot"] * len(u.params["probes"])
        elif u.kind == "inversion":
            p = u.params
            runs = len(p["selectors"]) * len(p["fractions"]) * len(p["seeds"]) + len(p["seeds"])
            secs = runs * p["n_images"] * p["steps"] * cal.get("invert_s_per_step_image", 0.0)
        elif u.kind == "export":  # a pruned copy of the backbone and its checks (the measured studies' rate)
            secs = 6.0
        else:
            secs = 0.0
        seconds[u.kind] = seconds.get(u.kind, 0.0) + secs
        units[u.kind] = units.get(u.kind, 0) + 1
    return Estimate(seconds={k: round(v, 1) for k, v in seconds.items()}, units=units, workers=int(workers),
                    calibration=dict(cal))


#: Seconds of one probe fit beyond its data passes (measured: 0.15-0.3 s per fit in the studies on 2 cores).
PROBE_FIXED_S = 0.15


def _dataset_size(d) -> tuple[int, int, int]:
    """(train, test, classes) of a dataset entry, capped by its max_samples; without loading images where the
    source knows its length."""
    try:
        from ..data import load_dataset

        n = {}
        classes = 10
        for split in ("train", "test"):
            ds = load_dataset(d.spec, split=split, root=str(d.root) if d.root else None)
            n[split] = len(ds)
            classes = len(getattr(ds, "classes", None) or []) or classes
    except Exception:  # noqa: BLE001 - an estimate: a source that cannot tell gets a guess
        n, classes = {"train": 10000, "test": 2000}, 10
    cap = d.max_samples
    if isinstance(cap, int):
        n = {k: min(v, cap) for k, v in n.items()}
    elif isinstance(cap, dict):
        n = {k: min(v, cap.get(k, v)) for k, v in n.items()}
    return n["train"], n["test"], classes


#: How ``--budget`` scales a study down, in order: each step is applied while the estimate is over budget. Steps
#: only ever lower a setting (a value already below the step's is kept).
BUDGET_STEPS = (
    ("inversion steps -> 50", lambda c: _lower(c, ("inversion", "steps"), 50)),
    ("seeds -> 3", lambda c: _lower_seeds(c, ("seeds",), 3)),
    ("depth-profile seeds -> 2 and 6 fractions", lambda c: (_lower_seeds(c, ("profile", "seeds"), 2, c.get("seeds")),
                                                            _fewer(c, ("profile", "fractions"),
                                                                   [0.01, 0.05, 0.1, 0.2, 0.5, 1.0],
                                                                   c.get("fractions")))),
    ("fractions -> 9", lambda c: _fewer(c, ("fractions",), [0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 1.0])),
    ("training samples -> at most 20,000 per dataset", lambda c: _cap(c, 20000, 5000)),
    ("inversion images -> 2, steps -> 25", lambda c: (_lower(c, ("inversion", "n_images"), 2),
                                                      _lower(c, ("inversion", "steps"), 25))),
    ("seeds -> 2", lambda c: _lower_seeds(c, ("seeds",), 2)),
    ("training samples -> at most 10,000 per dataset", lambda c: _cap(c, 10000, 2500)),
    ("neuron stability resamples -> 5", lambda c: _lower(c, ("neurons", "n_boot"), 5)),
    ("training samples -> at most 4,000 per dataset", lambda c: _cap(c, 4000, 1000)),
)


def _node(cfg: dict, path: tuple):
    node = cfg
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            return None
        node = node[key]
    return node


def _lower(cfg: dict, path: tuple, value, default=None) -> bool:
    """Set ``path`` to ``value`` when that lowers it; False when the section is absent or already as low."""
    node = _node(cfg, path)
    if node is None:
        return False
    current = node.get(path[-1], default)
    if current is not None and current <= value:
        return False
    node[path[-1]] = value
    return True


def _seed_count(v) -> int | None:
    return None if v is None else (len(v) if isinstance(v, (list, tuple)) else int(v))


def _lower_seeds(cfg: dict, path: tuple, count: int, default=None) -> bool:
    """Fewer seeds (a count or a list: its first ``count``), never more."""
    node = _node(cfg, path)
    if node is None:
        return False
    current = node.get(path[-1], default)
    n = _seed_count(current)
    if n is not None and n <= count:
        return False
    node[path[-1]] = list(current)[:count] if isinstance(current, (list, tuple)) else count
    return True


def _fewer(cfg: dict, path: tuple, grid: list[float], default=None) -> bool:
    """A shorter fraction grid: ``grid`` when it has fewer fractions than the current one."""
    node = _node(cfg, path)
    if node is None:
        return False
    current = node.get(path[-1], default)
    if current is not None and len(current) <= len(grid):
        return False
    node[path[-1]] = list(grid)
    return True


def _cap(cfg: dict, train: int, test: int) -> bool:
    """At most ``train`` / ``test`` samples per dataset (per split, never raising a smaller cap)."""
    changed = False
    for d in cfg["datasets"]:
        cur = d.get("max_samples")
        cur = cur if isinstance(cur, dict) else ({"train": cur, "test": cur} if cur else {})
        new = {split: min(cap, cur.get(split) or cap) for split, cap in (("train", train), ("test", test))}
        new.update({k: v for k, v in cur.items() if k not in new})
        if new != cur:
            d["max_samples"] = new
            changed = True
    return changed


def fit_budget(config: dict, budget_s: float, *, price) -> tuple[dict, list[str], float]:
    """Apply :data:`BUDGET_STEPS` in order until ``price(config)`` (estimated seconds) fits ``budget_s``.

    Returns the config, the steps applied (what was cut) and the final estimate; raises :class:`ConfigError`
    when even the smallest settings do not fit, naming the estimate and the fixes.
    """
    cfg = copy.deepcopy(config)
    cut: list[str] = []
    secs = price(cfg)
    for what, step in BUDGET_STEPS:
        if secs <= budget_s:
            break
        trial = copy.deepcopy(cfg)
        changed = step(trial)
        if not (any(changed) if isinstance(changed, tuple) else changed):
            continue
        new = price(trial)
        if new < secs:  # a step that saves nothing is not a cut
            cfg, secs = trial, new
            cut.append(what)
    if secs > budget_s:
        raise ConfigError(f"the study cannot fit --budget {_fmt(budget_s)} on this machine: at its smallest settings "
                          f"it is estimated at {_fmt(secs)}; raise --budget to at least {_fmt(secs * 1.1)}, pass fewer "
                          "--datasets, drop parts with --parts, or run it on more workers (--executor ray/slurm)")
    return cfg, cut, secs
