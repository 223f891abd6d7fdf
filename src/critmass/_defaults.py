"""Defaults shared by every command and API, defined once: ``critmass probe`` / :func:`run_probes`,
``critmass cka`` / :func:`cka_curve`, the sweep config and the paper configs all read them from here.

* :data:`DEFAULT_FRACTIONS`: the authors' grid of 15 fractions (Nanda et al. 2023);
* :data:`DEFAULT_SEEDS`: 5 seeds (``0 .. 4``), as in the paper;
* :data:`DEFAULT_ON_CONSTANT`: what a CKA cell of only zero-variance neurons gives (NaN, logged), so one
  dead neuron at the smallest fraction does not discard a whole curve (the probes of such a subset run
  and score chance, they do not fail either);
* :data:`DEFAULT_VAL_FRACTION`, :data:`DEFAULT_VAL_SEED`: the seeded, stratified validation share
  carved from train, whose remaining *fit rows* the probes and the selectors are fitted on;
* :data:`CHOICE_RULE`: how a probe picks its penalty (kNN: k and metric) on validation
  (:mod:`critmass.probes._choice`), recorded in every run's config and in the sweep's probe unit keys.

:func:`parse_seeds` is the one reading of a ``seeds`` value everywhere (API, CLI, YAML).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .exceptions import ConfigError

__all__ = [
    "CHOICE_RULE",
    "DEFAULT_FRACTIONS",
    "DEFAULT_ON_CONSTANT",
    "DEFAULT_SEEDS",
    "DEFAULT_VAL_FRACTION",
    "DEFAULT_VAL_SEED",
    "ON_CONSTANT",
    "check_on_constant",
    "fractions_text",
    "parse_seeds",
]

#: The rule (and its version) by which probes choose on validation; a new version changes the sweep's probe
#: unit keys, so a resumed sweep never mixes rows chosen under two rules. Version 1 (no ``choice_rule`` in
#: a run's config) took the highest count of correct validation samples, broke exact ties on validation
#: loss (within 1%), then on the strongest penalty.
CHOICE_RULE = {"name": "one-se", "version": 2, "band_se": 1.0}
#: The fractions of the authors' scripts (Nanda et al. 2023): 0.05% .. 100% of the layer.
DEFAULT_FRACTIONS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0)
#: Seeds of the random selectors: a count, 5 meaning seeds 0 .. 4 (the paper's five runs).
DEFAULT_SEEDS = 5
#: What a subset-vs-full CKA value of only zero-variance neurons (0/0) gives: ``"nan"`` or ``"raise"``.
DEFAULT_ON_CONSTANT = "nan"
#: The valid ``on_constant`` values.
ON_CONSTANT = ("raise", "nan")
#: Share of train carved (seeded, stratified) as validation when a feature set has no ``val`` split.
DEFAULT_VAL_FRACTION = 0.1
#: Seed of that carved validation split.
DEFAULT_VAL_SEED = 0

_SEEDS_FORMS = "a count (5 means seeds 0..4) or a non-empty list of non-negative integer seeds (e.g. 1,2,3)"


def fractions_text(fractions=DEFAULT_FRACTIONS) -> str:
    """The comma-separated form of a fraction grid, as the CLI takes it (``'0.0005,0.001,...,1'``)."""
    return ",".join(f"{float(f):g}" for f in fractions)


def check_on_constant(on_constant) -> str:
    """``on_constant`` must be one of :data:`ON_CONSTANT`."""
    if on_constant not in ON_CONSTANT:
        raise ConfigError(f"on_constant must be one of {', '.join(ON_CONSTANT)}; got {on_constant!r}")
    return str(on_constant)


def _count(value, name: str) -> list[int]:
    if int(value) < 1:
        raise ConfigError(f"{name} must be a positive count (5 means seeds 0..4) or a list of seeds; got {value!r}")
    return list(range(int(value)))


def parse_seeds(value=DEFAULT_SEEDS, *, name: str = "seeds") -> list[int]:
    """The seeds a ``seeds`` value means, by one rule for the API, the CLI and sweep configs.

    * an int ``N >= 1`` (or the string ``"N"``) is a count: seeds ``0 .. N-1``; ``0`` and negative
      counts are refused;
    * a sequence of ints (or a comma-separated string ``"1,2,3"``; ``"3,"`` is the single seed 3) lists
      the seeds themselves, in that order: each must be a non-negative integer, listed once (a repeat
      is refused, not silently dropped), and the list must not be empty.

    Raises
    ------
    ConfigError
        One line naming ``name`` (e.g. ``--seeds``) and what is wrong.

    Examples
    --------
    >>> parse_seeds(3), parse_seeds("3"), parse_seeds("1,2,5"), parse_seeds([4, 7])
    ([0, 1, 2], [0, 1, 2], [1, 2, 5], [4, 7])
    """
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        text = text.strip()
        if "," not in text:
            try:
                n = int(text)
            except ValueError:
                raise ConfigError(f"{name} must be {_SEEDS_FORMS}; got {value!r}") from None
            return _count(n, name)
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            value = [int(t) for t in items]
        except ValueError:
            raise ConfigError(f"{name} must be {_SEEDS_FORMS}; got {text!r}") from None
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return _count(value, name)
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else None
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or len(value) == 0:
        raise ConfigError(f"{name} must be {_SEEDS_FORMS}; got {value!r}")
    out: list[int] = []
    for s in value:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ConfigError(f"{name} must be {_SEEDS_FORMS}; got {s!r} in {list(value)!r}")
        if int(s) < 0:
            raise ConfigError(f"{name} must be non-negative integers; got {int(s)} in {list(value)!r}")
        if int(s) in out:
            raise ConfigError(f"seed {int(s)} is listed twice in {name}; list each seed once")
        out.append(int(s))
    return out
