"""The real nested stack under QEMU: each backend mode boots, does a real write + fsync on
xvdb, reads the mode back from both ends, and leaves no QEMU behind.

Each mode restores a saved stack of its own (the ``saved_stack`` fixture), booted cold and checked
once (``boot_guests`` reads the backend and fails on a mismatch), then saved in the cache as a
campaign saves one; its key here also covers how the mode is attached (``attachment``), so a
change to that boots the mode cold again. After the restore every assertion is made on the
running stack, as after a boot. The cold path runs in test_torture's baseline (a boot per crash
run) and reproduce[reboot] (a boot on a crash image); creating the domU on the saved qdisk stack's
dom0, up to the failing device, in test_qdisk_direct_fails_fast.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from harness.catalog import backends
from harness.config import StackConfig
from harness.errors import LaunchError
from harness.images import ImageStore, devmodel
from harness.releases import get
from harness.stack import inputs
from harness.stack.backend_check import read_backend
from harness.stack.domu import create_domu
from harness.stack.xen import make_stack
from harness.stack.xl import DOMU_NAME, domu_config
from tests.helpers import pids_matching

pytestmark = pytest.mark.stack

# (xenstore backend dir, params prefix, direct-io-safe key)
EXPECTED = {
    "qdisk": ("qdisk", "aio:/dev/", None),
    "phy": ("vbd", "/dev/", None),
    "qdisk-qcow2": ("qdisk", "qcow2:/srv/dut/dut.qcow2", None),
    # created by dom0's QEMU from device_model_args: no libxl "params", O_DIRECT proven from the fd
    "qdisk-direct-threads": ("qdisk", "", None),
    # libxl's own direct-io-safe disk: needs dom0's device model rebuilt with linux-aio
    "qdisk-direct": ("qdisk", "aio:/dev/", "1"),
}


def stack_config(mode: str, images: ImageStore, release: str = "bookworm") -> StackConfig:
    """The mode's stack config; for qdisk-direct, with the cached aio device model in dom0 (its
    image built here, ~40 s), or a skip that says how to get one."""
    if not backends.get(mode).direct_io_safe:
        return StackConfig(backend=mode, release=release)
    if devmodel.cached(get(release)) is None:
        pytest.skip(f"qdisk-direct needs the linux-aio device model, none is cached for {release}: "
                    f"run `xdh images devmodel --release {release}` once (about 6 minutes)")
    cfg = inputs.completed(StackConfig(backend=mode, release=release))
    images.build(("dom0",), progress=lambda m: print(m, flush=True), spec=cfg.components())
    return cfg


def attachment(cfg: StackConfig) -> dict[str, Any]:
    """How the mode is attached, as dom0 is told: the domU's xl config and dom0's preparation,
    for placeholder devices. Not part of a campaign's snapshot key; part of this test's."""
    b = backends.get(cfg.backend)
    return {"domu_cfg": domu_config(cfg, b, "/dev/ROOT", "/dev/DUT"),
            "dom0_prepare": b.dom0_prepare("/dev/DUT", cfg.dut_size_mib)}


# CI boots each mode on Debian 12 (trixie has its own smoke test); XDH_TEST_RELEASES=bookworm,trixie
# runs every mode on both (the acceptance run of the releases)
RELEASES = os.environ.get("XDH_TEST_RELEASES", "bookworm").split(",")


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("mode", list(EXPECTED))
def test_backend_mode_boots_writes_and_reports(mode, release, images, saved_stack, tmp_path):
    run = tmp_path / "run"
    kind, params, dio = EXPECTED[mode]
    if release != "bookworm":
        images.build(progress=lambda m: print(m, flush=True), spec=release)
    cfg = stack_config(mode, images, release)
    boot, pair, snap = saved_stack(cfg, attachment=attachment(cfg))
    with make_stack(cfg, run, images, boot=boot, images=pair) as stack:
        assert stack.machine.is_running()
        assert stack.info.snapshot == snap.key
        out = stack.domu.run(["xdh-sync-probe", "/dev/xvdb", "--count", "4"], timeout=120).stdout
        assert out.split() == ["ACK", "0", "ACK", "1", "ACK", "2", "ACK", "3"]
        back = stack.domu.run(["sh", "-c", "head -c 16384 /dev/xvdb | tr -cd '\\n[:print:]' | "
                               "grep -o 'xdh-probe 0000000[0-3]' | sort -u"]).stdout.split("\n")
        assert [ln for ln in back if ln] == [f"xdh-probe 0000000{i}" for i in range(4)]

        b = read_backend(stack.dom0, stack.domu, stack.backend, stack.info.dom0_device["dut"])
        assert b.dm_o_direct == stack.backend.o_direct, b.dm_open_flags
        assert b.backend_kind == kind
        assert b.params.startswith(params)
        assert b.direct_io_safe == dio
        # every mode here offers a flush to the guest, and the guest has its write cache on
        assert b.feature_flush_cache == "1"
        assert b.write_cache == "write back"
        assert "flush diskcache: enabled" in b.blkfront_line
        # what dom0's xenstore says, asked directly, agrees
        direct = stack.dom0.run(["xenstore-read", f"{b.xenstore_path}/feature-flush-cache"]).stdout.strip()
        assert direct == "1"
        # what the cold boot read (kept with the saved stack) is what runs now
        assert (stack.info.backend["backend_kind"], stack.info.backend["params"]) == (b.backend_kind, b.params)
        if mode == "qdisk-direct":   # the device model is the rebuilt one, and it is what runs
            assert stack.info.running["device_model"].endswith(devmodel.SUFFIX)
        pid = stack.machine.pid
    assert not pids_matching(str(run)), "a QEMU process outlived the stack"
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert (run / "stack.json").exists() and (run / "serial.log").exists()


def test_qdisk_direct_fails_fast_with_the_reason(images, saved_stack, tmp_path):
    """Debian 12's stock qemu-system-xen has no linux-aio, and qdisk opens a direct-io-safe disk
    with aio=native: the device is never created and the domU would wait for xvdb forever. The
    stack must say so at once. (If a future stock build supports it, this test fails.) On the
    saved qdisk stack, whose dom0 is the same stock image: its domU destroyed, then created again
    as qdisk-direct by the cold boot's own step (``create_domu``; the boot up to it is
    test_torture's baseline)."""
    run = tmp_path / "run"
    boot, pair, _ = saved_stack(StackConfig())
    with make_stack(StackConfig(), run, images, boot=boot, images=pair) as stack:
        stack.dom0.run(["xl", "destroy", DOMU_NAME], timeout=120)
        t0 = time.monotonic()
        with pytest.raises(LaunchError) as ei:
            create_domu(stack.dom0, StackConfig(backend="qdisk-direct"), backends.get("qdisk-direct"), run,
                        lambda m: print(m, flush=True), (pair.domu.artifacts["kernel"], pair.domu.artifacts["initrd"]))
        print(f"create_domu failed {time.monotonic() - t0:.1f} s after it started")
    assert "aio=native was specified, but is not supported in this build" in str(ei.value)
    assert "linux-aio" in ei.value.hint
    assert (run / "qemu-dm.log").exists()
    assert not pids_matching(str(run))
