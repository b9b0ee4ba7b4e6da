"""The cache of built images: find, require, list, clean and build them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .. import paths, releases
from ..components import Components
from ..errors import ImageError
from ..progress import Progress
from ..releases import DEFAULT_RELEASE
from . import devmodel
from .build import build_image, build_lock, try_lock
from .built import BuiltImage, ImagePair
from .debs import inspect_all
from .lock import PackageLock, differences
from .recipe import IMAGE_NAMES, Recipe

CLIENT_KEY = "id_ed25519"


class ImageStore:
    """The image cache: builds, finds, lists and cleans images."""

    def __init__(self, root: Path | None = None):
        self.root = root or paths.cache_dir()
        # resolved: a cache whose parts are symlinks (the integration tests' view) must never
        # record a path through the link as a backing file (a saved machine would outlive it)
        self.images_dir = (self.root / "images").resolve()
        self.keys_dir = (self.root / "keys").resolve()

    # --- client key -----------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        return self.keys_dir / CLIENT_KEY

    def client_pubkey(self, create: bool = False, progress: Progress = print) -> str:
        pub = self.client_key.with_suffix(".pub")
        if not pub.exists():
            if not create:
                raise ImageError("no SSH client key in the image cache", hint="run `xdh images build`")
            # one key per cache, made once: every image's digest includes it
            with build_lock(self.root / ".keys.lock", "the SSH client key", progress):
                if not pub.exists():
                    self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                    self.client_key.unlink(missing_ok=True)     # half made by a killed ssh-keygen
                    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xdh-harness",
                                    "-f", str(self.client_key)], check=True, stdin=subprocess.DEVNULL)
        return pub.read_text().strip()

    # --- lookup ---------------------------------------------------------------------
    def _dir_for(self, name: str, digest: str) -> Path:
        return self.images_dir / f"{name}-{digest}"

    def lock_for(self, name: str, digest: str) -> Path:
        """The lock file held while an image is built (or removed): one per image and digest."""
        return self.images_dir / f".{name}-{digest}.lock"

    @staticmethod
    def _spec(spec: Components | str) -> Components:
        return Components(spec) if isinstance(spec, str) else spec

    def recipe(self, name: str, spec: Components | str = DEFAULT_RELEASE) -> Recipe:
        spec = self._spec(spec)
        return Recipe.load(name, spec.release, inspect_all(spec.paths(name)), spec.packages(name))

    def current(self, name: str, spec: Components | str = DEFAULT_RELEASE) -> BuiltImage | None:
        try:
            pub = self.client_pubkey()
        except ImageError:
            return None
        d = self._dir_for(name, self.recipe(name, spec).digest(pub))
        return BuiltImage.from_dir(d) if (d / "manifest.json").exists() else None

    def require(self, name: str, spec: Components | str = DEFAULT_RELEASE) -> BuiltImage:
        spec = self._spec(spec)
        img = self.current(name, spec)
        if img is None:
            stale = [m for m in sorted(self.images_dir.glob(f"{name}-*/manifest.json"))
                     if BuiltImage.from_dir(m.parent).release == spec.release]
            own = spec.paths(name) or spec.packages(name)
            why = "is out of date (its recipe changed)" if stale and not own else "is not built"
            flags = spec.flags()
            what = name if spec.release == DEFAULT_RELEASE and not own else f"{spec.describe()} {name}"
            hint = f"run `xdh images build{' ' + flags if flags else ''}" + \
                (" --workload MANIFEST` (the manifest that needs these packages)" if spec.packages(name) else "`")
            raise ImageError(f"the {what} image {why} in {self.root}", hint=hint)
        return img

    def pair(self, spec: Components | str = DEFAULT_RELEASE) -> ImagePair:
        """Both current images of these components, or an ImageError naming the fix."""
        return ImagePair(self.require("dom0", spec), self.require("domu", spec))

    def rows(self) -> list[dict]:
        rows = []
        for name in IMAGE_NAMES:
            current = {r: self.current(name, r) for r in releases.RELEASES}
            for m in sorted(self.images_dir.glob(f"{name}-*/manifest.json")):
                img = BuiltImage.from_dir(m.parent)
                cur = current.get(img.release)
                rows.append({"name": name, "release": img.release, "digest": img.digest,
                             "current": bool(cur and cur.digest == img.digest),
                             "debs": [f"{d['package']} {d['version']}" for d in img.debs],
                             "size_mib": round(img.size_bytes() / 2**20), "built_at": img.built_at,
                             "build_seconds": img.build_seconds, "dir": str(img.dir)})
        return rows

    def clean(self, everything: bool = False) -> list[Path]:
        """Remove stale images and images with your own .debs, but for dom0 with a cached device model
        (all images, keys and device models with ``everything``)."""
        removed: list[Path] = []
        if not self.images_dir.exists():
            return removed
        keep = set()
        if not everything:
            specs: list[Components | str] = list(releases.RELEASES)
            # and dom0 with each cached linux-aio device model (qdisk-direct boots it)
            specs += [Components(r, (str(dm.deb),)) for r in releases.RELEASES
                      if (dm := devmodel.cached(releases.get(r), self.root))]
            keep = {img.dir for img in (self.current(n, s) for n in IMAGE_NAMES for s in specs) if img}
        for d in sorted(self.images_dir.iterdir()):
            if not d.is_dir() or d in keep:
                continue
            lock = self.lock_for(*d.name.removeprefix(".build-").rsplit("-", 1)) if "-" in d.name else None
            if lock is None:
                shutil.rmtree(d)
                removed.append(d)
                continue
            with try_lock(lock) as free:
                if not free:    # being built right now (another xdh): neither its work nor its image
                    continue
                shutil.rmtree(d)
                removed.append(d)
                lock.unlink(missing_ok=True)
        if everything:
            for d in (self.keys_dir, devmodel.cache_root(self.root)):   # the key, and the built device models
                if d.exists():
                    shutil.rmtree(d)
                    removed.append(d)
        return removed

    # --- build ----------------------------------------------------------------------
    def build(self, names: tuple[str, ...] = IMAGE_NAMES, force: bool = False,
              progress: Progress = print, spec: Components | str = DEFAULT_RELEASE,
              lock: PackageLock | None = None, lock_path: str = "") -> list[tuple[BuiltImage, bool]]:
        """Build what is missing or stale (for a release, or a release plus your .debs); returns
        (image, was_built) per name. Each build holds its image's lock: another xdh building the
        same image into the same cache is waited for, and its image used. With a package ``lock``,
        an image whose packages differ from it is rebuilt with exactly the locked versions."""
        pub = self.client_pubkey(create=True, progress=progress)
        spec = self._spec(spec)
        if lock is not None and lock.release != spec.release:
            raise ImageError(f"{lock_path or 'the lock'} is for {lock.release}, not {spec.release}",
                             hint=f"pass --release {lock.release}, or a lock of {spec.release}")
        out = []
        for name in names:
            recipe = self.recipe(name, spec)
            digest = recipe.digest(pub)
            final = self._dir_for(name, digest)
            pins = lock.images.get(name) if lock else None
            if lock and pins is None:
                progress(f"{name}: {lock_path} has no {name} packages; built unpinned")
            if _usable(final, pins, force, waited=False):
                progress(f"{name}: up to date ({digest}{', the locked packages' if pins else ''})")
                out.append((BuiltImage.from_dir(final), False))
                continue
            with build_lock(self.lock_for(name, digest), f"image {name} {digest}", progress) as waited:
                # built meanwhile by the process we waited for (with --force too: it is brand new)
                if _usable(final, pins, force, waited):
                    progress(f"{name}: built by another xdh ({digest})" if waited else f"{name}: up to date ({digest})")
                    out.append((BuiltImage.from_dir(final), False))
                    continue
                if pins and (final / "manifest.json").exists() and not force:
                    progress(f"{name}: {digest} holds other package versions than {lock_path}: rebuilding")
                out.append((build_image(recipe, digest, pub, self.images_dir, progress, pins, lock_path), True))
        return out

    def lock(self, spec: Components | str = DEFAULT_RELEASE) -> PackageLock:
        """The packages of both current images, as one lock (``xdh images lock``)."""
        pair = self.pair(spec)
        return PackageLock(self._spec(spec).release, {img.name: img.packages for img in pair})


def _usable(final: Path, pins: dict[str, str] | None, force: bool, waited: bool) -> bool:
    """An image already at ``final`` is what was asked for: built (by us earlier, or by the xdh we
    waited for, even with --force), and holding the locked versions if there is a lock."""
    if not (final / "manifest.json").exists() or (force and not waited):
        return False
    return not pins or not differences(pins, BuiltImage.from_dir(final).packages)
