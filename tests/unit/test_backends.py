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


def test_only_qcow2_mode_prepares_dom0():
    for name, b in backends.BACKENDS.items():
        script = b.dom0_prepare("/dev/vdc", 512)
        assert (script is not None) == (name == "qdisk-qcow2")
    script = backends.get("qdisk-qcow2").dom0_prepare("/dev/vdc", 512)
    assert "qemu-img create -q -f qcow2 /srv/dut/dut.qcow2 512M" in script
    assert "mkfs.ext4" in script and "blkid" in script    # idempotent across power cuts
