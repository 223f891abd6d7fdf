"""`critmass cka`: subset-vs-full CKA curve of one feature set, or CKA between two."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .._defaults import (
    DEFAULT_FRACTIONS,
    DEFAULT_ON_CONSTANT,
    DEFAULT_SEEDS,
    DEFAULT_VAL_FRACTION,
    DEFAULT_VAL_SEED,
    parse_seeds,
)
from ..exceptions import ConfigError
from ._app import app, parse_list

_CURVE_ONLY = ("--fractions", "--seeds", "--selector", "--out", "--on-constant", "--val-fraction", "--val-seed")


@app.command("cka")
def cka_command(
    features: Path = typer.Argument(
        ..., help="Feature set: a cache entry directory or a .npz (x_train, y_train, ...)."),
    other: Optional[Path] = typer.Argument(
        None, help="A second feature set of the same samples: print CKA(FEATURES, OTHER)."),
    fractions: Optional[str] = typer.Option(
        None, "--fractions", help="Comma-separated fractions in (0, 1] (default: the paper's 15)."),
    seeds: Optional[str] = typer.Option(
        None, "--seeds", help=f"Seed count ({DEFAULT_SEEDS} = seeds 0..{DEFAULT_SEEDS - 1}, the default) or a comma "
                                "list (1,2,3; '3,' is seed 3)."),
    selector: Optional[str] = typer.Option(
        None, "--selector", help="Comma-separated selectors, e.g. random,pca,randproj (default: random)."),
    debiased: bool = typer.Option(
        False, "--debiased", help="Use / also compute the debiased (unbiased HSIC) estimator."),
    split: str = typer.Option("train", "--split", help="Split to compute CKA on (selectors are fitted on train's "
                                                       "fit rows, as the probes fit them)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory for cka.parquet (curve mode)."),
    on_constant: Optional[str] = typer.Option(
        None, "--on-constant", help=f"nan or raise for subsets of only constant neurons (default: "
                                    f"{DEFAULT_ON_CONSTANT})."),
    val_fraction: Optional[float] = typer.Option(
        None, "--val-fraction", help=f"Share of train carved as validation before the selectors are fitted, as "
                                     f"`critmass probe` carves it (default {DEFAULT_VAL_FRACTION}; ignored with a val "
                                     "split)."),
    val_seed: Optional[int] = typer.Option(
        None, "--val-seed", help=f"Seed of that validation split (default {DEFAULT_VAL_SEED})."),
    chunk_size: Optional[int] = typer.Option(
        None, "--chunk-size", help="Rows per chunk when streaming the features."),
):
    """CKA of random / PCA / projected neuron subsets against the full layer, written to DIR/cka.parquet;
    or, given two feature sets, the CKA between them (one number)."""
    from ..similarity import cka_between, cka_curve

    if other is not None:
        curve_values = (fractions, seeds, selector, out, on_constant, val_fraction, val_seed)
        given = [flag for flag, v in zip(_CURVE_ONLY, curve_values) if v is not None]
        if given:
            raise ConfigError(
                f"{', '.join(given)} apply to the subset curve of one feature set; drop them when comparing two"
            )
        value = cka_between(features, other, split=split, debiased=debiased, chunk_size=chunk_size)
        typer.echo(f"{value:.12g}")
        return
    if out is None:
        raise ConfigError("`critmass cka FEATURES` writes a table: pass --out DIR (or a second feature set to print "
                          "the CKA between the two)")
    df = cka_curve(
        features,
        selectors=parse_list(selector) if selector is not None else ("random",),
        fractions=parse_list(fractions, float) if fractions is not None else DEFAULT_FRACTIONS,
        seeds=parse_seeds(seeds if seeds is not None else DEFAULT_SEEDS, name="--seeds"),
        debiased=debiased,
        split=split,
        on_constant=on_constant if on_constant is not None else DEFAULT_ON_CONSTANT,
        val_fraction=val_fraction if val_fraction is not None else DEFAULT_VAL_FRACTION,
        val_seed=val_seed if val_seed is not None else DEFAULT_VAL_SEED,
        chunk_size=chunk_size,
    )
    from .._io import atomic_path

    path = Path(out) / "cka.parquet"
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    undefined = int(df["cka"].isna().sum())
    note = f" ({undefined} undefined, NaN: subsets of only constant neurons)" if undefined else ""
    typer.echo(f"wrote {len(df)} CKA values to {path}{note}")
