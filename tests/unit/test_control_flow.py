"""Control flow with fakes (no VM, no QEMU, no SSH): interrupts, failures, statuses and exit codes.

The heavy stages (the crash run, its verification, the snapshot, the fast verifier, the QEMU
process and its QMP socket) are replaced by fakes from ``tests.fakes`` that return real typed
values or raise; everything around them (iteration, campaign, compare, report, CLI) is real.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import harness.campaign.compare as compare_mod
from harness.campaign.campaign import run_campaign
from harness.campaign.compare import CompareConfig, run_compare
from harness.campaign.iteration import run_iteration
from harness.campaign.kit import Kit
from harness.cleanup import install_signal_handlers
from harness.cli import main
from harness.config import CutMode, Reset, TortureConfig, VerifyPath
from harness.crash.plan import CutPlan, IterationPlan
from harness.errors import Interrupted, LaunchError, WorkloadError
from harness.images import ImageStore
from harness.paths import PROJECT_ROOT
from harness.report import summary as summary_mod
from harness.report.records import IterationRecord
from harness.report.rundir import IterationDir
from harness.status import ExitCode, Status
from harness.vm.accel import AccelChoice
from harness.vm.argv import MachineSpec
from harness.vm.machine import QemuMachine, launch_on_free_port
from tests.fakes import (
    FakeProcess,
    FakeQMP,
    FakeVerifier,
    fake_snapshot,
    fake_subprocess_module,
    sigterm_self,
)

pytestmark = pytest.mark.usefixtures("isolated")


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _cells(out: Path) -> dict[tuple[str, str], dict]:
    """compare.json's cells, by (backend, fault) (the tests here run one release, workload and
    disk cache). How report.md and report.html render them: test_compare.py, test_golden.py."""
    return {(c["backend"], c["fault"]): c for c in _read(out / "compare.json")["cells"]}


# --- 1. an interrupt stops a compare matrix ---------------------------------------------------
COMPARE_ARGS = ["compare", "--backends", "qdisk,phy", "--faults", "none,drop-flush", "--workloads", "append",
                "--disk-cache", "none", "--iterations", "2"]
CELLS = ["bookworm__qdisk__none__append__none", "bookworm__qdisk__drop-flush__append__none",
         "bookworm__phy__none__append__none", "bookworm__phy__drop-flush__append__none"]


def verdicts(cfg: TortureConfig, name: str) -> str:
    """A well-behaved world: the canary is caught, drop-flush loses writes, no fault passes."""
    return "loss" if name == "canary" or cfg.fault == "drop-flush" else "pass"


def test_sigterm_inside_compare_stops_the_matrix_and_reports_what_ran(fake_stages, tmp_path, capsys):
    def script(cfg, name):
        if (cfg.stack.backend, cfg.fault, name) == ("qdisk", "drop-flush", "iter-0001"):
            sigterm_self()          # the real handler, installed by main, raises Interrupted
        return verdicts(cfg, name)
    crashes = fake_stages(script)
    out = tmp_path / "cmp"

    code = main([*COMPARE_ARGS, "--run-dir", str(out)])

    assert code == ExitCode.INTERRUPTED == 130
    assert "interrupted by SIGTERM; stopped cleanly" in capsys.readouterr().err
    # the matrix stopped in its 2nd cell: later cells (and their canary) never started
    assert crashes.cells_started() == CELLS[:2]
    assert not (out / "cells" / CELLS[2]).exists() and not (out / "cells" / CELLS[3]).exists()
    assert not (out / "canaries" / "bookworm__phy__none").exists()
    assert [c.name for c in crashes.calls] == ["canary", "iter-0000", "iter-0001", "iter-0000", "iter-0001"]
    # the interrupted cell summarized what ran, and its interrupted iteration says so
    cell2 = out / "cells" / CELLS[1]
    assert [i["name"] for i in _read(cell2 / "summary.json")["iterations"]] == ["iter-0000"]
    assert _read(cell2 / "iterations" / "iter-0001" / "result.json")["error"] == "interrupted"
    # the report of the cells that ran is written
    cells = _cells(out)
    assert cells[("qdisk", "none")]["iterations"] == 2 and cells[("qdisk", "none")]["canary"] is True
    assert cells[("qdisk", "drop-flush")]["iterations"] == 1 and cells[("qdisk", "drop-flush")]["loss_iterations"] == 1
    assert cells[("phy", "none")]["iterations"] == cells[("phy", "drop-flush")]["iterations"] == 0
    assert cells[("phy", "none")]["error"] == cells[("phy", "drop-flush")]["error"] == "not run"
    assert (out / "report.md").exists() and (out / "report.html").exists() and (out / "compare-wall.json").exists()
    # one verifier for the matrix: made sure of before each of the 2 cells that started, stopped on the way out
    assert [(v.started, v.ensured, v.stopped) for v in FakeVerifier.instances] == [(1, 2, 1)]


def test_sigterm_in_a_canary_stops_the_matrix(fake_stages, tmp_path, capsys):
    def script(cfg, name):
        if name == "canary" and cfg.stack.backend == "phy":
            sigterm_self()
        return verdicts(cfg, name)
    crashes = fake_stages(script)
    out = tmp_path / "cmp"
    assert main([*COMPARE_ARGS, "--run-dir", str(out)]) == 130
    assert crashes.cells_started() == CELLS[:2]
    assert [(c.backend, c.fault) for c in crashes.calls if c.name == "canary"] == [("qdisk", "drop-flush"),
                                                                                  ("phy", "drop-flush")]
    assert not (out / "canaries" / "bookworm__phy__none" / "canary.json").exists()    # not recorded as a result
    assert _read(out / "canaries" / "bookworm__phy__none" / "canary" / "result.json")["error"] == "interrupted"
    cells = _cells(out)
    assert cells[("qdisk", "drop-flush")]["iterations"] == 2 and cells[("phy", "none")]["iterations"] == 0


def test_interrupted_cell_campaign_stops_run_compare(fake_stages, tmp_path, monkeypatch):
    fake_stages(verdicts)
    real = compare_mod.run_campaign
    started: list[str] = []

    def campaign(cfg, run_dir, *a, **kw):
        started.append(run_dir.name)
        if len(started) == 2:
            raise Interrupted("interrupted by SIGTERM")
        return real(cfg, run_dir, *a, **kw)
    monkeypatch.setattr(compare_mod, "run_campaign", campaign)
    cfg = CompareConfig(backends=("qdisk", "phy"), faults=("none", "drop-flush"), disk_caches=("none",),
                        iterations=1, canary=False)

    with pytest.raises(Interrupted):
        run_compare(cfg, tmp_path / "cmp", lambda m: None)

    assert started == CELLS[:2]
    cells = _cells(tmp_path / "cmp")
    assert cells[("qdisk", "none")]["iterations"] == 1
    assert all(cells[k]["iterations"] == 0 for k in (("phy", "none"), ("phy", "drop-flush")))


# --- 2. an interrupt during a QEMU launch -----------------------------------------------------
def _spec(tmp_path: Path, port: int = 1) -> MachineSpec:
    return MachineSpec(accel=AccelChoice("tcg", "test"), kernel=tmp_path / "xen.gz", append="", initrds=[],
                       drives=[], ssh_port=port)


@pytest.fixture
def fake_qemu(monkeypatch):
    monkeypatch.setattr("harness.vm.machine.subprocess", fake_subprocess_module())
    monkeypatch.setattr("harness.vm.machine.QEMUMonitorProtocol", FakeQMP)


def _raise(exc: BaseException):
    def f():
        raise exc
    return f


@pytest.mark.parametrize("on_accept, expected", [
    (sigterm_self, Interrupted),                  # SIGTERM through the real handler
    (_raise(KeyboardInterrupt()), KeyboardInterrupt),
    (_raise(OSError("connection refused")), LaunchError),   # contrast: an ordinary failure is wrapped
], ids=["sigterm", "sigint", "oserror"])
def test_interrupt_during_qemu_launch_propagates_and_leaves_nothing(fake_qemu, tmp_path, on_accept, expected):
    install_signal_handlers()
    FakeQMP.on_accept = staticmethod(on_accept)
    m = QemuMachine(_spec(tmp_path), tmp_path / "logs")

    with pytest.raises(BaseException) as ei:
        m.launch()

    assert type(ei.value) is expected
    assert (ei.value.__cause__ is not None) == (expected is LaunchError)
    (proc,), (qmp,) = FakeProcess.instances, FakeQMP.instances
    assert proc.killed and proc.waited and not m.is_running()
    assert qmp.closed and not qmp.path.parent.exists()      # the QMP socket directory is gone
    assert m._qemu_log_file is None and m.exit_code == -signal.SIGKILL
    # the handler is back in place after the cleanup (which holds signals off)
    assert signal.getsignal(signal.SIGTERM).__module__ == "harness.cleanup"


def test_each_machine_has_its_own_event_loop(fake_qemu, tmp_path):
    """qemu.qmp's sync shim runs on the event loop current at its creation: two machines driven
    from two threads (the crash run beside the verifier) must not share one ("This event loop
    is already running")."""
    machines = [QemuMachine(_spec(tmp_path, 2222 + n), tmp_path / f"logs{n}") for n in range(2)]
    for m in machines:
        m.launch()
    a, b = FakeQMP.instances
    assert a.loop is not b.loop and not a.loop.is_closed()
    for m in machines:
        m.shutdown()
    assert a.loop.is_closed() and b.loop.is_closed()


def test_sigterm_during_cleanup_does_not_stop_the_cleanup(fake_qemu, tmp_path):
    install_signal_handlers()
    FakeQMP.on_accept = staticmethod(sigterm_self)
    FakeProcess.on_kill = lambda: os.kill(os.getpid(), signal.SIGTERM)   # a second SIGTERM while QEMU is killed
    m = QemuMachine(_spec(tmp_path), tmp_path / "logs")
    with pytest.raises(Interrupted):
        m.launch()
    (proc,), (qmp,) = FakeProcess.instances, FakeQMP.instances
    assert proc.killed and proc.waited and qmp.closed and not qmp.path.parent.exists()


@pytest.mark.parametrize("on_accept, launches", [(sigterm_self, 1), (_raise(OSError("refused")), 3)],
                         ids=["sigterm", "oserror"])
def test_launch_on_free_port_retries_a_taken_port_but_never_an_interrupt(fake_qemu, tmp_path, on_accept, launches):
    install_signal_handlers()
    FakeQMP.on_accept = staticmethod(on_accept)
    FakeProcess.log_text = b"qemu: Could not set up host forwarding rule 'tcp:127.0.0.1:1-:22'\n"
    with pytest.raises((Interrupted, LaunchError)) as ei:
        launch_on_free_port(lambda port: _spec(tmp_path, port), tmp_path / "logs", "l0")
    assert isinstance(ei.value, Interrupted if launches == 1 else LaunchError)
    assert len(FakeProcess.instances) == launches and all(p.killed for p in FakeProcess.instances)


def test_sigterm_during_qemu_launch_of_xdh_up_exits_130(fake_qemu, images, tmp_path, monkeypatch, capsys):
    """`xdh up`: the real XenStack and QemuMachine, QEMU's process and QMP faked; SIGTERM while
    QMP is being accepted."""
    monkeypatch.setattr("harness.stack.boot.make_overlay", lambda base, overlay, fmt=None: overlay.touch())
    monkeypatch.setattr("harness.vm.accel.choose", lambda *a, **kw: AccelChoice("tcg", "faked"))
    FakeQMP.on_accept = staticmethod(sigterm_self)

    code = main(["up", "--run-dir", str(tmp_path / "up"), "--accel", "tcg"])

    assert code == 130
    err = capsys.readouterr().err
    assert "xdh: interrupted by SIGTERM; stopped cleanly" in err and "Traceback" not in err
    (proc,) = FakeProcess.instances
    assert proc.argv[0] == "qemu-system-x86_64" and proc.killed and proc.waited
    assert FakeQMP.instances[0].closed
    assert not (tmp_path / "cache" / "session.json").exists()


# --- 3. how an iteration ends: statuses, result.json, exit codes --------------------------------
def _cfg(**kw) -> TortureConfig:
    """Cold boots and reboot verification: a Kit with nothing to set up (no snapshot, no verifier)."""
    base = dict(reset=Reset.BOOT, verify=VerifyPath.REBOOT, canary=False, seed=7, iterations=1)
    return TortureConfig(**(base | kw))


def _one_iteration(fake_stages, tmp_path, action: str) -> tuple[IterationRecord, IterationDir]:
    fake_stages(lambda cfg, name: action)
    cfg = _cfg()
    it = IterationDir(tmp_path / "run" / "iterations" / "iter-0000")
    with Kit(cfg, tmp_path / "run" / "verifier", ImageStore(), ImageStore().pair(), lambda m: None) as kit:
        rec = run_iteration(IterationPlan.make(cfg, 0), kit, it, lambda m: None)
    return rec, it


@pytest.mark.parametrize("action, status, error, traceback", [
    ("pass", Status.PASS, "", False),
    ("loss", Status.LOSS, "", False),
    ("guest-died", Status.GUEST_DIED, "QEMU exited unexpectedly (exit code 1)", False),
    ("workload", Status.ERROR, "the workload ended before the cut", False),
    ("ended", Status.PASS, "", False),      # its run exited after acking: judged, not an error
    ("bug", Status.ERROR, "KeyError: 'no-such-key' (a bug in xdh)", True),
])
def test_iteration_status_follows_what_failed(fake_stages, tmp_path, action, status, error, traceback):
    rec, it = _one_iteration(fake_stages, tmp_path, action)
    assert rec.status == status and rec.error == error
    saved = _read(it.result)
    assert saved["status"] == status.value and saved["error"] == error
    assert IterationDir(it.path).read_result() == rec
    assert (it.path / "traceback.txt").exists() == traceback
    if traceback:
        assert "KeyError: 'no-such-key'" in (it.path / "traceback.txt").read_text()
    assert rec.lost_acked == (2 if action == "loss" else 0)
    assert (rec.workload_error is not None) == (action == "ended")
    if action == "ended":
        assert saved["workload_error"] == {"after_acks": 5, "exit_status": 1,
                                           "message": "OSError: [Errno 5] Input/output error"}


@pytest.mark.parametrize("action, counts, code", [
    ("guest-died", {"guest-died": 2}, ExitCode.INFRA),
    ("bug", {"error": 2}, ExitCode.ERROR),
    ("loss", {"loss": 2}, ExitCode.LOSS),
    ("pass", {"pass": 2}, ExitCode.CLEAN),
])
def test_campaign_exit_code_follows_the_iterations(fake_stages, tmp_path, action, counts, code):
    fake_stages(lambda cfg, name: action)
    res = run_campaign(_cfg(iterations=2), tmp_path / "run", lambda m: None, {})
    assert res.exit_code == code
    saved = _read(tmp_path / "run" / "summary.json")
    assert saved["exit_code"] == code and {k: v for k, v in saved["counts"].items() if v} == counts
    assert [i["status"] for i in saved["iterations"]] == [list(counts)[0]] * 2
    junit = (tmp_path / "run" / "junit.xml").read_text()
    assert ('errors="2"' in junit) == (action in ("guest-died", "bug"))


def test_guest_death_and_bug_in_one_campaign_is_a_harness_error(fake_stages, tmp_path):
    fake_stages(lambda cfg, name: {"iter-0000": "guest-died", "iter-0001": "bug"}.get(name, "pass"))
    res = run_campaign(_cfg(iterations=3), tmp_path / "run", lambda m: None, {})
    assert [r.status for r in res.iterations] == [Status.GUEST_DIED, Status.ERROR, Status.PASS]
    assert res.exit_code == ExitCode.ERROR
    assert (tmp_path / "run" / "iterations" / "iter-0001" / "traceback.txt").exists()
    assert not (tmp_path / "run" / "iterations" / "iter-0000" / "traceback.txt").exists()


@pytest.mark.parametrize("action, exc", [("sigint", KeyboardInterrupt), ("sigterm", Interrupted)])
def test_interrupt_inside_an_iteration_is_recorded_and_reraised(fake_stages, tmp_path, action, exc):
    install_signal_handlers()
    with pytest.raises(exc):
        _one_iteration(fake_stages, tmp_path, action)
    saved = _read(tmp_path / "run" / "iterations" / "iter-0000" / "result.json")
    assert saved["status"] == "error" and saved["error"] == "interrupted"


@pytest.mark.parametrize("action, exc", [("sigint", KeyboardInterrupt), ("sigterm", Interrupted)])
def test_interrupted_campaign_writes_the_summary_of_what_ran(fake_stages, tmp_path, action, exc):
    install_signal_handlers()
    crashes = fake_stages(lambda cfg, name: {"iter-0000": "loss", "iter-0001": "pass", "iter-0002": action}
                          .get(name, "pass"))
    with pytest.raises(exc):
        run_campaign(_cfg(iterations=5), tmp_path / "run", lambda m: None, {})
    assert [c.name for c in crashes.calls] == ["iter-0000", "iter-0001", "iter-0002"]
    s = _read(tmp_path / "run" / "summary.json")
    assert [(i["name"], i["status"]) for i in s["iterations"]] == [("iter-0000", "loss"), ("iter-0001", "pass")]
    assert s["exit_code"] == ExitCode.INTERRUPTED and s["counts"]["loss"] == 1 and "interrupt" in s["ended_by"]
    assert "iter-0000" in (tmp_path / "run" / "summary.txt").read_text()
    assert (tmp_path / "run" / "junit.xml").read_text().count("<testcase") == 2
    assert _read(tmp_path / "run" / "iterations" / "iter-0002" / "result.json")["error"] == "interrupted"


def test_torture_via_main_exits_5_on_guest_death(fake_stages, tmp_path, capsys):
    fake_stages(lambda cfg, name: "guest-died")
    code = main(["torture", "--no-canary", "--iterations", "2", "--seed", "3", "--run-dir", str(tmp_path / "t")])
    assert code == ExitCode.INFRA == 5
    out = capsys.readouterr().out
    assert "GUEST-DIED" in out and "2 guest died" in out


# --- 4. compare's exit code -----------------------------------------------------------------
@pytest.mark.parametrize("cell_script, code", [
    ({}, ExitCode.CLEAN),                                        # every cell reached verdicts, losses included
    ({"bookworm__phy__none__append__none": "guest-died"}, ExitCode.INFRA),
    ({"bookworm__phy__none__append__none": "bug"}, ExitCode.ERROR),
    ({"bookworm__phy__none__append__none": "guest-died", "bookworm__qdisk__none__append__none": "workload"},
     ExitCode.ERROR),
])
def test_compare_via_main_exit_code_follows_the_cells(fake_stages, tmp_path, cell_script, code):
    fake_stages(lambda cfg, name: cell_script.get(
        f"{cfg.stack.release}__{cfg.stack.backend}__{cfg.fault}__{cfg.workload}__{cfg.disk_cache}",
        verdicts(cfg, name))
        if name != "canary" else "loss")
    out = tmp_path / "cmp"
    assert main([*COMPARE_ARGS, "--run-dir", str(out)]) == code
    data = _read(out / "compare.json")
    assert len(data["cells"]) == 4 and all(r["iterations"] == 2 for r in data["cells"])
    assert sum(r["loss_iterations"] for r in data["cells"]) == 4
    # the cells share the matrix's one verifier, made sure of before each cell (a cell's own kit starts none)
    assert [(v.started, v.ensured, v.stopped) for v in FakeVerifier.instances] == [(1, 4, 1)]


def test_compare_cell_whose_campaign_raises_an_xdh_error_exits_6(fake_stages, tmp_path, monkeypatch):
    crashes = fake_stages(verdicts)
    real = compare_mod.run_campaign

    def campaign(cfg, run_dir, *a, **kw):
        if run_dir.name == CELLS[1]:
            raise WorkloadError("the workload misbehaved")
        return real(cfg, run_dir, *a, **kw)
    monkeypatch.setattr(compare_mod, "run_campaign", campaign)
    out = tmp_path / "cmp"
    assert main([*COMPARE_ARGS, "--run-dir", str(out)]) == ExitCode.ERROR
    assert crashes.cells_started() == [CELLS[0], CELLS[2], CELLS[3]]     # the matrix went on
    assert (out / "cells" / CELLS[1] / "error.txt").read_text().strip() == "the workload misbehaved"
    assert _cells(out)[("qdisk", "drop-flush")]["error"] == "the workload misbehaved"


def test_compare_cell_whose_stack_cannot_start_exits_5(fake_stages, tmp_path, monkeypatch):
    """A cell whose snapshot stack fails to launch is an infrastructure failure, not a harness bug."""
    fake_stages(verdicts)
    snap = fake_snapshot(tmp_path)

    def ensure_snapshot(stack, *a, **kw):
        if stack.backend == "phy":
            raise LaunchError("QEMU did not connect to QMP (exit code 1)")
        return snap
    monkeypatch.setattr("harness.campaign.kit.ensure_snapshot", ensure_snapshot)
    out = tmp_path / "cmp"
    assert main([*COMPARE_ARGS, "--no-canary", "--run-dir", str(out)]) == ExitCode.INFRA
    cells = _cells(out)
    assert cells[("qdisk", "none")]["iterations"] == 2
    # both phy cells carry the launch failure, as an infrastructure error (the report says it once: test_compare)
    assert "QEMU did not connect to QMP" in cells[("phy", "drop-flush")]["error"]
    assert cells[("phy", "none")]["error"] == cells[("phy", "drop-flush")]["error"]
    assert cells[("phy", "none")]["infra_only"] and cells[("phy", "drop-flush")]["infra_only"]


def test_compare_bug_in_a_cell_is_an_internal_error_with_the_report_written(fake_stages, tmp_path, monkeypatch,
                                                                            capsys):
    fake_stages(verdicts)
    real = compare_mod.run_campaign

    def campaign(cfg, run_dir, *a, **kw):
        if run_dir.name == CELLS[1]:
            raise KeyError("oops")
        return real(cfg, run_dir, *a, **kw)
    monkeypatch.setattr(compare_mod, "run_campaign", campaign)
    out = tmp_path / "cmp"
    assert main([*COMPARE_ARGS, "--no-canary", "--run-dir", str(out)]) == ExitCode.ERROR
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "Traceback" not in err
    assert _cells(out)[("qdisk", "none")]["iterations"] == 2 and (out / "report.md").exists()


# --- 5. unwritable run directories: one line, exit 2 ----------------------------------------------
# These run ``main`` in this process (tests/conftest.py points the cache, runs and TMPDIR at
# tmp_path); test_bad_input_through_the_entry_point runs the real ``python -m harness.cli``.
def xdh(args: list[str], tmp: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m harness.cli ARGS`` in ``tmp``, with its own cache and runs directory there."""
    env = dict(os.environ, XDH_CACHE=str(tmp / "cache"), XDH_RUNS=str(tmp / "runs"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=tmp, env=env, capture_output=True,
                          check=False, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def xdh_main(capsys, caplog):
    """``main(args)`` in this process, as a CompletedProcess: its exit code (argparse's
    SystemExit included), stdout and stderr. Log records at INFO and above count as stderr
    lines, as they would on a terminal."""
    caplog.set_level(logging.INFO)

    def run(args: list[str]) -> subprocess.CompletedProcess:
        capsys.readouterr()
        caplog.clear()
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        logged = "".join(f"{r.getMessage()}\n" for r in caplog.records if r.levelno >= logging.INFO)
        return subprocess.CompletedProcess(["xdh", *args], code, out, err + logged)
    return run


def _one_line_usage_error(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == ExitCode.USAGE, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert p.stdout == "", p.stdout
    return lines[0]


def _a_run(d: Path) -> Path:
    d.mkdir(parents=True)
    rec = IterationRecord(0, 1, "iter-0000", Status.PASS, "append", "none", "qdisk", CutPlan(CutMode.ACKS, 5))
    summary_mod.write(summary_mod.summarize(d, {}, 1, None, [rec], 10.0), d)
    return d


def test_unwritable_run_directories_are_one_line_usage_errors(tmp_path, xdh_main):
    run = _a_run(tmp_path / "a-run")
    cases = [
        # torture checks its run directory before it looks for images (the cache here is empty)
        (["torture", "--run-dir", "/proc/xdh-nope", "--no-canary"], "cannot write the run directory /proc/xdh-nope"),
        (["torture", "--run-dir", str(tmp_path / "ok"), "--no-canary"], "the dom0 image is not built"),
        (["compare", "--run-dir", "/proc/x"], "cannot write the run directory /proc/x"),
        (["up", "--run-dir", "/proc/x"], "cannot write the run directory /proc/x"),
        (["report", "merge", "-o", "/proc/x", str(run)], "cannot write the output directory /proc/x"),
    ]
    results = [xdh_main(args) for args, _ in cases]
    for (args, fragment), p in zip(cases, results, strict=True):
        line = _one_line_usage_error(p)
        assert line.startswith("xdh: error: ") and fragment in line, (args, line)
        assert "image" not in line or "image" in fragment, (args, line)
    # each names the option that fixes it
    assert "pass -o with a writable directory" in _one_line_usage_error(results[-1])
    assert "pass --run-dir with a writable directory" in _one_line_usage_error(results[0])
    # nothing was left behind by the failures (torture removes the run directory it made when the images are
    # missing); "tmp" is the test's TMPDIR (tests/conftest.py), empty
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "a-run") == ["tmp"]
    assert list((tmp_path / "tmp").iterdir()) == []


# --- 6. bad input: exit 2, one line on stderr, no traceback ----------------------------------------
EMPTY = "{tmp}/empty"        # an existing directory that xdh did not write
BAD_INPUT = [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["torture", "--backend", "nope"], "argument --backend: invalid choice: 'nope'"),
    (["torture", "--release", "sid"], "argument --release: invalid choice: 'sid'"),
    (["torture", "--workload", "nope"], "argument --workload: unknown workload 'nope'"),
    (["torture", "--fault", "nope"], "argument --fault: unknown fault 'nope'"),
    (["torture", "--workload", "{tmp}/missing.toml"], "workload manifest {tmp}/missing.toml not found"),
    (["torture", "--workload", "{tmp}/bad.toml"], "is not valid TOML"),
    (["torture", "--workload", "{tmp}/w/model.toml"], "model 'bag' is not one of set, prefix, register, blocks"),
    (["torture", "--workload", "{tmp}/w/noexec.toml"], "is not executable"),
    (["torture", "--workload", "{tmp}/w/typo.toml"], "unknown keys ['modle']"),
    (["torture", "--fault", "{tmp}/w/where.toml"], "where 'host' is not one of dom0, domu"),
    (["torture", "--fault", "{tmp}/w/nothing.toml"], "the fault changes nothing"),
    (["torture", "--iterations", "0"], "argument --iterations: 0 is too small"),
    (["torture", "--iterations", "x"], "argument --iterations: 'x' is not a number"),
    (["torture", "--seed", "-1"], "argument --seed: -1 is too small"),
    (["torture", "--cut-acks", "50-10"], "argument --cut-acks: bad range '50-10'"),
    (["torture", "--cut-acks", "abc"], "argument --cut-acks: bad range 'abc'"),
    (["torture", "--cut-seconds", "0-1"], "argument --cut-seconds: bad range '0-1'"),
    (["torture", "--shard", "3/2"], "argument --shard: bad shard '3/2'"),
    (["torture", "--shard", "x"], "argument --shard: bad shard 'x'"),
    (["torture", "--flush-points", "-7"], "argument --flush-points: -7 is too small"),
    (["torture", "--crash-subsets", "-1"], "argument --crash-subsets: -1 is too small"),
    (["torture", "--memory", "10"], "argument --memory: 10 is too small"),
    (["torture", "--memory", "1024"], "outer memory 1024 MiB cannot hold dom0"),      # a config check, not argparse
    (["torture", "--domu-memory", "100"], "argument --domu-memory: 100 is too small"),
    (["torture", "--boot-timeout", "0"], "argument --boot-timeout: 0 is too small"),
    (["torture", "--accel", "foo"], "argument --accel: invalid choice: 'foo'"),
    (["torture", "--workload", "direct", "--fault", "nobarrier"], "needs a filesystem"),   # a combination
    (["reproduce", EMPTY], "is not an iteration directory"),
    (["reproduce", "{tmp}/broken-iter"], "is not readable JSON"),
    (["reproduce", EMPTY, "--state", "flush-3", "--rerun"], "--state re-verifies one recorded crash state"),
    (["torture", "--jobs", "0"], "argument --jobs: 0 is too small"),
    (["torture", "--jobs", "65"], "--jobs 65: must be 1..64"),
    (["bench", "--modes", "fast,turbo"], "unknown bench mode 'turbo'"),
    (["report", "merge", EMPTY], "has no summary.json"),
    (["report", "merge", "{tmp}/future-run"], "has schema 99, newer than this xdh"),
    (["compare", "--report-from", EMPTY, "--run-dir", "{tmp}/out"], "is not an xdh compare run directory"),
    (["compare", "--backends", ""], "no backend given"),
    (["ssh", "dom0", "--", "true"], "no stack is up"),
    (["cut"], "no stack is up"),
    (["down"], "no stack is up"),
    (["verify"], "no session to verify"),
    (["verify", EMPTY], "is not an iteration directory"),
    (["up", "--dut", "{tmp}/nonexistent.img"], "is not a file"),
    (["up"], "the dom0 image is not built"),                 # the cache is empty
]


@pytest.fixture
def bad_input_tmp(tmp_path) -> Path:
    """The files the bad-input cases name, in tmp_path (also the cwd, and the parent of the
    cache and runs directories: tests/conftest.py)."""
    tmp = tmp_path
    (tmp / "empty").mkdir()
    (tmp / "broken-iter").mkdir()
    (tmp / "broken-iter" / "iteration.json").write_text("{not json")
    (tmp / "future-run").mkdir()
    (tmp / "future-run" / "summary.json").write_text(json.dumps({"schema": 99}))
    (tmp / "bad.toml").write_text("schema = 1\nname = [")
    w = tmp / "w"
    w.mkdir()
    (w / "prog").write_text("#!/bin/sh\n")
    (w / "prog").chmod(0o755)
    (w / "plain").write_text("#!/bin/sh\n")
    head = 'schema = 1\nname = "x"\n'
    (w / "model.toml").write_text(head + 'program = "prog"\nmodel = "bag"\n')
    (w / "noexec.toml").write_text(head + 'program = "plain"\nmodel = "set"\n')
    (w / "typo.toml").write_text(head + 'program = "prog"\nmodle = "set"\n')
    (w / "where.toml").write_text(head + '[[step]]\nwhere = "host"\nrun = ["true"]\n')
    (w / "nothing.toml").write_text(head)
    return tmp


def _check_bad_input(p: subprocess.CompletedProcess, n: int, tmp: Path) -> None:
    """One line naming the problem, exit 2, no traceback; and no file, no run directory left (a
    command that fails on missing images removes the one it made)."""
    line = _one_line_usage_error(p)
    assert line.startswith("xdh") and ": error: " in line, line
    assert BAD_INPUT[n][1].format(tmp=tmp) in line, line
    assert list((tmp / "runs").rglob("*")) == []
    assert not (tmp / "cache").exists()


@pytest.mark.parametrize("n", range(len(BAD_INPUT)), ids=[" ".join(a) or "(nothing)" for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(bad_input_tmp, xdh_main, n):
    tmp = bad_input_tmp
    _check_bad_input(xdh_main([a.format(tmp=tmp) for a in BAD_INPUT[n][0]]), n, tmp)


ENTRY_POINT_CASES = [n for n, (args, _) in enumerate(BAD_INPUT) if args in (["frobnicate"],
                                                                           ["reproduce", "{tmp}/broken-iter"])]


@pytest.mark.parametrize("n", ENTRY_POINT_CASES, ids=lambda n: " ".join(BAD_INPUT[n][0]))
def test_bad_input_through_the_entry_point(bad_input_tmp, n):
    """The same, through ``python -m harness.cli`` in a fresh process (what `xdh` runs): an
    argparse error and an error found after parsing. Neither needs QEMU on the host."""
    tmp = bad_input_tmp
    _check_bad_input(xdh([a.format(tmp=tmp) for a in BAD_INPUT[n][0]], tmp), n, tmp)


def test_stale_up_record_is_a_usage_error_and_is_removed(tmp_path, xdh_main):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "session.json").write_text(json.dumps(
        {"pid": 999999999, "run_dir": "x", "iteration": "x", "ssh_port": 1, "qmp": "", "components": {},
         "workload": False}))
    line = _one_line_usage_error(xdh_main(["ssh", "dom0", "--", "true"]))
    assert "the recorded stack is gone" in line
    assert not (tmp_path / "cache" / "session.json").exists()


# --- the pipeline: crash i+1 beside check i; lanes --------------------------------------------
def _timed_stages(fake_stages, monkeypatch, check_seconds=0.3):
    """Fakes whose crash and check phases log (event, iteration, thread) in order; the check is slow."""
    import threading
    import time as _time
    crashes = fake_stages(verdicts)
    events: list[tuple[str, str, str]] = []
    lock = threading.Lock()
    run, check = crashes.run_until_cut, crashes.check_outcome

    def logged(kind, name):
        with lock:
            events.append((kind, name, threading.current_thread().name))

    def run_until_cut(cfg, seed, plan, paths, *a, **kw):
        logged("crash", paths.dut.parent.name)
        return run(cfg, seed, plan, paths, *a, **kw)

    def check_outcome(plan, kit, it, outcome, say):
        logged("check-start", it.path.name)
        _time.sleep(check_seconds)
        logged("check-end", it.path.name)
        return check(plan, kit, it, outcome, say)
    monkeypatch.setattr("harness.campaign.iteration.run_until_cut", run_until_cut)
    monkeypatch.setattr("harness.campaign.iteration.check_outcome", check_outcome)
    return events


def test_the_next_crash_runs_beside_the_last_check(fake_stages, monkeypatch, tmp_path):
    events = _timed_stages(fake_stages, monkeypatch)
    cfg = TortureConfig(iterations=3, seed=7, canary=False)
    result = run_campaign(cfg, tmp_path / "run", lambda m: None, versions={})
    assert [r.name for r in result.iterations] == ["iter-0000", "iter-0001", "iter-0002"]
    order = [(k, n) for k, n, _ in events]
    # iteration 1 crashed while iteration 0 was being checked, on another thread
    assert order.index(("crash", "iter-0001")) < order.index(("check-end", "iter-0000"))
    assert {t for k, _, t in events if k == "crash"} != {t for k, _, t in events if k == "check-start"}
    assert result.summary.counts()[Status.PASS] == 3


def test_lanes_share_the_iterations_and_report_them_in_order(fake_stages, monkeypatch, tmp_path):
    events = _timed_stages(fake_stages, monkeypatch, check_seconds=0.05)
    cfg = TortureConfig(iterations=5, seed=7, canary=False, jobs=2)
    result = run_campaign(cfg, tmp_path / "run", lambda m: None, versions={})
    assert [r.index for r in result.iterations] == [0, 1, 2, 3, 4]
    lanes = {n: t for k, n, t in events if k == "crash"}
    assert lanes["iter-0000"] == lanes["iter-0002"] == lanes["iter-0004"] != lanes["iter-0001"] == lanes["iter-0003"]
    assert len(FakeVerifier.instances) == 2 and all(v.stopped for v in FakeVerifier.instances)


def test_an_interrupt_during_the_next_crash_still_records_the_checked_iteration(fake_stages, tmp_path):
    def script(cfg, name):
        return "sigint" if name == "iter-0001" else "pass"
    fake_stages(script)
    cfg = TortureConfig(iterations=3, seed=7, canary=False)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(cfg, tmp_path / "run", lambda m: None, versions={})
    s = _read(tmp_path / "run" / "summary.json")
    assert [(i["name"], i["status"]) for i in s["iterations"]] == [("iter-0000", "pass")]
    assert _read(tmp_path / "run" / "iterations" / "iter-0001" / "result.json")["error"] == "interrupted"


# --- a full disk ends the campaign at once --------------------------------------------------------
def test_a_full_disk_ends_the_campaign_with_one_line_and_the_infra_code(fake_stages, tmp_path, capsys):
    """The first iteration's SSH command fails because QEMU paused on ENOSPC: that is the error
    (not a failed command), the campaign does not go on to the next iteration, the record and
    the summary are written, and the exit code is the infrastructure one."""
    crashes = fake_stages(lambda cfg, name: "disk-full" if name == "iter-0001" else "pass")
    code = main(["torture", "--no-canary", "--iterations", "4", "--seed", "3", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == ExitCode.INFRA
    assert "xdh: error: disk full: QEMU paused on 'No space left on device'" in err and "Traceback" not in err
    assert "the file system at /tmp has 0.0 MiB free (free space there, or pass --run-dir" in err
    assert [c.name for c in crashes.calls] == ["iter-0000", "iter-0001"]      # nothing after it
    rec = _read(tmp_path / "run" / "iterations" / "iter-0001" / "result.json")
    assert rec["status"] == "guest-died" and rec["error"].startswith("disk full")
    assert _read(tmp_path / "run" / "summary.json")["counts"]["guest-died"] == 1


def test_a_full_disk_in_a_check_records_the_crash_run_beside_it(fake_stages, tmp_path, monkeypatch):
    """The check of iteration 0 stops on a full disk while iteration 1 has crashed beside it: both
    are recorded (the second as stopped by the full disk), nothing runs after, exit 5."""
    from harness.errors import DiskFull
    crashes = fake_stages(lambda cfg, name: "pass")

    def check(plan, kit, it, outcome, say):
        if it.path.name == "iter-0000":
            raise DiskFull("disk full: writing /tmp/x: No space left on device")
        return crashes.check_outcome(plan, kit, it, outcome, say)
    monkeypatch.setattr("harness.campaign.iteration.check_outcome", check)
    code = main(["torture", "--no-canary", "--iterations", "4", "--seed", "3", "--run-dir", str(tmp_path / "run")])
    assert code == ExitCode.INFRA
    assert [c.name for c in crashes.calls] == ["iter-0000", "iter-0001"]
    s = _read(tmp_path / "run" / "summary.json")
    assert [(i["name"], i["status"]) for i in s["iterations"]] == [("iter-0000", "guest-died"),
                                                                    ("iter-0001", "guest-died")]
    assert all(i["error"].startswith("disk full") for i in s["iterations"])
    assert _read(tmp_path / "run" / "iterations" / "iter-0001" / "result.json")["status"] == "guest-died"


def test_io_error_event_in_words(tmp_path):
    from harness.vm.argv import Drive
    from harness.vm.watch import describe
    drives = [Drive("dom0-root", tmp_path / "a.qcow2", "qcow2"), Drive("dut", tmp_path / "dut.img", "raw")]
    ev = {"event": "BLOCK_IO_ERROR", "data": {"device": "", "node-name": "dut-file", "operation": "write",
                                              "action": "stop", "nospace": True, "reason": "No space left on device"}}
    text = describe(ev, drives)
    assert text.startswith(f"disk full: QEMU paused on 'No space left on device' writing {tmp_path}/dut.img (disk dut)")
    assert re.search(r"the file system at /\S* has [\d.]+ MiB free$", text)
    assert describe({"data": {"node-name": "other", "reason": "EIO"}}, drives) == \
        "QEMU stopped on an I/O error on node other: EIO"


def test_a_campaign_that_cannot_fit_stops_before_it_starts(fake_stages, tmp_path, capsys, monkeypatch):
    from harness.campaign import space
    crashes = fake_stages(lambda cfg, name: "pass")
    monkeypatch.setattr(space, "free_mib", lambda path: 5.0)      # a 5 MB tmpfs
    code = main(["torture", "--iterations", "3", "--seed", "3", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ExitCode.INFRA and crashes.calls == []
    assert len(err) == 1 and "has 5 MiB free, and 3 iterations need about" in err[0] and "--run-dir" in err[0]
    assert space.needed_mib(_cfg(iterations=40, fault="drop-flush")) > space.needed_mib(_cfg(iterations=40))


def test_socket_dirs_of_dead_processes_are_swept(tmp_path):
    from harness.vm import sockets
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"xdh-qmp-{dead.pid}-abc"
    live = tmp_path / f"xdh-qmp-{os.getpid()}-def"
    other = tmp_path / "xdh-qmp-notapid"
    for d in (stale, live, other):
        d.mkdir()
    assert sockets.sweep(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


@pytest.mark.host_tools
def test_a_missing_qemu_binary_is_a_usage_error_naming_the_package(monkeypatch):
    from harness.errors import ConfigError
    from harness.vm import host
    monkeypatch.setattr(host.shutil, "which", lambda tool: None if tool == "qemu-system-x86_64" else "/usr/bin/x")
    with pytest.raises(ConfigError) as exc:
        host.require_tools()
    assert exc.value.oneline() == ("qemu-system-x86_64 not found on PATH (apt-get install qemu-system-x86 "
                                   "(or run scripts/setup.sh as root))")


@pytest.mark.parametrize("verify, ran", [(VerifyPath.REBOOT, [0, 1, 2]), (VerifyPath.FAST, [0, 1])])
def test_a_time_budget_starts_no_iteration_that_would_not_end_in_time(fake_stages, tmp_path, monkeypatch, verify,
                                                                       ran):
    """A clock that moves 100 s per crash run, 250 s of budget. One after the other (reboot):
    iterations 0-2 start (at 0, 100 and 200 s). Pipelined (fast): iteration 2 would start at 200 s
    while iteration 1, under way since 100 s, has taken 100 s already: 50 s left is too little. The
    rest are not started; the campaign ends cleanly, its summary says so, the merge counts it."""
    clock = [1000.0]
    monkeypatch.setattr("harness.campaign.budget.monotonic", lambda: clock[0])

    def script(cfg, name):
        clock[0] += 100.0
        return "pass"
    fake_stages(script)
    cfg = _cfg(iterations=6, time_budget=250.0, verify=verify,
               reset=Reset.SNAPSHOT if verify == VerifyPath.FAST else Reset.BOOT)
    said: list[str] = []
    res = run_campaign(cfg, tmp_path / "run", lambda m: said.append(str(m)), {})
    assert [r.index for r in res.iterations] == ran
    assert res.exit_code == ExitCode.CLEAN and res.summary.ended_by == ""
    expected = f"time budget 4m10s: {6 - len(ran)} of 6 iterations not started"
    assert res.summary.shortfall.startswith(expected)
    assert any(m.startswith(f"stopped in time: {expected}") for m in said), said
    assert f"stopped early: {expected}" in (tmp_path / "run" / "summary.txt").read_text()
    merged = summary_mod.merge([tmp_path / "run"], tmp_path / "m")
    assert merged.exit_code == ExitCode.INFRA and "stopped early: time budget" in merged.merge_problems[0].text
    assert summary_mod.merge([tmp_path / "run"], tmp_path / "m2", allow_shortfall=True).exit_code == ExitCode.CLEAN


def test_without_a_time_budget_every_iteration_runs(fake_stages, tmp_path):
    fake_stages(lambda cfg, name: "pass")
    res = run_campaign(_cfg(iterations=3), tmp_path / "run", lambda m: None, {})
    assert len(res.iterations) == 3 and res.summary.shortfall == ""


@pytest.mark.parametrize("text, seconds", [("3600", 3600), ("3600s", 3600), ("90m", 5400), ("2h", 7200),
                                           ("1h30m", 5400), ("1h0m5s", 3605)])
def test_durations(text, seconds):
    from harness.cli.types import duration
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1d", "-5m", "0", "5 m"])
def test_bad_durations_are_usage_errors(text, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["torture", f"--time-budget={text}", "--dry-run"])
    assert exited.value.code == ExitCode.USAGE and "bad duration" in capsys.readouterr().err
