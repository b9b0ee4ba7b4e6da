"""A domU kernel file (--domu-kernel), booted for real: the file in dom0 is the one given (by
hash), xl boots it, and a kernel that is not what the file says stops the stack."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from harness.config import StackConfig
from harness.errors import LaunchError
from harness.images import ImageStore, kernel
from harness.stack.xen import make_stack
from harness.stack.xl import DOMU_KERNEL
from tests.helpers import pids_matching

pytestmark = pytest.mark.stack


def _kernel_files(images: ImageStore, tmp_path, fake_release: str = ""):
    """The domU image's own kernel and initramfs as files, as a build tree would give them; with
    ``fake_release``, the bzImage's version string says another release (same length; it is only
    read, never executed, so the kernel still boots)."""
    domu = images.require("domu")
    k, i = tmp_path / "bzImage", tmp_path / "initrd.img"
    shutil.copyfile(domu.artifact("kernel"), k)
    shutil.copyfile(domu.artifact("initrd"), i)
    if fake_release:
        real = kernel.inspect(str(k)).release
        assert len(fake_release) == len(real)
        data = k.read_bytes()
        k.write_bytes(data.replace(real.encode() + b" (", fake_release.encode() + b" (", 1))
        kernel._inspect.cache_clear()
        assert kernel.inspect(str(k)).release == fake_release
    return k, i


def test_the_domu_boots_the_kernel_file_given(images, tmp_path):
    k, i = _kernel_files(images, tmp_path)
    run = tmp_path / "run"
    cfg = StackConfig(domu_kernel=str(k), domu_initrd=str(i))
    with make_stack(cfg, run, images) as stack:
        want = hashlib.sha256(k.read_bytes()).hexdigest()
        assert stack.dom0.run(["sha256sum", DOMU_KERNEL]).stdout.split()[0] == want
        assert stack.info.running["domu_kernel"] == kernel.inspect(str(k)).release
        assert stack.info.versions["domu_kernel_file"]["sha256"] == want
        assert 'ramdisk = "' in (run / "domu.cfg").read_text()
    assert not pids_matching(str(run))


def test_a_kernel_that_is_not_what_its_file_says_stops_the_stack(images, tmp_path):
    """Positive control of the running check: the file claims 9.9.9, the domU runs what it is."""
    real = kernel.inspect(str(images.require("domu").artifact("kernel"))).release
    fake = "9.9.9" + real[5:]
    k, i = _kernel_files(images, tmp_path, fake)
    run = tmp_path / "run"
    with pytest.raises(LaunchError) as ei, make_stack(StackConfig(domu_kernel=str(k), domu_initrd=str(i)),
                                                      run, images):
        pass
    assert f"domu runs kernel '{real}', not your kernel file's '{fake}'" in str(ei.value)
    assert not pids_matching(str(run))
