"""Typed records of what ran, as stored in the run directory (JSON via ``to_json``/``from_json``)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from ..status import Status


@dataclass(frozen=True)
class StateRecord:
    """One crash state of the volatile model, judged: its recipe (``crash.states.CrashState``),
    the acks it had to hold, and which state's verification it shares (equal content)."""

    name: str
    recipe: dict[str, Any]
    ok: bool
    lost_acked: int
    violations: list[str] = field(default_factory=list)
    verified_as: str = ""       # the state with the same content that was verified ("" if itself)

    def to_json(self, limit: int = 5) -> dict[str, Any]:
        """As stored in the record and states.json: the first ``limit`` violations."""
        return asdict(self) | {"violations": self.violations[:limit]}


@dataclass(frozen=True)
class IterationRecord:
    """How one crash iteration ended: built once, at its end, from the stages' values."""

    index: int
    seed: int
    name: str
    status: Status
    workload: str
    fault: str
    backend: str
    cut: dict[str, Any]
    acked: int = 0
    lost_acked: int = 0
    violations: list[str] = field(default_factory=list)
    error: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    crash_image: str | None = None
    fsync_latency_us: dict[str, Any] = field(default_factory=dict)
    fault_applied: str = ""     # what the domU said after the fault was injected
    reset: str = "boot"
    verify: str = "reboot"
    verdicts: dict[str, Any] = field(default_factory=dict)   # per verification path, when more than one ran
    disk_cache: str = "none"
    crash_states: int = 1       # distinct crash states verified (the cut, plus the volatile model's)
    states_generated: int = 1   # crash states judged, duplicates by content included
    states: list[dict[str, Any]] = field(default_factory=list)   # volatile: the failing states (all: states.json)
    release: str = ""           # the Debian release of the stack (the JUnit class name carries it)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IterationRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in d.items() if k in known}
        data["status"] = Status(data["status"])
        return cls(**data)


@dataclass(frozen=True)
class CutRecord:
    """cut.json: when the power was cut and what the crash run knew then."""

    cut_t: float
    acks_at_cut: int
    plan: dict[str, Any]
    workload_start_entry: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CutRecord:
        return cls(d["cut_t"], d.get("acks_at_cut", 0), d.get("plan", {}), d.get("workload_start_entry", 0))
