"""How a probe picks among candidates on validation: one rule for every solver (penalty of the linear probes,
(metric, k) of kNN) and the distance of each pick from the rule's boundaries (``choice_margin``).

The rule (``one-se``, version 2): the *tie band* is one binomial standard error of the best validation
accuracy, in samples, and at least one sample: ``band = max(1, sqrt(n p (1 - p)))`` with ``p`` the best
accuracy on ``n`` validation samples. Every candidate whose count of correct validation samples is within
the band of the best count is as good as the best; among them the most regularised one wins (the strongest
penalty; for kNN the metric listed first, then the largest k). This is glmnet's one-standard-error rule.

Why a band and not the highest count: a validation sample near a decision boundary flips with the float
summation order (BLAS kernel, thread count, batch layout), so two candidates whose counts differ by one or
two are a coin toss between CPUs. Near the accuracy peak neighbouring penalties are that close, so an argmax
flips often; the band's edge lies on the rising side of the curve, where 10x apart penalties differ by many
samples, so a flip needs a candidate that sits exactly on the edge. ``choice_margin`` says how far it sits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._defaults import CHOICE_RULE

__all__ = ["choose", "tie_band"]


def tie_band(best_correct: float, n_val: int, n_se: float = CHOICE_RULE["band_se"]) -> float:
    """Correct validation samples within which a count ties with ``best_correct`` (of ``n_val``): ``n_se``
    binomial standard errors of the best accuracy, at least one sample."""
    n = max(int(n_val), 1)
    p = min(max(float(best_correct) / n, 0.0), 1.0)
    return max(1.0, float(n_se) * float(np.sqrt(n * p * (1.0 - p))))


def choose(correct: Sequence[float], preference: Sequence[int], n_val: int) -> tuple[int, float]:
    """The chosen candidate and its ``choice_margin``.

    Parameters
    ----------
    correct : counts of correct validation samples per candidate (NaN: not fitted, never chosen).
    preference : candidate positions from the most regularised (preferred on ties) to the least. When every
        count is NaN the first of them is returned (margin NaN).
    n_val : validation samples.

    Returns
    -------
    (position, margin): the first candidate of ``preference`` within the tie band of the best count, and
    the smallest slack, in samples, of the inequalities that make it the choice: its own count at or above
    the band's lower edge, and every more preferred candidate's count below it. Counts must move by more
    than this (summed over the best and the candidate concerned; the edge itself moves by at most half a
    sample per sample of the best count once the band exceeds one sample) before another candidate is
    chosen. NaN when there was nothing to choose (one candidate, or no validation data).
    """
    c = np.asarray(correct, dtype=np.float64)
    order = [int(i) for i in preference if np.isfinite(c[int(i)])]
    if not order:  # nothing fitted on validation: the most regularised candidate
        return int(preference[0]), float("nan")
    best = max(c[i] for i in order)
    edge = best - tie_band(best, n_val)
    for pos, i in enumerate(order):
        if c[i] >= edge:
            if len(order) == 1:
                return i, float("nan")
            slack = [c[i] - edge] + [edge - c[j] for j in order[:pos]]
            return i, float(min(slack))
    raise AssertionError("unreachable: the best count is within its own band")  # pragma: no cover
