"""Debian 13 (trixie): the same harness on Xen 4.20, Linux 6.12 and QEMU 10.0. A smoke test:
the stack boots from the trixie images (cold once, then restored from its saved stack), runs
what they hold, and a write + fsync on xvdb lands."""

from __future__ import annotations

import json

import pytest

from harness.config import StackConfig
from harness.stack.backend_check import read_backend
from harness.stack.xen import make_stack
from tests.helpers import pids_matching

pytestmark = pytest.mark.stack


def test_trixie_stack_runs_its_own_components(images, saved_stack, tmp_path):
    images.build(spec="trixie", progress=lambda m: print(m, flush=True))
    run = tmp_path / "run"
    cfg = StackConfig(release="trixie")
    boot, pair, snap = saved_stack(cfg)
    with make_stack(cfg, run, images, boot=boot, images=pair) as stack:
        assert stack.info.snapshot == snap.key
        running = stack.info.running
        assert running["xen"].startswith("4.20."), running
        assert running["dom0_kernel"].startswith("6.12.") and running["domu_kernel"].startswith("6.12."), running
        assert running["device_model"].startswith("1:10.0."), running
        out = stack.domu.run(["xdh-sync-probe", "/dev/xvdb", "--count", "4"], timeout=120).stdout
        assert out.split() == ["ACK", "0", "ACK", "1", "ACK", "2", "ACK", "3"]
        b = read_backend(stack.dom0, stack.domu, stack.backend, stack.info.dom0_device["dut"])
        assert (b.backend_kind, b.feature_flush_cache, b.write_cache) == ("qdisk", "1", "write back")
    assert not pids_matching(str(run))
    info = json.loads((run / "stack.json").read_text())
    assert info["versions"]["release"] == "trixie" and info["running"] == running
    assert "xen-hypervisor-4.20-amd64" in info["versions"]["dom0"]
