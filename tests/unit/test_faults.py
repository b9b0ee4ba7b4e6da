"""Fault registry, and the flush-eio rule checked against the real QEMU block layer (qemu-io)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.campaign.campaign import canary_config
from harness.catalog import faults
from harness.config import StackConfig, TortureConfig
from harness.errors import ConfigError
from harness.vm.argv import Drive


def test_registry():
    assert set(faults.FAULTS) == {"none", "drop-flush", "nobarrier", "flush-eio", "disk-lies", "backend-lies"}
    assert "write through" in faults.get("drop-flush").steps[0].argv[-1]
    assert faults.get("nobarrier").needs_fs and "barrier=0" in faults.get("nobarrier").steps[0].argv[-1]


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
        return subprocess.run([*argv, opts], capture_output=True, text=True, check=False).returncode

    assert qemu_io("write 0 4k", "write 4k 4k") == 0
    assert qemu_io("write 0 4k", "flush") == 1


def _blockdevs(args):
    return [dict(kv.split("=", 1) for kv in args[i + 1].split(",")) for i, a in enumerate(args) if a == "-blockdev"]


def test_write_log_sits_above_the_format_node(tmp_path):
    """The volatile model logs guest-visible offsets: blklogwrites is the node the device uses."""
    args = Drive("dut", tmp_path / "dut.qcow2", "qcow2", write_log=tmp_path / "w.log").args()
    nodes = {b["node-name"]: b for b in _blockdevs(args)}
    top = nodes["dut"]
    assert top["driver"] == "blklogwrites" and top["file"] == "dut-fmt" and top["log"] == "dut-log"
    assert top["log-append"] == "off" and top["log-sector-size"] == "512"
    assert nodes["dut-fmt"]["driver"] == "qcow2" and nodes["dut-log"]["filename"] == str(tmp_path / "w.log")
    assert args[-1].startswith("virtio-blk-pci,drive=dut,")


def test_disk_lies_drops_flushes_above_the_log():
    """With the model, no flush may reach the log; without it, the file node drops them (QEMU
    flushes a node's children whatever that node's cache.no-flush: on the format node it did nothing)."""
    logged = _blockdevs(Drive("dut", Path("/d.img"), "raw", write_log=Path("/w.log"), no_flush=True).args())
    assert [b["node-name"] for b in logged if b.get("cache.no-flush") == "on"] == ["dut"]
    plain = _blockdevs(Drive("dut", Path("/d.img"), "raw", no_flush=True).args())
    assert [b["node-name"] for b in plain if b.get("cache.no-flush") == "on"] == ["dut-file"]
    assert faults.get("disk-lies").outer_no_flush


def test_backend_lies_replaces_the_device_model_in_qdisk_modes_only():
    from harness.catalog.backends import get as backend
    from harness.stack.xl import domu_config
    cfg = TortureConfig(fault="backend-lies")
    assert cfg.effective_stack().device_model == faults.get("backend-lies").device_model
    text = domu_config(cfg.effective_stack(), backend("qdisk"), "/dev/vdb", "/dev/vdc")
    assert f'device_model_override = "{faults.get("backend-lies").device_model}"' in text
    assert "device_model_override" not in domu_config(StackConfig(), backend("qdisk"), "/dev/vdb", "/dev/vdc")
    with pytest.raises(ConfigError, match="qdisk backend"):
        TortureConfig(fault="backend-lies", stack=StackConfig(backend="phy")).validate()
    assert canary_config(cfg).stack.device_model == cfg.effective_stack().device_model


def test_volatile_model_is_validated():
    TortureConfig(disk_cache="volatile").validate()
    with pytest.raises(ConfigError, match="disk cache"):
        TortureConfig(disk_cache="writeback").validate()
