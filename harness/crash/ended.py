"""A workload that ended before the cut (its ``run`` exited, e.g. after a failed fsync) is not a
harness error: the acks it gave are judged as usual and how it ended is recorded beside the verdict
(docs/workloads.md, "When the workload ends early")."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WorkloadEnd:
    """How the workload's ``run`` ended before the cut: after how many acks, with what exit status,
    and its last words (the last line it wrote to stderr, or to stdout)."""

    after_acks: int
    exit_status: int
    message: str = ""

    def line(self) -> str:
        said = f": {self.message}" if self.message else ""
        return f"the workload ended before the cut (exit {self.exit_status} after {self.after_acks} acks){said}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkloadEnd:
        return cls(int(d["after_acks"]), int(d["exit_status"]), str(d.get("message", "")))


def last_words(stderr: str, stdout: str) -> str:
    """The line that says why: the last non-blank line of stderr (a traceback's exception), else of
    stdout; at most 300 characters."""
    for text in (stderr, stdout):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("# stream ended")]
        if lines:
            return lines[-1][:300]
    return ""
