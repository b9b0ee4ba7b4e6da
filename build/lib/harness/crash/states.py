"""Crash states from a write log: every state a disk with a volatile write cache allows at a
power cut, each with the acks it must hold, deduplicated by content (see ``writelog`` for the
format and the model's limits).

The states: the disk at each flush of the workload (``flush-P``, every write up to the flush
entry at position P), and, from a seed, subsets of each epoch's unflushed writes on top of it
(``flush-P+K``: CrashMonkey's rule, earlier epochs whole, a subset of the next).

Which acks a state must hold: an ack line reaches the host only after the flush that made the
op durable completed, and QEMU logs that flush before completing it. So when the ack arrived
the log already held that flush: the last flush inside the log's size at that moment
(``Ack.log_bytes``) is at or after the covering one. Requiring the ack from that flush on can
only require it later than exact, never earlier: it never raises a false alarm.

Deduplication: a state's key is the sum, over every sector written, of a hash of the sector
number and its content (mod 2**128), kept incrementally along the log. Equal keys mean equal
disks (the same base): such states are verified once, and each is still judged with its own acks.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog.workloads import Ack
from ..vm.disks import copy_raw
from .writelog import DISCARD, WriteLog, apply

MOD = 1 << 128


@dataclass(frozen=True)
class CrashState:
    name: str                   # flush-P, flush-P+K (no-flush, no-flush+K: before any flush)
    flush: int                  # position of the flush entry (-1: before any flush)
    extra: tuple[int, ...]      # writes of the following epoch applied on top
    required: int               # the first ``required`` acks must hold in this state
    key: str                    # content key (hex): equal keys, equal disks

    @property
    def positions(self) -> tuple[int, ...]:
        return tuple(range(self.flush + 1)) + self.extra

    def recipe(self) -> dict[str, object]:
        """What rebuilds this state from the run's base disk and write log (``xdh reproduce --state``)."""
        return {"name": self.name, "flush": self.flush, "extra": list(self.extra), "required": self.required,
                "key": self.key}

    @classmethod
    def from_recipe(cls, d: dict[str, Any]) -> CrashState:
        return cls(d["name"], d["flush"], tuple(d["extra"]), d["required"], d["key"])


@dataclass(frozen=True)
class StatePlan:
    states: list[CrashState]            # every generated state, in log order
    distinct: list[CrashState]          # the first state of each content key: what gets verified

    def summary(self) -> dict[str, int]:
        return {"generated": len(self.states), "distinct": len(self.distinct)}


def ack_bounds(log: WriteLog, acks: Sequence[Ack]) -> list[int]:
    """Per ack, the flush position from which it must hold (see the module docstring); an ack
    without a recorded log size gets the last flush (the weakest requirement)."""
    flushes = log.flushes()
    ends = [log.entries[f].end for f in flushes]
    last = flushes[-1] if flushes else -1
    out = []
    for a in acks:
        if a.log_bytes < 0:
            out.append(last)
            continue
        k = bisect.bisect_right(ends, a.log_bytes)
        out.append(flushes[k - 1] if k else -1)
    return out


class _Keys:
    """The content key along the log: per sector the hash of what it holds, and their sum."""

    def __init__(self, log: WriteLog):
        self.log = log
        self.sectors: dict[int, int] = {}
        self.key = 0
        self._memo: dict[int, list[tuple[int, int]]] = {}    # an epoch's entries, hashed for its subsets
        self._f = open(log.path, "rb")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        self._f.close()

    def _hashes(self, i: int) -> list[tuple[int, int]]:
        if i in self._memo:
            return self._memo.pop(i)
        e, ss = self.log.entries[i], self.log.sectorsize
        if e.flags & DISCARD:
            data = bytes(e.nr_sectors * ss)
        elif e.is_write:
            self._f.seek(e.data_offset)
            data = self._f.read(e.data_len)
        else:
            return []
        return [(e.sector + k, int.from_bytes(hashlib.blake2b((e.sector + k).to_bytes(8, "little")
                                                              + data[k * ss:(k + 1) * ss], digest_size=16).digest(),
                                              "little")) for k in range(len(data) // ss)]

    def advance(self, i: int) -> None:
        for s, h in self._hashes(i):
            self.key = (self.key - self.sectors.get(s, 0) + h) % MOD
            self.sectors[s] = h

    def with_extra(self, positions: Sequence[int]) -> int:
        over: dict[int, int] = {}
        key = self.key
        for i in positions:
            self._memo[i] = hashes = self._memo.get(i) or self._hashes(i)
            for s, h in hashes:
                key = (key - over.get(s, self.sectors.get(s, 0)) + h) % MOD
                over[s] = h
        return key


def plan_states(log: WriteLog, acks: Sequence[Ack], seed: int, subsets: int, flush_points: int,
                first_entry: int = 0) -> StatePlan:
    """Every crash state from the workload's start (the last flush before entry ``first_entry``)
    on, ``subsets`` seeded subsets of each following epoch, keyed and deduplicated.
    ``flush_points`` >= 0 samples that many flush states (the last one always included)."""
    rng = random.Random(f"xdh-crashstates:{seed}")
    bounds = ack_bounds(log, acks)
    flushes = log.flushes()
    start = max([f for f in flushes if f < first_entry], default=-1)
    points = [start] + [f for f in flushes if f > start]
    if 0 <= flush_points < len(points) - 1:
        points = sorted(rng.sample(points[:-1], flush_points)) + [points[-1]]
    keys = _Keys(log)
    states: list[CrashState] = []
    try:
        done = -1
        for p in points:
            for i in range(done + 1, p + 1):
                keys.advance(i)
            done = p
            required = bisect.bisect_right(bounds, p)
            name = f"flush-{p}" if p >= 0 else "no-flush"
            states.append(CrashState(name, p, (), required, f"{keys.key:032x}"))
            nxt = next((f for f in flushes if f > p), len(log.entries))
            epoch = [i for i in range(p + 1, nxt) if log.entries[i].is_write or log.entries[i].flags & DISCARD]
            seen: set[tuple[int, ...]] = set()
            for k in range(subsets if len(epoch) > 1 else 0):
                pick = tuple(sorted(rng.sample(epoch, rng.randint(1, len(epoch) - 1))))
                if pick in seen:
                    continue
                seen.add(pick)
                states.append(CrashState(f"{name}+{k}", p, pick, required, f"{keys.with_extra(pick):032x}"))
    finally:
        keys.close()
    firsts: dict[str, CrashState] = {}
    for st in states:
        firsts.setdefault(st.key, st)
    return StatePlan(states, list(firsts.values()))


def build(log: WriteLog, base: Path, state: CrashState, out: Path) -> Path:
    """A raw crash image: a sparse copy of ``base`` (the disk under test before the run) with the
    state's log entries written into it."""
    copy_raw(base, out)
    apply(log, out, list(state.positions))
    return out
