"""Building an image: mmdebstrap from Debian packages only, the tree customized from Python (no
shell hooks), host keys generated and recorded, kernel/initrd/hypervisor extracted, an ext4 base."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .. import paths, releases
from ..errors import ImageError
from ..jsonio import utc_stamp
from ..progress import Progress
from ..releases import Release
from . import lock
from .built import BuiltImage
from .lock import LOCK_FILE, PackageLock
from .recipe import Recipe

LOG = logging.getLogger(__name__)


def _open_locked(path: Path, blocking: bool) -> tuple[int, bool] | None:
    """An open descriptor of ``path`` holding its flock, and whether it had to wait (None: held
    elsewhere and not ``blocking``). The file may be unlinked by whoever holds it (``clean``): a
    lock taken on a file no longer at ``path`` is dropped and taken again on the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking:
                    os.close(fd)
                    return None
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd, waited
        os.close(fd)


def lock_holder(path: Path) -> str:
    """`` (pid N)`` of the process holding the build lock ``path``, as it wrote it ("" if unknown)."""
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def build_lock(path: Path, what: str, progress: Progress) -> Iterator[bool]:
    """Hold the lock file ``path`` (fcntl.flock) while building ``what``, so that two xdh processes
    sharing a cache (pytest-xdist workers, CI jobs) never build into, or remove, each other's
    work. Another holder is waited for, saying so. Yields whether it waited: the caller then
    checks again whether the thing got built meanwhile. Released when the process dies."""
    got = _open_locked(path, blocking=False)
    if got is None:
        progress(f"waiting for another xdh building {what}{lock_holder(path)}")
        got = _open_locked(path, blocking=True)
        assert got is not None
        got = (got[0], True)
    fd, waited = got
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield waited
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """The lock ``path`` if it is free now (True), without waiting; False if another process holds it.
    ``path`` exists while held: a holder may remove it (the next taker makes a new one)."""
    got = _open_locked(path, blocking=False)
    try:
        yield got is not None
    finally:
        if got is not None:
            os.close(got[0])


def run_logged(argv: list[str], log: TextIO, what: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a build step, output to the build log; one-line error naming the log on failure."""
    LOG.debug("run %s", argv)
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    try:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False, **kw)
    except FileNotFoundError:
        raise ImageError(f"{what}: {argv[0]} is not installed",
                         hint="run scripts/setup.sh or apt-get install it") from None
    if proc.returncode != 0:
        raise ImageError(f"{what} failed (exit {proc.returncode})", hint=f"see {log.name}")
    return proc


def apt_sources(release: Release | None = None, work: Path | None = None) -> list[str]:
    """The host's own apt sources, handed to mmdebstrap (XDH_APT_SOURCES overrides); for another
    release than the host's, rewritten copies in ``work`` (see ``releases.rewrite_sources``)."""
    env = os.environ.get("XDH_APT_SOURCES")
    if env:
        return env.split(",")
    found = _host_sources()
    if release is None or release.name == releases.HOST_RELEASE or work is None:
        return found
    out = []
    for n, src in enumerate(found):
        dst = work / f"apt-{release.name}-{n}{Path(src).suffix or '.list'}"
        dst.write_text(releases.rewrite_sources(Path(src).read_text(), release))
        out.append(str(dst))
    return out


def _host_sources() -> list[str]:
    found = [str(p) for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists() and any(ln.strip() and not ln.lstrip().startswith("#")
                               for ln in legacy.read_text().splitlines()):
        found.append(str(legacy))
    if not found:
        raise ImageError("no apt sources found on this host", hint="set XDH_APT_SOURCES to a sources file")
    return found


def build_image(recipe: Recipe, digest: str, pub: str, images_dir: Path, progress: Progress,
                pins: dict[str, str] | None = None, lock_path: str = "") -> BuiltImage:
    """Build one image into ``images_dir/<name>-<digest>/`` (atomically: a work directory renamed at the
    end); with ``pins`` (a package lock's), apt installs exactly those versions or the build fails."""
    name = recipe.name
    t0 = time.monotonic()
    work = images_dir / f".build-{name}-{digest}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    tree = work / "tree"
    log_path = work / "build.log"
    own = f" + {', '.join(d.describe() for d in recipe.debs)}" if recipe.debs else ""
    progress(f"{name}: building {digest} for {recipe.release.name}{own} ({len(recipe.packages)} packages; "
             f"log {log_path})")
    with open(log_path, "w") as log:
        _mmdebstrap(recipe, tree, log, progress, t0, work, pins or {})
        progress(f"{name}: customizing tree ({time.monotonic() - t0:.0f} s)")
        host_key = _customize(recipe, tree, pub, log)
        packages = _package_versions(tree)
        if pins:
            lock.check(name, pins, packages, lock_path)
            (tree / "etc/apt/preferences.d/xdh-lock.pref").unlink()     # the guest's own apt stays free
        artifacts = _extract(recipe, tree, work)
        _check_debs_installed(recipe, packages)
        progress(f"{name}: making ext4 image, {recipe.size_mib} MiB ({time.monotonic() - t0:.0f} s)")
        img = work / "rootfs.img"
        with open(img, "wb") as f:
            f.truncate(recipe.size_mib * 2**20)
        run_logged(["mkfs.ext4", "-q", "-F", "-L", f"xdh-{name}", "-d", str(tree), str(img)], log, "mkfs.ext4")
        img.chmod(0o444)
    shutil.rmtree(tree)
    built = BuiltImage(name=name, digest=digest, dir=images_dir / f"{name}-{digest}", host_key=host_key,
                       artifacts=artifacts, packages=packages,
                       build_seconds=round(time.monotonic() - t0, 1),
                       built_at=utc_stamp(),
                       root_device=recipe.root_device, release=recipe.release.name,
                       debs=[d.to_json() for d in recipe.debs])
    (work / "manifest.json").write_text(json.dumps(built.to_json() | {"dir": None}, indent=2) + "\n")
    PackageLock(recipe.release.name, {name: packages}).write(work / LOCK_FILE)
    if built.dir.exists():
        shutil.rmtree(built.dir)
    work.rename(built.dir)
    progress(f"{name}: built in {built.build_seconds:.0f} s")
    return built

def _mmdebstrap(recipe: Recipe, tree: Path, log: TextIO, progress: Progress, t0: float,
                work: Path, pins: dict[str, str]) -> None:
    pinned = work / "lock"
    if pins:    # apt reads the chroot's preferences for every step, the essential set's too
        pref = pinned / "etc/apt/preferences.d/xdh-lock.pref"
        pref.parent.mkdir(parents=True)
        pref.write_text(lock.preferences(pins))
    argv = ["mmdebstrap", "--mode=root", "--variant=minbase", "--components=main",
            "--include=" + ",".join(recipe.packages),
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            # the overlay goes in before any package, so the kernel's initramfs is built
            # with our initramfs-tools settings; it is copied again after install
            f"--setup-hook=sync-in {recipe.recipe_dir / 'overlay'} /",
            *([f"--setup-hook=sync-in {pinned} /"] if pins else []),
            # local .debs: one --include each (a path is never split), made visible inside the chroot
            *(["--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount"] if recipe.debs else []),
            *(f"--include={d.path}" for d in recipe.debs),
            recipe.release.name, str(tree), *apt_sources(recipe.release, work)]
    run_watched(argv, log, f"mmdebstrap for {recipe.name}", progress, t0)


def run_watched(argv: list[str], log: TextIO, what: str, progress: Progress, t0: float) -> None:
    """A long build step, output to the build log, a progress line every 15 s; killed if we are."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    try:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} is not installed", hint=f"apt-get install {argv[0]}") from None
    try:
        last = time.monotonic()
        while proc.poll() is None:
            time.sleep(1)
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                progress(f"{what}: running ({last - t0:.0f} s)")
    finally:
        if proc.poll() is None:   # interrupted: mmdebstrap unmounts and removes its chroot on SIGTERM
            _stop_group(proc)
    if proc.returncode != 0:
        raise ImageError(f"{what} failed (exit {proc.returncode})", hint=f"see {log.name}")

def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _customize(recipe: Recipe, tree: Path, pub: str, log: TextIO) -> str:
    """Configure the tree from Python (no shell hooks); returns the pinned host key."""
    (tree / "etc/hostname").write_text(recipe.hostname + "\n")
    (tree / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {recipe.hostname}\n")
    (tree / "etc/fstab").write_text(f"{recipe.root_device} / ext4 defaults,errors=remount-ro 0 1\n")
    shutil.copytree(recipe.recipe_dir / "overlay", tree, dirs_exist_ok=True, symlinks=True)
    for rel, text in recipe.append.items():   # settings in package conffiles
        with open(tree / rel, "a") as f:
            f.write(text)
    if recipe.install_guests:
        for p in sorted(paths.GUESTS_DIR.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                dst = tree / "usr/local/bin" / p.name
                shutil.copyfile(p, dst)
                dst.chmod(0o755)
    for old in (tree / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    keyfile = tree / "etc/ssh/ssh_host_ed25519_key"
    run_logged(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"xdh-{recipe.name}-host", "-f", str(keyfile)],
         log, "ssh-keygen")
    ssh_dir = tree / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pub + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    if recipe.enable:
        run_logged(["systemctl", f"--root={tree}", "enable", *recipe.enable], log, "systemctl enable")
    if recipe.mask:
        run_logged(["systemctl", f"--root={tree}", "mask", *recipe.mask], log, "systemctl mask")
    machine_id = tree / "etc/machine-id"
    machine_id.write_text("")  # each boot gets its own
    pubtext = keyfile.with_suffix(".pub").read_text().split()
    return f"{pubtext[0]} {pubtext[1]}"


def _package_versions(tree: Path) -> dict[str, str]:
    out = subprocess.run(["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "-W", "-f", "${Package}\t${Version}\n"],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def _check_debs_installed(recipe: Recipe, packages: dict[str, str]) -> None:
    for deb in recipe.debs:
        if packages.get(deb.package) != deb.version:
            raise ImageError(f"{recipe.name}: {deb.describe()} is not what got installed "
                             f"({deb.package} {packages.get(deb.package, 'missing')})",
                             hint="a package of the release replaced it; give a higher version")


def pick(matches: list[str], tree: Path, own: set[str]) -> str:
    """Of the files matching an ``extract`` pattern, the one to boot: the newest that one of your
    own .debs ships (a kernel from ``make bindeb-pkg`` beside Debian's), else the last by name."""
    mine = [m for m in matches if str(Path(m).relative_to(tree)) in own]
    return sorted(mine or matches)[-1]


def _kernel_files(recipe: Recipe) -> set[str]:
    """What your own .debs ship under /boot; an initrd is generated for each kernel they ship."""
    own = {f for d in recipe.debs for f in d.boot_files}
    own |= {f.replace("boot/vmlinuz-", "boot/initrd.img-") for f in own if f.startswith("boot/vmlinuz-")}
    return own


def _extract(recipe: Recipe, tree: Path, work: Path) -> dict[str, str]:
    """Copy the recipe's ``extract`` files (kernel, initrd, hypervisor) out of the tree, gunzipped."""
    artifacts = {}
    own = _kernel_files(recipe)
    for key, pattern in recipe.extract.items():
        matches = glob.glob(str(tree / pattern))
        if not matches:
            raise ImageError(f"{recipe.name}: {pattern} not found in the built tree")
        src = Path(pick(matches, tree, own))
        if src.suffix == ".gz":
            dst = work / src.name[:-3]
            with gzip.open(src) as fi, open(dst, "wb") as fo:
                shutil.copyfileobj(fi, fo)
        else:
            dst = work / src.name
            shutil.copyfile(src, dst)
        dst.chmod(0o444)
        artifacts[key] = dst.name
    return artifacts
