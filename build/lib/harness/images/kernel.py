"""Your own domU kernel, straight from a build tree: a PV kernel boots from xl without any package.

``--domu-kernel`` takes ``arch/x86/boot/bzImage`` (or the build tree, or an ELF ``vmlinux``); the
domU then boots it instead of its image's kernel, with no initramfs unless ``--domu-initrd`` gives
one (Debian's would load modules of another kernel). So what the domU needs to reach its root and
network must be built in: ``CONFIG_XEN_BLKDEV_FRONTEND=y``, ``CONFIG_XEN_NETDEV_FRONTEND=y``,
``CONFIG_EXT4_FS=y``. The release string is read from the file, and after boot ``uname -r`` in the
domU must say the same.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

BUILD_TREE_IMAGE = "arch/x86/boot/bzImage"


@dataclass(frozen=True)
class KernelFile:
    path: str
    sha256: str
    release: str        # what ``uname -r`` prints when it runs

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "release": self.release}


def resolve(path: str) -> str:
    """An absolute path to the kernel image (a build tree means its bzImage); "" stays ""."""
    if not path:
        return ""
    p = Path(path).expanduser().resolve()
    return str(p / BUILD_TREE_IMAGE) if p.is_dir() else str(p)


def inspect(path: str) -> KernelFile:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise ConfigError(f"kernel {path} does not exist",
                          hint=f"give a bzImage, a vmlinux or a kernel build tree (with {BUILD_TREE_IMAGE})") from None
    return _inspect(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _inspect(path: str, size: int, mtime_ns: int) -> KernelFile:
    del size, mtime_ns   # cache key only
    data = Path(path).read_bytes()
    rel = release_of(data)
    if not rel:
        raise ConfigError(f"{path} is not a Linux kernel image (no version string found)",
                          hint=f"give {BUILD_TREE_IMAGE} or vmlinux from a kernel build")
    return KernelFile(path, hashlib.sha256(data).hexdigest(), rel)


def release_of(data: bytes) -> str:
    """The kernel release of a bzImage (its setup header's version string) or of an ELF vmlinux
    (its ``Linux version`` banner); "" if neither is found (pure)."""
    if data[0x202:0x206] == b"HdrS" and len(data) > 0x210:
        off = 0x200 + int.from_bytes(data[0x20E:0x210], "little")
        text = data[off:off + 256].split(b"\0", 1)[0].decode("ascii", "replace")
        if text.strip():
            return text.split()[0]
    if data[:4] == b"\x7fELF":
        m = re.search(rb"Linux version (\S+) ", data)
        if m:
            return m.group(1).decode("ascii", "replace")
    return ""


def initrd(path: str) -> dict[str, str]:
    if not path:
        return {}
    if not os.path.isfile(path):
        raise ConfigError(f"initramfs {path} does not exist", hint="give a file, or drop --domu-initrd")
    with open(path, "rb") as f:
        return {"path": path, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
