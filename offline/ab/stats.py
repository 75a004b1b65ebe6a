"""The statistics of `mmsearch ab report`, in closed form (no SciPy in the search extra).

- Wilson score interval of a proportion (CTR): it stays inside [0, 1] and keeps its coverage at small counts and
  rates near 0, where the normal-approximation interval does not.
- Newcombe's hybrid score interval (his method 10, 1998) of the difference of two independent proportions, built
  from the two Wilson intervals.
- Pearson's chi-square goodness of fit of the split (sample-ratio mismatch), with its exact upper tail for a whole
  number of degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_diff(s1: int, n1: int, s0: int, n0: int, z: float = Z95) -> tuple[float, float, float]:
    """(p1 - p0, lower, upper): the difference of proportion 1 to proportion 0 with its 95% interval."""
    p1, p0 = (s1 / n1 if n1 else 0.0), (s0 / n0 if n0 else 0.0)
    l1, u1 = wilson(s1, n1, z)
    l0, u0 = wilson(s0, n0, z)
    d = p1 - p0
    lower = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return (d, max(-1.0, lower), min(1.0, upper))


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with `df` (a whole number >= 1) degrees of freedom."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    if x <= 0:
        return 1.0
    h = x / 2
    if df % 2 == 0:
        # exp(-h) * sum_{i < df/2} h^i / i!
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= h / i
            total += term
        return min(1.0, math.exp(-h) * total)
    # erfc(sqrt(h)) + exp(-h) * sum_{i=1}^{(df-1)/2} h^(i-1/2) / Gamma(i+1/2)
    total = math.erfc(math.sqrt(h))
    term = math.sqrt(h) / math.gamma(1.5)
    for i in range(1, (df - 1) // 2 + 1):
        if i > 1:
            term *= h / (i - 0.5)
        total += math.exp(-h) * term
    return min(1.0, total)


def srm_p(observed: Mapping[str, int], ratios: Mapping[str, float]) -> tuple[float, float]:
    """(chi-square, p) of the observed counts against the configured ratios (experiments with ratio 0 left out)."""
    names = [n for n, r in ratios.items() if r > 0]
    total = sum(observed.get(n, 0) for n in names)
    weight = sum(ratios[n] for n in names)
    if len(names) < 2 or total == 0:
        return (0.0, 1.0)
    chi2 = 0.0
    for n in names:
        expected = total * ratios[n] / weight
        chi2 += (observed.get(n, 0) - expected) ** 2 / expected
    return (chi2, chi2_sf(chi2, len(names) - 1))
