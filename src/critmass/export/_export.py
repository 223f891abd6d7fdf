"""``export_run``: one probe of a run as a small deployable torch module; ``load_exported`` rebuilds it.

An export directory holds::

    model.safetensors   the module's tensors (backbone.*, head.*, classes)
    config.json         what it is: run, selector, seed, fraction, k, model spec, weights id, layer, pooling,
                        preprocessing, input shape, pruning plan, checks, versions (written last)
    model.onnx          the same module as ONNX (input "input", output "scores"; dynamic batch)
    model.ts            TorchScript (traced), where the model traces
    savings.json        full vs reduced: bytes per vector, parameters, FLOPs, latency, accuracy cost
"""

from __future__ import annotations

import copy
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._env import versions
from .._io import atomic_path, atomic_write_bytes, atomic_write_json
from ..exceptions import ConfigError, DataError, WeightsError
from ._runs import RunProbe, read_format_json, read_probe

__all__ = ["export_run", "load_exported", "ExportResult", "FORMAT"]

logger = logging.getLogger(__name__)

FORMAT = "critmass-export/1"
_CONFIG, _WEIGHTS, _ONNX, _TS, _SAVINGS = "config.json", "model.safetensors", "model.onnx", "model.ts", "savings.json"
_TOL = 1e-5  # features of the exported backbone vs the pipeline's, relative to the features' scale


@dataclass
class ExportResult:
    """What :func:`export_run` wrote: the directory, the module, its config and the measured savings."""

    out: Path
    model: object
    config: dict
    savings: dict
    files: dict = field(default_factory=dict)
    seconds: float = float("nan")


def _feature_set(probe: RunProbe):
    """The run's cached feature set, when it is still there (None otherwise)."""
    from ..features import load_features

    source = probe.config.get("source")
    if not source or not Path(source).exists():
        return None
    try:
        return load_features(source, verify=False)
    except Exception as exc:  # a removed or rewritten cache entry: the checks that need it are skipped
        logger.warning("cannot read the run's features at %s (%s); skipping the checks on cached features", source,
                       type(exc).__name__)
        return None


def _image_size_for(spec: str, prep: dict | None):
    """The ``image_size`` that rebuilds the preprocessing recorded at extraction (None: the model's own)."""
    if not prep:
        return None
    if spec.startswith("timm:") and float(prep.get("crop_pct", 0) or 0) == 1.0 and prep.get("input_size"):
        return int(prep["input_size"][-1])
    if spec.startswith("torchvision:"):
        m = re.search(r"Resize\(size=\((\d+), (\d+)\)", str(prep.get("transform", "")))
        if m:
            return int(m.group(1))
    return None


def _load_backbone(spec: str, weights_id: str, prep: dict | None, weights=None):
    """The run's backbone with the weights the features came from (checked by weights id)."""
    from ..models import ALIASES, file_digest, load_model, resolve_alias

    image_size = _image_size_for(spec, prep)
    if weights is None and weights_id.startswith("sha256:"):
        family = spec.split(":", 1)[0]
        for alias, entry in ALIASES.items():  # packaged weights (efficientnet-lite0/1/2 and friends)
            if family not in ("timm", "torchvision") or str(entry[1]).split(":", 1)[0] != family:
                continue
            try:
                resolved = resolve_alias(alias, None)
            except Exception:  # its package is not installed
                continue
            path = resolved[1] if resolved[0] == spec else None
            if path and file_digest(path) == weights_id:
                weights = path
                break
        if weights is None:
            raise WeightsError(f"the run's backbone weights are a local file ({weights_id}); pass --weights PATH, the "
                               "file the features were extracted with")
    pretrained = weights is None and weights_id.startswith("pretrained:")
    bb = load_model(spec, pretrained=pretrained, weights=weights, image_size=image_size)
    if bb.weights_id != weights_id:
        raise WeightsError(f"the loaded weights of {spec} are {bb.weights_id} but the run's features came from "
                           f"{weights_id}; pass --weights PATH with the file the features were extracted with")
    if prep and bb.preprocessing != prep:
        logger.warning("the preprocessing rebuilt for %s differs from the one recorded at extraction", spec)
    return bb


def _example_input(bb, batch: int = 2, seed: int = 0):
    """A seeded random batch shaped like the backbone's preprocessed input (one dummy image through it)."""
    import torch
    from PIL import Image

    x = bb.preprocess(Image.new("RGB", (64, 64), (128, 128, 128)))
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *x.shape), generator=g, dtype=torch.float32)


def _max_rel_diff(a, b) -> float:
    import torch

    a, b = a.to(torch.float64), b.to(torch.float64)
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def _head(probe: RunProbe, positions=None):
    from ._modules import ReductionHead

    if probe.is_projection:
        return ReductionHead(probe.coef, probe.intercept, components=probe.components, mean=probe.mean)
    return ReductionHead(probe.coef, probe.intercept, index=probe.indices if positions is None else positions)


def export_run(run_dir, *, selector: str = "random", fraction: float = 0.2, seed: int | None = None, out,
               head_only: bool = False, prune: bool = False, weights=None, onnx: bool = True,
               torchscript: bool = True, latency_repeats: int = 20, n_boot: int = 1000) -> ExportResult:
    """Export one probe of a ``critmass probe`` run as a torch module, with ONNX / TorchScript copies.

    The module is the backbone up to the probed layer (omitted with ``head_only``), the probe's index select
    or projection and its linear head (the probe's standardisation is folded into the saved coefficients).
    With ``prune`` the backbone loses the output channels of the layer the neurons come from, so it computes
    only the selected features (:mod:`critmass.export._prune`); projections cannot be pruned.

    Checks run before anything is written: the exported backbone's features equal the pipeline's
    (``LayerReader``) on a seeded random batch, and, pruned, equal the selected columns (1e-5 relative);
    the head's test accuracy on the run's cached test features equals the run's (``savings.json`` records
    both). Files are written atomically, ``config.json`` last.

    Parameters
    ----------
    run_dir : path
        A ``critmass probe --out`` directory (``results.parquet`` and ``weights/``).
    selector, fraction, seed
        Which probe; ``seed=None``: the run's first seed for that selector.
    out : path
        The export directory.
    head_only, prune : bool
    weights : path, optional
        The backbone's local weights file, when the run's features came from one (``sha256:`` weights id)
        that is not a packaged model.
    onnx, torchscript : bool
        Also write ``model.onnx`` (checked with onnxruntime when installed) / ``model.ts``.
    latency_repeats : int
        Repeats of the CPU latency measurement (pruned backbones).
    n_boot : int
        Bootstrap resamples of the accuracy-cost CI.

    Returns
    -------
    ExportResult
    """
    import torch

    from ..models import LayerReader
    from ._modules import ExportedModel, penultimate_net
    from ._prune import apply_plan, prune_plan
    from ._savings import FLOP_CONVENTION, accuracy_cost, count_flops, count_params, cpu_latency, storage_savings

    t0 = time.perf_counter()
    if head_only and prune:
        raise ConfigError("--prune cuts the backbone, which --head-only leaves out; pass one of them")
    probe = read_probe(run_dir, selector=selector, fraction=fraction, seed=seed)
    if prune and probe.is_projection:
        raise ConfigError(f"--prune keeps whole neurons, but selector {selector!r} projects all {probe.n_features} "
                          "neurons onto each of its directions, so no channel can be removed; export without --prune, "
                          "or with --head-only")
    row = probe.row
    spec, weights_id = str(row["model"]), str(row["weights"])
    layer, pooling = str(row["layer"]), str(row["pooling"] or "auto")
    fs = _feature_set(probe)
    train_manifest = fs["train"].manifest if fs is not None else {}
    prep = train_manifest.get("preprocessing")
    d, k = probe.n_features, probe.k

    checks: dict = {}
    plan = None
    input_shape = [d]
    backbone_info = None
    positions = None
    net = full_net = None
    example = torch.zeros((2, d), dtype=torch.float32)
    if not head_only:
        if prep is None:
            logger.warning("the run's feature cache is gone: the exported preprocessing is %s's default, which may "
                           "differ from the one the features were extracted with", spec)
            checks["preprocessing"] = "the model's default (the run's feature cache is gone)"
        if layer != "penultimate":
            raise ConfigError(f"full-model export cuts the backbone at its 'penultimate' layer; this run probed "
                              f"layer {layer!r}; export the reduction and head with --head-only")
        bb = _load_backbone(spec, weights_id, prep, weights)
        if bb.modality != "image" or bb.preprocess is None:
            raise ConfigError(f"full-model export supports image models; {spec} is a {bb.modality} model; export "
                              "the reduction and head with --head-only")
        full_net = penultimate_net(bb.module, spec)
        example = _example_input(bb)
        with torch.inference_mode():
            ref = LayerReader(bb, layer, pooling)(example).float()
            got = full_net(example)
        if ref.shape[1] != d:
            raise DataError(f"the rebuilt {spec} gives {ref.shape[1]} features at {layer!r} but the run has {d}; "
                            "export with --head-only")
        checks["backbone_vs_pipeline_max_rel_diff"] = _max_rel_diff(got, ref)
        if checks["backbone_vs_pipeline_max_rel_diff"] > _TOL:
            raise DataError(f"the exported backbone of {spec} does not reproduce the pipeline's {layer!r} features "
                            f"(max rel. diff {checks['backbone_vs_pipeline_max_rel_diff']:.2g}); export with --head-only")
        net = full_net
        if prune:
            plan = prune_plan(full_net, spec, probe.indices, d)
            net = apply_plan(copy.deepcopy(full_net), plan, example)
            keep = np.asarray(plan["keep"], dtype=np.int64)
            with torch.inference_mode():
                pruned = net(example)
            if pruned.shape[1] != len(keep):
                raise DataError(f"--prune left {pruned.shape[1]} features instead of {len(keep)}; export without "
                                "--prune")
            checks["pruned_vs_selected_max_rel_diff"] = _max_rel_diff(pruned, ref[:, keep])
            if checks["pruned_vs_selected_max_rel_diff"] > _TOL:
                raise DataError(f"the pruned backbone's features differ from the selected columns of the full "
                                f"model's (max rel. diff {checks['pruned_vs_selected_max_rel_diff']:.2g}); export "
                                "without --prune")
            positions = np.searchsorted(keep, probe.indices)  # the probe's column order over the kept channels
        input_shape = list(example.shape[1:])
        backbone_info = {"spec": spec, "weights": weights_id, "layer": layer, "pooling": pooling,
                         "family": net.family, "image_size": _image_size_for(spec, prep),
                         "preprocessing": bb.preprocessing}
    head = _head(probe, positions)
    model = ExportedModel(head, net, classes=probe.classes).eval()

    # Savings and the checks on cached test features.
    full_probe = None
    try:
        from ._runs import full_probe as _full

        full_probe = _full(probe.run_dir)
    except Exception as exc:  # no 'all' weights: the CI is skipped
        logger.warning("no full-layer probe weights in the run (%s); the accuracy CI is skipped", exc)
    correct_full = correct_sub = None
    if fs is not None and "test" in fs:
        x_test, y_test = np.array(fs["test"].x, dtype=np.float32), np.asarray(fs["test"].y)
        with torch.inference_mode():
            scores = head(torch.from_numpy(x_test) if positions is None else
                          torch.from_numpy(x_test[:, np.asarray(plan["keep"])]))
        pred = probe.classes[scores.argmax(1).numpy()]
        correct_sub = pred == y_test
        checks["test_accuracy_reproduced"] = float(correct_sub.mean())
        checks["test_accuracy_run"] = float(row["test_accuracy"])
        checks["test_predictions_equal_probe"] = bool(np.array_equal(pred, probe.predict(x_test)))
        if full_probe is not None:
            correct_full = full_probe.predict(x_test) == y_test
    elif fs is None:
        checks["note"] = "the run's cached features are gone: test-set checks skipped"
    n_vectors = int(row["n_train"]) + int(row["n_val"]) + int(row["n_test"])
    itemsize = np.dtype(train_manifest.get("dtype") or "float32").itemsize
    n_classes = len(probe.classes)
    head_full = torch.nn.Linear(d, n_classes)
    savings = {
        "run": str(probe.run_dir), "selector": selector, "seed": probe.seed, "fraction": probe.fraction, "k": k,
        "n_features": d, "n_classes": n_classes,
        "storage": storage_savings(d, k, itemsize_full=itemsize, n_vectors=n_vectors),
        "head": {"params": {"full": d * n_classes + n_classes, "reduced": k * n_classes + n_classes,
                            "reducer": (d * k + d) if probe.is_projection else 0},
                 "flops": {"full": count_flops(head_full, torch.zeros(1, d)),
                           "reduced": count_flops(head, torch.zeros(1, d if positions is None else len(positions)))},
                 "flop_convention": FLOP_CONVENTION},
        "accuracy": accuracy_cost(_results_table(probe.run_dir), selector, probe.fraction, probe.seed,
                                  correct_full=correct_full, correct_subset=correct_sub, n_boot=n_boot),
        "gallery_note": "gallery = the run's train (incl. validation) and test rows",
    }
    if net is not None:
        one = example[:1]
        bb_sav = {"params": {"full": count_params(full_net), "exported": count_params(net)},
                  "flops": {"full": count_flops(full_net, one), "exported": count_flops(net, one)},
                  "flop_convention": FLOP_CONVENTION, "input_shape": input_shape}
        if prune:
            bb_sav["latency"] = cpu_latency({"full": full_net, "exported": net}, one, repeats=latency_repeats)
        savings["backbone"] = bb_sav

    config = {
        "format": FORMAT, "kind": "head-only" if head_only else ("pruned" if prune else "full"),
        "run": str(Path(probe.run_dir).resolve()), "selector": selector, "seed": probe.seed,
        "fraction": probe.fraction, "k": k, "n_features": d, "classes": probe.classes.tolist(),
        "class_names": train_manifest.get("classes"),
        "projection": probe.is_projection, "model": spec, "weights": weights_id, "layer": layer, "pooling": pooling,
        "dataset": str(row["dataset"]), "solver": str(row["solver"]), "test_accuracy": float(row["test_accuracy"]),
        "input": {"name": "input", "shape": ["batch", *input_shape], "dtype": "float32",
                  "what": "raw layer features" if head_only else "preprocessed images"},
        "output": {"name": "scores", "shape": ["batch", n_classes], "dtype": "float64",
                   "what": "class scores; label = classes[argmax]"},
        "backbone": backbone_info, "prune": plan, "checks": checks, "versions": versions(),
        "probe_config": probe.config,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # An earlier export in the same directory stops being one until this one's config.json is written, and
    # copies this export does not rewrite (ONNX / TorchScript) go, so no file of the old one is left beside it.
    for name in (_CONFIG, _ONNX, _TS, _SAVINGS):
        (out / name).unlink(missing_ok=True)
    files = {"weights": out / _WEIGHTS}
    _save_state(model, out / _WEIGHTS)
    if onnx:
        files["onnx"] = out / _ONNX
        checks["onnx"] = _save_onnx(model, example, out / _ONNX)
    if torchscript:
        ts = _save_torchscript(model, example, out / _TS)
        checks["torchscript"] = ts
        if ts.get("written"):
            files["torchscript"] = out / _TS
    atomic_write_json(out / _SAVINGS, savings)
    files["savings"] = out / _SAVINGS
    atomic_write_json(out / _CONFIG, config)
    files["config"] = out / _CONFIG
    model.config = config
    if not head_only:
        model.preprocess = bb.preprocess
    return ExportResult(out=out, model=model, config=config, savings=savings, files=files,
                        seconds=time.perf_counter() - t0)


def _results_table(run_dir):
    from ..metrics import read_results

    return read_results(run_dir)


def _save_state(model, path: Path) -> None:
    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"format": FORMAT}))


def _save_onnx(model, example, path: Path) -> dict:
    """Write ``model.onnx`` (legacy TorchScript-based exporter: no onnxscript needed) and check it with
    onnxruntime where installed."""
    import warnings

    import torch

    try:
        with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["input"],
                              output_names=["scores"], dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}},
                              opset_version=17)
    except Exception as exc:
        logger.warning("ONNX export failed (%s: %s)", type(exc).__name__, str(exc)[:160])
        return {"written": False, "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    info: dict = {"written": True, "opset": 17}
    try:
        import onnxruntime as ort
    except ImportError:
        info["checked"] = "onnxruntime not installed"
        return info
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": example.numpy()})[0]
    with torch.inference_mode():
        want = model(example).numpy()
    info["max_abs_diff_vs_torch"] = float(np.abs(got - want).max())
    info["max_rel_diff_vs_torch"] = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
    info["labels_equal"] = bool(np.array_equal(got.argmax(1), want.argmax(1)))
    return info


def _save_torchscript(model, example, path: Path) -> dict:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (example,), check_trace=False)
            with torch.inference_mode():
                diff = float((traced(example) - model(example)).abs().max())
            with atomic_path(path, suffix=".ts") as tmp:
                torch.jit.save(traced, str(tmp))
    except Exception as exc:
        logger.warning("TorchScript tracing failed (%s: %s)", type(exc).__name__, str(exc)[:160])
        return {"written": False, "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    return {"written": True, "max_abs_diff_vs_torch": diff}


def load_exported(path):
    """Rebuild the module :func:`export_run` wrote into ``path`` (eval mode, CPU).

    The architecture is built from the recorded spec without pretrained weights, pruned by the recorded
    plan, and loaded strictly from ``model.safetensors``. The returned :class:`ExportedModel` has
    ``config``, ``classes``, ``predict(x)`` and, for full models, ``preprocess`` (one PIL image -> one
    input row, the model's own transform as at extraction).
    """
    import torch
    from safetensors.torch import load_file

    from ._modules import ExportedModel, ReductionHead, penultimate_net
    from ._prune import apply_plan

    path = Path(path)
    cfg_path = path / _CONFIG
    if not cfg_path.is_file() or not (path / _WEIGHTS).is_file():
        raise DataError(f"{str(path)!r} is not an export directory (no {_CONFIG} / {_WEIGHTS}); pass the --out "
                        "directory of `critmass export`")
    config = read_format_json(cfg_path, FORMAT, fix="re-export", format_fix="re-export with this critmass")
    try:
        state = load_file(str(path / _WEIGHTS))
    except Exception as exc:
        raise DataError(f"cannot read {str(path / _WEIGHTS)!r} ({type(exc).__name__}); re-export") from None
    hs = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    if "components" in hs:
        head = ReductionHead(hs["coef"].numpy(), hs["intercept"].numpy(), components=hs["components"].numpy(),
                             mean=hs["mean"].numpy())
    else:
        head = ReductionHead(hs["coef"].numpy(), hs["intercept"].numpy(), index=hs["index"].numpy())
    net, preprocess = None, None
    info = config.get("backbone")
    if info:
        from ..models import load_model

        bb = load_model(info["spec"], pretrained=False, image_size=info.get("image_size"))
        net = penultimate_net(bb.module, info["spec"], copy_module=False)
        plan = config.get("prune")
        if plan:
            example = torch.zeros((1, *config["input"]["shape"][1:]), dtype=torch.float32)
            apply_plan(net, plan, example)
        preprocess = bb.preprocess
    model = ExportedModel(head, net, classes=np.asarray(config["classes"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"{str(path / _WEIGHTS)!r} does not fit the architecture in {_CONFIG} "
                        f"({str(exc).splitlines()[0][:160]}); re-export") from None
    model.config = config
    model.preprocess = preprocess
    return model.eval()
