"""Every qemu-img and host-side disk operation, and the QEMU version (asked once per process)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import InfraError

LOG = logging.getLogger(__name__)

QEMU_BINARY = "qemu-system-x86_64"


@functools.cache
def qemu_version(binary: str = QEMU_BINARY) -> str:
    """Asked once per process: every boot records it and every snapshot key includes it."""
    if shutil.which(binary) is None:
        return "?"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "?"


def _qemu_img(argv: list[str], what: str) -> None:
    proc = subprocess.run(["qemu-img", *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InfraError(f"qemu-img {what} failed: {proc.stderr.strip()}")


def make_overlay(base: Path, overlay: Path, base_fmt: str | None = None) -> None:
    """A throwaway qcow2 overlay over a base that is never written (raw unless it ends in .qcow2)."""
    overlay.unlink(missing_ok=True)
    fmt = base_fmt or ("qcow2" if base.suffix == ".qcow2" else "raw")
    _qemu_img(["create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(base), str(overlay)], f"create {overlay.name}")


def make_dut(path: Path, size_mib: int) -> Path:
    """A fresh, sparse, raw disk under test."""
    with open(path, "wb") as f:
        f.truncate(size_mib * 2**20)
    return path


def make_standalone(image: Path) -> None:
    """A kept qcow2 crash image must not depend on the snapshot cache: pull the backing data in."""
    if image.suffix != ".qcow2":
        return
    try:
        _qemu_img(["rebase", "-q", "-f", "qcow2", "-b", "", str(image)], f"rebase {image.name}")
    except InfraError as exc:
        LOG.warning("could not make %s standalone: %s", image, exc)


def copy_raw(base: Path, out: Path) -> None:
    """A sparse raw copy of ``base`` (converted if it is qcow2)."""
    if base.suffix == ".qcow2":
        _qemu_img(["convert", "-q", "-O", "raw", str(base), str(out)], f"convert {base.name}")
    else:
        subprocess.run(["cp", "--sparse=always", str(base), str(out)], check=True)


def is_blank(path: Path) -> bool:
    """A raw file holding no data at all (sparse zeros): a disk under test as a run starts from it."""
    with open(path, "rb") as f:
        try:
            os.lseek(f.fileno(), 0, os.SEEK_DATA)
        except OSError:
            return True      # ENXIO: no data anywhere
    return False
