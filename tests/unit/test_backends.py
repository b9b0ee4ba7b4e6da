"""Backend mode registry: the xl disk specs (no VM)."""

import pytest

from harness.catalog import backends


@pytest.mark.parametrize("mode, expected", [
    ("qdisk", "format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target=/dev/vdc"),
    ("qdisk-direct", "format=raw,vdev=xvdb,access=rw,backendtype=qdisk,direct-io-safe,target=/dev/vdc"),
    ("phy", "format=raw,vdev=xvdb,access=rw,backendtype=phy,target=/dev/vdc"),
    ("qdisk-qcow2", "format=qcow2,vdev=xvdb,access=rw,backendtype=qdisk,target=/srv/dut/dut.qcow2"),
])
def test_xl_disk_spec(mode, expected):
    spec = backends.get(mode).xl_disk("/dev/vdc")
    assert spec == expected
    assert spec.split(",")[-1].startswith("target=")      # target= must come last
    assert "backendtype=" in spec                         # never left to libxl's guess


def test_xenstore_kind():
    assert backends.get("phy").xenstore_kind == "vbd"
    assert backends.get("qdisk-direct").xenstore_kind == "qdisk"


def test_only_qcow2_and_dm_created_modes_prepare_dom0():
    for name, b in backends.BACKENDS.items():
        script = b.dom0_prepare("/dev/vdc", 512)
        assert (script is not None) == (name in ("qdisk-qcow2", "qdisk-direct-threads"))
    assert "truncate -s 1M /run/xdh/dm-anchor.img" in backends.get("qdisk-direct-threads").dom0_prepare("/dev/vdc", 9)
    script = backends.get("qdisk-qcow2").dom0_prepare("/dev/vdc", 512)
    assert "qemu-img create -q -f qcow2 /srv/dut/dut.qcow2 512M" in script
    assert "mkfs.ext4" in script and "blkid" in script    # idempotent across power cuts


def test_direct_threads_is_created_by_the_device_model_with_o_direct_and_threads():
    b = backends.get("qdisk-direct-threads")
    assert b.dm_created and b.o_direct and not b.direct_io_safe
    args = b.device_model_args("/dev/vdc")
    blockdev = args[args.index("-blockdev") + 1].split(",")
    assert {"file.filename=/dev/vdc", "file.cache.direct=on", "file.aio=threads", "file.locking=off",
            "file.driver=host_device"} <= set(blockdev)
    assert args[args.index("-device") + 1].startswith("xen-disk,vdev=xvdb,drive=xdh-xvdb,")
    # libxl itself attaches only the small anchor disk (so that the domain has a device model at all)
    assert b.xl_disk("/dev/vdc") == "format=raw,vdev=xvdc,access=rw,backendtype=qdisk,target=/run/xdh/dm-anchor.img"
    assert backends.get("qdisk").device_model_args("/dev/vdc") == []


def test_o_direct_is_proven_from_the_device_models_fd_flags():
    from harness.stack.backend_check import BackendInfo, problems
    info = BackendInfo("qdisk-direct-threads", "p", "qdisk", "", "1", None, None, "write back", "0",
                       "blkfront: xvdb: x", dm_open_flags=("0140002",))
    assert info.dm_o_direct and problems(backends.get("qdisk-direct-threads"), info) == []
    buffered = BackendInfo(**{**info.__dict__, "dm_open_flags": ("0100002", "0140002")})
    assert not buffered.dm_o_direct
    assert "O_DIRECT" in problems(backends.get("qdisk-direct-threads"), buffered)[0]
    none = BackendInfo(**{**info.__dict__, "dm_open_flags": ()})
    assert not none.dm_o_direct
    no_flush = BackendInfo(**{**info.__dict__, "feature_flush_cache": "0"})
    assert problems(backends.get("qdisk"), no_flush) == ["feature-flush-cache is '0'"]
