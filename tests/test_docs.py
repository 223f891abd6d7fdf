"""The documentation: a short README whose links resolve, a CLI reference that lists every command, and a
site that builds with ``mkdocs build --strict`` (a broken link or a missing API reference fails)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI_PAGE = ROOT / "docs" / "cli.md"
HOOK = ROOT / "docs" / "hooks" / "critmass_docs.py"
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _hook():
    spec = importlib.util.spec_from_file_location("critmass_docs_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 200, f"README.md has {n} lines; keep it to 200 and move the rest into docs/"


def test_readme_keeps_the_quick_start_commands():
    text = README.read_text(encoding="utf-8")
    for command in ("make demo", "make test", "make docs"):
        assert command in text, f"README.md lost its `{command}` quick-start command"


@pytest.mark.parametrize("page", ["README.md", "CHANGELOG.md"])
def test_relative_links_resolve(page):
    path = ROOT / page
    missing = []
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            missing.append(target)
    assert not missing, f"{page} links to files that do not exist: {missing}"


def _cli_commands() -> set[str]:
    import typer.main

    from critmass.cli import app

    return set(typer.main.get_command(app).commands)


def test_cli_reference_documents_every_command():
    documented = re.findall(r"^## `critmass ([a-z][a-z0-9-]*)`", CLI_PAGE.read_text(encoding="utf-8"), re.M)
    assert len(documented) == len(set(documented)), f"a command has two sections in docs/cli.md: {documented}"
    commands = _cli_commands()
    assert set(documented) == commands, (
        f"docs/cli.md documents {sorted(set(documented))}; `critmass --help` lists {sorted(commands)}; "
        f"missing: {sorted(commands - set(documented))}, extra: {sorted(set(documented) - commands)}")


def test_every_cli_section_has_an_example_and_its_help():
    text = CLI_PAGE.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    for section in sections:
        name = re.match(r"`critmass ([a-z0-9-]+)`", section).group(1)
        assert f"```bash\ncritmass {name}" in section, f"docs/cli.md: `critmass {name}` has no example"
        assert f"<!-- critmass-help {name} -->" in section, f"docs/cli.md: `critmass {name}` has no help marker"


def test_hook_renders_the_latest_rows(tmp_path):
    hook = _hook()
    path = tmp_path / "bench.csv"
    path.write_text("date,model,images_per_s\n2026-01-01,a,10.0\n2026-02-01,a,12.345678\n2026-02-01,b,nan\n")
    table = hook.csv_table(path)
    assert "2026-01-01" not in table and "| 2026-02-01 | a | 12.35 |" in table and "| 2026-02-01 | b |  |" in table
    assert "latest date, 2026-02-01" in table
    stamped = tmp_path / "stamped.csv"  # timestamps: every run of the latest day
    stamped.write_text("date,ratio\n2026-01-31T23:00:00+0000,1\n2026-02-01T09:00:00+0000,2\n"
                       "2026-02-01T17:30:00+0000,3\n")
    table = hook.csv_table(stamped)
    assert "| 2026-02-01T09:00:00+0000 | 2 |" in table and "| 2026-02-01T17:30:00+0000 | 3 |" in table
    assert "2026-01-31" not in table
    many = tmp_path / "many.csv"
    many.write_text("x\n" + "".join(f"{i}\n" for i in range(50)))
    assert "the first 5 of 50 rows" in hook.csv_table(many, max_rows=5)


def test_hook_help_is_the_cli_help():
    hook = _hook()
    text = hook.cli_help(["probe"])
    assert text.startswith("Usage: critmass probe") and "--fractions" in text


def test_api_reference_covers_every_subpackage():
    import pkgutil

    import critmass

    documented = {re.search(r"<!-- critmass-api critmass\.(\w+) -->", p.read_text(encoding="utf-8")).group(1)
                  for p in (ROOT / "docs" / "api").glob("*.md") if "critmass-api" in p.read_text(encoding="utf-8")}
    packages = {m.name for m in pkgutil.iter_modules(critmass.__path__) if m.ispkg and not m.name.startswith("_")}
    undocumented = sorted(packages - documented - {"cli"})
    assert not undocumented, f"subpackages without an API page in docs/api/: {undocumented}"


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs build needs the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="the docs build needs the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python", reason="the docs build needs the docs extra")
    pytest.importorskip("mkdocs_jupyter", reason="the docs build needs the docs extra")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1", "MPLBACKEND": "Agg"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    # The generated parts are there: help texts from the CLI, tables from the results CSVs, the API.
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert "Usage: critmass probe" in cli
    bench = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "Rendered from <code>benchmarks/results/choice_rule.csv</code>" in bench
    assert "critmass-csv" not in bench and "critmass-help" not in cli
    # Every name in every documented subpackage's __all__ has its entry in the API reference.
    hook = _hook()
    missing = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        marker = re.search(r"<!-- critmass-api ([\w.]+) -->", page.read_text(encoding="utf-8"))
        if marker is None:
            continue
        package = marker.group(1)
        html = (site / "api" / page.stem / "index.html").read_text(encoding="utf-8")
        for name, path in hook.api_targets(package):
            if f'id="{path or f"{package}.{name}"}"' not in html:
                missing.append(f"{package}.{name}")
    assert not missing, f"names in __all__ without an entry in the API reference: {missing}"
    assert (site / "tutorials" / "extract-probe-export" / "index.html").is_file()
