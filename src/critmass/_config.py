"""Reading YAML configs (sweep, train): the parsed mapping, the line of every key, and pydantic errors as one
line that names the file, the line and the dotted key (``FILE line N: path.to.key: what is wrong``).

Shared by :mod:`critmass.sweep` and :mod:`critmass.train`, which validate different pydantic models with
the same rules; neither stage owns it.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from ._validation import closest
from .exceptions import ConfigError

__all__ = ["dotted", "format_errors", "line_map", "read_config", "resolve_path"]


def read_config(source, *, kind: str, example: str, model_class) -> tuple:
    """``(data, filename, stem, lines)`` of a YAML path or a dict: the parsed mapping, the file's name and stem
    (None for a dict) and the line of every key path (``{("models", 0, "spec"): 7}``), for one-line errors that
    name the line. Unreadable YAML and duplicate keys are one-line errors naming ``kind`` (sweep, train)."""
    lines: dict = {}
    if isinstance(source, dict):
        return source, "<dict>", None, lines
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"a {kind} config must be a YAML path, a dict or a {model_class.__name__}; "
                          f"got {type(source).__name__}")
    path = Path(source).expanduser()
    filename = path.name
    if not path.is_file():
        raise ConfigError(f"{kind} config {str(path)!r} does not exist; pass the path of a YAML file "
                          f"(see {example})")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{kind} config {filename}{where} is not valid YAML ({problem}); fix the syntax") from None
    if node is not None:
        line_map(node, lines=lines, filename=filename, kind=kind)
    return data, filename, path.stem, lines


def line_map(node, path=(), lines=None, filename="config", kind="sweep") -> dict[tuple, int]:
    """Map each key path (``('models', 0, 'spec')``) to its 1-based line; refuse duplicate keys."""
    lines = {} if lines is None else lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    f"invalid {kind} config {filename} line {key_node.start_mark.line + 1}: {dotted(path + (key,))}: "
                    f"key given twice (first on line {seen[key]}); keep one"
                )
            seen[key] = key_node.start_mark.line + 1
            lines[path + (key,)] = key_node.start_mark.line + 1
            line_map(value_node, path + (key,), lines, filename, kind)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            line_map(item, path + (i,), lines, filename, kind)
    return lines


def dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def model_at(path, root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic section class that a key path points into (for listing its valid keys)."""
    cls: type[BaseModel] | None = root
    for p in path:
        if isinstance(p, int) or cls is None:
            continue
        field = cls.model_fields.get(p)
        cls = find_model(field.annotation) if field is not None else None
    return cls


def find_model(ann) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = find_model(arg)
        if found is not None:
            return found
    return None


def format_errors(exc: ValidationError, data, lines: dict, filename: str, *, root: type[BaseModel],
                  kind_name: str = "sweep") -> str:
    """One line per pydantic error location, with the YAML line, joined into one message (``root``: the
    config's model class, e.g. :class:`critmass.sweep.SweepConfig`; ``kind_name``: 'sweep', 'train')."""
    found: dict[tuple, list[str]] = {}
    for err in exc.errors(include_url=False):
        loc, kind = err["loc"], err["type"]
        cur, real, missing = data, [], None
        for i, el in enumerate(loc):
            if isinstance(cur, dict) and el in cur:
                real.append(el)
                cur = cur[el]
            elif isinstance(cur, list) and isinstance(el, int) and 0 <= el < len(cur):
                real.append(el)
                cur = cur[el]
            elif kind == "missing" and i == len(loc) - 1:
                missing = el
            # anything else is a union member tag (e.g. 'int', 'dict[...]'): not a key of the file
        real = tuple(real)
        if kind == "extra_forbidden":
            section = model_at(real[:-1], root)
            valid = list(section.model_fields) if section is not None else []
            msg = f"unknown key{closest(str(real[-1]), valid)}" + (f"; valid keys: {', '.join(valid)}" if valid else "")
        elif kind == "missing":
            msg = f"missing required key {missing!r}"
            real = real + (missing,) if missing is not None else real
        else:
            msg = str(err["msg"])
            msg = msg.split(", ", 1)[1] if msg.startswith(("Value error, ", "Assertion failed, ")) else msg
            value = err.get("input")
            if kind != "value_error" and (value is None or isinstance(value, (str, int, float, bool))):
                msg += f"; got {value!r}"
        found.setdefault(real, [])
        if msg not in found[real]:
            found[real].append(msg)
    parts = []
    for path, msgs in found.items():
        line = None
        for n in range(len(path), -1, -1):  # the key itself, else the closest enclosing key
            line = lines.get(path[:n])
            if line is not None:
                break
        where = f"line {line}: " if line is not None else ""
        parts.append((line or 0, f"{where}{dotted(path)}: {' or '.join(msgs)}"))
    return f"invalid {kind_name} config {filename}: " + "; ".join(text for _, text in sorted(parts, key=lambda p: p[0]))


def resolve_path(p: Path | None, base: Path) -> Path | None:
    if p is None:
        return None
    p = Path(os.path.expandvars(str(p))).expanduser()
    return p if p.is_absolute() else (base / p).resolve()
