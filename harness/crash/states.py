"""Crash states from a write log: which states a disk with a volatile write cache allows at a
power cut (see ``writelog`` for the format and the model's limits), planned from a seed and
built as raw images.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..vm.disks import copy_raw
from .writelog import WriteLog, apply

# what an earlier flush point must satisfy without any ack: it mounts, holds no corrupt data, no holes
INVARIANT_KINDS = ("unmountable", "corrupt", "hole", "integrity")


@dataclass(frozen=True)
class CrashState:
    name: str               # cut, worst, subset-N, flush-N
    kind: str               # "acked": every ack must hold; "invariants": integrity checks only
    positions: tuple[int, ...]
    note: str = ""


def plan_states(log: WriteLog, seed: int, subsets: int, flush_points: int, first_entry: int = 0) -> list[CrashState]:
    """Which crash states to build from ``log`` (seeded, reproducible). Flush points are taken
    from entry ``first_entry`` on (the workload's start: earlier ones are mkfs, not the workload);
    ``flush_points`` < 0 means all of them."""
    rng = random.Random(f"xdh-crashstates:{seed}")
    last = log.last_flush()
    base = tuple(range(last + 1))
    tail = log.tail_writes()
    states = [CrashState("worst", "acked", base, f"state at the last flush (entry {last}); "
                                                 f"{len(tail)} later writes lost")]
    seen = set()
    for k in range(subsets):
        if not tail:
            break
        pick = tuple(sorted(rng.sample(tail, rng.randint(1, len(tail)))))
        if pick in seen or len(pick) == len(tail):
            continue       # the full tail is the real cut state, verified already
        seen.add(pick)
        states.append(CrashState(f"subset-{k}", "acked", base + pick,
                                 f"last flush + {len(pick)} of {len(tail)} unflushed writes"))
    flushes = [f for f in log.flushes()[:-1] if f >= first_entry]
    chosen = flushes if flush_points < 0 or len(flushes) <= flush_points else \
        sorted(rng.sample(flushes, flush_points))
    for f in chosen:
        states.append(CrashState(f"flush-{f}", "invariants", tuple(range(f + 1)), f"state at flush entry {f}"))
    return states


def build(log: WriteLog, base: Path, state: CrashState, out: Path) -> Path:
    """A raw crash image: a sparse copy of ``base`` (the disk under test before the run) with the
    state's log entries written into it."""
    copy_raw(base, out)
    apply(log, out, list(state.positions))
    return out
