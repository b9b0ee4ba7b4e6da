"""Your own files for a stack, apart from its config (a value that reads no file): the .debs
and the domU kernel checked before anything boots, and the device model a backend needs on its
release added to dom0's .debs."""

from __future__ import annotations

import dataclasses

from ..catalog import backends
from ..config import StackConfig, TortureConfig
from ..images import debs, devmodel, kernel


def check(stack: StackConfig) -> None:
    """The config's values, then each file: every .deb exists and is one, the kernel file is a
    bzImage, the initrd a file (a ConfigError naming the fix, before anything is launched)."""
    stack.validate()
    for image in ("dom0", "domu"):
        debs.inspect_all(stack.components().paths(image))
    if stack.domu_kernel:
        kernel.inspect(stack.domu_kernel)
        kernel.initrd(stack.domu_initrd)


def check_torture(cfg: TortureConfig) -> None:
    """A campaign's config and its stack's files."""
    cfg.validate()
    check(cfg.stack)


def completed(stack: StackConfig) -> StackConfig:
    """This stack with what its backend needs on its release: qdisk-direct's linux-aio device
    model in dom0 (``images/devmodel.py``; an ImageError naming the command if none is built)."""
    dom0 = devmodel.dom0_debs(backends.get(stack.backend).direct_io_safe, stack.release, stack.dom0_debs)
    return dataclasses.replace(stack, dom0_debs=dom0)
