"""Image recipes (images/<name>/recipe.toml + overlay/) and the cache of built images.

A built image lives in ``<cache>/images/<name>-<digest>/``: a read-only raw ext4 base
(``rootfs.img``), files extracted from the tree (hypervisor, kernel, initramfs) and a
``manifest.json``. The digest hashes every input of the recipe (recipe, overlay files,
guest programs, the client public key, the builder version), so an image is rebuilt
exactly when one of them changes. Host keys are generated at build and recorded in the
manifest; the harness pins them and never accepts an unknown key.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from . import paths
from .errors import ConfigError, ImageError

LOG = logging.getLogger(__name__)

IMAGE_NAMES = ("dom0", "domu")
# Bump when the build steps in this module change what an image contains.
BUILDER_VERSION = "2"
SUITE = "bookworm"
CLIENT_KEY = "id_ed25519"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """One image recipe, read from images/<name>/recipe.toml."""

    name: str
    description: str
    hostname: str
    root_device: str
    size_mib: int
    packages: tuple[str, ...]
    enable: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    extract: dict[str, str] = field(default_factory=dict)
    install_guests: bool = False
    append: dict[str, str] = field(default_factory=dict)   # path in tree -> text appended after install

    @property
    def recipe_dir(self) -> Path:
        return paths.IMAGES_DIR / self.name

    @classmethod
    def load(cls, name: str) -> Recipe:
        if name not in IMAGE_NAMES:
            raise ConfigError(f"unknown image {name!r}", hint="choose one of: " + ", ".join(IMAGE_NAMES))
        path = paths.IMAGES_DIR / name / "recipe.toml"
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ImageError(f"recipe {path} is missing", hint="run xdh from a checkout of the project") from None
        except tomllib.TOMLDecodeError as exc:
            raise ImageError(f"recipe {path} is not valid TOML: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ImageError(f"recipe {path}: unknown keys {sorted(unknown)}")
        for key in ("packages", "enable", "mask"):
            data[key] = tuple(data.get(key, ()))
        return cls(name=name, **data)

    def inputs(self) -> list[Path]:
        """Every file whose content defines the image, in a stable order."""
        files = sorted(p for p in self.recipe_dir.rglob("*") if p.is_file())
        if self.install_guests:
            files += sorted(p for p in paths.GUESTS_DIR.iterdir() if p.is_file() and not p.name.startswith("."))
        return files

    def digest(self, client_pubkey: str) -> str:
        h = hashlib.sha256()
        h.update(f"builder={BUILDER_VERSION}\nsuite={SUITE}\nkey={client_pubkey.strip()}\n".encode())
        for p in self.inputs():
            rel = p.relative_to(paths.PROJECT_ROOT)
            h.update(f"{rel}\0{os.stat(p).st_mode & 0o111}\0".encode())
            h.update(p.read_bytes())
            h.update(b"\0")
        return h.hexdigest()[:16]


@dataclass
class BuiltImage:
    """What manifest.json of a built image says."""

    name: str
    digest: str
    dir: Path
    host_key: str
    artifacts: dict[str, str]
    packages: dict[str, str]
    build_seconds: float
    built_at: str
    root_device: str

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs.img"

    def artifact(self, key: str) -> Path:
        return self.dir / self.artifacts[key]

    def size_bytes(self) -> int:
        return sum(p.stat().st_blocks * 512 for p in self.dir.iterdir() if p.is_file())

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["dir"] = str(self.dir)
        return d

    @classmethod
    def from_dir(cls, d: Path) -> BuiltImage:
        data = json.loads((d / "manifest.json").read_text())
        data["dir"] = d
        return cls(**data)


class ImagePair(NamedTuple):
    """The two images one stack boots, pinned for a whole campaign (a rebuild meanwhile changes nothing)."""

    dom0: BuiltImage
    domu: BuiltImage


def _run(argv: list[str], log: TextIO, what: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
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


def apt_sources() -> list[str]:
    """The host's own apt sources, handed to mmdebstrap (XDH_APT_SOURCES overrides)."""
    env = os.environ.get("XDH_APT_SOURCES")
    if env:
        return env.split(",")
    found = [str(p) for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists() and any(ln.strip() and not ln.lstrip().startswith("#")
                               for ln in legacy.read_text().splitlines()):
        found.append(str(legacy))
    if not found:
        raise ImageError("no apt sources found on this host", hint="set XDH_APT_SOURCES to a sources file")
    return found


class ImageStore:
    """The image cache: builds, finds, lists and cleans images."""

    def __init__(self, root: Path | None = None):
        self.root = root or paths.cache_dir()
        self.images_dir = self.root / "images"
        self.keys_dir = self.root / "keys"

    # --- client key -----------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        return self.keys_dir / CLIENT_KEY

    def client_pubkey(self, create: bool = False) -> str:
        pub = self.client_key.with_suffix(".pub")
        if not pub.exists():
            if not create:
                raise ImageError("no SSH client key in the image cache", hint="run `xdh images build`")
            self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xdh-harness",
                            "-f", str(self.client_key)], check=True, stdin=subprocess.DEVNULL)
        return pub.read_text().strip()

    # --- lookup ---------------------------------------------------------------------
    def _dir_for(self, name: str, digest: str) -> Path:
        return self.images_dir / f"{name}-{digest}"

    def current(self, name: str) -> BuiltImage | None:
        try:
            pub = self.client_pubkey()
        except ImageError:
            return None
        d = self._dir_for(name, Recipe.load(name).digest(pub))
        return BuiltImage.from_dir(d) if (d / "manifest.json").exists() else None

    def require(self, name: str) -> BuiltImage:
        img = self.current(name)
        if img is None:
            stale = sorted(self.images_dir.glob(f"{name}-*/manifest.json"))
            why = "is out of date (its recipe changed)" if stale else "is not built"
            raise ImageError(f"the {name} image {why} in {self.root}", hint="run `xdh images build`")
        return img

    def pair(self) -> ImagePair:
        """Both current images, or an ImageError naming the fix."""
        return ImagePair(self.require("dom0"), self.require("domu"))

    def rows(self) -> list[dict]:
        rows = []
        for name in IMAGE_NAMES:
            cur = self.current(name)
            for m in sorted(self.images_dir.glob(f"{name}-*/manifest.json")):
                img = BuiltImage.from_dir(m.parent)
                rows.append({"name": name, "digest": img.digest, "current": bool(cur and cur.digest == img.digest),
                             "size_mib": round(img.size_bytes() / 2**20), "built_at": img.built_at,
                             "build_seconds": img.build_seconds, "dir": str(img.dir)})
        return rows

    def clean(self, everything: bool = False) -> list[Path]:
        """Remove stale images (all images and keys with ``everything``)."""
        removed: list[Path] = []
        if not self.images_dir.exists():
            return removed
        keep = set()
        if not everything:
            keep = {img.dir for img in (self.current(n) for n in IMAGE_NAMES) if img}
        for d in sorted(self.images_dir.iterdir()):
            if d.is_dir() and d not in keep:
                shutil.rmtree(d)
                removed.append(d)
        if everything and self.keys_dir.exists():
            shutil.rmtree(self.keys_dir)
            removed.append(self.keys_dir)
        return removed

    # --- build ----------------------------------------------------------------------
    def build(self, names: tuple[str, ...] = IMAGE_NAMES, force: bool = False,
              progress: Progress = print) -> list[tuple[BuiltImage, bool]]:
        """Build what is missing or stale; returns (image, was_built) per name."""
        pub = self.client_pubkey(create=True)
        out = []
        for name in names:
            recipe = Recipe.load(name)
            digest = recipe.digest(pub)
            final = self._dir_for(name, digest)
            if (final / "manifest.json").exists() and not force:
                progress(f"{name}: up to date ({digest})")
                out.append((BuiltImage.from_dir(final), False))
                continue
            out.append((self._build_one(recipe, digest, pub, progress), True))
        return out

    def _build_one(self, recipe: Recipe, digest: str, pub: str, progress: Progress) -> BuiltImage:
        name = recipe.name
        t0 = time.monotonic()
        work = self.images_dir / f".build-{name}-{digest}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        tree = work / "tree"
        log_path = work / "build.log"
        progress(f"{name}: building {digest} ({len(recipe.packages)} packages; log {log_path})")
        with open(log_path, "w") as log:
            self._mmdebstrap(recipe, tree, log, progress, t0)
            progress(f"{name}: customizing tree ({time.monotonic() - t0:.0f} s)")
            host_key = self._customize(recipe, tree, pub, log)
            packages = _package_versions(tree)
            artifacts = _extract(recipe, tree, work)
            progress(f"{name}: making ext4 image, {recipe.size_mib} MiB ({time.monotonic() - t0:.0f} s)")
            img = work / "rootfs.img"
            with open(img, "wb") as f:
                f.truncate(recipe.size_mib * 2**20)
            _run(["mkfs.ext4", "-q", "-F", "-L", f"xdh-{name}", "-d", str(tree), str(img)], log, "mkfs.ext4")
            img.chmod(0o444)
        shutil.rmtree(tree)
        built = BuiltImage(name=name, digest=digest, dir=self._dir_for(name, digest), host_key=host_key,
                           artifacts=artifacts, packages=packages,
                           build_seconds=round(time.monotonic() - t0, 1),
                           built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           root_device=recipe.root_device)
        (work / "manifest.json").write_text(json.dumps(built.to_json() | {"dir": None}, indent=2) + "\n")
        if built.dir.exists():
            shutil.rmtree(built.dir)
        work.rename(built.dir)
        progress(f"{name}: built in {built.build_seconds:.0f} s")
        return built

    def _mmdebstrap(self, recipe: Recipe, tree: Path, log: TextIO, progress: Progress, t0: float) -> None:
        argv = ["mmdebstrap", "--mode=root", "--variant=minbase", "--components=main",
                "--include=" + ",".join(recipe.packages),
                "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                # the overlay goes in before any package, so the kernel's initramfs is built
                # with our initramfs-tools settings; it is copied again after install
                f"--setup-hook=sync-in {recipe.recipe_dir / 'overlay'} /",
                SUITE, str(tree), *apt_sources()]
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ImageError("mmdebstrap is not installed", hint="apt-get install mmdebstrap") from None
        try:
            last = time.monotonic()
            while proc.poll() is None:
                time.sleep(1)
                if time.monotonic() - last >= 15:
                    last = time.monotonic()
                    progress(f"{recipe.name}: mmdebstrap running ({last - t0:.0f} s)")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise ImageError(f"mmdebstrap for {recipe.name} failed (exit {proc.returncode})", hint=f"see {log.name}")

    def _customize(self, recipe: Recipe, tree: Path, pub: str, log: TextIO) -> str:
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
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"xdh-{recipe.name}-host", "-f", str(keyfile)],
             log, "ssh-keygen")
        ssh_dir = tree / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(pub + "\n")
        (ssh_dir / "authorized_keys").chmod(0o600)
        if recipe.enable:
            _run(["systemctl", f"--root={tree}", "enable", *recipe.enable], log, "systemctl enable")
        if recipe.mask:
            _run(["systemctl", f"--root={tree}", "mask", *recipe.mask], log, "systemctl mask")
        machine_id = tree / "etc/machine-id"
        machine_id.write_text("")  # each boot gets its own
        pubtext = keyfile.with_suffix(".pub").read_text().split()
        return f"{pubtext[0]} {pubtext[1]}"


def _package_versions(tree: Path) -> dict[str, str]:
    out = subprocess.run(["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "-W", "-f", "${Package}\t${Version}\n"],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def _extract(recipe: Recipe, tree: Path, work: Path) -> dict[str, str]:
    """Copy the recipe's ``extract`` files (kernel, initrd, hypervisor) out of the tree, gunzipped."""
    artifacts = {}
    for key, pattern in recipe.extract.items():
        matches = sorted(glob.glob(str(tree / pattern)))
        if not matches:
            raise ImageError(f"{recipe.name}: {pattern} not found in the built tree")
        src = Path(matches[-1])
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
