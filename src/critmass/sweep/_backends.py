"""The executor registry: the :class:`Executor` interface and the backends registered under a name.

A backend is one class (``@register_executor("name")``, a subclass of :class:`Executor` with a
:meth:`Executor.from_options` constructor) in one module that ``critmass/sweep/__init__.py`` imports;
``executor.kind`` in sweep configs, ``critmass sweep --executor`` and :func:`critmass.sweep.make_executor`
read the names from here. This module imports nothing of the sweep (nor torch), so the config can check
names without a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .._registry import Registry
from .._validation import closest
from ..exceptions import ConfigError

__all__ = ["EXECUTORS", "Executor", "register_executor", "list_executors", "executor_class", "check_executor"]

#: Execution backends by name (``local``, ``ray``, ``slurm`` and whatever registers itself).
EXECUTORS: Registry = Registry("executor")


class Executor:
    """Runs units somewhere and reports their status dicts as they finish.

    Subclasses implement :meth:`submit`, :meth:`wait`, :attr:`pending` and optionally :meth:`start`
    and :meth:`close`. Use as a context manager.
    """

    name = "executor"

    @classmethod
    def from_options(cls, options, *, workers: int | None = None, address: str | None = None) -> Executor:
        """The executor a sweep config asks for: ``options`` is its ``executor`` section
        (:class:`~critmass.sweep._config.ExecutorOptions`); ``workers`` / ``address`` come from the CLI and win."""
        return cls()

    def start(self, run_dir: Path, *, device: str = "auto") -> None:
        """Prepare the backend for a run in ``run_dir`` (called once by the driver)."""
        self.run_dir = Path(run_dir)
        self.device = device

    def submit(self, units: Sequence) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def wait(self) -> list[dict]:  # pragma: no cover - interface
        """Block until at least one submitted unit has finished; return the statuses of all finished ones."""
        raise NotImplementedError

    @property
    def pending(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, *, cancel: bool = False) -> None:
        """Release the backend; ``cancel`` stops units still queued or running (on interrupt)."""

    def describe(self) -> str:
        return self.name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(cancel=exc_type is not None)
        return False


def register_executor(name: str, doc: str = ""):
    """Class decorator: register an :class:`Executor` subclass as the backend ``name``.

    Parameters
    ----------
    name : str
        The value of ``executor.kind`` / ``--executor`` that selects it; set as the class's ``name``.
    doc : str, optional
        One line for listings (default: the first line of the class docstring).

    Returns
    -------
    callable
        The decorator; registering a name twice is an error.
    """

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Executor)):
            raise TypeError(f"executor {name!r} must be a subclass of critmass.sweep.Executor; got {cls!r}")
        cls.name = name
        return EXECUTORS.register(name, doc)(cls)

    return deco


def list_executors() -> list[str]:
    """Names of the registered executors, in registration order (``['local', 'ray', 'slurm']`` built in).

    Returns
    -------
    list of str
    """
    return EXECUTORS.names()


def _one_of(names: list[str], quote: bool = False) -> str:
    names = [repr(n) if quote else n for n in names]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_executor(kind) -> str:
    """``kind`` if it names a registered executor, else a one-line :class:`ConfigError` listing them.

    Parameters
    ----------
    kind : str

    Returns
    -------
    str
    """
    names = list_executors()
    if kind not in names:
        raise ConfigError(f"unknown executor {kind!r}{closest(str(kind), names)}; use {_one_of(names)}")
    return kind


def executor_class(kind: str) -> type[Executor]:
    """The :class:`Executor` subclass registered as ``kind`` (a :class:`ConfigError` for an unknown name).

    Parameters
    ----------
    kind : str

    Returns
    -------
    type
    """
    return EXECUTORS.get(check_executor(kind))
