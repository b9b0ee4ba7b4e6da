"""What runs is checked against what the images hold: the pure comparison, and the check a
cold boot makes with it (``XenStack.boot_guests`` with fake guests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import StackConfig
from harness.errors import LaunchError
from harness.images import BuiltImage, ImagePair
from harness.releases import get
from harness.stack import xen
from harness.stack.boot import ColdBoot
from harness.stack.running import mismatches
from harness.vm.ssh import Result
from tests.unit.test_kernel_file import bzimage


def _img(name: str, kernel: str, extra: dict[str, str] | None = None) -> BuiltImage:
    artifacts = {"kernel": f"vmlinuz-{kernel}", "initrd": f"initrd.img-{kernel}"} | \
        ({"xen": "xen-4.20-amd64"} if name == "dom0" else {})
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


# --- the check at boot: a domU kernel file that is not what runs stops the stack ---------------
class _Guest:
    """A guest's shell that answers the commands ``read_running`` sends (a substring -> stdout)."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def run(self, cmd, timeout: float = 120.0, check: bool = True, stdin: bytes | None = None) -> Result:
        text = cmd if isinstance(cmd, str) else " ".join(cmd)
        out = next((v for k, v in self.answers.items() if k in text), None)
        assert out is not None, f"unexpected command {text!r}"
        return Result(0, out + "\n", "")


class _PastTheCheck(Exception):
    """Raised by the stubbed backend read: the boot got past the running check."""


def _boot_guests(tmp_path, monkeypatch, file_release: str) -> None:
    """A cold boot's guest bring-up (``XenStack.boot_guests``) with your kernel file saying
    ``file_release``, on guests that run the images' components; the domU really runs
    RUNNING's kernel. Everything that would need a VM is stubbed (dom0 and the domU answer
    ``read_running``; ``xl create`` and the backend read are not reached for real)."""
    k = tmp_path / "bzImage"
    k.write_bytes(bzimage(file_release))
    stack = xen.XenStack(StackConfig(domu_kernel=str(k)), tmp_path / "run", PAIR, xen.dut_drive(tmp_path / "dut.img"),
                         ColdBoot())
    stack.info = xen.StackInfo(config={}, accel={}, ssh_port=0)
    dom0 = _Guest({"xl info": RUNNING["xen"], "dpkg-query": RUNNING["device_model"],
                   "uname -r": RUNNING["dom0_kernel"]})
    domu = _Guest({"uname -r": RUNNING["domu_kernel"]})
    monkeypatch.setattr(stack, "_connect_dom0", lambda: dom0)
    monkeypatch.setattr(stack, "_wait_xen_tools", lambda shell: None)
    monkeypatch.setattr(stack, "_wait_shell", lambda connect, what: domu)
    monkeypatch.setattr(xen, "create_domu", lambda *a, **kw: {"dut": "/dev/vdc"})

    def read_backend(*a, **kw):
        raise _PastTheCheck
    monkeypatch.setattr(xen, "read_backend", read_backend)
    stack.boot_guests()


def test_a_kernel_file_that_is_not_what_runs_stops_the_boot(tmp_path, monkeypatch):
    """Positive control of the running check at boot (it was a real boot in
    tests/integration/test_own_kernel.py): the file claims 9.9.9, the domU runs what it is."""
    with pytest.raises(LaunchError) as ei:
        _boot_guests(tmp_path, monkeypatch, "9.9.9-0-amd64")
    assert str(ei.value) == ("the stack does not run what its images hold: domu runs kernel "
                             "'6.12.118+deb13-amd64', not your kernel file's '9.9.9-0-amd64'")


def test_a_kernel_file_that_runs_passes_the_check_at_boot(tmp_path, monkeypatch):
    with pytest.raises(_PastTheCheck):
        _boot_guests(tmp_path, monkeypatch, RUNNING["domu_kernel"])
