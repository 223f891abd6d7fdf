"""Discovery commands: what models, datasets and layers exist."""

from __future__ import annotations

import typer

from ._app import app


def _print_table(rows: dict[str, str]) -> None:
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        typer.echo(f"{k.ljust(width)}  {v}")


@app.command("models")
def models_cmd():
    """List model spec prefixes and the offline models that ship with packages."""
    from ..models import list_model_sources

    _print_table(list_model_sources())


@app.command("datasets")
def datasets_cmd():
    """List dataset spec prefixes and the offline datasets."""
    from ..data import list_dataset_sources

    _print_table(list_dataset_sources())


@app.command("layers")
def layers_cmd(
    model: str = typer.Argument(..., help="Model spec, e.g. timm:resnet50 or efficientnet-lite0."),
    pattern: str = typer.Option(None, "--filter", help="Only names containing this text."),
    stages: bool = typer.Option(False, "--stages", help="Only the default depth profile: the model's stages "
                                "(what `critmass profile --layers stages` uses)."),
):
    """List the valid --layer names of MODEL (penultimate, then every named module)."""
    from ..models import list_layers, list_stages

    for name in (list_stages(model) if stages else list_layers(model)):
        if pattern is None or pattern in name:
            typer.echo(name)
