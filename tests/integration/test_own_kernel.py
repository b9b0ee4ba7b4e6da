"""A domU kernel file (--domu-kernel), booted for real: the file in dom0 is the one given (by
hash), xl boots it, and the domU runs its release. Booted cold once, then restored from its saved
stack, whose key follows the file's content (tests/unit/test_kernel_file.py), not its path.
(A kernel that is not what its file says stops the stack: tests/unit/test_running.py drives the
same boot check with fake guests.)"""

from __future__ import annotations

import hashlib
import shutil

import pytest

from harness.config import StackConfig
from harness.images import ImageStore, kernel
from harness.stack.xen import make_stack
from harness.stack.xl import DOMU_KERNEL
from tests.helpers import pids_matching

pytestmark = pytest.mark.stack


def _kernel_files(images: ImageStore, tmp_path):
    """The domU image's own kernel and initramfs as files, as a build tree would give them."""
    domu = images.require("domu")
    k, i = tmp_path / "bzImage", tmp_path / "initrd.img"
    shutil.copyfile(domu.artifact("kernel"), k)
    shutil.copyfile(domu.artifact("initrd"), i)
    return k, i


def test_the_domu_boots_the_kernel_file_given(images, saved_stack, tmp_path):
    k, i = _kernel_files(images, tmp_path)
    run = tmp_path / "run"
    cfg = StackConfig(domu_kernel=str(k), domu_initrd=str(i))
    boot, pair, snap = saved_stack(cfg)
    with make_stack(cfg, run, images, boot=boot, images=pair) as stack:
        assert stack.info.snapshot == snap.key
        want = hashlib.sha256(k.read_bytes()).hexdigest()
        assert stack.dom0.run(["sha256sum", DOMU_KERNEL]).stdout.split()[0] == want
        assert stack.info.running["domu_kernel"] == kernel.inspect(str(k)).release
        assert stack.info.versions["domu_kernel_file"]["sha256"] == want
        assert 'ramdisk = "' in (snap.dir / "domu.cfg").read_text()     # written by the cold boot
    assert not pids_matching(str(run))
