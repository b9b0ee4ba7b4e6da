"""Interrupting a booting stack leaves nothing running and keeps the artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import pids_matching

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]


def _interrupt_when(args: list[str], ready, what: str, wait: float, sig: int, settle: float = 0.0):
    """Run ``xdh ARGS``, send ``sig`` once ``ready()`` holds (then ``settle`` s); (exit code, output).
    Whatever happens, the xdh process does not outlive the test."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + wait
        while not ready():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, what
            time.sleep(0.2)
        time.sleep(settle)
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_boot_leaves_nothing_running(sig, images, tmp_path):
    run = tmp_path / "run"
    serial = run / "iterations" / "iter-0000" / "boot-a" / "serial.log"

    def booting() -> bool:
        # the outer QEMU is really booting: Xen has printed on the serial console
        if not (serial.exists() and b"(XEN)" in serial.read_bytes()):
            return False
        assert pids_matching(str(run)), "no QEMU process found for the run"
        return True
    code, out = _interrupt_when(["up", "--reset", "boot", "--run-dir", str(run)], booting,
                                "QEMU never started booting", 120, sig, settle=3)
    assert code == 130, out
    assert "stopped cleanly" in out and "Traceback" not in out
    time.sleep(0.5)
    assert not pids_matching(str(run)), "QEMU outlived the interrupted xdh"
    assert serial.stat().st_size > 0          # artifacts are kept


def test_sigterm_during_a_campaign_stops_it_and_keeps_the_summary(images, tmp_path):
    """An interrupt inside an iteration ends the whole campaign (it is not one failed iteration),
    kills the restored stack and the verifier VM, and still writes the summary."""
    run = tmp_path / "campaign"
    acks = run / "iterations" / "iter-0000" / "acks.jsonl"
    code, out = _interrupt_when(["torture", "--no-canary", "--iterations", "5", "--seed", "5", "--run-dir", str(run)],
                                lambda: acks.exists() and acks.stat().st_size > 0,
                                "the first iteration never started its workload", 400, signal.SIGTERM)
    assert code == 130, out
    assert "stopped cleanly" in out and "Traceback" not in out
    assert "iter-0001" not in out, "the campaign went on after the interrupt"
    time.sleep(0.5)
    assert not pids_matching(str(run)), "QEMU outlived the interrupted campaign"
    assert (run / "summary.json").exists()
