"""Snapshot fast reset on the real stack: one saved stack, restored twice; each restore is
isolated (fresh overlays), has the host's time, working SSH, and the backend as saved."""

from __future__ import annotations

import time

import pytest

from harness.config import StackConfig
from harness.stack.boot import Restore
from harness.stack.snapshot import ensure_snapshot
from harness.stack.xen import machine_identity, make_stack
from tests.helpers import pids_matching

pytestmark = pytest.mark.stack

MARK = "xdh-snapshot-isolation"


def test_restores_are_fast_isolated_and_fresh(images, tmp_path):
    cfg = StackConfig()
    imgs = images.pair()
    snap = ensure_snapshot(cfg, imgs, images, lambda m: print(m, flush=True), machine_identity(cfg, images, imgs))
    assert snap.state.stat().st_size > 50 * 2**20
    seen = []
    for n in range(2):
        run = tmp_path / f"r{n}"
        t0, wall0 = time.monotonic(), time.time()
        with make_stack(cfg, run, images, boot=Restore(snap, guest_seed=n), images=imgs) as stack:
            print(f"restore {n}: {time.monotonic() - t0:.1f} s")      # measured, not asserted: the host may be busy
            assert stack.info.snapshot == snap.key and stack.info.backend["backend_kind"] == "qdisk"
            # the guest's clock was set during this restore (not left at the snapshot's time) and does not run
            # ahead of the host: bounds that hold however slow the restore and this command are
            guest_now = float(stack.domu.run(["date", "+%s.%N"]).stdout)
            assert wall0 - 1 <= guest_now <= time.time() + 5, (wall0, guest_now, time.time())
            # what the previous restore wrote to the disk under test must not be here
            seen.append(stack.domu.run(["sh", "-c", f"head -c 4096 /dev/xvdb | grep -c {MARK} || true"]).stdout.strip())
            stack.domu.run(["sh", "-c", f"printf '{MARK} %4090s' x | dd of=/dev/xvdb oflag=direct,dsync bs=4096 "
                                        "count=1 status=none"])
            assert stack.domu.run(["sh", "-c", f"head -c 4096 /dev/xvdb | grep -c {MARK}"]).stdout.strip() == "1"
    assert seen == ["0", "0"]
    assert not pids_matching(str(tmp_path))
