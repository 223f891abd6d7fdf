"""Checkpoints of ``critmass train``: safetensors weights that load by name, trainer state to resume.

A run directory holds

- ``config.json``: the resolved config, its identity hash and the library versions (written first);
- ``checkpoint/state.json`` naming ``checkpoint/step-NNNNNNN.model.safetensors`` and
  ``...trainer.safetensors`` (optimiser state, extra Matryoshka heads) with their SHA-256: the files
  are written first and the state last, each atomically, so a kill at any moment leaves the previous
  complete checkpoint in place;
- ``model.safetensors`` (the final weights) and ``train.json`` (the summary; written last: the run is
  done when it exists).

Weights files carry the timm architecture and constructor kwargs in their safetensors metadata, so
``critmass.models.load_model("timm:ARCH", weights=FILE)`` rebuilds the trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path, atomic_write_json, sha256_file
from ..exceptions import CacheError
from ..models import TIMM_ARCH_KEY, TIMM_KWARGS_KEY

__all__ = ["save_weights", "save_checkpoint", "load_checkpoint", "optimizer_tensors", "optimizer_from_tensors"]

CONFIG_KEY = "critmass.train_identity"


def _plain(sd: dict) -> dict[str, torch.Tensor]:
    # safetensors refuses views and shared storage: give it one contiguous copy per tensor.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_weights(path, model: nn.Module, *, arch: str, timm_kwargs: dict, identity: dict, step: int) -> None:
    """The model's state dict as ``.safetensors`` with what rebuilds it in the metadata (atomic)."""
    from safetensors.torch import save_file

    meta = {TIMM_ARCH_KEY: arch, TIMM_KWARGS_KEY: json.dumps(timm_kwargs, sort_keys=True),
            CONFIG_KEY: json.dumps(identity, sort_keys=True), "critmass.step": str(int(step))}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(_plain(model.state_dict()), str(tmp), metadata=meta)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser's state dict into tensors (for safetensors) and JSON (everything else)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, extra: dict[str, torch.Tensor], state: dict, *,
                    arch: str, timm_kwargs: dict, identity: dict) -> None:
    """Write step ``step``'s weights and trainer tensors, then ``state.json`` naming them; drop older steps."""
    from safetensors.torch import save_file

    ckpt = Path(run_dir) / "checkpoint"
    model_file, trainer_file = f"step-{step:07d}.model.safetensors", f"step-{step:07d}.trainer.safetensors"
    save_weights(ckpt / model_file, model, arch=arch, timm_kwargs=timm_kwargs, identity=identity, step=step)
    with atomic_path(ckpt / trainer_file, suffix=".safetensors") as tmp:
        save_file(_plain(extra), str(tmp))
    atomic_write_json(ckpt / "state.json", {
        **state, "step": int(step), "model_file": model_file, "trainer_file": trainer_file,
        "model_sha256": sha256_file(ckpt / model_file), "trainer_sha256": sha256_file(ckpt / trainer_file),
    })
    for old in ckpt.glob("step-*.safetensors"):
        if old.name not in (model_file, trainer_file):
            old.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]] | None:
    """``(state, model state dict, trainer tensors)`` of the last complete checkpoint, or None."""
    from safetensors.torch import load_file

    ckpt = Path(run_dir) / "checkpoint"
    if not (ckpt / "state.json").is_file():
        return None
    fix = f"delete {str(ckpt)!r} to start the run again"
    try:
        state = json.loads((ckpt / "state.json").read_text())
        files = {k: ckpt / state[f"{k}_file"] for k in ("model", "trainer")}
    except (OSError, ValueError, KeyError, TypeError):
        raise CacheError(f"checkpoint state {str(ckpt / 'state.json')!r} is unreadable; {fix}") from None
    for kind, path in files.items():
        if not path.is_file() or sha256_file(path) != state.get(f"{kind}_sha256"):
            raise CacheError(f"checkpoint file {str(path)!r} is missing or does not match its SHA-256; {fix}")
    return state, load_file(str(files["model"])), load_file(str(files["trainer"]))
