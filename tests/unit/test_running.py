"""What runs is checked against what the images hold (pure part)."""

from __future__ import annotations

from pathlib import Path

from harness.images import BuiltImage, ImagePair
from harness.releases import get
from harness.stack.running import mismatches


def _img(name: str, kernel: str, extra: dict[str, str] | None = None) -> BuiltImage:
    artifacts = {"kernel": f"vmlinuz-{kernel}"} | ({"xen": "xen-4.20-amd64"} if name == "dom0" else {})
    return BuiltImage(name, "d", Path("/x"), "ssh-ed25519 AAAA", artifacts,
                      {f"linux-image-{kernel}": "1", **(extra or {})}, 1.0, "now", "/dev/vda", "trixie")


PAIR = ImagePair(_img("dom0", "6.12.118+deb13-amd64", {"qemu-system-xen": "1:10.0.13+ds-0+deb13u1"}),
                 _img("domu", "6.12.118+deb13-amd64"))
RUNNING = {"dom0_kernel": "6.12.118+deb13-amd64", "domu_kernel": "6.12.118+deb13-amd64", "xen": "4.20.5-pre",
           "device_model": "1:10.0.13+ds-0+deb13u1"}


def test_a_stack_that_runs_its_images_passes():
    assert mismatches(RUNNING, PAIR, get("trixie")) == []


def test_every_other_component_is_named():
    other = {"dom0_kernel": "6.1.0-28-amd64", "domu_kernel": "7.0.0-custom", "xen": "4.17.5",
             "device_model": "1:7.2+dfsg-7"}
    found = mismatches(other, PAIR, get("trixie"))
    assert len(found) == 4
    assert "dom0 runs kernel '6.1.0-28-amd64'" in found[0] and "domu runs kernel '7.0.0-custom'" in found[1]
    assert "not Xen 4.20" in found[2] and "qemu-system-xen" in found[3]


def test_the_booted_kernel_must_be_the_extracted_one_not_merely_installed():
    """An image with your kernel beside Debian's: running Debian's is a mismatch."""
    own = _img("domu", "6.12.95+deb12-amd64", {"linux-image-6.1.0-41-amd64": "6.1.158-1"})
    found = mismatches(RUNNING | {"domu_kernel": "6.1.0-41-amd64"}, PAIR._replace(domu=own), get("trixie"))
    assert found == ["domu runs kernel '6.1.0-41-amd64', not its image's '6.12.95+deb12-amd64'"]
    assert mismatches(RUNNING | {"domu_kernel": "6.12.95+deb12-amd64"}, PAIR._replace(domu=own),
                      get("trixie")) == []


def test_with_your_kernel_file_the_domu_must_run_that_release():
    found = mismatches(RUNNING, PAIR, get("trixie"), domu_kernel="6.13.0-rc1-mine")
    assert found == ["domu runs kernel '6.12.118+deb13-amd64', not your kernel file's '6.13.0-rc1-mine'"]
    assert mismatches(RUNNING | {"domu_kernel": "6.13.0-rc1-mine"}, PAIR, get("trixie"), "6.13.0-rc1-mine") == []
