"""``critmass export`` and ``critmass compress``: spend the redundancy (wrap :mod:`critmass.export`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from ..exceptions import ConfigError
from ._app import app


def _echo_savings(savings: dict) -> None:
    from ..export import format_savings

    for line in format_savings(savings):
        typer.echo(f"  {line}")


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., help="A `critmass probe --out` directory (results.parquet, weights/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Export directory (model.safetensors, config.json, "
                                                      "model.onnx, model.ts, savings.json)."),
    selector: str = typer.Option("random", "--selector", help="Which probe: its selector."),
    fraction: float = typer.Option(0.2, "--fraction", help="Which probe: a fraction the run tested."),
    seed: int = typer.Option(None, "--seed", help="Which probe: its seed (default: the run's first)."),
    head_only: bool = typer.Option(False, "--head-only", help="Only the reduction and the probe head (input: the "
                                                              "layer's features), no backbone."),
    prune: bool = typer.Option(False, "--prune", help="Remove the unselected output channels from the backbone "
                                                      "(torch-pruning)."),
    weights: Path = typer.Option(None, "--weights", help="The backbone's local weights file, when the features "
                                                         "were extracted with one."),
    no_onnx: bool = typer.Option(False, "--no-onnx", help="Do not write model.onnx."),
    no_torchscript: bool = typer.Option(False, "--no-torchscript", help="Do not write model.ts."),
    repeats: int = typer.Option(20, "--repeats", help="Repeats of the CPU latency measurement (pruned)."),
    threads: int = typer.Option(None, "--threads", help="CPU threads for torch (latency is measured with them)."),
):
    """Export one probe as a small torch module (backbone + subset + head) with ONNX / TorchScript copies."""
    import torch

    from ..export import export_run

    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be a positive integer; got {threads}")
        torch.set_num_threads(threads)
    try:
        res = export_run(run_dir, selector=selector, fraction=fraction, seed=seed, out=out, head_only=head_only,
                         prune=prune, weights=weights, onnx=not no_onnx, torchscript=not no_torchscript,
                         latency_repeats=repeats)
    finally:
        torch.set_num_threads(previous)
    cfg = res.config
    typer.echo(f"exported {cfg['kind']} model ({cfg['selector']}, seed {cfg['seed']}, {cfg['k']} of "
               f"{cfg['n_features']} neurons) to {res.out} ({', '.join(p.name for p in res.files.values())}); "
               f"{res.seconds:.1f} s")
    _echo_savings(res.savings)


@app.command("compress")
def compress(
    embeddings: Path = typer.Argument(..., help="Embeddings .npy (n, D): the gallery, or with --apply the new "
                                                "queries."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (with --apply: the output .npy file)."),
    keep: str = typer.Option(None, "--keep", help="Values kept per vector: a count (128) or a fraction (0.25)."),
    selector: str = typer.Option("random", "--selector", help="random | prefix | pca (any critmass.subsets "
                                                              "selector)."),
    fit_on: Path = typer.Option(None, "--fit-on", help="Rows (.npy) the selector is fitted on (default: the "
                                                       "embeddings)."),
    fit_labels: Path = typer.Option(None, "--fit-labels", help="Labels (.npy, one per row of --fit-on or of the "
                                                               "embeddings) for supervised selectors (fscore, greedy, "
                                                               "probe-weight, attribution)."),
    seed: int = typer.Option(0, "--seed", help="Seed of random selectors."),
    dtype: str = typer.Option(None, "--dtype", help="float32 | float16 for the reduced vectors (default float32; "
                                                    "with --apply: the reducer's)."),
    apply: Path = typer.Option(None, "--apply", help="A reducer written by `critmass compress` (its directory or "
                                                     "reducer.json / .npz / .safetensors): reduce EMBEDDINGS with it "
                                                     "(and encode them with its codebook)."),
    codec: str = typer.Option(None, "--codec", help="Encode the kept values: float16 | int8 | binary | binary-rerank "
                                                    "| pq | opq (pqM, pqMxNBITS), trained on the gallery; writes "
                                                    "codes.npy and codebook.npz."),
):
    """Keep k neurons (or principal directions) of stored embeddings; --apply reduces new queries the same way."""
    from ..export import apply_reducer
    from ..export import compress as _compress

    if apply is not None:
        given = [flag for flag, value in (("--keep", keep), ("--fit-on", fit_on), ("--fit-labels", fit_labels),
                                          ("--codec", codec)) if value is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} describe{'s' if len(given) == 1 else ''} a new reducer; with --apply the reducer's own settings "
                              "are used: drop them")
        arr = apply_reducer(apply, embeddings, out=out, dtype=dtype)
        what = "bytes of codes" if arr.dtype == np.uint8 else f"values ({arr.dtype})"
        typer.echo(f"reduced {arr.shape[0]:,} vectors to {arr.shape[1]} {what} with {apply}; wrote {out}")
        return
    if keep is None:
        raise ConfigError("--keep is required: the number of values kept per vector (e.g. 128) or a fraction (0.25)")
    res = _compress(embeddings, keep=keep, selector=selector, fit_on=fit_on, seed=seed, dtype=dtype or "float32",
                    out=out, fit_labels=fit_labels, codec=codec)
    r = res.reducer
    form = r.dtype if r.codec is None else f"{r.meta['codec']['spec']}: {r.meta['codec']['code_size']} bytes per vector"
    typer.echo(f"compressed {embeddings} to {r.k} of {r.n_features} values ({r.selector}"
               f"{'' if r.seed is None else f', seed {r.seed}'}, {form}); wrote {res.out} "
               f"({', '.join(p.name for p in res.files.values())}); {res.seconds:.1f} s")
    _echo_savings(res.savings)
