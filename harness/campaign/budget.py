"""``--time-budget``: a campaign that ends cleanly before its CI job's own timeout would kill
it. No iteration starts that would not end in time, judged by the longest iteration so far (the
canary's at first); the iterations not started are the shortfall the summary records and
``xdh report merge`` counts (unless ``--allow-shortfall``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from time import monotonic


def describe(seconds: float) -> str:
    """90 -> '1m30s', 5400 -> '1h30m'."""
    s = int(round(seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (sec, "s")) if v) or "0s"


@dataclass
class Budget:
    seconds: float                      # 0: no budget
    t0: float = field(init=False)       # when the campaign started: when this was made
    longest: float = 0.0                # the longest iteration so far, seconds
    skipped: list[int] = field(default_factory=list)
    _running: dict[int | None, float] = field(default_factory=dict, repr=False)    # index -> when it started
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.t0 = monotonic()

    def took(self, seconds: float, index: int | None = None) -> None:
        with self._lock:
            self.longest = max(self.longest, seconds)
            self._running.pop(index, None)

    def allows(self, index: int) -> bool:
        """Whether iteration ``index`` may start now; if not, it is recorded as not started. An
        iteration still under way counts with the time it has taken so far (on the fast path the
        next crash run starts while the last one is verified: before any has finished)."""
        if self.seconds <= 0:
            return True
        with self._lock:
            now = monotonic()
            left = self.seconds - (now - self.t0)
            estimate = max([self.longest, *(now - t for t in self._running.values())])
            if left > 0 and left >= estimate:
                self._running[index] = now
                return True
            self.skipped.append(index)
            return False

    def shortfall(self, planned: int) -> str:
        """What the summary records: '' when every planned iteration started."""
        if not self.skipped:
            return ""
        return (f"time budget {describe(self.seconds)}: {len(self.skipped)} of {planned} iterations not started "
                f"(the longest took {self.longest:.0f} s)")
