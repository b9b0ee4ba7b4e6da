"""Your own components: local .deb files installed into an image at build time (a kernel from
``make bindeb-pkg``, a rebuilt ``qemu-system-xen``, a Xen build).

A .deb is known by its content hash (it goes into the image digest, so a rebuilt package means a
rebuilt image) and by what its control file says (package, version: recorded in ``config.json``).
The files it ships under ``/boot`` decide which kernel or hypervisor the image boots.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ROLES = ("dom0", "domu")


@dataclass(frozen=True)
class LocalDeb:
    """One local .deb, inspected."""

    path: str          # absolute
    sha256: str
    package: str
    version: str
    architecture: str
    boot_files: tuple[str, ...] = ()   # what it ships under /boot, relative to the root ("boot/vmlinuz-...")

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "package": self.package, "version": self.version,
                "architecture": self.architecture}

    def describe(self) -> str:
        return f"{self.package} {self.version} ({Path(self.path).name})"


def inspect(path: str) -> LocalDeb:
    """The .deb at ``path``, or a ConfigError naming the fix (missing file, not a .deb, wrong architecture)."""
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError:
        raise ConfigError(f"package file {path} does not exist", hint="give the path of a .deb file") from None
    if not p.is_file():
        raise ConfigError(f"package file {path} is not a file", hint="give the path of a .deb file")
    return _inspect(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _inspect(path: str, size: int, mtime_ns: int) -> LocalDeb:
    del size, mtime_ns   # cache key only: a rewritten file is inspected again
    fields = _dpkg_deb(["-f", path, "Package", "Version", "Architecture"], path)
    info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    if "Package" not in info or "Version" not in info:
        raise ConfigError(f"{path} has no Package or Version field", hint="build it with dpkg-deb or make bindeb-pkg")
    arch = info.get("Architecture", "")
    if arch not in ("amd64", "all"):
        raise ConfigError(f"{path} is for architecture {arch!r}; the guests are amd64", hint="build it for amd64")
    listing = _dpkg_deb(["--fsys-tarfile", path], path, listing=True)
    boot = tuple(sorted(n for n in listing if n.startswith("boot/") and not n.endswith("/")))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return LocalDeb(path, h.hexdigest(), info["Package"], info["Version"], arch, boot)


def _dpkg_deb(args: list[str], path: str, listing: bool = False) -> Any:
    """dpkg-deb's output; for ``listing``, the member names of its data archive (no leading ./)."""
    try:
        if listing:
            tar = subprocess.Popen(["dpkg-deb", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            out = subprocess.run(["tar", "-t"], stdin=tar.stdout, capture_output=True, text=True, check=False)
            assert tar.stdout is not None
            tar.stdout.close()
            ok = tar.wait() == 0 and out.returncode == 0
            names = [n[2:] if n.startswith("./") else n for n in out.stdout.splitlines()]
            if ok:
                return names
        else:
            res = subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=False)
            if res.returncode == 0:
                return res.stdout
    except FileNotFoundError:
        raise ConfigError("dpkg-deb is not installed", hint="apt-get install dpkg") from None
    raise ConfigError(f"{path} is not a readable .deb package", hint="give a file built by dpkg-deb")


def inspect_all(paths: tuple[str, ...]) -> tuple[LocalDeb, ...]:
    debs = tuple(inspect(p) for p in paths)
    seen: dict[str, str] = {}
    for d in debs:
        if d.package in seen:
            raise ConfigError(f"two files for package {d.package}: {seen[d.package]} and {d.path}",
                              hint="give each package once")
        seen[d.package] = d.path
    return debs


def absolute(paths: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(os.path.abspath(os.path.expanduser(p)) for p in paths)
