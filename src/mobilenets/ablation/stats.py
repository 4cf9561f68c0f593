"""Mean, spread and the difference between two arms with a confidence interval (Welch's t)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
# Spreads below this fraction of the values' size are rounding, not seeds differing: drops computed as
# 100 * (fp32 - int8) from equal image counts differ in their last bits, and Welch's t would turn that
# into a zero-width interval and a confident verdict.
ROUNDING = 1e-9


def _finite(values: Sequence[float], what: str) -> None:
    bad = [value for value in values if not math.isfinite(value)]
    if bad:
        raise ValueError(f"{what} must be finite numbers, got {bad[0]!r} among {list(values)!r}")


@dataclass(frozen=True)
class Summary:
    """One arm's values over seeds: mean and sample standard deviation (None for one seed)."""

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        _finite(self.values, "an arm's values")

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass(frozen=True)
class Difference:
    """``a - b`` of two arms' means with its ``CONFIDENCE`` interval: None when a side has one value, or
    when neither side varies (``spread`` False: every seed scored the same, so t has no scale)."""

    mean: float
    low: float | None
    high: float | None
    spread: bool = True

    def verdict(self, *, higher_is_better: bool) -> str:
        """Whether ``a`` is better than ``b``: "a better", "b better", "no significant difference"."""
        if not self.spread:
            return "no spread in either arm for an interval"
        if self.low is None or self.high is None:
            return "too few seeds for an interval"
        low, high = (self.low, self.high) if higher_is_better else (-self.high, -self.low)
        if low > 0:
            return "a better"
        if high < 0:
            return "b better"
        return "no significant difference"


def difference(a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE) -> Difference:
    """Welch's interval for ``mean(a) - mean(b)``: unequal variances, as arms trained alike may have."""
    _finite([*a, *b], "the arms' values")
    mean = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(mean, None, None)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se <= ROUNDING * max(1.0, *(abs(value) for value in (*a, *b))):
        # a zero-width interval would read as certainty from seeds that all scored alike
        return Difference(mean, None, None, spread=False)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    from scipy import stats  # imported here: 0.75 s that every other CLI command would pay at start

    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * se
    return Difference(mean, mean - half, mean + half)
