"""The probes' choice rule written out naively (the tests' independent computation), and the margin-aware
comparison of choices made by two float computations.

Why margin-aware: two code paths (batched vs alone, 1 vs 2 processes, path vs grid) sum floats in another
order, so a validation sample near a decision boundary can be counted correct by one and wrong by the other.
If no candidate's count of correct validation samples differs by more than ``d`` between the two
computations, a choice whose ``choice_margin`` exceeds ``STABLE_PER_SAMPLE * d`` cannot differ: each of the
rule's inequalities compares two counts (a candidate and the best), which move by at most ``2 d``, and the
band (one standard error of the best count) moves by at most ``d / 2`` when the best moves by ``d`` (its
derivative ``|1 - 2p| / (2 SE)`` is at most 1/2 once ``SE >= 1``).
"""

from __future__ import annotations

import math

import numpy as np

STABLE_PER_SAMPLE = 2.5


def band(best: float, n: int) -> float:
    p = best / n
    return max(1.0, math.sqrt(n * p * (1 - p)))


def pick(counts, preference, n: int) -> int:
    """The first candidate in ``preference`` (most regularised first) whose count is within one standard error
    (at least one sample) of the best count; NaN counts are never picked."""
    fitted = [i for i in preference if not math.isnan(counts[i])]
    best = max(counts[i] for i in fitted)
    for i in fitted:
        if counts[i] >= best - band(best, n):
            return i
    raise AssertionError("no candidate within the band")


def pick_penalty(val_scores, alphas, n_val: int) -> float:
    """The penalty the rule picks from one subset's validation accuracies over ``alphas``."""
    counts = [float("nan") if np.isnan(s) else round(s * n_val) for s in val_scores]
    strongest_first = sorted(range(len(alphas)), key=lambda i: -alphas[i])
    return float(alphas[pick(counts, strongest_first, n_val)])


def count_shift(val_a, val_b, n_val: int) -> float:
    """Largest difference in correct validation samples between two computations' accuracies over the same
    candidates (inf where one fitted a candidate the other did not)."""
    a, b = np.asarray(val_a, dtype=float), np.asarray(val_b, dtype=float)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return math.inf
    live = ~np.isnan(a)
    return float(np.max(np.abs(np.rint(a[live] * n_val) - np.rint(b[live] * n_val)), initial=0.0))


def assert_same_choice(choice_a, choice_b, margin_a, margin_b, *, shift: float, val_a=None, val_b=None,
                       n_val: int | None = None, what: str = "") -> bool:
    """Assert two computations chose the same candidate where a choice's margin exceeds what a count shift of
    ``shift`` samples can cross; otherwise (a knife edge) that both choices lie within each other's tie band
    (their validation accuracies, ``val_a`` / ``val_b``, differ by at most a band plus the shift). Returns
    whether equality was asserted. A NaN margin means there was nothing to choose: the choices must agree."""
    margin = np.nanmax([margin_a, margin_b]) if not (np.isnan(margin_a) and np.isnan(margin_b)) else math.inf
    if margin > STABLE_PER_SAMPLE * max(shift, 1.0) or choice_a == choice_b:
        assert choice_a == choice_b, (
            f"{what}: choices {choice_a} vs {choice_b} differ with margins {margin_a}, {margin_b} > "
            f"{STABLE_PER_SAMPLE} x {shift} samples")
        return True
    if val_a is not None and n_val:
        best = max(val_a, val_b) * n_val
        assert abs(val_a - val_b) * n_val <= band(best, n_val) + shift + 1e-9, (
            f"{what}: knife-edge choices {choice_a} vs {choice_b} are further apart than the tie band")
    return False
