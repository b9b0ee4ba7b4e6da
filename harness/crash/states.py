"""Crash states from a write log: every state a disk with a volatile write cache allows at a
power cut, each with the acks it must hold, deduplicated by content (see ``writelog`` for the
format and the model's limits).

The states: the disk at each flush of the workload (``flush-P``, every write up to the flush
entry at position P), and, from a seed, subsets of each epoch's unflushed writes on top of it
(``flush-P+K``: CrashMonkey's rule, earlier epochs whole, a subset of the next). An epoch of at
most ``exhaustive_k`` writes gets every subset instead of samples. With an atomic write unit
(``atomic_write`` bytes, e.g. 4096), a write spanning several units may also be torn at the cut:
seeded torn states (``flush-P~K``) apply a subset of the epoch's other writes and some units of
one write (LazyFS models this; CrashMonkey does not). ``Coverage`` says how much of each epoch's
subset space a plan covered.

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
import dataclasses
import hashlib
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.workloads import Ack
from ..vm.disks import copy_raw
from .coverage import Coverage
from .writelog import DISCARD, Entry, WriteLog, apply, apply_pieces

MOD = 1 << 128
Piece = tuple[int, int, int]     # a torn write's part on the disk: (entry position, first log sector in it, sectors)


@dataclass(frozen=True)
class CrashState:
    name: str                   # flush-P, flush-P+K, flush-P~K (no-flush...: before any flush)
    flush: int                  # position of the flush entry (-1: before any flush)
    extra: tuple[int, ...]      # writes of the following epoch applied on top
    required: int               # the first ``required`` acks must hold in this state
    key: str                    # content key (hex): equal keys, equal disks
    torn: tuple[Piece, ...] = ()    # the parts of one torn write applied on top (after ``extra``)

    @property
    def positions(self) -> tuple[int, ...]:
        return tuple(range(self.flush + 1)) + self.extra

    @property
    def is_flush_state(self) -> bool:
        """The disk exactly at a flush: no write of the following epoch on top."""
        return not self.extra and not self.torn

    def recipe(self) -> dict[str, object]:
        """What rebuilds this state from the run's base disk and write log (``xdh reproduce --state``)."""
        return {"name": self.name, "flush": self.flush, "extra": list(self.extra), "required": self.required,
                "key": self.key} | ({"torn": [list(p) for p in self.torn]} if self.torn else {})

    @classmethod
    def from_recipe(cls, d: dict[str, Any]) -> CrashState:
        return cls(d["name"], d["flush"], tuple(d["extra"]), d["required"], d["key"],
                   tuple((int(a), int(b), int(c)) for a, b, c in d.get("torn", [])))


@dataclass(frozen=True)
class StatePlan:
    states: list[CrashState]            # every generated state, in log order (judged: verified ones)
    distinct: list[CrashState]          # the first state of each content key: what gets verified
    coverage: Coverage = field(default_factory=Coverage)
    generated: int = -1                 # states generated before a budget (-1: ``len(states)``)

    def summary(self) -> dict[str, int]:
        return {"generated": len(self.states) if self.generated < 0 else self.generated,
                "distinct": len(self.distinct)}


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

    def with_extra(self, positions: Sequence[int], torn: Sequence[Piece] = ()) -> int:
        over: dict[int, int] = {}
        key = self.key
        parts = [(i, None) for i in positions] + [(i, (a, a + n)) for i, a, n in torn]
        for i, part in parts:
            self._memo[i] = hashes = self._memo.get(i) or self._hashes(i)
            for s, h in hashes if part is None else hashes[part[0]:part[1]]:
                key = (key - over.get(s, self.sectors.get(s, 0)) + h) % MOD
                over[s] = h
        return key


def units(log: WriteLog, i: int, atomic: int) -> list[tuple[int, int]]:
    """The atomic units a write covers, as (first log sector in the entry, sectors): split at
    every multiple of ``atomic`` bytes on the disk; one piece if it cannot tear."""
    e, ss = log.entries[i], log.sectorsize
    if atomic <= ss or not e.is_write:
        return [(0, e.nr_sectors)]
    per = atomic // ss
    out, k = [], 0
    while k < e.nr_sectors:
        n = min(per - (e.sector + k) % per, e.nr_sectors - k)
        out.append((k, n))
        k += n
    return out


def _subsets(epoch: list[int], rng: random.Random, samples: int, exhaustive_k: int) -> list[tuple[int, ...]]:
    """Non-empty proper subsets of an epoch's writes: all of them up to ``exhaustive_k`` writes,
    else ``samples`` seeded ones (repeats dropped)."""
    n = len(epoch)
    if n < 2 or samples == 0:        # --crash-subsets 0: flush states only
        return []
    if n <= exhaustive_k:
        return [c for r in range(1, n) for c in itertools.combinations(epoch, r)]
    out: list[tuple[int, ...]] = []
    for _ in range(samples):
        pick = tuple(sorted(rng.sample(epoch, rng.randint(1, n - 1))))
        if pick not in out:
            out.append(pick)
    return out


def _overlap(a: Entry, b: Entry) -> bool:
    return a.sector < b.sector + b.nr_sectors and b.sector < a.sector + a.nr_sectors


def _torn(log: WriteLog, epoch: list[int], rng: random.Random, samples: int,
          atomic: int) -> list[tuple[tuple[int, ...], tuple[Piece, ...]]]:
    """Seeded torn states of an epoch: a subset of its other writes whole (none that comes later
    over the same sectors), and a non-empty proper subset of the units of one write that spans
    several (repeats dropped)."""
    tearable = {i: u for i in epoch if len(u := units(log, i, atomic)) > 1}
    out: list[tuple[tuple[int, ...], tuple[Piece, ...]]] = []
    for _ in range(samples if tearable else 0):
        w = rng.choice(sorted(tearable))
        # whole: writes before it, or after it elsewhere on the disk. The pieces go on last (keys,
        # host, guest), which is log order only if no later write covers the same sectors.
        others = [i for i in epoch if i < w or (i > w and not _overlap(log.entries[i], log.entries[w]))]
        whole = tuple(sorted(rng.sample(others, rng.randint(0, len(others)))))
        us = tearable[w]
        part = sorted(rng.sample(range(len(us)), rng.randint(1, len(us) - 1)))
        pick = (whole, tuple((w, *us[k]) for k in part))
        if pick not in out:
            out.append(pick)
    return out


def plan_states(log: WriteLog, acks: Sequence[Ack], seed: int, subsets: int, flush_points: int,
                first_entry: int = 0, exhaustive_k: int = 0, atomic_write: int = 0) -> StatePlan:
    """Every crash state from the workload's start (the last flush before entry ``first_entry``)
    on: each flush, then each following epoch's subsets (every one up to ``exhaustive_k`` writes,
    else ``subsets`` seeded ones) and, with ``atomic_write`` > the sector size, ``subsets`` seeded
    torn states; keyed and deduplicated. ``flush_points`` >= 0 samples that many flush states
    (the last one always included)."""
    rng = random.Random(f"xdh-crashstates:{seed}")
    bounds = ack_bounds(log, acks)
    flushes = log.flushes()
    start = max([f for f in flushes if f < first_entry], default=-1)
    points = [start] + [f for f in flushes if f > start]
    if 0 <= flush_points < len(points) - 1:
        points = sorted(rng.sample(points[:-1], flush_points)) + [points[-1]]
    keys = _Keys(log)
    states: list[CrashState] = []
    fractions: list[float] = []
    cov = {"epochs": 0, "exhaustive": 0, "largest": 0, "subsets": 0, "torn": 0, "tearable": 0}
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
            picks = _subsets(epoch, rng, subsets, exhaustive_k)
            for k, pick in enumerate(picks):
                states.append(CrashState(f"{name}+{k}", p, pick, required, f"{keys.with_extra(pick):032x}"))
            torn = _torn(log, epoch, rng, subsets, atomic_write) if atomic_write > log.sectorsize else []
            for k, (whole, pieces) in enumerate(torn):
                states.append(CrashState(f"{name}~{k}", p, whole, required,
                                         f"{keys.with_extra(whole, pieces):032x}", pieces))
            cov["epochs"] += 1
            cov["largest"] = max(cov["largest"], len(epoch))
            cov["subsets"] += len(picks)
            cov["torn"] += len(torn)
            cov["tearable"] += sum(len(units(log, i, atomic_write)) > 1 for i in epoch) if atomic_write else 0
            if len(epoch) >= 2:
                fractions.append(len(picks) / (2 ** len(epoch) - 2))
                cov["exhaustive"] += len(picks) == 2 ** len(epoch) - 2
    finally:
        keys.close()
    firsts: dict[str, CrashState] = {}
    for st in states:
        firsts.setdefault(st.key, st)
    coverage = Coverage(cov["epochs"], len(fractions), cov["exhaustive"],
                        round(sum(fractions) / len(fractions), 4) if fractions else 1.0,
                        round(min(fractions), 6) if fractions else 1.0, cov["largest"], cov["subsets"], cov["torn"],
                        cov["tearable"])
    return StatePlan(states, list(firsts.values()), coverage)


def within_budget(plan: StatePlan, budget: int, seed: int) -> StatePlan:
    """At most ``budget`` distinct states (0: no limit): every flush state first (evenly spaced
    ones, the last always, if they alone exceed it), then seeded subset and torn states. The
    states left out are neither verified nor judged, and counted (``Coverage.skipped``)."""
    if budget <= 0 or len(plan.distinct) <= budget:
        return plan
    rng = random.Random(f"xdh-statesbudget:{seed}")
    at_flush = {s.key for s in plan.states if s.is_flush_state}      # a subset may share a flush state's content
    flush = [s for s in plan.distinct if s.key in at_flush]
    rest = [s for s in plan.distinct if s.key not in at_flush]
    if len(flush) >= budget:
        step = len(flush) / budget
        keep = {flush[min(len(flush) - 1, round((k + 1) * step) - 1)].key for k in range(budget)}
    else:
        keep = {s.key for s in flush} | {s.key for s in rng.sample(rest, budget - len(flush))}
    distinct = [s for s in plan.distinct if s.key in keep]
    states = [s for s in plan.states if s.key in keep]
    return StatePlan(states, distinct, dataclasses.replace(plan.coverage, skipped=len(plan.distinct) - len(distinct)),
                     len(plan.states))


def build(log: WriteLog, base: Path, state: CrashState, out: Path) -> Path:
    """A raw crash image: a sparse copy of ``base`` (the disk under test before the run) with the
    state's log entries (and the parts of its torn write) written into it."""
    copy_raw(base, out)
    apply(log, out, list(state.positions))
    apply_pieces(log, out, state.torn)
    return out
