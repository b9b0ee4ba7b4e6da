"""The crash run's raw files and their formats, apart from the run itself: reading a run
directory (``report``) needs these and must not load the stack, QMP or SSH."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..catalog.workloads import Ack


@dataclass(frozen=True)
class CrashPaths:
    """Where the crash run's raw logs go (handed out by the run directory)."""

    boot: Path            # the stack's own directory (serial.log, qemu.log, stack.json, ...)
    dut: Path             # the disk under test: the crash image after the cut
    acks: Path            # acks.jsonl, one line per ack as it arrived
    output: Path          # the workload's other output
    kmsg_domu: Path
    kmsg_dom0: Path
    write_log: Path       # volatile model: the outer disk's writes and flushes


def ack_line(ack: Ack) -> str:
    """One line of acks.jsonl (written as each ack arrives: a cut leaves every line whole)."""
    return json.dumps(ack.to_json()) + "\n"


def load_acks(path: Path) -> list[Ack]:
    """acks.jsonl, as written by ``ack_line``."""
    return [Ack.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
