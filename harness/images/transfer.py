"""Moving built images between machines: one build per pipeline, the same bytes on every runner.

``export`` writes one tar file: ``xdh-export.json`` (each image's digest and every file's
SHA-256), the images' directories, and the cache's SSH client key pair. The key travels because
an image trusts exactly the key it was built with (its digest includes the public key): an
importing cache without a key takes it, a cache with another key is refused (its own images
trust that one). The bundle therefore logs into the images: keep it where the images are kept,
as a pipeline's artifact. ``import_`` checks every file's hash before an image is moved into the
cache, and says whether each image is the one this checkout would build (current) or not.
Saved stacks are not moved: they are keyed by the machine that saved them, and a runner saves
its own once (about one boot).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ImageError
from ..jsonio import read_json, utc_stamp, write_json
from ..progress import Progress
from .build import build_lock
from .built import BuiltImage
from .store import ImageStore

INDEX = "xdh-export.json"


@dataclass(frozen=True)
class ExportedImage:
    name: str
    release: str
    digest: str
    files: dict[str, str]      # file name -> sha256

    @property
    def dir_name(self) -> str:
        return f"{self.name}-{self.digest}"


@dataclass(frozen=True)
class Bundle:
    """What an export holds, as its index says."""

    client_pubkey: str
    images: tuple[ExportedImage, ...]
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"created_at": self.created_at, "client_pubkey": self.client_pubkey,
                "images": [vars(i) for i in self.images]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Bundle:
        return cls(client_pubkey=d["client_pubkey"], created_at=d.get("created_at", ""),
                   images=tuple(ExportedImage(**i) for i in d["images"]))


def _hashes(d: Path) -> dict[str, str]:
    """SHA-256 of every file of an image directory (as debs.py hashes a .deb: streamed)."""
    out = {}
    for p in sorted(q for q in d.iterdir() if q.is_file()):
        with open(p, "rb") as f:
            out[p.name] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _tar(argv: list[str], what: str, hint: str = "") -> None:
    try:
        proc = subprocess.run(["tar", *argv], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageError("tar is not installed", hint="apt-get install tar") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
        raise ImageError(f"{what}: {why}", hint=hint)


def export(store: ImageStore, images: list[BuiltImage], out: Path, progress: Progress) -> Bundle:
    """Write ``images`` and the client key pair to the tar file ``out`` (sparse files kept sparse)."""
    pub = store.client_pubkey()
    progress(f"hashing {len(images)} image(s)")
    bundle = Bundle(client_pubkey=pub, created_at=utc_stamp(),
                    images=tuple(ExportedImage(i.name, i.release, i.digest, _hashes(i.dir)) for i in images))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".xdh-export-") as tmp:
        write_json(Path(tmp) / INDEX, bundle.to_json())
        key = store.client_key      # resolved paths (a cache may be a view of symlinks): keys/, images/
        progress(f"writing {out}")
        _tar(["--sparse", "-cf", str(out), "-C", tmp, INDEX,
              "-C", str(store.keys_dir.parent), f"keys/{key.name}", f"keys/{key.name}.pub",
              "-C", str(store.images_dir.parent), *(f"images/{i.dir_name}" for i in bundle.images)],
             f"export to {out}")
    return bundle


@dataclass(frozen=True)
class Imported:
    image: BuiltImage
    status: str        # "imported" or "present" (already in this cache)
    current: bool      # the image this checkout builds for its release


def _read_index(bundle_file: Path, tmp: Path) -> Bundle:
    _tar(["-xf", str(bundle_file), "-C", str(tmp), INDEX], f"{bundle_file} is not an xdh image export",
         hint="pass a file written by `xdh images export`")
    try:
        return Bundle.from_json(read_json(tmp / INDEX))
    except (KeyError, TypeError):
        raise ConfigError(f"{bundle_file} is not an xdh image export",
                          hint="write one with `xdh images export`") from None


def _take_key(store: ImageStore, unpacked: Path, bundle: Bundle, progress: Progress) -> None:
    """The bundle's client key becomes this cache's (or already is); another key is refused."""
    with build_lock(store.root / ".keys.lock", "the SSH client key", progress):
        pub = store.client_key.with_suffix(".pub")
        if pub.exists():
            if pub.read_text().strip() != bundle.client_pubkey.strip():
                raise ImageError(f"the image cache {store.root} has its own SSH client key, which the exported "
                                 "images do not trust",
                                 hint="import into a fresh cache (XDH_CACHE=DIR), or `xdh images clean --all` first")
            return
        store.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        src = unpacked / "keys" / store.client_key.name
        if src.with_suffix(".pub").read_text().strip() != bundle.client_pubkey.strip():
            raise ImageError("the export's client key does not match its index", hint="export again")
        shutil.copyfile(src, store.client_key)
        store.client_key.chmod(0o600)
        shutil.copyfile(src.with_suffix(".pub"), pub)
        progress(f"client key: taken from the export ({store.keys_dir})")


def import_(store: ImageStore, bundle_file: Path, progress: Progress) -> list[Imported]:
    """Check and move the exported images into this cache (taking its client key if it has none)."""
    if not bundle_file.is_file():
        raise ConfigError(f"{bundle_file} does not exist", hint="pass a file written by `xdh images export`")
    store.images_dir.mkdir(parents=True, exist_ok=True)
    out: list[Imported] = []
    with tempfile.TemporaryDirectory(dir=store.images_dir, prefix=".import-") as tmp_s:
        tmp = Path(tmp_s)
        bundle = _read_index(bundle_file, tmp)
        progress(f"unpacking {bundle_file} ({len(bundle.images)} image(s), exported {bundle.created_at})")
        _tar(["--sparse", "-xf", str(bundle_file), "-C", str(tmp)], f"unpacking {bundle_file}")
        for img in bundle.images:
            got = _hashes(tmp / "images" / img.dir_name)
            bad = sorted(n for n in set(img.files) | set(got) if img.files.get(n) != got.get(n))
            if bad:
                raise ImageError(f"{img.dir_name} in {bundle_file} is damaged: {', '.join(bad)} differ from the "
                                 "export's hashes", hint="copy the file again, or export again")
        _take_key(store, tmp, bundle, progress)
        for img in bundle.images:
            final = store.images_dir / img.dir_name
            with build_lock(store.lock_for(img.name, img.digest), f"image {img.name} {img.digest}", progress):
                status = "present"
                if not (final / "manifest.json").exists():
                    (tmp / "images" / img.dir_name).rename(final)
                    status = "imported"
                elif _hashes(final) != img.files:
                    raise ImageError(f"{final} holds another build of {img.dir_name} (other bytes, the same digest)",
                                     hint="remove it (`xdh images clean --all`) and import again")
            built = BuiltImage.from_dir(final)
            cur = store.current(img.name, img.release)
            out.append(Imported(built, status, bool(cur and cur.digest == img.digest)))
    return out
