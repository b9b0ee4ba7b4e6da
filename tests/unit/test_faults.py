"""Fault registry, and the flush-eio rule checked against the real QEMU block layer (qemu-io)."""

import shutil
import subprocess

import pytest

from harness import faults
from harness.qemu import Drive


def test_registry():
    assert set(faults.FAULTS) == {"none", "drop-flush", "nobarrier", "flush-eio"}
    assert "write through" in faults.get("drop-flush").domu_script
    assert faults.get("nobarrier").needs_fs and "barrier=0" in faults.get("nobarrier").domu_script


def test_blkdebug_sits_between_file_and_format(tmp_path):
    args = Drive("dut", tmp_path / "dut.img", "raw", blkdebug=tmp_path / "bd.conf").args()
    blockdevs = [args[i + 1] for i, a in enumerate(args) if a == "-blockdev"]
    assert blockdevs[1].startswith("driver=blkdebug,node-name=dut-dbg,") and "image=dut-file" in blockdevs[1]
    assert blockdevs[2].startswith("driver=raw,node-name=dut,file=dut-dbg,")


@pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io (qemu-utils) not installed")
def test_flush_eio_rule_fails_a_flush_and_not_a_write(tmp_path):
    img, conf = tmp_path / "x.img", tmp_path / "bd.conf"
    img.write_bytes(b"\0" * (1 << 20))
    conf.write_text(faults.get("flush-eio").outer_blkdebug)
    opts = (f"driver=raw,file.driver=blkdebug,file.config={conf},"
            f"file.image.driver=file,file.image.filename={img}")

    def qemu_io(*cmds):
        argv = ["qemu-io", "-t", "writeback", "--image-opts"]
        for c in cmds:
            argv += ["-c", c]
        return subprocess.run(argv + [opts], capture_output=True, text=True).returncode

    assert qemu_io("write 0 4k", "write 4k 4k") == 0
    assert qemu_io("write 0 4k", "flush") == 1
