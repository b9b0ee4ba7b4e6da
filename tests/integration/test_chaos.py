"""Chaos: SIGINT, SIGTERM and SIGKILL at seeded random points of running campaigns (restore,
workload, cut, verification), then count what is left: QEMU and qemu-nbd processes, QMP
socket directories of dead processes, the session record, held locks; then a normal run must
pass. XDH_CHAOS_ROUNDS sets how many (CI runs 3; docs/torture.md has a 15-round measurement).
The saved stack and verifier are made before the first round (``warm_campaign``), so that no
signal lands in a save, which is not what this test is about; each round checks that."""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness import paths
from harness.vm.sockets import NAME, running
from tests.helpers import pids_matching

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("XDH_CHAOS_ROUNDS", "3"))


def schedule(n: int) -> list[signal.Signals]:
    """Two interrupts (SIGINT or SIGTERM) for every SIGKILL, in a seeded order."""
    sigs = [[signal.SIGINT, signal.SIGTERM, signal.SIGKILL][i % 3] for i in range(n)]
    random.Random(20261126).shuffle(sigs)
    return sigs


def stale_socket_dirs() -> list[Path]:
    return [d for d in Path(tempfile.gettempdir()).glob("xdh-*-*-*")
            if (m := NAME.match(d.name)) and not running(int(m.group(1)))]


def held_locks() -> list[Path]:
    out = []
    for lock in (paths.cache_dir() / "snapshots").glob(".*.lock"):
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                out.append(lock)
    return out


def xdh(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_random_signals_leave_nothing_behind_and_the_next_run_passes(warm_campaign, tmp_path):
    rng = random.Random(7)
    log = []
    for n, sig in enumerate(schedule(ROUNDS)):
        run = tmp_path / f"round-{n}"
        proc = xdh("torture", "--no-canary", "--iterations", "3", "--seed", str(100 + n), "--run-dir", str(run))
        delay = rng.uniform(2.0, 45.0)
        t0 = time.monotonic()
        while time.monotonic() - t0 < delay and proc.poll() is None:
            time.sleep(0.1)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=180)
        time.sleep(1.0)
        left = pids_matching(str(run))      # QEMU (and anything else) started for this run
        log.append(f"round {n}: {sig.name} after {delay:.1f} s -> exit {proc.returncode}, leftovers {left}")
        print(log[-1], flush=True)
        assert not left, "\n".join(log) + "\n" + out[-2000:]
        assert "once to save it" not in out, out[-2000:]      # the signal hit a restore, not a save
        if sig != signal.SIGKILL and proc.returncode != 0:       # (0: the campaign ended before the signal)
            assert proc.returncode == 130 and "stopped cleanly" in out and "Traceback" not in out, out[-2000:]
    ok = xdh("torture", "--no-canary", "--iterations", "1", "--seed", "5", "--run-dir", str(tmp_path / "after"))
    out, _ = ok.communicate(timeout=900)
    assert ok.returncode == 0, out[-3000:]
    assert not stale_socket_dirs() and not held_locks()
    assert not (paths.cache_dir() / "session.json").exists()
    assert not re.search(r"Traceback", out)
