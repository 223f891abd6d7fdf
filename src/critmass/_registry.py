"""Spec strings (``source:name``) and the per-stage registries behind them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ._validation import closest
from .exceptions import SpecError

__all__ = ["Registry", "parse_spec"]

T = TypeVar("T")


def parse_spec(spec: str, *, kind: str, sources: tuple[str, ...] | list[str], aliases=()) -> tuple[str, str]:
    """Split ``'source:name'`` into ``(source, name)``, checking the source.

    A spec without a colon must be one of ``aliases`` (offline shortcuts such as ``efficientnet-lite0``),
    returned as ``('', alias)``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"{kind} spec must be a non-empty string like 'timm:resnet50'; got {spec!r}")
    spec = spec.strip()
    source, sep, name = spec.partition(":")
    if not sep:
        if spec in aliases:
            return "", spec
        valid = ", ".join([f"{s}:NAME" for s in sources] + list(aliases))
        raise SpecError(
            f"unknown {kind} {spec!r}{closest(spec, aliases)}; use one of {valid} "
            f"(run `critmass {kind}s` to list them)"
        )
    if source not in sources:
        raise SpecError(
            f"unknown {kind} source {source!r} in {spec!r}{closest(source, sources)}; "
            f"valid sources: {', '.join(sources)}"
        )
    if not name:
        raise SpecError(f"{kind} spec {spec!r} names no {kind} after '{source}:'; e.g. '{source}:NAME'")
    return source, name


class Registry(Generic[T]):
    """A name -> factory mapping with a decorator; registering a name twice is an error."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            own = "" if isinstance(obj, str) else (getattr(obj, "__doc__", "") or "")  # a 'module:Class' has none yet
            self._docs[name] = doc or own.strip().split("\n")[0]
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise SpecError(
                f"unknown {self.kind} {name!r}{closest(name, self._entries)}; "
                f"valid: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def describe(self) -> dict[str, str]:
        return dict(self._docs)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
