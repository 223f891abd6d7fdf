"""A griffe extension for critmass's parameter lists (used by mkdocstrings when the docs are built).

Many critmass docstrings write a parameter as ``name : what it means`` on one line, where numpydoc puts a
type after the colon. Left alone, griffe would render the whole sentence in the "Type" column. This
extension rewrites such a line into ``name`` followed by the sentence, indented, so that it lands in the
"Description" column; lines whose text after the colon reads like a type (``int, default 0``,
``array-like of shape (n, d)``) are left as they are.
"""

from __future__ import annotations

import re

import griffe

_SECTIONS = {"parameters", "other parameters", "attributes", "keyword arguments"}
_PARAM = re.compile(r"^(?P<name>\*{0,2}[A-Za-z_][\w]*(?:\s*,\s*\*{0,2}[A-Za-z_][\w]*)*) : (?P<rest>.+)$")
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj|exc):`~?([^`]+)`")
_TYPE_WORDS = re.compile(r"^(?:[\w.\[\]{}()\"'|,\- ]|->)+$")


def _is_description(rest: str) -> bool:
    text = rest.strip()
    if "``" in text or ":" in text or ";" in text or text.endswith("."):
        return True
    if not _TYPE_WORDS.match(text):
        return True
    words = text.split()
    # "int, default 0", "str or None", "array-like of shape (n, d)" are types; a longer phrase without
    # the vocabulary of a type is a description.
    typeish = {"default", "optional", "or", "of", "shape", "sequence", "list", "dict", "tuple", "None"}
    return len(words) > 6 and not typeish.intersection(words)


def rewrite(text: str) -> str:
    """Return ``text`` with one-line ``name : description`` parameters split into name and description."""
    out: list[str] = []
    # Sphinx roles (:func:`load_splits`) would show verbatim in Markdown: render them as code.
    lines = _ROLE.sub(r"``\1``", text).splitlines()
    section = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if stripped and nxt and set(nxt) == {"-"} and len(nxt) >= 3:
            section = stripped.lower()
        elif section in _SECTIONS and line and not line[0].isspace():
            m = _PARAM.match(line)
            if m and _is_description(m.group("rest")):
                out.append(m.group("name"))
                out.append("    " + m.group("rest"))
                continue
        out.append(line)
    return "\n".join(out)


class NameDescription(griffe.Extension):
    """Move a one-line parameter description out of the type slot (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: D102
        if obj.docstring is not None and not obj.is_alias:
            obj.docstring.value = rewrite(obj.docstring.value)
