"""Confidence intervals for the results report, in the standard library only (no SciPy).

    wilson(k, n)                 a proportion's 95 % interval (Wilson score)
    newcombe(k1, n1, k0, n0)     the difference of two proportions (Newcombe's hybrid score, method 10)
    welch(a, b)                  the difference of two means, unequal variances (Welch), t quantile
    t_quantile(p, df)            Student's t by bisection of its CDF (regularised incomplete beta)

Wilson and Newcombe keep their coverage for small groups and rates near 0 or 1, where the plain
normal interval (p ± 1.96·se) is too narrow and can leave [0, 1]; revenue per person is a mean of
skewed amounts, so Welch's t with its own degrees of freedom and not a pooled variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist, fmean, variance

Z95 = NormalDist().inv_cdf(0.975)  # 1.95996…


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials."""
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k0: int, n0: int, z: float = Z95) -> tuple[float, float, float]:
    """(p1 − p0, low, high): Newcombe's hybrid score interval from the two Wilson intervals."""
    p1, p0 = k1 / n1, k0 / n0
    (l1, u1), (l0, u0) = wilson(k1, n1, z), wilson(k0, n0, z)
    diff = p1 - p0
    return diff, diff - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), diff + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean(a) − mean(b), low, high, degrees of freedom) by Welch's t; both groups need two values or more."""
    va, vb = variance(a) / len(a), variance(b) / len(b)
    diff = fmean(a) - fmean(b)
    if va + vb == 0:  # every amount equal within each group: no spread to estimate
        return diff, diff, diff, float(len(a) + len(b) - 2)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2, df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half, df


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t with df degrees of freedom, to 1e-10."""
    low, high = 0.0, 1e4
    while high - low > 1e-10:
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes §6.4)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h
