"""The workload-error contract (docs/workloads.md): a workload whose ``run`` exits after acking is
judged on its acks, its end recorded; one that never acked, or whose channel died without an exit
status, is a harness error (no verdict). Fakes for the SSH stream and the stack; no VM."""

from __future__ import annotations

import pytest

from harness.config import CutMode
from harness.crash import run as run_mod
from harness.crash.ended import WorkloadEnd, last_words
from harness.crash.plan import CutPlan
from harness.errors import WorkloadError

TRACEBACK = """Traceback (most recent call last):
  File "/usr/local/bin/xdh-workload", line 133, in run_append
    os.fsync(fd)
OSError: [Errno 5] Input/output error
"""


class Stream:
    """A workload's output: ``acks`` ack lines, then its end with ``status`` (None: no status)."""

    def __init__(self, acks: int, status: int | None, stderr: str = TRACEBACK):
        self.acks, self.status, self.stderr = acks, status, stderr

    def lines(self, idle_timeout: float | None = None):
        yield 1.0, "# append: 4096-byte records"
        for i in range(self.acks):
            yield 1.0 + i, f"A {i} 900"

    def exit_status(self) -> int | None:
        return self.status

    def stderr_tail(self, limit: int = 2000) -> str:
        return self.stderr

    def close(self) -> None:
        pass


class Stack:
    def alive(self) -> None:
        pass


def _wait(tmp_path, stream: Stream) -> WorkloadEnd | None:
    reader = run_mod.AckReader(stream, tmp_path / "acks.jsonl", tmp_path / "out.log")
    try:
        return run_mod._wait_for_cut(reader, CutPlan(CutMode.ACKS, 100, None), 30.0, 0.0, Stack(),
                                     tmp_path / "out.log")
    finally:
        reader.finish()


def test_a_workload_that_exits_after_acking_is_judged_with_its_end_recorded(tmp_path):
    end = _wait(tmp_path, Stream(acks=7, status=1))
    assert end == WorkloadEnd(7, 1, "OSError: [Errno 5] Input/output error")
    assert end.line() == ("the workload ended before the cut (exit 1 after 7 acks): "
                          "OSError: [Errno 5] Input/output error")
    assert WorkloadEnd.from_json(end.to_json()) == end


def test_a_workload_that_reaches_the_cut_has_no_end(tmp_path):
    assert _wait(tmp_path, Stream(acks=150, status=None)) is None


def test_a_workload_that_never_acked_is_an_error(tmp_path):
    with pytest.raises(WorkloadError, match=r"after 0 acks \(exit 2\): OSError"):
        _wait(tmp_path, Stream(acks=0, status=2))


def test_a_channel_that_dies_without_an_exit_status_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(run_mod, "EXIT_STATUS_WAIT", 0.05)
    with pytest.raises(WorkloadError, match="after 3 acks .its output stopped without an exit status"):
        _wait(tmp_path, Stream(acks=3, status=None))


@pytest.mark.parametrize(("stderr", "stdout", "said"), [
    (TRACEBACK, "", "OSError: [Errno 5] Input/output error"),
    ("", "put k1\nE fsync: EIO\n# stream ended: closed\n", "E fsync: EIO"),
    ("", "", ""),
    ("x" * 400, "", "x" * 300),
])
def test_last_words_are_the_last_line_that_says_why(stderr, stdout, said):
    assert last_words(stderr, stdout) == said


class _Chan:
    def __init__(self, status: int):
        self.status = status

    def exit_status_ready(self) -> bool:
        return True

    def recv_exit_status(self) -> int:
        return self.status


@pytest.mark.parametrize(("paramiko_says", "status"), [(0, 0), (1, 1), (-1, None)])
def test_a_channel_closed_without_a_status_has_none(paramiko_says, status):
    """paramiko reports -1 for a channel that closed without an exit status (the guest died) and
    for a command killed by a signal: neither is a workload that ended on its own."""
    from harness.vm.ssh import Stream as SshStream
    assert SshStream(_Chan(paramiko_says)).exit_status() == status


def _crash_run(fault: str, ended: WorkloadEnd | None) -> tuple[run_mod.CrashRun, list[str]]:
    """A CrashRun at its cut, with only what ``cut`` touches (no machine)."""
    from harness.catalog import faults
    calls: list[str] = []

    class St:
        def insert_blkdebug(self) -> str:
            calls.append("insert")
            return "dut-dbg-later"

        def cut(self, how: str) -> None:
            calls.append("cut")

    class NoLedger:
        def at_cut(self, *args: object) -> None:
            pass

    run = object.__new__(run_mod.CrashRun)
    run.fault, run.stack, run.ended, run.reader, run.ledger = faults.get(fault), St(), ended, None, NoLedger()
    run.steps = run_mod.FaultSteps(run.fault, run.stack, lambda m: None)
    run.volatile, run.say, run.seconds, run._t_start = False, lambda m: None, {}, 0.0
    return run, calls


def test_a_during_fault_is_not_applied_after_the_workload_ended_on_its_own():
    run, calls = _crash_run("flush-eio-during", WorkloadEnd(3, 1, "OSError"))
    run.cut()
    assert calls == ["cut"]
    assert run.steps.applied == ["fault not reached: the workload ended before its during point"]
    run, calls = _crash_run("flush-eio-during", None)      # a cut by hand before the point: it runs first
    run.cut()
    assert calls == ["insert", "cut"]
