"""The training harness behind ``critmass train``: a timm backbone on an upstream task, seeded,
resumable, with the factors of diffused redundancy (dropout, DeCov, Matryoshka, width, PGD).

Reproducibility: the initialisation is drawn from ``seed``; the order of epoch ``e`` is a permutation
from ``numpy.random.default_rng([seed, e])``; before step ``s`` torch's RNG is seeded from
``(seed, s)`` (dropout masks, PGD random starts). Nothing depends on the steps before but the
weights and the optimiser state, both in every checkpoint, so a run resumed after a kill ends with
the same weights, bit for bit on the CPU with the same thread count, as a run never interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .._alloc import heap_reuse
from .._io import atomic_write_json, sha256_file
from .._testhooks import pause_here
from ..exceptions import ConfigError
from ._adversarial import PGD
from ._checkpoint import load_checkpoint, optimizer_from_tensors, optimizer_tensors, save_checkpoint, save_weights
from ._config import TrainConfig, load_train_config
from ._data import load_images, split_transform
from ._losses import DeCov, MatryoshkaLoss, Penultimate

__all__ = ["train", "TrainResult", "build_model"]

log = logging.getLogger(__name__)

#: Test hook (see :func:`critmass._testhooks.pause_here`): with ``CRITMASS_TRAIN_PAUSE_AT_STEP=N`` a run
#: writes ``OUT/.paused-step-N`` once the checkpoint of step N is written, then sleeps
#: (``CRITMASS_TRAIN_PAUSE_S`` seconds), so a test kills it at exactly that step.
PAUSE_AT_STEP_ENV, PAUSE_S_ENV = "CRITMASS_TRAIN_PAUSE_AT_STEP", "CRITMASS_TRAIN_PAUSE_S"


@dataclass
class TrainResult:
    """What a call to :func:`train` left in ``output``."""

    output: Path
    model_path: Path | None  # the final weights (None while the run is unfinished)
    arch: str
    step: int
    total_steps: int
    history: list = field(default_factory=list)  # one record per finished epoch
    final: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.model_path is not None

    @property
    def spec(self) -> str:
        """The model spec to load the weights with: ``load_model(result.spec, weights=result.model_path)``."""
        return f"timm:{self.arch}"

    def summary(self) -> str:
        if not self.done:
            return f"{self.output}: stopped at step {self.step}/{self.total_steps}; run again to resume"
        acc = self.final.get("test_accuracy")
        robust = self.final.get("robust_test_accuracy")
        extra = f", PGD test accuracy {robust:.3f}" if robust is not None else ""
        return (f"{self.model_path} ({self.spec}, {self.final.get('n_features')} penultimate neurons): test accuracy "
                f"{acc:.3f}{extra} after {self.step} steps")


def _versions() -> dict:
    import timm

    import critmass

    return {"critmass": getattr(critmass, "__version__", "unknown"), "torch": torch.__version__,
            "timm": timm.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _step_seed(seed: int, step: int, stream: int = 0) -> int:
    """torch seed of step ``step`` (stream 0: training; 1: the final PGD evaluation)."""
    words = [int(seed), int(step), int(stream), 0x7E1A]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def timm_kwargs_of(cfg: TrainConfig, num_classes: int) -> dict:
    """The timm constructor kwargs of the configured model (what the checkpoint's metadata records)."""
    kw = dict(cfg.model.kwargs)
    kw["num_classes"] = int(num_classes)
    if cfg.model.width is not None:
        kw["head_hidden_size"] = int(cfg.model.width)
    size = int(cfg.model.image_size)
    kw["pretrained_cfg_overlay"] = {"input_size": [3, size, size], "crop_pct": 1.0}
    return kw


def build_model(cfg: TrainConfig, num_classes: int):
    """The timm model of ``cfg`` (random init from torch's current RNG) and its kwargs."""
    import timm

    kwargs = timm_kwargs_of(cfg, num_classes)
    try:
        model = timm.create_model(cfg.model.arch, pretrained=False, **kwargs)
    except TypeError as exc:
        key = ("model", "width") if "head_hidden_size" in str(exc) else ("model", "kwargs")
        hint = ("model.width needs an architecture with a head_hidden_size option (e.g. convnext_*); set the width "
                "of others through model.kwargs") if key[1] == "width" else "check the names against the timm model's constructor"
        raise cfg.error(key, f"timm:{cfg.model.arch} does not take these arguments ({str(exc).splitlines()[0][:160]}); "
                        f"{hint}") from None
    except Exception as exc:
        raise cfg.error(("model",), f"cannot build timm:{cfg.model.arch} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]})") from None
    return model, kwargs


@contextlib.contextmanager
def _torch_session(threads: int | None, device: torch.device):
    """Threads and RNG of the run, restored afterwards: training leaves the caller's torch state alone."""
    prev = torch.get_num_threads()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if threads:
            torch.set_num_threads(int(threads))
        try:
            yield
        finally:
            torch.set_num_threads(prev)


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is cuda but torch sees no CUDA device; set device: cpu")
    return torch.device(name)


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    span = max(1, total - o.warmup_steps)
    return 0.5 * o.lr * (1 + math.cos(math.pi * (step - o.warmup_steps) / span))


def _optimizer(cfg: TrainConfig, params):
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=(o.momentum, 0.999), weight_decay=o.weight_decay)


@torch.no_grad()
def _accuracy(net: Penultimate, data, batch_size: int, device, n: int | None = None) -> float:
    was = net.training
    net.eval()
    n = len(data) if n is None else min(n, len(data))
    correct = 0
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        x, y = data.batch(idx)
        correct += int((net(x.to(device)).argmax(1).cpu() == y).sum())
    net.train(was)
    return correct / max(1, n)


def _robust_accuracy(net, data, attack: PGD, batch_size: int, device, n: int, seed: int) -> float:
    torch.manual_seed(_step_seed(seed, 0, stream=1))
    correct = 0
    n = min(n, len(data))
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        x, y = data.batch(idx)
        x, y = x.to(device), y.to(device)
        adv = attack(net, x, y)
        with torch.no_grad():
            net.eval()
            correct += int((net(adv).argmax(1) == y).sum())
    return correct / max(1, n)


def _check_run_dir(cfg: TrainConfig, out: Path) -> None:
    import json

    path = out / "config.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return  # a torn write of config.json cannot happen (atomic); treat anything else as a fresh start
    if old.get("identity_hash") != cfg.identity_hash():
        before, now = old.get("identity", {}), cfg.identity()
        diff = sorted(_diff_keys(before, now))
        raise ConfigError(f"{str(out)!r} holds a run of a different config (changed: {', '.join(diff[:4]) or '?'}); "
                          "pass another output directory (--out) or delete that one")


def _diff_keys(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def train(config, *, output=None, seed: int | None = None, progress: bool = True, stop_after: int | None = None,
          base_dir=None) -> TrainResult:
    """Train (or resume, or return) the run of a config.

    Parameters
    ----------
    config : YAML path, mapping or :class:`TrainConfig`
    output, seed : override the config's ``output`` and ``seed``.
    progress : tqdm progress bar (loss, accuracy, images/s) on stderr.
    stop_after : stop once this many steps are done (in total), after writing a checkpoint, as a
        kill would; the next call resumes.

    Returns
    -------
    TrainResult
        ``result.model_path`` loads with ``critmass.models.load_model(result.spec, weights=...)``.
        A finished run is not trained again: a second call returns its result.
    """
    cfg = load_train_config(config, base_dir=base_dir, seed=seed, output=output)
    out = Path(cfg.output)
    _check_run_dir(cfg, out)
    done = out / "train.json"
    if done.is_file() and (out / "model.safetensors").is_file():
        import json

        info = json.loads(done.read_text())
        if info.get("model_sha256") == sha256_file(out / "model.safetensors"):
            log.info("%s is already trained; nothing to do", out)
            return TrainResult(out, out / "model.safetensors", cfg.model.arch, info["step"], info["total_steps"],
                               info["history"], info["final"])
    device = _device(cfg.device)
    # heap_reuse: on a CPU, glibc would unmap and page-fault the large activations again every step.
    with _torch_session(cfg.threads, device), heap_reuse(device.type == "cpu"):
        return _run(cfg, out, device, progress, stop_after)


def _run(cfg: TrainConfig, out: Path, device, progress: bool, stop_after: int | None) -> TrainResult:
    from timm.data import resolve_model_data_config

    t_start = time.perf_counter()
    n_classes = len(cfg.data.classes) if cfg.data.classes else None
    # The architecture first (for its transform): built twice at most, each time from the seed.
    torch.manual_seed(cfg.seed)
    probe_model, _ = build_model(cfg, n_classes or 2)
    pil_tf, mean, std = split_transform(resolve_model_data_config(probe_model))
    d = cfg.data
    load = dict(pil_transform=pil_tf, classes=d.classes, seed=d.seed, root=d.root, download=d.download)
    train_set = load_images(d.spec, "train", max_samples=d.max_samples, **load)
    test_set = load_images(d.spec, "test", max_samples=d.test_max_samples, **{**load, "classes": train_set.source_classes})
    n_classes = len(train_set.classes)
    torch.manual_seed(cfg.seed)
    model, timm_kwargs = build_model(cfg, n_classes)
    del probe_model
    net = Penultimate(model, mean=mean, std=std, dropout=cfg.dropout).to(device)
    classifier = model.get_classifier()
    with torch.no_grad():
        probe_x, _ = train_set.batch(torch.arange(min(2, len(train_set))))
        try:
            n_features = int(net.penultimate(probe_x.to(device)).shape[1])
        except RuntimeError as exc:
            raise cfg.error(("model", "image_size"), f"timm:{cfg.model.arch} cannot run on {cfg.model.image_size} px "
                            f"images ({str(exc).splitlines()[0][:120]}); raise model.image_size or use fewer "
                            "stages") from None
    mrl = None
    if cfg.matryoshka is not None:
        try:
            mrl = MatryoshkaLoss(n_features, n_classes, cfg.matryoshka.dims, weights=cfg.matryoshka.weights,
                                 full_head=classifier if isinstance(classifier, torch.nn.Linear) else None).to(device)
        except ConfigError as exc:
            raise cfg.error(("matryoshka", "dims"), str(exc)) from None
    decov = DeCov(cfg.decov) if cfg.decov > 0 else None
    adversary = None
    if cfg.adversarial is not None:
        a = cfg.adversarial
        adversary = PGD(a.norm, a.eps, alpha=a.alpha, steps=a.steps, random_start=a.random_start)
        adversary.attack(net)  # torchattacks importable: fail now, not at the first step
    params = {id(p): p for p in [*net.parameters(), *(mrl.parameters() if mrl is not None else [])]}
    opt = _optimizer(cfg, list(params.values()))
    extra_heads = {} if mrl is None else {f"mrl.{i}": h for i, h in enumerate(mrl.heads)
                                          if not (mrl.shares_full_head and i == len(mrl.heads) - 1)}

    bs = cfg.optim.batch_size
    steps_per_epoch = len(train_set) // bs
    if steps_per_epoch < 1:
        raise cfg.error(("optim", "batch_size"), f"batch_size {bs} is larger than the {len(train_set)} training images; "
                        "lower it or use more data")
    total = steps_per_epoch * cfg.optim.epochs
    if cfg.optim.max_steps is not None:
        total = min(total, cfg.optim.max_steps)
    identity = cfg.identity()
    atomic_write_json(out / "config.json", {
        "config": cfg.resolved(), "identity": identity, "identity_hash": cfg.identity_hash(),
        "timm_arch": cfg.model.arch, "timm_kwargs": timm_kwargs, "versions": _versions(),
        "n_train": len(train_set), "n_test": len(test_set), "classes": train_set.classes,
        "source_classes": train_set.source_classes, "n_features": n_features, "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
    })

    step, history = 0, []
    stats = {"loss_sum": 0.0, "correct": 0, "seen": 0}
    resumed = load_checkpoint(out)
    if resumed is not None:
        state, model_sd, tensors = resumed
        model.load_state_dict(model_sd, strict=True)
        for name, head in extra_heads.items():
            head.load_state_dict({k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(name + ".")})
        optimizer_from_tensors(opt, tensors, state["optim"])
        step, history, stats = int(state["step"]), list(state["history"]), dict(state["stats"])
        log.info("%s: resuming at step %d of %d", out, step, total)

    def checkpoint():
        tensors, meta = optimizer_tensors(opt)
        for name, head in extra_heads.items():
            tensors.update({f"{name}.{k}": v for k, v in head.state_dict().items()})
        save_checkpoint(out, step, model, tensors, {"optim": meta, "history": history, "stats": stats,
                                                    "identity_hash": cfg.identity_hash()},
                        arch=cfg.model.arch, timm_kwargs=timm_kwargs, identity=identity)
        # Test hook: the kill test stops here once step N's checkpoint is durable and SIGKILLs the run.
        pause_here(PAUSE_AT_STEP_ENV, str(step), out, marker=f"step-{step}", seconds_env=PAUSE_S_ENV)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, disable=not progress, unit="step", desc=cfg.name, dynamic_ncols=True,
               leave=False)
    order_epoch, order = -1, None
    t0, images = time.perf_counter(), 0
    net.train()
    try:
        while step < total:
            if stop_after is not None and step >= stop_after:
                checkpoint()
                return TrainResult(out, None, cfg.model.arch, step, total, history)
            epoch, i = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, torch.from_numpy(_epoch_order(cfg.seed, epoch, len(train_set)))
            x, y = train_set.batch(order[i * bs:(i + 1) * bs])
            x, y = x.to(device), y.to(device)
            torch.manual_seed(_step_seed(cfg.seed, step))
            if adversary is not None:
                x = adversary(net, x, y)
            net.train()
            h = net.penultimate(x)
            hd = net.dropout(h)
            logits = classifier(hd)
            loss = mrl(hd, y) if mrl is not None else F.cross_entropy(logits, y)
            if decov is not None:
                penalty = decov(h)
                loss = loss + penalty
                stats["decov_sum"] = stats.get("decov_sum", 0.0) + float(penalty.detach()) * len(y)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged at step {step} (loss {float(loss)}); lower optim.lr "
                                  f"({cfg.optim.lr:g}) or the DeCov strength ({cfg.decov:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, step, total)
            opt.step()
            step += 1
            images += len(y)
            stats["loss_sum"] += float(loss.detach()) * len(y)
            stats["correct"] += int((logits.detach().argmax(1) == y).sum())
            stats["seen"] += len(y)
            bar.update(1)
            if step % 10 == 0 or step == total:
                bar.set_postfix(loss=f"{stats['loss_sum'] / stats['seen']:.3f}",
                                acc=f"{stats['correct'] / stats['seen']:.3f}",
                                img_s=f"{images / max(1e-9, time.perf_counter() - t0):.0f}")
            end_of_epoch = step % steps_per_epoch == 0 or step == total
            if end_of_epoch:
                rec = {"epoch": epoch + 1, "step": step, "train_loss": stats["loss_sum"] / stats["seen"],
                       "train_accuracy": stats["correct"] / stats["seen"],
                       "test_accuracy": _accuracy(net, test_set, cfg.eval_batch_size, device),
                       "lr": _lr_at(cfg, step - 1, total)}
                if "decov_sum" in stats:  # the DeCov term's share of train_loss
                    rec["train_decov"] = stats["decov_sum"] / stats["seen"]
                history.append(rec)
                log.info("epoch %d: %s", epoch + 1, rec)
                stats = {"loss_sum": 0.0, "correct": 0, "seen": 0}
            if end_of_epoch or step % cfg.checkpoint_every == 0:
                checkpoint()
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    final = {"test_accuracy": history[-1]["test_accuracy"] if history else None, "n_features": n_features,
             "images_per_s": round(images / max(1e-9, time.perf_counter() - t0), 1), "seconds": round(seconds, 2)}
    if adversary is not None and cfg.adversarial.eval_samples:
        final["robust_test_accuracy"] = _robust_accuracy(net, test_set, adversary, cfg.eval_batch_size, device,
                                                         cfg.adversarial.eval_samples, cfg.seed)
        final["robust_eval_samples"] = min(cfg.adversarial.eval_samples, len(test_set))
    save_weights(out / "model.safetensors", model, arch=cfg.model.arch, timm_kwargs=timm_kwargs, identity=identity,
                 step=step)
    atomic_write_json(out / "train.json", {
        "spec": f"timm:{cfg.model.arch}", "weights": str(out / "model.safetensors"),
        "model_sha256": sha256_file(out / "model.safetensors"), "step": step, "total_steps": total,
        "history": history, "final": final, "seed": cfg.seed, "config": cfg.resolved(), "versions": _versions(),
    })
    return TrainResult(out, out / "model.safetensors", cfg.model.arch, step, total, history, final)
