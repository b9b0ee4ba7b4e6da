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
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError


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
    info = _control(path)
    if "Package" not in info or "Version" not in info:
        raise ConfigError(f"{path} has no Package or Version field", hint="build it with dpkg-deb or make bindeb-pkg")
    arch = info.get("Architecture", "")
    if arch not in ("amd64", "all"):
        raise ConfigError(f"{path} is for architecture {arch!r}; the guests are amd64", hint="build it for amd64")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return LocalDeb(path, digest, info["Package"], info["Version"], arch, _boot_files(path))


def _not_a_deb(path: str) -> ConfigError:
    return ConfigError(f"{path} is not a readable .deb package", hint="give a file built by dpkg-deb")


def _dpkg_deb(args: list[str], **kw: Any) -> Any:
    try:
        return subprocess.Popen(["dpkg-deb", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kw)
    except FileNotFoundError:
        raise ConfigError("dpkg-deb is not installed", hint="apt-get install dpkg") from None


def _control(path: str) -> dict[str, str]:
    """The package's control fields that identify it."""
    with _dpkg_deb(["-f", path, "Package", "Version", "Architecture"], text=True) as proc:
        out = proc.stdout.read()
    if proc.returncode != 0:
        raise _not_a_deb(path)
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def _boot_files(path: str) -> tuple[str, ...]:
    """The files the package ships under /boot (read from its data archive as a stream)."""
    members: list[tuple[str, bool]] = []
    with _dpkg_deb(["--fsys-tarfile", path]) as proc:
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                members = [(m.name.removeprefix("./"), m.isfile()) for m in tar]
        except tarfile.TarError:
            pass
    if proc.returncode != 0 or not members:
        raise _not_a_deb(path)
    return tuple(sorted(name for name, is_file in members if is_file and name.startswith("boot/")))


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
