"""`critmass neurons`: which neurons a ranking picks, how stable they are, and whether datasets share them."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app

OUT_SUFFIXES = (".csv", ".parquet")


def _write(table, path: Path) -> None:
    from .._io import atomic_path

    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)


def _sibling(path: Path, what: str) -> Path:
    return path.with_name(f"{path.stem}.{what}{path.suffix}")


@app.command("neurons")
def neurons_command(
    run_dirs: list[str] = typer.Argument(
        ..., help="Probe or sweep output directories (a sweep counts one feature set per model, dataset and layer)."),
    selector: str = typer.Option("greedy", "--selector",
                                 help="A neuron ranking the runs probed: greedy, fscore, probe-weight, attribution, "
                                      "variance, cluster, norm-max, ... (projections pick no neurons)."),
    k: str | None = typer.Option(
        None, "--k", help="Comma-separated subset sizes for the stability and the overlap (default 8,32, capped at "
                          "the largest probed size); the largest is the top-k listed."),
    n_boot: int = typer.Option(20, "--n-boot", help="Bootstrap resamples of the fit rows (one selector refit each); "
                                                    "0: no stability."),
    top: int = typer.Option(10, "--top", help="Neurons printed per feature set (--out writes all k)."),
    scores: bool = typer.Option(True, "--scores/--no-scores",
                                help="Refit the selector on the run's fit rows for its scores (needs the cached "
                                     "features); --no-scores lists the saved indices alone."),
    random_state: int = typer.Option(0, "--random-state", help="Seed of the bootstrap."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the top-k neurons to FILE.csv or FILE.parquet, and the stability and the "
                                  "overlap next to it (FILE.stability.csv, FILE.overlap.csv)."),
):
    """Print a neuron ranking's top neurons per run, their bootstrap stability and the overlap between runs.

    Top neurons: the run's saved top-k (k = the largest --k), best first, with the selector's score refitted on
    the run's fit rows. Stability: the Jaccard overlap |A & B| / |A | B| of the run's top-k with the top-k of
    the selector refitted on bootstrap resamples of those rows (mean and 95% interval over resamples; also
    between resamples). Overlap: the Jaccard of the top-k of runs of one model and layer (e.g. two datasets),
    next to the mean overlap of two random k-subsets.
    """
    import pandas as pd

    from ..exceptions import ConfigError, DataError
    from ..metrics import format_table, neuron_overlap, neuron_stability, top_neurons
    from ._app import parse_list

    if out is not None and out.suffix not in OUT_SUFFIXES:
        raise ConfigError(f"--out must end in {' or '.join(OUT_SUFFIXES)}; got {str(out)!r}")
    if isinstance(n_boot, bool) or n_boot < 0:
        raise ConfigError(f"--n-boot must be a non-negative integer (0 = no stability); got {n_boot!r}")
    if top < 1:
        raise ConfigError(f"--top must be a positive number of neurons; got {top!r}")
    ks = parse_list(k, int) or None

    tops = pd.concat([top_neurons(r, selector, max(ks) if ks else None, scores=scores) for r in run_dirs],
                     ignore_index=True)
    keys = ["run", "model", "weights", "dataset", "layer", "pooling"]
    groups = list(tops.groupby(keys, sort=False))
    typer.echo(f"Top {selector} neurons (index, then the selector's score{'' if scores else ': not refitted'}), "
               "best first:")
    for (run, model, _, dataset, layer, _), g in groups:
        shown = g.head(top)
        items = ", ".join(f"{n}" if pd.isna(s) else f"{n} ({s:.4g})" for n, s in zip(shown["neuron"], shown["score"]))
        more = f", ... ({len(g)} in all)" if len(g) > top else ""
        typer.echo(f"  {run}: {model} / {dataset} / {layer} ({int(g['n_features'].iloc[0])} neurons): {items}{more}")

    stability = None
    if n_boot:
        stability = pd.concat([neuron_stability(r, selector, ks, n_boot=n_boot, random_state=random_state)
                               for r in run_dirs], ignore_index=True)
        typer.echo(f"\nStability over {n_boot} bootstrap resamples of the fit rows: Jaccard of a resample's top-k with "
                   "the run's, and between resamples [95% of resamples]; core = the run's neurons in every resample's "
                   "top-k; chance = two random k-subsets\n")
        typer.echo(format_table(_stability_table(stability), "markdown"))

    overlap = None
    if len(groups) > 1:
        try:
            overlap = neuron_overlap(run_dirs, selector, ks)
        except DataError:
            if len(run_dirs) > 1:  # several runs given for their overlap: say why there is none
                raise
        if overlap is not None:
            typer.echo(f"\nOverlap of the top-k {selector} neurons between runs of one model and layer (Jaccard; "
                       "chance = two random k-subsets)\n")
            typer.echo(format_table(_overlap_table(overlap), "markdown"))

    if out is not None:
        _write(tops, out)
        written = [str(out)]
        for table, what in ((stability, "stability"), (overlap, "overlap")):
            if table is not None:
                _write(table, _sibling(out, what))
                written.append(str(_sibling(out, what)))
        typer.echo(f"\nwrote {', '.join(written)}")


def _stability_table(df):
    import pandas as pd

    def span(m, lo, hi):
        return "" if pd.isna(m) else f"{m:.2f} [{lo:.2f}, {hi:.2f}]"

    return pd.DataFrame({
        "model": df["model"], "dataset": df["dataset"], "layer": df["layer"], "k": df["k"],
        "vs run": [span(*v) for v in zip(df["jaccard"], df["jaccard_low"], df["jaccard_high"])],
        "pairwise": [span(*v) for v in zip(df["pairwise"], df["pairwise_low"], df["pairwise_high"])],
        "core": [f"{c}/{k}" for c, k in zip(df["n_core"], df["k"])],
        "chance": [f"{c:.3f}" for c in df["chance"]],
    })


def _overlap_table(df):
    import pandas as pd

    return pd.DataFrame({
        "model": df["model"], "layer": df["layer"], "k": df["k"], "dataset a": df["dataset_a"],
        "dataset b": df["dataset_b"], "shared": [f"{s}/{k}" for s, k in zip(df["n_shared"], df["k"])],
        "jaccard": [f"{j:.2f}" for j in df["jaccard"]], "chance": [f"{c:.3f}" for c in df["chance"]],
    })
