"""A fast verifier that xdh stops itself (an interrupt: ``Machines.kill_all`` from the main
thread while the check thread verifies) is no bug in xdh: no "StateError: QMPClient is
disconnecting ... (a bug in xdh)", no traceback.txt, and an interrupt under way stays the
error. A fake machine and shell stand in for QEMU and SSH."""

from __future__ import annotations

from pathlib import Path

import pytest
from qemu.qmp.protocol import Runstate, StateError

from harness.campaign.iteration import classify
from harness.catalog import workloads
from harness.errors import GuestCommandError, GuestDied, Interrupted
from harness.images import ImageStore
from harness.status import Status
from harness.verify import batch, fast
from harness.verify.batch import LogView, StateJob, verify_states
from harness.verify.fast import STOPPED, FastVerifier
from harness.verify.guest import VerifyJob
from harness.vm.ssh import Result
from tests.fakes import fake_image

DISCONNECTING = "QMPClient is disconnecting. Call disconnect() to return to IDLE state."


class FakeMachine:
    """The verifier's QEMU: QMP answers while it runs; killed, QMP says "disconnecting"."""

    def __init__(self) -> None:
        self.alive = True
        self.qmp_broken = False           # the QMP client broken although QEMU still runs
        self.killed_on_purpose = False
        self.halted = ""
        self.commands: list[str] = []

    def kill(self) -> None:
        """What ``QemuMachine.kill`` (``Machines.kill_all``) does to it."""
        self.killed_on_purpose = True
        self.alive = False

    def is_running(self) -> bool:
        return self.alive

    def check_alive(self) -> None:
        if not self.alive:
            raise GuestDied("QEMU exited unexpectedly (exit code -9)")

    def qmp(self, cmd: str, **args: object) -> dict:
        if not self.alive or self.qmp_broken:
            raise StateError(DISCONNECTING, Runstate.DISCONNECTING, Runstate.RUNNING)
        self.commands.append(cmd)
        return {}

    def wait_event(self, name: str, timeout: float, **data: object) -> dict:
        self.qmp("(wait)")
        return {"event": name, "data": data}


class FakeStream:
    def __init__(self, machine: FakeMachine, lines: list[str], kill_after: int):
        self.machine, self._lines, self.kill_after = machine, lines, kill_after

    def lines(self, idle_timeout: float | None = None):
        for n, line in enumerate(self._lines):
            if n == self.kill_after:
                self.machine.kill()      # the interrupt's kill_all, from the main thread
                return                   # the SSH channel ends with the VM
            yield 0.0, line

    def stderr_tail(self) -> str:
        return ""

    def close(self) -> None:
        pass


class FakeShell:
    def __init__(self, machine: FakeMachine):
        self.machine = machine
        self.stream_lines: list[str] = []
        self.kill_after = 10**9

    def run(self, cmd, timeout: float = 120.0, check: bool = True, stdin: bytes | None = None) -> Result:
        if not self.machine.alive:
            raise GuestCommandError("verifier: `...` failed: SSH connection is closed")
        return Result(0, "/dev/sdb\n" if "readlink" in str(cmd) else "", "")

    def put_bytes(self, data: bytes, path: str) -> None:
        pass

    def stream(self, argv: list[str]) -> FakeStream:
        return FakeStream(self.machine, self.stream_lines, self.kill_after)

    def close(self) -> None:
        pass


@pytest.fixture
def verifier(tmp_path, monkeypatch) -> FastVerifier:
    monkeypatch.setattr(fast, "make_overlay", lambda image, overlay, *a, **kw: Path(overlay).touch())
    fv = FastVerifier(tmp_path / "verifier", fake_image(tmp_path, "domu"), ImageStore(tmp_path / "cache"))
    machine = FakeMachine()
    fv.machine, fv.shell = machine, FakeShell(machine)    # type: ignore[assignment]
    return fv


JOB = VerifyJob(workloads.get("append"), 1, {"record_size": 512}, "raw")


def test_a_verifier_killed_during_a_verification_is_not_a_bug(verifier, tmp_path, monkeypatch):
    def verify_on(shell, device, *a):
        verifier.machine.kill()          # type: ignore[union-attr]
        shell.run(["mount", device, "/mnt/dut"])    # fails: the VM is gone
    monkeypatch.setattr(fast, "verify_on", verify_on)
    with pytest.raises(GuestDied) as err:
        verifier.verify(tmp_path / "crash.img", JOB, tmp_path / "out")
    assert str(err.value) == STOPPED and "StateError" not in str(err.value)
    failure = classify(err.value)
    assert not failure.bug and failure.status == Status.GUEST_DIED and "(a bug in xdh)" not in failure.error


def test_a_verification_that_finished_before_the_kill_keeps_its_report(verifier, tmp_path, monkeypatch):
    def verify_on(shell, device, *a):
        verifier.machine.kill()          # type: ignore[union-attr]
        return {"exists": True}
    monkeypatch.setattr(fast, "verify_on", verify_on)
    assert verifier.verify(tmp_path / "crash.img", JOB, tmp_path / "out").data == {"exists": True}


def test_an_interrupt_wins_over_an_unplug_that_fails_because_of_it(verifier, tmp_path):
    """SIGTERM lands in the main thread inside a verification; the unplug's QMP then fails
    ("disconnecting"): the Interrupted goes on up, not the StateError."""
    machine = verifier.machine
    with pytest.raises(Interrupted), verifier.plugged(tmp_path / "crash.img", tmp_path, "dut") as device:
        assert device == "/dev/sdb" and machine.commands == ["blockdev-add", "device_add"]   # type: ignore[union-attr]
        machine.qmp_broken = True        # type: ignore[union-attr]
        raise Interrupted("interrupted by SIGTERM")
    assert not (tmp_path / "dut-verify.qcow2").exists()


def test_a_batch_whose_verifier_xdh_stopped_fails_in_those_words(verifier, tmp_path):
    shell = verifier.shell
    shell.stream_lines = ['{"id": 0, "report": {"exists": true}, "seconds": 0.1}'] * 3    # type: ignore[union-attr]
    shell.kill_after = 1                 # type: ignore[union-attr]
    log = LogView(tmp_path / "log", 512, [[0, 0, 1, 0, 0]] * 3)
    got = []
    with pytest.raises(GuestDied) as err:
        for r in verify_states(verifier, tmp_path / "base", log, [StateJob(0), StateJob(1), StateJob(2)], JOB,
                               tmp_path / "states"):
            got.append(r.index)
    assert got == [0] and str(err.value) == STOPPED
    assert isinstance(err.value.__cause__, GuestDied)      # what it was: QEMU gone, as the kill left it
    assert batch.PROGRAM == "xdh-replay"


def test_a_verifier_that_died_by_itself_still_says_so(verifier, tmp_path, monkeypatch):
    def verify_on(shell, device, *a):
        verifier.machine.alive = False   # type: ignore[union-attr]  # QEMU crashed: no kill of ours
        shell.run(["mount", device, "/mnt/dut"])
    monkeypatch.setattr(fast, "verify_on", verify_on)
    with pytest.raises(GuestDied, match=r"QEMU exited unexpectedly \(exit code -9\)") as err:
        verifier.verify(tmp_path / "crash.img", JOB, tmp_path / "out")
    assert isinstance(err.value.__context__, GuestCommandError) and not fast.stopped_by_xdh(verifier.machine)


def test_the_check_of_an_interrupted_campaign_records_no_bug_and_no_traceback(verifier, tmp_path, monkeypatch):
    """The check thread's iteration while the main thread's interrupt kills its verifier: the
    record says the verifier was stopped (the campaign then marks it interrupted), nothing says
    "a bug in xdh", and no traceback.txt is written."""
    import types

    from harness.campaign.iteration import Crashed, check_phase
    from harness.catalog.workloads import Ack
    from harness.config import TortureConfig
    from harness.crash.plan import IterationPlan
    from harness.crash.run import CrashOutcome
    from harness.report.rundir import IterationDir
    from harness.vm.machine import Machines

    def verify_on(shell, device, *a):
        verifier.machine.kill()          # type: ignore[union-attr]
        shell.run(["mount", device, "/mnt/dut"])
    monkeypatch.setattr(fast, "verify_on", verify_on)
    plan = IterationPlan.make(TortureConfig(seed=5), 0)
    it = IterationDir(tmp_path / "run" / "iterations" / plan.name)
    it.path.mkdir(parents=True)
    dut = it.path / "dut.img"
    dut.write_bytes(b"\0" * 512)
    outcome = CrashOutcome(acks=(Ack("0", 1.0),), cut_t=2.0, plan=plan.cut, dut=dut)
    kit = types.SimpleNamespace(machines=Machines(), verifier=lambda path, stack: verifier)
    said: list[str] = []
    done = check_phase(Crashed(plan, it, 0.0, outcome), kit, said.append)     # type: ignore[arg-type]
    assert done.record.status == Status.GUEST_DIED and done.record.error == STOPPED
    assert not (it.path / "traceback.txt").exists()
    assert not any("a bug in xdh" in m or "StateError" in m for m in said), said
