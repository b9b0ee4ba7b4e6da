"""Typed records of what ran, as stored in the run directory (JSON via ``to_json``/``from_json``)
and read back as the same types: enums stay enums, violations stay structured, a campaign's
summary is a ``CampaignSummary``. Nothing here is text to be parsed again."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import DiskCache, Reset, VerifyPath
from ..crash.coverage import Coverage
from ..crash.ended import WorkloadEnd
from ..crash.ledger import Attribution, Kind
from ..crash.plan import CutPlan
from ..jsonio import known_fields
from ..status import ExitCode, Expect, Status, campaign_exit
from ..verify.oracle import Violation
from ..verify.tightness import Slack

MAX_STORED_VIOLATIONS = 5     # per crash state in a record (all of them: states/states.json)


@dataclass(frozen=True)
class StateRecord:
    """One crash state of the volatile model, judged: its recipe (``crash.states.CrashState``),
    the acks it had to hold, and which state's verification it shares (equal content)."""

    name: str
    recipe: dict[str, Any]
    ok: bool
    lost_acked: int
    violations: list[Violation] = field(default_factory=list)
    verified_as: str = ""       # the state with the same content that was verified ("" if itself)

    def to_json(self, limit: int = MAX_STORED_VIOLATIONS) -> dict[str, Any]:
        """As stored in the record and states.json: the first ``limit`` violations."""
        return asdict(self) | {"violations": [v.to_json() for v in self.violations[:limit]]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StateRecord:
        data = known_fields(cls, d)
        data["violations"] = [Violation.from_json(v) for v in d.get("violations", [])]
        return cls(**data)


PHASES = ("apply", "snapshot", "mount", "verify", "umount")     # a crash state's steps in the verifier, in order


def in_order(phases: dict[str, float]) -> list[tuple[str, float]]:
    """A state's phases in the order they run (any unknown one after)."""
    return sorted(phases.items(), key=lambda kv: (PHASES.index(kv[0]) if kv[0] in PHASES else len(PHASES), kv[0]))


def state_ms(iterations: list[IterationRecord]) -> dict[str, float]:
    """One batched crash state's milliseconds in the verifier, by phase in the order they run, over
    the iterations that reached verdicts (their crash states but the cut's own image)."""
    judged = [i for i in iterations if i.depth is not None and i.status in (Status.PASS, Status.LOSS)]
    batched = sum(i.crash_states - 1 for i in judged)
    total: dict[str, float] = {}
    for i in judged:
        assert i.depth is not None
        for k, v in i.depth.phase_seconds.items():
            total[k] = total.get(k, 0.0) + v
    return {k: round(v * 1000 / batched, 1) for k, v in in_order(total)} if batched else {}


@dataclass(frozen=True)
class StatesDepth:
    """The volatile model's crash states of one iteration in depth: how much of the space was
    covered (and what a budget skipped), how tight the oracle was, and where the batch's time
    went in the verifier (seconds summed over the states, by phase)."""

    coverage: Coverage = field(default_factory=Coverage)
    slack: Slack = field(default_factory=Slack)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    verify: str = ""            # how the workload's verify ran: in-process, resident, or a process per state

    def to_json(self) -> dict[str, Any]:
        return {"coverage": self.coverage.to_json(), "slack": self.slack.to_json(),
                "phase_seconds": self.phase_seconds, "verify": self.verify}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StatesDepth:
        return cls(Coverage.from_json(d.get("coverage", {})), Slack.from_json(d.get("slack", {})),
                   dict(d.get("phase_seconds", {})), d.get("verify", ""))


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
    cut: CutPlan
    acked: int = 0
    lost_acked: int = 0
    violations: list[Violation] = field(default_factory=list)
    error: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    crash_image: str | None = None
    fsync_latency_us: dict[str, float] = field(default_factory=dict)
    fault_applied: str = ""     # what the domU said after the fault was injected
    reset: Reset = Reset.SNAPSHOT
    verify: VerifyPath = VerifyPath.FAST     # the path that ran (never auto)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)   # per verification path, when more than one ran
    disk_cache: DiskCache = DiskCache.NONE
    crash_states: int = 1       # distinct crash states verified (the cut, plus the volatile model's)
    states_generated: int = 1   # crash states judged, duplicates by content included
    states: list[StateRecord] = field(default_factory=list)   # volatile: the failing states (all: states.json)
    release: str = ""           # the Debian release of the stack (the JUnit class name carries it)
    run_dir: str = ""           # in a merge: the run directory it came from ("" = the summary's own)
    expect: Expect | None = None   # in a merge: its run's --expect (None: the summary's own)
    flush: Attribution | None = None    # where the flush died, by the ledger (flushes.json), if one was kept
    flush_per_op: dict[str, float | None] = field(default_factory=dict)   # flushes per durable op per layer
    workload_error: WorkloadEnd | None = None   # the workload ended before the cut; its acks were judged
    depth: StatesDepth | None = None    # volatile: coverage, the oracle's slack, the batch's time by phase

    @property
    def total_seconds(self) -> float:
        return self.seconds.get("total", 0.0)

    @property
    def canary(self) -> bool:
        return self.name.startswith("canary")

    def detail(self) -> str:
        """The error, or the first violation (and where the flush died): one line for people."""
        if self.error:
            return self.error
        died = f" [{self.flush.text}]" if self.flush and self.flush.kind != Kind.NONE else ""
        said = [self.violations[0].line() + died] if self.violations else []
        if self.workload_error is not None:
            said.append(self.workload_error.line())
        return "; ".join(said)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["cut"] = self.cut.to_json()
        d["violations"] = [v.to_json() for v in self.violations]
        d["states"] = [s.to_json() for s in self.states]
        d["depth"] = self.depth.to_json() if self.depth else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IterationRecord:
        data = known_fields(cls, d)
        data["status"] = Status(data["status"])
        data["cut"] = CutPlan.from_json(d["cut"])
        data["violations"] = [Violation.from_json(v) for v in d.get("violations", [])]
        data["states"] = [StateRecord.from_json(s) for s in d.get("states", [])]
        for key, enum in (("reset", Reset), ("verify", VerifyPath), ("disk_cache", DiskCache)):
            if key in data:
                data[key] = enum(data[key])
        if data.get("expect"):
            data["expect"] = Expect(data["expect"])
        if data.get("flush"):
            data["flush"] = Attribution.from_json(data["flush"])
        if data.get("workload_error"):
            data["workload_error"] = WorkloadEnd.from_json(data["workload_error"])
        if data.get("depth"):
            data["depth"] = StatesDepth.from_json(data["depth"])
        return cls(**data)


@dataclass(frozen=True)
class CutRecord:
    """cut.json: when the power was cut and what the crash run knew then."""

    cut_t: float
    acks_at_cut: int
    plan: CutPlan
    workload_start_entry: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"plan": self.plan.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CutRecord:
        return cls(d["cut_t"], d.get("acks_at_cut", 0), CutPlan.from_json(d["plan"]), d.get("workload_start_entry", 0))


@dataclass(frozen=True)
class MergeProblem:
    """A shard that makes a merged night untrustworthy (``report.shards``): missing, duplicated,
    interrupted, crashed, empty, or not the same campaign and software as its siblings."""

    run_dir: str        # "" for a shard no run directory was given of
    label: str          # the campaign and shard, e.g. "append/none/qdisk/bookworm/auto shard 2/4"
    text: str

    def line(self) -> str:
        return f"{self.label}: {self.text}" + (f" ({self.run_dir})" if self.run_dir else "")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MergeProblem:
        return cls(**known_fields(cls, d))


@dataclass(frozen=True)
class CampaignSummary:
    """summary.json: a campaign (or a merge of several) as records, its totals derived from
    them, and the exit code CI reads."""

    run_dir: str
    seed: int | list[int] | None
    config: dict[str, Any]          # TortureConfig.to_json(); a merge: merged_from, configs, expect
    canary: IterationRecord | None
    iterations: list[IterationRecord]
    wall_seconds: float
    exit_code: ExitCode
    expect: Expect | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    first_loss_seconds: dict[str, float] = field(default_factory=dict)   # since the campaign started
    setup_seconds: dict[str, float] = field(default_factory=dict)
    snapshot: str = ""
    disk_cache: str = ""            # which disk-cache model ran, and why (``TortureConfig.disk_cache_reason``)
    ended_by: str = ""              # what ended the campaign early (its exit code is then the CLI's)
    merged_at: str = ""
    merge_problems: list[MergeProblem] = field(default_factory=list)    # a merge: its bad shards
    shortfall: str = ""             # iterations --time-budget did not start ("" when all ran)
    started_at: str = ""            # UTC; a merge: its earliest shard's ("" from an older xdh)

    @classmethod
    def make(cls, run_dir: str, config: dict[str, Any], seed: int | list[int] | None, canary: IterationRecord | None,
             iterations: list[IterationRecord], wall_seconds: float, **more: Any) -> CampaignSummary:
        """The summary of these records; the exit code from their verdicts and expectations."""
        expect = Expect(config["expect"]) if config.get("expect") else None
        code = campaign_exit(canary.status if canary else None, [i.status for i in iterations],
                             [i.expect or expect for i in iterations])
        return cls(run_dir, seed, config, canary, iterations, round(wall_seconds, 1), code, expect, **more)

    # --- derived ----------------------------------------------------------------------------
    @property
    def all(self) -> list[IterationRecord]:
        """The canary (if any), then the iterations."""
        return ([self.canary] if self.canary else []) + self.iterations

    def counts(self) -> dict[Status, int]:
        return {k: sum(1 for i in self.iterations if i.status == k) for k in Status}

    @property
    def acked_total(self) -> int:
        return sum(i.acked for i in self.iterations)

    @property
    def lost_acked_total(self) -> int:
        return sum(i.lost_acked for i in self.iterations)

    def _verdicts(self) -> list[IterationRecord]:
        return [i for i in self.iterations if i.status in (Status.PASS, Status.LOSS)]

    @property
    def crash_states_total(self) -> int:
        return sum(i.crash_states for i in self._verdicts())

    @property
    def states_generated_total(self) -> int:
        return sum(max(i.states_generated, i.crash_states) for i in self._verdicts())

    @property
    def iterations_per_hour(self) -> float | None:
        n = len(self.iterations)
        return round(n * 3600 / self.wall_seconds, 1) if self.wall_seconds > 0 and n else None

    def ended(self, ended_by: str, exit_code: ExitCode) -> CampaignSummary:
        """This summary of a campaign that something ended early (its exit code is the CLI's)."""
        return dataclasses.replace(self, ended_by=ended_by, exit_code=exit_code)

    # --- on disk ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The fields, and the totals for readers other than xdh (CI scripts, dashboards)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["canary"] = self.canary.to_json() if self.canary else None
        d["iterations"] = [i.to_json() for i in self.iterations]
        d["exit_code"] = int(self.exit_code)
        d["merge_problems"] = [p.to_json() for p in self.merge_problems]
        d |= {"counts": {k.value: n for k, n in self.counts().items()}, "acked_total": self.acked_total,
              "lost_acked_total": self.lost_acked_total, "crash_states_total": self.crash_states_total,
              "states_generated_total": self.states_generated_total,
              "iterations_per_hour": self.iterations_per_hour}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CampaignSummary:
        data = known_fields(cls, d)
        data["canary"] = IterationRecord.from_json(d["canary"]) if d.get("canary") else None
        data["iterations"] = [IterationRecord.from_json(i) for i in d.get("iterations", [])]
        data["exit_code"] = ExitCode(d["exit_code"])
        data["expect"] = Expect(d["expect"]) if d.get("expect") else None
        for key in ("snapshot", "disk_cache", "ended_by", "merged_at", "shortfall", "started_at"):
            data[key] = data.get(key) or ""
        for key in ("versions", "first_loss_seconds", "setup_seconds"):
            data[key] = data.get(key) or {}
        data["merge_problems"] = [MergeProblem.from_json(p) for p in d.get("merge_problems") or []]
        return cls(**data)
