"""Paired significance of two classifiers on the same examples: McNemar's test (Stergiou 2021 §6.4.5, Eq.
6.1, Table 6.5), used there to compare each network with and without Class Regularisation.

Contingency counts over ``n`` examples: ``a`` both right, ``b`` only the second model (e.g. with CR) right,
``c`` only the first right, ``d`` both wrong. Under ``h0: p_b = p_c`` the statistic with Edwards'
continuity correction ``χ² = (|b − c| − 1)² / (b + c)`` follows a χ² distribution with one degree of
freedom; ``p`` is its upper tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class McNemarResult:
    """Counts ``a`` (both right), ``b`` (second only), ``c`` (first only), ``d`` (both wrong), ``chi2``, ``p``."""

    a: int
    b: int
    c: int
    d: int
    chi2: float
    p: float


def mcnemar(b: int, c: int, a: int = 0, d: int = 0) -> McNemarResult:
    """McNemar's χ² (Edwards-corrected, Eq. 6.1) and p-value from the discordant counts ``b`` and ``c``."""
    if min(a, b, c, d) < 0:
        raise ValueError(f"mcnemar: counts must be >= 0, got a={a}, b={b}, c={c}, d={d}")
    if b + c == 0:
        return McNemarResult(a, b, c, d, 0.0, 1.0)  # the models never disagree
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemarResult(a, b, c, d, float(chi2), float(stats.chi2.sf(chi2, df=1)))


def mcnemar_predictions(labels, first, second) -> McNemarResult:
    """McNemar's test of two models' predictions ``first`` and ``second`` against ``labels`` (equal length)."""
    labels, first, second = (np.asarray(v) for v in (labels, first, second))
    if not labels.shape == first.shape == second.shape:
        raise ValueError(f"mcnemar: {labels.shape} labels, {first.shape} and {second.shape} predictions")
    right1, right2 = first == labels, second == labels
    return mcnemar(int((~right1 & right2).sum()), int((right1 & ~right2).sum()),
                   a=int((right1 & right2).sum()), d=int((~right1 & ~right2).sum()))
