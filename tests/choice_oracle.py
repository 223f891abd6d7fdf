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

from critmass.probes._base import BaseProbe, ChainFit

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


def chosen_shift(val_a, val_b, same_choice, n_val: int) -> float:
    """Validation samples by which two computations' counts differ, as far as result rows show it (they hold
    only the chosen candidate's accuracy): the largest difference where both chose the same candidate, at
    least one sample. A lower bound of :func:`count_shift`; use that where both ``val_scores_`` exist."""
    diff = np.abs(np.rint(np.asarray(val_a) * n_val) - np.rint(np.asarray(val_b) * n_val))[np.asarray(same_choice)]
    return float(max(1.0, diff.max(initial=0.0)))


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


class TableProbe(BaseProbe):
    """A solver whose validation accuracy per alpha is given (``table[alpha](n_val)``): the choice rule alone,
    through the probes' own fit."""

    _solver = "table"

    def __init__(self, alphas, table, *, subsets=None, standardize=True, val_fraction=0.25, refit=False,
                 device="cpu", random_state=0):
        self.alphas, self.table, self.subsets = alphas, table, subsets
        self.standardize, self.val_fraction, self.refit = standardize, val_fraction, refit
        self.device, self.random_state = device, random_state

    def _fit_chain(self, ctx, data, chain, problems):
        n_val = len(data.y_val)
        acc = np.array([self.table[a](n_val) for _, a in problems])
        C = data.n_classes
        return ChainFit(W=[np.zeros((k, C)) for k, _ in problems], b=np.zeros((len(problems), C)),
                        train_accuracy=np.zeros(len(problems)), val_accuracy=acc,
                        n_iter=np.zeros(len(problems), dtype=np.int64))


def assert_fits_choose_alike(one, two, X_test, *, agree: float = 0.97) -> None:
    """Two fits of one probe over the same subsets (two float paths: threads, BLAS backends): each subset's
    penalty is the same wherever its margin exceeds the numeric noise (:func:`assert_same_choice`), and then
    the two predict the same test labels for at least ``agree`` of the samples."""
    n_val = one.n_val_
    same = one.predict_subsets(X_test) == two.predict_subsets(X_test)
    for i in range(len(one.regs_)):
        shift = count_shift(one.val_scores_[i], two.val_scores_[i], n_val)
        if assert_same_choice(one.regs_[i], two.regs_[i], one.choice_margins_[i], two.choice_margins_[i],
                              shift=shift, val_a=one.scores_[i], val_b=two.scores_[i], n_val=n_val):
            assert same[i].mean() >= agree
