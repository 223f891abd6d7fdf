"""MkDocs hooks for the critmass documentation (``hooks:`` in ``mkdocs.yml``).

Nothing that a machine measured or a command prints is pasted into the pages by hand; the pages hold
markers that this hook fills in at build time:

``<!-- critmass-help COMMAND -->``
    the output of ``critmass COMMAND --help`` (``<!-- critmass-help -->``: ``critmass --help``), run in
    this process through typer's test runner, so the page always matches the installed CLI.
``<!-- critmass-csv PATH [rows=N] -->``
    a Markdown table of the latest rows of a results CSV (``PATH`` relative to the repository root):
    when the file has a ``date`` column, the rows of its latest date; otherwise every row, up to ``N``
    (default 40), with a note saying how many more the file holds.
``<!-- critmass-api PACKAGE -->``
    the API reference of one subpackage: its docstring, then one mkdocstrings block per name in its
    ``__all__``, in that order. Names a package loads lazily (a ``_LAZY`` map read by ``__getattr__``,
    which static analysis cannot follow) are documented from the module that defines them.
``<!-- critmass-csv-rest DIR -->``
    the same for every ``DIR/*.csv`` that no earlier marker on the page rendered, so a new benchmark's
    results appear without editing the page.

It also adds pages that live elsewhere in the repository (the READMEs of ``examples/paper`` and
``examples/factors`` and the changelog) to the site as generated files, so they are written once.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import shlex
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]

# (source file in the repository, its path in the site). Images beside a README come with it.
EXTERNAL_PAGES = [
    ("examples/paper/README.md", "reproducing/paper-configs.md"),
    ("examples/factors/README.md", "factors/index.md"),
    ("examples/factors/factors.png", "factors/factors.png"),
    ("CHANGELOG.md", "changelog.md"),
]

_HELP = re.compile(r"<!--\s*critmass-help(?P<args>[^>]*?)\s*-->")
_CSV = re.compile(r"<!--\s*critmass-csv\s+(?P<args>[^>]*?)\s*-->")
_API = re.compile(r"<!--\s*critmass-api\s+(?P<package>[\w.]+)\s*-->")
_CSV_REST = re.compile(r"<!--\s*critmass-csv-rest\s+(?P<dir>[^>\s]+)\s*-->")
_DEFAULT_ROWS = 40


def on_files(files, config, **kwargs):
    for src, dest in EXTERNAL_PAGES:
        path = ROOT / src
        if not path.is_file():
            continue
        if dest.endswith(".md"):
            files.append(File.generated(config, dest, content=path.read_text(encoding="utf-8")))
        else:
            files.append(File.generated(config, dest, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    if "critmass-" not in markdown:
        return markdown
    markdown = _HELP.sub(lambda m: _help_block(m.group("args").split()), markdown)
    markdown = _API.sub(lambda m: api_markdown(m.group("package")), markdown)
    rendered: set[Path] = set()

    def one(m):
        args = shlex.split(m.group("args"))
        path = (ROOT / args[0]).resolve()
        opts = dict(a.split("=", 1) for a in args[1:] if "=" in a)
        rendered.add(path)
        return csv_table(path, max_rows=int(opts.get("rows", _DEFAULT_ROWS)))

    markdown = _CSV.sub(one, markdown)

    def rest(m):
        folder = ROOT / m.group("dir")
        blocks = []
        for path in sorted(folder.glob("*.csv")):
            if path.resolve() in rendered:
                continue
            rel = path.relative_to(ROOT).as_posix()
            blocks.append(f"### `{rel}`\n\n{csv_table(path)}")
        return "\n\n".join(blocks) or "*(no other result files)*"

    return _CSV_REST.sub(rest, markdown)


def api_targets(package: str) -> list[tuple[str, str | None]]:
    """``(name, dotted path to document)`` for every name in ``package.__all__``, in order.

    Classes and functions are documented from the module that defines them (a lazily loaded name is
    invisible to static analysis under the package); other values (constants, registries) get ``None``
    and are shown by their value.
    """
    import importlib
    import inspect

    module = importlib.import_module(package)
    out = []
    for name in module.__all__:
        obj = getattr(module, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and "<" not in getattr(obj, "__qualname__", "<"):
            out.append((name, f"{obj.__module__}.{obj.__qualname__}"))
        else:
            out.append((name, None))
    return out


def api_markdown(package: str) -> str:
    import importlib
    import reprlib

    module = importlib.import_module(package)
    short = reprlib.Repr()  # Python 3.11's takes no keywords
    short.maxstring = short.maxother = 120
    short.maxlist = short.maxtuple = short.maxset = 12
    short.maxdict = 8
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false"]
    for name, path in api_targets(package):
        if path is not None:
            blocks.append(f"::: {path}\n    options:\n      show_root_heading: true\n      show_root_full_path: false")
        else:
            value = getattr(module, name)
            kind = type(value).__name__
            blocks.append(f"## `{name}` {{ #{package}.{name} }}\n\n*{kind}* `{package}.{name}`:\n\n"
                          f"```python\n{short.repr(value)}\n```")
    return "\n\n".join(blocks)


def cli_help(args: list[str]) -> str:
    """``critmass ARGS --help`` as a 100-column terminal shows it, run in this process."""
    os.environ.setdefault("COLUMNS", "100")
    from typer.testing import CliRunner

    from critmass.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], prog_name="critmass", terminal_width=100)
    if result.exit_code != 0:
        raise RuntimeError(f"critmass {' '.join(args)} --help exited {result.exit_code}: {result.output}")
    return result.output.rstrip()


def _help_block(args: list[str]) -> str:
    command = " ".join(["critmass", *args, "--help"])
    return f"```console\n$ {command}\n{cli_help(args)}\n```"


def csv_table(path: Path, max_rows: int = _DEFAULT_ROWS) -> str:
    """The latest rows of a results CSV as a Markdown table (see the module docstring)."""
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist (a critmass-csv marker names it)")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return f"*`{path.name}` holds no rows yet.*"
    columns = list(rows[0])
    note = []
    if "date" in columns:
        # A day, not a timestamp: the runs of one session (say, with each BLAS backend) stay together.
        latest = max(r["date"][:10] for r in rows)
        kept = [r for r in rows if r["date"][:10] == latest]
        if len(kept) < len(rows):
            note.append(f"rows of the latest date, {latest}; the file holds {len(rows)} rows in all")
        rows = kept
    total = len(rows)
    if total > max_rows:
        rows = rows[:max_rows]
        note.append(f"the first {max_rows} of {total} rows; the rest are in the file")
    out = io.StringIO()
    out.write("| " + " | ".join(columns) + " |\n")
    out.write("|" + "---|" * len(columns) + "\n")
    for r in rows:
        out.write("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |\n")
    shown = path.resolve().relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) else path.name
    out.write(f"\n*Rendered from `{shown}`" + (f": {'; '.join(note)}" if note else "") + ".*\n")
    return out.getvalue()


def _cell(value: str) -> str:
    value = (value or "").strip()
    try:
        number = float(value)
    except ValueError:
        return value.replace("|", "\\|").replace("\n", " ")
    if value.lstrip("-").isdigit():
        return value
    if number != number:  # NaN
        return ""
    return f"{number:.4g}"
