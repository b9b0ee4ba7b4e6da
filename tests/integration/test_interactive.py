"""By hand, as a developer would: `xdh up` restores the stack with the workload running and
says where the QMP socket is, `xdh cut` cuts the power, `xdh verify` prints the verdict; a
drop-flush session must be a loss (the positive control of the path), and nothing is left
running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import pids_matching

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]


def xdh(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_up_cut_verify_by_hand(images, tmp_path):
    run = tmp_path / "up"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "up", "--workload", "append", "--fault",
                             "drop-flush", "--seed", "7", "--run-dir", str(run)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    acks = run / "iterations" / "iter-0000" / "acks.jsonl"
    try:
        deadline = time.monotonic() + 600       # a first run saves the stack first
        while not any("stack is up in" in x for x in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        up = next(x for x in lines if "stack is up in" in x)
        print(up.strip(), flush=True)
        qmp = next(x for x in lines if "QMP:" in x).split()[1]
        assert Path(qmp).is_socket()
        assert xdh("ssh", "domu", "--", "cat", "/sys/block/xvdb/queue/write_cache").stdout.strip() == "write through"
        while not acks.exists() or acks.read_text().count("\n") < 30:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        cut = xdh("cut")
        assert cut.returncode == 0 and "power cut after" in cut.stdout, cut.stdout + cut.stderr
        assert proc.wait(timeout=120) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not pids_matching(str(run)), "QEMU outlived the session"
    verify = xdh("verify")
    assert verify.returncode == 1 and re.search(r"iter-0000: LOSS: \d+ acked, [1-9]\d* lost", verify.stdout), \
        verify.stdout + verify.stderr
    result = json.loads((run / "iterations" / "iter-0000" / "result.json").read_text())
    assert result["status"] == "loss" and result["acked"] >= 30
    assert xdh("cut").returncode == 2 and "no stack is up" in xdh("cut").stderr
