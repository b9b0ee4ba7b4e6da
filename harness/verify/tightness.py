"""How tight the volatile model's oracle is: in each flush state, the acked ops found durable
that it did not require.

A flush state holds exactly what the disk held when that flush completed, and the flush made
all of it durable. So an acked op found there was durable at that flush; the oracle requires it
only from the last flush the write log held when its ack reached the host (``crash.states``),
which is at or after the true one. The acks found beyond the required ones are the oracle's
slack: a state in which one of them were lost would still pass. Measured per flush state as a
count of acks and of flushes (from the state's flush to the one the oracle waits for)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..jsonio import known_fields
from ..stats import percentile


def found_prefix(holds: Callable[[int], bool], required: int, total: int) -> int:
    """The largest k >= ``required`` with ``holds(k)`` (the first k acks all found), by bisection:
    ``holds(required)`` is known true and holding is monotone (fewer acks, fewer to find)."""
    lo, hi = required, total
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def flush_lag(flushes: Sequence[int], state_flush: int, bound: int) -> int:
    """Flushes after ``state_flush`` up to ``bound``, the one the oracle waits for (0: none)."""
    return max(0, bisect.bisect_right(flushes, bound) - bisect.bisect_right(flushes, state_flush))


@dataclass(frozen=True)
class Slack:
    """The slack over a run's flush states (median and max, in acks and in flushes)."""

    states: int = 0                  # flush states measured (those that passed)
    tight: int = 0                   # ... with no slack: every ack found was required
    acks_median: float = 0.0
    acks_max: int = 0
    flushes_median: float = 0.0
    flushes_max: int = 0

    @classmethod
    def of(cls, per_state: Sequence[tuple[int, int]]) -> Slack:
        """From (acks, flushes) of slack per flush state."""
        if not per_state:
            return cls()
        a = [x for x, _ in per_state]
        f = [y for _, y in per_state]
        return cls(len(per_state), sum(1 for x in a if x == 0), percentile(a, 0.5) or 0, max(a),
                   percentile(f, 0.5) or 0, max(f))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Slack:
        return cls(**known_fields(cls, d))
