"""``critmass profile``: every layer of a model in one forward pass, then DR and CKA across depth."""

from __future__ import annotations

from pathlib import Path

import typer

from .._defaults import DEFAULT_FRACTIONS, DEFAULT_SEEDS, DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED, fractions_text
from ..probes import list_solvers
from ._app import app, parse_list
from ._extract import parse_max_samples
from ._probe import parse_seeds


@app.command("profile")
def profile_cmd(
    model: str = typer.Argument(..., help="Model spec: timm:NAME, torchvision:NAME, hf:DIR, sbert:DIR, or an alias."),
    dataset: str = typer.Argument(..., help="Dataset spec: torchvision:NAME, imagefolder:DIR, npz:FILE, or an alias."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: profile.parquet, layer_cka.parquet, "
                                                      "results.parquet, cka.parquet, profile.json."),
    layers: str = typer.Option("stages", "--layers", help="stages (the model's stages, `critmass layers MODEL "
                                                          "--stages`), all (every block) or NAME,NAME,..."),
    pooling: str = typer.Option("auto", "--pooling", help="auto, avg, max, flatten, cls, mean or none (every layer)."),
    max_width: int = typer.Option(8192, "--max-width", help="A pooled layer wider than this (e.g. a flattened map) "
                                                            "keeps this many seeded random units; 0: no cap."),
    width_seed: int = typer.Option(0, "--width-seed", help="Seed of the units kept by --max-width."),
    fractions: str = typer.Option(fractions_text(DEFAULT_FRACTIONS), "--fractions",
                                  help="Comma-separated fractions in (0, 1] (default: the paper's 15)."),
    seeds: str = typer.Option(str(DEFAULT_SEEDS), "--seeds", help="Seed count N (seeds 0..N-1) or a comma list."),
    solver: str = typer.Option("logistic", "--solver", help=f"{' | '.join(list_solvers())}, or any registered "
                                                            "solver."),
    alphas: str = typer.Option(None, "--alphas", help="Comma-separated penalty grid (default: the solver's)."),
    delta: float = typer.Option(0.9, "--delta", help="Share of the full layer's accuracy for DR, in (0, 1]."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the seeds for the DR CI (0: none)."),
    val_fraction: float = typer.Option(DEFAULT_VAL_FRACTION, "--val-fraction",
                                       help="Share of train the probes hold out for validation."),
    val_seed: int = typer.Option(DEFAULT_VAL_SEED, "--val-seed", help="Seed of the validation split."),
    split: str = typer.Option("train,test", "--split", "-s", help="Splits to extract (train and test needed)."),
    selectors: str = typer.Option("random", "--selectors", help="Comma-separated selectors probed at every layer "
                                                                "(random always; e.g. random,greedy,fscore)."),
    cache: Path = typer.Option(None, "--cache", help="Cache directory [default: $CRITMASS_CACHE]."),
    data_root: Path = typer.Option(None, "--data-root", help="Root folder of torchvision datasets."),
    weights: Path = typer.Option(None, "--weights", help="Local state dict for the architecture."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="Pretrained weights or random init."),
    image_size: int = typer.Option(None, "--image-size", help="Override the model's input size (px)."),
    max_samples: str = typer.Option(None, "--max-samples", help="Stratified subset per split (4000 or "
                                                                "train=4000,test=1000)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sub-sampling."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Images per forward pass."),
    num_workers: int = typer.Option(None, "--num-workers", help="DataLoader workers."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ... (extraction and probes)."),
    amp: str = typer.Option(None, "--amp", help="bf16 or fp16 autocast (GPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    max_seq_length: int = typer.Option(None, "--max-seq-length", help="Text models: truncate inputs to this many "
                                       "tokens [default: the model's own]."),
):
    """Profile MODEL across depth on DATASET: one forward pass extracts every layer into the cache, then per layer
    the full accuracy, the random-subset curve, DR(delta) with its CI, the critical mass and subset CKA, and the
    layer x layer CKA. `critmass report OUT` draws DR and accuracy across depth and the CKA heat map."""
    from ..profile import profile

    prof = profile(
        model, dataset, out=out, layers=layers, fractions=parse_list(fractions, float), seeds=parse_seeds(seeds),
        solver=solver, delta=delta, n_boot=n_boot, alphas=parse_list(alphas, float) if alphas else None,
        probe_val_fraction=val_fraction, val_seed=val_seed, probe_device=device, split=parse_list(split), selectors=parse_list(selectors),
        pooling=pooling, max_width=max_width or None, width_seed=width_seed, cache=cache, data_root=data_root,
        weights=weights, pretrained=pretrained, image_size=image_size, max_samples=parse_max_samples(max_samples),
        seed=seed, batch_size=batch_size, num_workers=num_workers, device=device, amp=amp, progress=not quiet,
        max_seq_length=max_seq_length)
    p = prof.profile
    width = max(len(str(n)) for n in p["layer"])
    typer.echo(f"{'layer'.ljust(width)}  width  full acc  DR({delta:g})  95% CI        k*     CKA@k*")
    for _, r in p.iterrows():
        typer.echo(f"{str(r['layer']).ljust(width)}  {r['width']:>5}  {r['full_accuracy']:8.3f}  {r['dr']:7.2f}  "
                   f"[{r['dr_ci_low']:.2f}, {r['dr_ci_high']:.2f}]  {r['critical_n_neurons']:>5}  "
                   f"{r['cka_at_critical']:6.3f}")
    typer.echo(f"wrote {out / 'profile.parquet'}; `critmass report {out}` draws the figures")
