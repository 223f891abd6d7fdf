"""The package's layering, read from the source with ``ast`` (nothing imported): no import cycles, no imports of
another package's private modules or names, and every stage importing only the stages below it.

Every import statement counts, also function-local ones (they run, only later): a lazy import keeps a stage
cheap to load, not independent. Imports by name (``importlib.import_module("critmass.x")``) are not seen;
deprecation shims use them on purpose to serve a moved name from a higher stage.
"""

from __future__ import annotations

import ast
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "critmass"

#: The stage order: a module may import its own package and packages of a LOWER level only. Packages on one
#: level are peers that do not import each other. Top-level modules (``critmass._io``, ``critmass.exceptions``)
#: are listed by name: the shared helpers sit below every stage; ``_demo`` drives the whole pipeline for
#: ``critmass demo``. A new package or top-level module must be placed here.
LEVELS = {
    # 0: shared helpers, no stage
    "critmass": 0, "exceptions": 0, "_validation": 0, "_registry": 0, "_io": 0, "_env": 0, "_alloc": 0, "_blas": 0,
    "_defaults": 0, "_testhooks": 0, "_config": 0, "_standardize": 0,
    # 1: where models and data come from (independent of each other)
    "models": 1, "data": 1,
    # 2: features of a model on a dataset, and their cache
    "features": 2,
    # 3: neuron subsets of a layer; codecs: how (subset) vectors are stored and searched (bytes per vector)
    "subsets": 3, "codecs": 3,
    # 4: what a subset keeps: probe accuracy, representational similarity
    "probes": 4, "similarity": 4,
    # 5: measures over probe tables (DR, critical mass, Pareto, per-class)
    "metrics": 5,
    # 6: the depth profile pipeline (extract -> probes -> CKA -> DR); partial inversion (models, data, subsets)
    "profile": 6, "invert": 6,
    # 7: applications of the pipeline, independent of each other
    "report": 7, "export": 7, "train": 7,
    # 8: the end-to-end demo (runs the pipeline and the report); sweeps run units of every stage below
    "_demo": 8, "sweep": 8,
    # 9: the whole study of one model (plans a sweep, runs it, writes one report)
    "study": 9,
    # 10: the command line
    "cli": 10,
}

#: Offenders in probes/ and subsets/ that the solver-registry rewrite (issue 24) removes; the assertions
#: below allow exactly these (``(importer, imported)`` pairs, or the modules of a cycle) and nothing else.
#: Empty this list as they go; an entry that no longer occurs fails the test, so it cannot go stale.
KNOWN_PROBES_SUBSETS_OFFENDERS: list[tuple[str, str]] = []


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()
PACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py"}


def _imports(mod: str, path: Path) -> list[tuple[str, str, int]]:
    """``(imported module, imported name or '', line)`` for every import in ``mod`` (critmass targets only).

    ``from X import a``: the module ``X.a`` when it is one, else ``X`` (with name ``a``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    base = mod.split(".") if mod in PACKAGES else mod.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[: len(base) - node.level + 1]
                target = ".".join(parts + (node.module.split(".") if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    found.append((sub, "", node.lineno))
                else:
                    found.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names]
    return [(t, name, line) for t, name, line in found if t == PKG or t.startswith(PKG + ".")]


IMPORTS = {m: _imports(m, p) for m, p in MODULES.items()}


def _stage(mod: str) -> str:
    """The stage of a module: its subpackage (``critmass.probes._run`` -> ``probes``), or a top-level module's
    own name (``critmass._io`` -> ``_io``; the package itself -> ``critmass``)."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _within(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def _eager_children(pkg: str) -> set[str]:
    """The submodules that importing ``pkg`` runs: what its ``__init__`` imports of its own, transitively."""
    seen: set[str] = set()
    todo = [pkg]
    while todo:
        m = todo.pop()
        for t, _, _ in IMPORTS.get(m, []):
            if _within(t, pkg) and t != pkg and t not in seen and t in MODULES:
                seen.add(t)
                todo.append(t)
    return seen


def _graph() -> dict[str, set[str]]:
    """Module -> modules it makes Python run. Importing a package runs the submodules its ``__init__`` imports,
    so an import of a package from outside it also reaches those; a package importing its own submodules
    (and they it) is how packages are built, not a cycle, so edges inside one package to its ``__init__``
    and from an ``__init__`` to its own submodules are left out."""
    graph: dict[str, set[str]] = {}
    for m, imps in IMPORTS.items():
        out = set()
        for t, _, _ in imps:
            if t not in MODULES or t == m:
                continue
            if t in PACKAGES and _within(m, t):
                continue  # a submodule importing (a name of) its own package
            if m in PACKAGES and _within(t, m):
                continue  # an __init__ importing its own submodules
            out.add(t)
            if t in PACKAGES:
                out |= {c for c in _eager_children(t) if not _within(m, c)}
        graph[m] = out - {m}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _is_known(importer: str, imported: str) -> bool:
    return (importer, imported) in KNOWN_PROBES_SUBSETS_OFFENDERS


def _report(title: str, rows: list[str]) -> str:
    rows = sorted(set(rows))
    return f"{title} ({len(rows)}):\n  " + "\n  ".join(rows)


def _edges():
    """Every (importer, imported module, imported name, line) across two different stages."""
    for m, imps in IMPORTS.items():
        for t, name, line in imps:
            if _stage(t) != _stage(m):
                yield m, t, name, line


# ------------------------------------------------------------------------------------------------- the tests
def test_every_package_and_top_level_module_has_a_level():
    missing = sorted({_stage(m) for m in MODULES} - set(LEVELS))
    assert not missing, f"place these in tests/test_layering.py LEVELS: {missing}"


def test_no_import_cycles():
    cycles = _cycles(_graph())
    known = {frozenset(pair) for pair in KNOWN_PROBES_SUBSETS_OFFENDERS}
    bad = [c for c in cycles if not (len(c) == 2 and frozenset(c) in known)]
    assert not bad, _report("import cycles (each line: the modules that import each other, directly or via "
                            "others)", [" <-> ".join(c) for c in bad])


def test_no_module_imports_another_packages_private_module_or_name():
    bad = []
    for m, t, name, line in _edges():
        private_module = any(part.startswith("_") for part in t.split(".")[2:])
        private_name = name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
        if (private_module or private_name) and not _is_known(m, t):
            what = f"{t}.{name}" if private_name else t
            bad.append(f"{m} (line {line}) -> {what}")
    assert not bad, _report("imports of another package's private module or name (make it public in that "
                            "stage's __init__, or move it to a shared critmass/_x.py)", bad)


def test_subsets_do_not_import_probes():
    bad = [f"{m} (line {line}) -> {t}" for m, t, _, line in _edges()
           if _stage(m) == "subsets" and _stage(t) == "probes" and not _is_known(m, t)]
    assert not bad, _report("critmass.subsets imports critmass.probes (the selectors' stage sits below the "
                            "probes')", bad)


def test_features_import_no_analysis_stage():
    bad = [f"{m} (line {line}) -> {t}" for m, t, _, line in _edges()
           if _stage(m) == "features" and _stage(t) in ("probes", "similarity", "metrics", "profile", "subsets")]
    assert not bad, _report("critmass.features imports a stage built on it", bad)


def test_stages_import_only_lower_stages():
    bad = []
    for m, t, _, line in _edges():
        lm, lt = LEVELS.get(_stage(m)), LEVELS.get(_stage(t))
        if lm is None or lt is None:
            continue  # reported by test_every_package_and_top_level_module_has_a_level
        if lm == lt == 0:
            continue  # the shared helpers build on each other (a cycle among them fails test_no_import_cycles)
        if lt >= lm and not _is_known(m, t):
            kind = "a peer" if lt == lm else "a higher stage"
            bad.append(f"{m} (line {line}, level {lm}) -> {t} ({kind}, level {lt})")
    assert not bad, _report("imports against the stage order of tests/test_layering.py LEVELS", bad)


def test_known_offenders_still_occur():
    """An entry of KNOWN_PROBES_SUBSETS_OFFENDERS that is gone must leave the list."""
    edges = {(m, t) for m, t, _, _ in _edges()}
    cycles = {frozenset(c) for c in _cycles(_graph()) if len(c) == 2}
    stale = [pair for pair in KNOWN_PROBES_SUBSETS_OFFENDERS if pair not in edges and frozenset(pair) not in cycles]
    assert not stale, f"remove these from KNOWN_PROBES_SUBSETS_OFFENDERS, they no longer occur: {stale}"


def test_the_walker_sees_function_local_and_relative_imports():
    """The checks above are only as good as the import reader: it must see lazy imports and resolve ``..``."""
    imps = {t for t, _, _ in IMPORTS["critmass.sweep._units"]}
    assert "critmass.features" in imps  # imported inside functions only
    graph = _graph()
    assert "critmass.features._store" in graph["critmass.similarity._curve"]  # via the package's __init__
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
