"""The device model for the exact O_DIRECT qdisk (``qdisk-direct``): Debian's ``qemu-system-xen``
with its binary rebuilt from Debian's own qemu source package, linux-aio on.

Why: libxl's ``direct-io-safe`` makes QEMU's xen-block open the disk with ``aio=native``, and every
Debian build of the Xen flavour lacks linux-aio (``--without-default-features``), so the stock
package fails that disk (research-releases-qdisk-direct.md). The rules file has a hook for exactly
this: ``QEMU_XEN_CONFIGURE_OPTIONS``. We build only the Xen flavour (``debian/rules b/xen/built``)
in a throwaway buildd chroot of the release, then repack the release's own qemu-system-xen .deb
with that binary (version ``+xdhaio1``, ``Depends`` plus libaio). Built once per release, cached;
it goes into dom0 like any of your own .debs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .. import paths, releases
from ..errors import ImageError
from ..progress import Progress
from ..releases import Release
from .build import apt_sources, run_logged, run_watched
from .debs import inspect

SUFFIX = "+xdhaio1"
BINARY = "usr/libexec/xen-qemu-system-i386"
SCRIPT = paths.IMAGES_DIR / "devmodel" / "build.sh"


@dataclass(frozen=True)
class DeviceModel:
    """A built (cached) aio device model package."""

    deb: Path
    version: str
    source_version: str
    build_seconds: float

    @classmethod
    def load(cls, d: Path) -> DeviceModel | None:
        try:
            data = json.loads((d / "devmodel.json").read_text())
        except (OSError, ValueError):
            return None
        deb = d / data["deb"]
        return cls(deb, data["version"], data["source_version"], data["build_seconds"]) if deb.exists() else None


def cache_root(root: Path | None = None) -> Path:
    """Where built device models are cached (one directory per release and build script)."""
    return ((root or paths.cache_dir()) / "devmodel").resolve()


def cache_dir(release: Release, root: Path | None = None) -> Path:
    return cache_root(root) / f"{release.name}-{_script_digest()}"


def _script_digest() -> str:
    return hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:12]


def cached(release: Release, root: Path | None = None) -> DeviceModel | None:
    return DeviceModel.load(cache_dir(release, root))


def with_source_lines(text: str) -> str:
    """Apt sources that also give source packages: deb822 ``Types: deb`` gains ``deb-src``; each
    one-line ``deb`` entry gets a ``deb-src`` twin."""
    if re.search(r"^Types:", text, re.M):
        return re.sub(r"^Types:\s*deb\s*$", "Types: deb deb-src", text, flags=re.M)
    out = []
    for line in text.splitlines():
        out.append(line)
        if line.startswith("deb "):
            out.append("deb-src " + line[4:])
    return "\n".join(out) + "\n"


def build(release: Release, progress: Progress, root: Path | None = None, force: bool = False) -> DeviceModel:
    """The release's aio device model: cached, or built now (minutes: one QEMU target on this machine)."""
    final = cache_dir(release, root)
    have = None if force else DeviceModel.load(final)
    if have:
        progress(f"device model: up to date ({have.deb})")
        return have
    t0 = time.monotonic()
    work = final.with_name(f".build-{final.name}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    sources = []
    for n, src in enumerate(apt_sources(release, work)):
        dst = work / f"src-{n}{Path(src).suffix or '.list'}"
        dst.write_text(with_source_lines(Path(src).read_text()))
        sources.append(str(dst))
    log_path = work / "build.log"
    progress(f"device model: building qemu's Xen flavour for {release.name} with linux-aio (log {log_path})")
    with open(log_path, "w") as log:
        run_watched(["mmdebstrap", "--mode=root", "--variant=buildd", "--components=main",
                     "--include=ca-certificates", f"--customize-hook=copy-in {SCRIPT} /",
                     '--customize-hook=chroot "$1" sh /build.sh',
                     f"--customize-hook=sync-out /out {work / 'out'}",
                     release.name, "/dev/null", *sources], log, "device model build", progress, t0)
        deb = _repack(work / "out", work, log)
    version = _field(deb, "Version")
    (work / "devmodel.json").write_text(json.dumps({
        "schema": 1, "deb": deb.name, "version": version,
        "source_version": (work / "out/source-version").read_text().strip(),
        "configure": "QEMU_XEN_CONFIGURE_OPTIONS=--enable-linux-aio",
        "build_seconds": round(time.monotonic() - t0, 1)}, indent=2) + "\n")
    shutil.rmtree(work / "out")
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    built = DeviceModel.load(final)
    assert built is not None
    progress(f"device model: built {built.version} in {built.build_seconds:.0f} s: {built.deb}")
    return built


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def _repack(out: Path, work: Path, log: TextIO) -> Path:
    """The release's qemu-system-xen .deb with the rebuilt binary, a version that says so, libaio in Depends."""
    orig = next(out.glob("qemu-system-xen_*.deb"), None)
    binary = out / "xen-qemu-system-i386"
    if orig is None or not binary.exists():
        raise ImageError("the device model build produced no binary", hint=f"see {log.name}")
    needed = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
    if "libaio.so" not in needed:
        raise ImageError("the rebuilt device model does not link libaio", hint=f"see {log.name}")
    tree = work / "pkg"
    run_logged(["dpkg-deb", "-R", str(orig), str(tree)], log, "unpack qemu-system-xen")
    shutil.copyfile(binary, tree / BINARY)
    run_logged(["strip", "--strip-unneeded", str(tree / BINARY)], log, "strip")
    (tree / BINARY).chmod(0o755)
    control = (tree / "DEBIAN/control").read_text()
    libaio = (out / "libaio-package").read_text().strip()
    control = re.sub(r"^Version: (.*)$", lambda m: f"Version: {m.group(1)}{SUFFIX}", control, flags=re.M)
    control = re.sub(r"^Depends: (.*)$", lambda m: f"Depends: {m.group(1)}, {libaio}", control, flags=re.M)
    control = control.rstrip("\n") + "\n .\n Rebuilt by xdh with QEMU_XEN_CONFIGURE_OPTIONS=--enable-linux-aio.\n"
    (tree / "DEBIAN/control").write_text(control)
    sums = []
    for f in sorted(p for p in tree.rglob("*") if p.is_file() and "DEBIAN" not in p.relative_to(tree).parts):
        sums.append(f"{hashlib.md5(f.read_bytes()).hexdigest()}  {f.relative_to(tree)}\n")   # dpkg md5sums format
    (tree / "DEBIAN/md5sums").write_text("".join(sums))
    version = re.search(r"^Version: (.*)$", control, re.M).group(1)   # type: ignore[union-attr]
    deb = work / f"qemu-system-xen_{version.split(':')[-1]}_amd64.deb"
    run_logged(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], log, "pack qemu-system-xen")
    shutil.rmtree(tree)
    return deb


def dom0_debs(direct_io_safe: bool, release_name: str, given: tuple[str, ...],
              root: Path | None = None) -> tuple[str, ...]:
    """dom0's .debs for a backend and release: a ``direct-io-safe`` disk needs the release's aio
    device model, the cached one unless you give your own qemu-system-xen. A device model added
    before (a recorded run's, maybe of another release) is dropped first, so this can be applied
    to any stack again (``stack.inputs.completed``)."""
    own = tuple(p for p in given if not Path(p).is_relative_to(cache_root(root)))
    if not direct_io_safe or any(inspect(p).package == "qemu-system-xen" for p in own):
        return own
    return (*own, str(require(release_name, root).deb))


def require(release_name: str, root: Path | None = None) -> DeviceModel:
    """The cached aio device model of a release, or an ImageError naming the command that builds it."""
    rel = releases.get(release_name)
    have = cached(rel, root)
    if have is None:
        flag = "" if rel.name == releases.DEFAULT_RELEASE else f" --release {rel.name}"
        raise ImageError(f"qdisk-direct needs dom0's device model built with linux-aio, and none is cached "
                         f"for {rel.name}", hint=f"run `xdh images devmodel{flag}` once (about 6 minutes on 2 cores)")
    return have
