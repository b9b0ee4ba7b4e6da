"""Batched verification: many crash states of one write log, built and verified inside the
fast verifier by ``guests/xdh-replay``, streamed back one JSON line per state.

Per write log: two hot-plugs (the disk under test as the run started, and the log), one plan
file over SFTP, one SSH channel. Per state, all inside the guest: apply the log up to the
state's flush (incrementally), a device-mapper snapshot for the epoch's extra writes and the
mount's journal replay, mount, the workload's verify, unmount, drop the snapshot. The crash
images are never written (overlays on the host, snapshots in the guest).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VerifyError
from ..stack.programs import install_program
from .fast import FastVerifier, explained
from .guest import VerifyJob

PLAN = "/tmp/xdh-replay-plan.json"
PROGRAM = "xdh-replay"
PROGRAM_VERIFY_S = 900.0    # xdh-replay's limit for a manifest's verify (a process, or one verify-many answer)


@dataclass(frozen=True)
class LogView:
    """The parsed write log as the guest needs it: its file, sector size and entries as
    ``[sector, nr_sectors, flags, data_offset, data_len]``."""

    path: Path
    sectorsize: int
    entries: list[list[int]]


@dataclass(frozen=True)
class StateJob:
    """One state to build: every entry up to position ``upto``, plus ``extra``, plus the
    ``torn`` parts (entry position, first log sector in it, sectors) of one write."""

    upto: int
    extra: tuple[int, ...] = ()
    torn: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class StateResult:
    index: int                  # into the jobs given
    report: dict[str, Any]
    seconds: float              # in the guest: build, mount, verify, unmount
    phases: dict[str, float] = field(default_factory=dict)   # those seconds by phase (xdh-replay's Phases)


def verify_kind(job: VerifyJob, resident: bool) -> str:
    """How the batch runs the workload's verify: imported into the batch (built-ins), the
    manifest program's resident verify-many mode, or a process per state."""
    if not job.workload.source:
        return "in-process"
    return "resident" if resident and job.workload.verify_many else "process per state"


def verify_states(fv: FastVerifier, base: Path, log: LogView, jobs: Sequence[StateJob], job: VerifyJob,
                  out_dir: Path, idle_timeout: float = 300.0, resident: bool = True) -> Iterator[StateResult]:
    """Yield each state's verify report as the guest finishes it (in the order of ``jobs``,
    which must be sorted by ``upto``). ``resident``: a manifest workload with ``verify_many``
    runs one ``verify-many`` process for the batch (False: a ``verify`` process per state)."""
    if job.layout != "raw":
        raise VerifyError(f"batched verification reads raw disks, not {job.layout}")
    if not jobs:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    last = max(max((j.upto, *j.extra, *(p[0] for p in j.torn))) for j in jobs)
    # a verifier that is gone (stopped by xdh as the run ends, or dead) fails the batch saying so
    with (explained(fv), fv.plugged(base, out_dir, "base") as base_dev,
          fv.plugged(log.path, out_dir, "log") as log_dev):
        assert fv.shell is not None
        plan = {"base": base_dev, "log": log_dev, "sectorsize": log.sectorsize, "entries": log.entries[:last + 1],
                "states": [{"id": n, "upto": j.upto, "extra": list(j.extra), "torn": [list(p) for p in j.torn]}
                           for n, j in enumerate(jobs)],
                "verify_argv": [] if job.workload.source else job.workload.argv("verify", job.seed, job.params)[1:],
                "needs_fs": job.workload.needs_fs}
        if job.workload.source:   # a manifest workload: its own verify program, resident or run per state
            install_program(fv.shell, job.workload)
            if verify_kind(job, resident) == "resident":
                device = {} if job.workload.needs_fs else {"device": "{device}"}
                plan["verify_many_command"] = job.workload.argv("verify-many", job.seed, job.params | device)
            else:
                plan["verify_command"] = job.workload.argv("verify", job.seed, job.params | {"device": "{device}"})
        fv.shell.put_bytes(json.dumps(plan).encode(), PLAN)
        if job.workload.source:   # the guest's own limit on the program says why first, with its stderr
            idle_timeout = max(idle_timeout, PROGRAM_VERIFY_S + 60)
        stream = fv.shell.stream([PROGRAM, PLAN])
        got = 0
        try:
            for _t, line in stream.lines(idle_timeout=idle_timeout):
                d = json.loads(line)
                if "done" in d:
                    break
                got += 1
                if "verify_error" in d["report"]:
                    raise VerifyError(f"the workload's verify failed on crash state {d['id']}: "
                                      f"{d['report']['verify_error']}")
                yield StateResult(d["id"], d["report"], d["seconds"], d.get("phases", {}))
            if got < len(jobs):
                if fv.machine is not None:
                    fv.machine.check_alive()       # a dead verifier says so, with its console
                raise VerifyError(f"{PROGRAM} stopped after {got} of {len(jobs)} crash states: "
                                  f"{stream.stderr_tail() or 'no output for ' + str(int(idle_timeout)) + ' s'}")
        finally:
            stream.close()
