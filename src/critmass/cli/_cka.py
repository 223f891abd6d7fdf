"""`critmass cka`: subset-vs-full CKA curve of one feature set, or CKA between two."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..exceptions import ConfigError
from ._app import app, parse_list

_CURVE_ONLY = ("--fractions", "--seeds", "--selector", "--out", "--on-constant")


def _parse_seeds(value: str | None):
    """'5' is a count (seeds 0..4); '1,2,3' (any comma) lists the seeds themselves."""
    if value is None:
        return 5
    if "," in value:
        return parse_list(value, int)
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"--seeds must be a count (5) or a comma-separated list of seeds (1,2,3); got {value!r}"
        ) from None


@app.command("cka")
def cka_command(
    features: Path = typer.Argument(
        ..., help="Feature set: a cache entry directory or a .npz (x_train, y_train, ...)."),
    other: Optional[Path] = typer.Argument(
        None, help="A second feature set of the same samples: print CKA(FEATURES, OTHER)."),
    fractions: Optional[str] = typer.Option(
        None, "--fractions", help="Comma-separated fractions in (0, 1] (default: the paper's 15)."),
    seeds: Optional[str] = typer.Option(
        None, "--seeds", help="Seed count (5 = seeds 0..4, the default) or a comma list (1,2,3)."),
    selector: Optional[str] = typer.Option(
        None, "--selector", help="Comma-separated selectors, e.g. random,pca,randproj (default: random)."),
    debiased: bool = typer.Option(
        False, "--debiased", help="Use / also compute the debiased (unbiased HSIC) estimator."),
    split: str = typer.Option("train", "--split", help="Split to compute CKA on (selectors are fitted on train)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory for cka.parquet (curve mode)."),
    on_constant: Optional[str] = typer.Option(
        None, "--on-constant", help="raise (default) or nan for subsets of only constant neurons."),
    chunk_size: Optional[int] = typer.Option(
        None, "--chunk-size", help="Rows per chunk when streaming the features."),
):
    """CKA of random / PCA / projected neuron subsets against the full layer, written to DIR/cka.parquet;
    or, given two feature sets, the CKA between them (one number)."""
    from ..similarity import DEFAULT_FRACTIONS, cka_between, cka_curve

    if other is not None:
        given = [flag for flag, v in zip(_CURVE_ONLY, (fractions, seeds, selector, out, on_constant)) if v is not None]
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
        seeds=_parse_seeds(seeds),
        debiased=debiased,
        split=split,
        on_constant=on_constant or "raise",
        chunk_size=chunk_size,
    )
    from .._io import atomic_path

    path = Path(out) / "cka.parquet"
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    typer.echo(f"wrote {len(df)} CKA values to {path}")
