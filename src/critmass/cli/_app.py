"""The typer application and the error handling every command shares."""

from __future__ import annotations

import logging
import sys

import typer

from ..exceptions import CritmassError

app = typer.Typer(
    name="critmass",
    help="How many of a pre-trained layer's neurons does a downstream task need? "
    "Feature extraction, neuron subsets, linear probes, CKA and diffused redundancy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # keep "[default: ...]" and other brackets in help texts verbatim
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
):
    _state["debug"] = debug
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # The level goes on the console handler too: stages may lower their own logger's level to feed a
    # log file (sweeps), and those records must not reach the terminal twice.
    for handler in logging.root.handlers:
        handler.setLevel(level)


def parse_list(value: str | None, cast=str) -> list:
    """Parse a comma-separated option value ('0.1,0.5,1' -> [0.1, 0.5, 1.0])."""
    if value is None:
        return []
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise CritmassError(f"cannot parse {value!r} as a comma-separated list of {cast.__name__}") from None


def main(argv=None) -> int:
    """Console entry point: user errors print one line to stderr and exit 2."""
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except CritmassError as exc:
        if _state["debug"]:
            raise
        print(f"critmass: error: {exc}", file=sys.stderr)
        return 2
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        return int(code or 0)
    except typer.Abort:
        print("critmass: aborted", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors etc.
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if _state["debug"]:
            raise
        print(f"critmass: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return int(code) if isinstance(code, int) else 0
