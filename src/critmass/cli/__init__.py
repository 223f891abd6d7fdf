"""Command-line interface: thin typer wrappers over the Python API, one module per command group."""

import sys

from ._app import app, main as _main

# Importing a module registers its commands on ``app``.
from . import _discover, _extract, _probe, _metrics, _cka, _demo, _sweep, _report, _train, _profile, _export, _neurons  # noqa: E402,F401
from . import _invert, _study  # noqa: E402,F401


def main() -> None:
    sys.exit(_main())


__all__ = ["app", "main"]
