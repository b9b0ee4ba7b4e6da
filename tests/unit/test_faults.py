"""Fault registry, and the flush-eio rule checked against the real QEMU block layer (qemu-io)."""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness.campaign.campaign import canary_config
from harness.catalog import faults
from harness.config import StackConfig, TortureConfig
from harness.errors import ConfigError
from harness.vm.argv import Drive, backing_child


def test_registry():
    assert set(faults.FAULTS) == {"none", "drop-flush", "nobarrier", "flush-eio", "flush-eio-during", "disk-lies",
                                  "backend-lies"}
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


def test_flush_eio_during_inserts_its_filter_while_the_machine_runs(tmp_path):
    """flush-eio-during: no filter at the start (mkfs and mount flush normally); at the during point
    the same rules go under the format node over QMP. The commands are pure; their effect on a real
    QEMU is checked in the next test."""
    f = faults.get("flush-eio-during")
    assert f.acts_during() and not faults.get("flush-eio").acts_during() and not faults.get("drop-flush").acts_during()
    plain = Drive("dut", tmp_path / "dut.img", "raw", later_blkdebug=tmp_path / "bd.conf")
    assert [b["driver"] for b in _blockdevs(plain.args())] == ["file", "raw"]      # nothing at boot
    (add, a), (reopen, r) = plain.insert_blkdebug()
    assert (add, a) == ("blockdev-add", {"driver": "blkdebug", "node-name": "dut-dbg-later",
                                         "config": str(tmp_path / "bd.conf"), "image": "dut-file"})
    assert (reopen, r) == ("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "dut",
                                                            "file": "dut-dbg-later", "read-only": False}]})
    logged = Drive("dut", tmp_path / "dut.qcow2", "qcow2", write_log=tmp_path / "w.log", later_blkdebug=tmp_path / "b")
    assert logged.insert_blkdebug()[1][1]["options"][0]["node-name"] == "dut-fmt"   # under the log, above the file


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_the_filter_goes_in_on_a_running_qemu(tmp_path, fmt):
    """On a qcow2 overlay (a restored stack's disk under test) the reopen names the backing node,
    which QEMU opened from the image's header: without it the reopen fails ("backing is missing")."""
    import asyncio

    from qemu.qmp.legacy import QEMUMonitorProtocol
    asyncio.set_event_loop(asyncio.new_event_loop())     # an earlier test may have closed the default one
    img, conf = tmp_path / f"dut.{fmt}", tmp_path / "bd.conf"
    sock = Path(tempfile.mkdtemp(prefix="xdh-qmp-", dir="/tmp")) / "qmp.sock"     # AF_UNIX paths end at 108 bytes
    if fmt == "raw":
        img.write_bytes(b"\0" * (1 << 20))
    else:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "1M"], check=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(tmp_path / "base.qcow2"), "-F", "qcow2",
                        str(img)], check=True)
    conf.write_text(faults.get("flush-eio-during").outer_blkdebug)
    drive = Drive("dut", img, fmt, later_blkdebug=conf)
    qemu = subprocess.Popen(["qemu-system-x86_64", "-machine", "q35", "-nodefaults", "-S", "-display", "none",
                             "-qmp", f"unix:{sock},server=on,wait=on", *drive.args()], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        qmp = QEMUMonitorProtocol(str(sock))
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        qmp.connect()
        backing = backing_child(qmp.cmd("x-debug-query-block-graph"), "dut")
        assert (backing is None) == (fmt == "raw")
        for cmd, args in drive.insert_blkdebug(backing):
            assert qmp.cmd(cmd, **args) == {}
        nodes = {n["node-name"]: n for n in qmp.cmd("query-named-block-nodes", flat=True)}
        assert backing_child(qmp.cmd("x-debug-query-block-graph"), "dut") == backing     # kept
        assert nodes["dut-dbg-later"]["drv"] == "blkdebug"
        assert nodes["dut"]["image"]["filename"].startswith(f"blkdebug:{conf}:")     # the format node reads through it
        qmp.close()
    finally:
        qemu.kill()
        qemu.wait()
        shutil.rmtree(sock.parent, ignore_errors=True)
