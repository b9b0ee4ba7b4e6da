"""Percentiles of measured samples (fsync latencies, rates), one rule for every report.

The rule is a nearest-rank one: the sample at 0-based rank ``int(q * n)`` of the sorted
samples (clamped to the last), i.e. the smallest sample at which the empirical CDF *exceeds*
``q``. It always returns a measured value (no interpolation, an int stays an int), and the
median of an even count is the upper of the two middle samples. ``statistics.quantiles``
interpolates instead, which would change every figure already published (docs/compare)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

N = TypeVar("N", int, float)


def percentile(values: Iterable[N], q: float) -> N | None:
    """The ``q``-quantile (0 <= q <= 1) of ``values`` by the rule above; None when empty."""
    v = sorted(values)
    if not v:
        return None
    return v[min(len(v) - 1, int(q * len(v)))]
