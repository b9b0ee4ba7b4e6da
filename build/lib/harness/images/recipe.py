"""Image recipes: images/<name>/recipe.toml + overlay/, filled in for one Debian release, and
the digest of everything that defines the image."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths, releases
from ..errors import ConfigError, ImageError
from ..releases import DEFAULT_RELEASE, Release
from .debs import LocalDeb

IMAGE_NAMES = ("dom0", "domu")
# Bump when the build steps change what an image contains.
BUILDER_VERSION = "2"


@dataclass(frozen=True)
class Recipe:
    """One image recipe, read from images/<name>/recipe.toml."""

    name: str
    release: Release
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
    debs: tuple[LocalDeb, ...] = ()    # your own packages, installed with the recipe's (``debs.py``)
    extra: tuple[str, ...] = ()        # Debian packages a workload needs, installed with the recipe's

    @property
    def recipe_dir(self) -> Path:
        return paths.IMAGES_DIR / self.name

    @classmethod
    def load(cls, name: str, release: str = DEFAULT_RELEASE, debs: tuple[LocalDeb, ...] = (),
             extra: tuple[str, ...] = ()) -> Recipe:
        if name not in IMAGE_NAMES:
            raise ConfigError(f"unknown image {name!r}", hint="choose one of: " + ", ".join(IMAGE_NAMES))
        path = paths.IMAGES_DIR / name / "recipe.toml"
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ImageError(f"recipe {path} is missing", hint="reinstall xdh (its data files travel with the wheel), "
                             "or run it from a checkout of the project") from None
        except tomllib.TOMLDecodeError as exc:
            raise ImageError(f"recipe {path} is not valid TOML: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)} - {"debs", "release", "name", "extra"}
        unknown = set(data) - known
        if unknown:
            raise ImageError(f"recipe {path}: unknown keys {sorted(unknown)}")
        rel = releases.get(release)
        for key in ("packages", "enable", "mask"):
            data[key] = tuple(rel.fill(x) for x in data.get(key, ()))
        data["extract"] = {k: rel.fill(v) for k, v in data.get("extract", {}).items()}
        data["packages"] += tuple(p for p in sorted(set(extra)) if p not in data["packages"])
        return cls(name=name, release=rel, debs=debs, extra=tuple(sorted(set(extra))), **data)

    def inputs(self) -> list[Path]:
        """Every file whose content defines the image, in a stable order."""
        files = sorted(p for p in self.recipe_dir.rglob("*") if p.is_file())
        if self.install_guests:
            files += sorted(p for p in paths.GUESTS_DIR.iterdir() if p.is_file() and not p.name.startswith("."))
        return files

    def digest(self, client_pubkey: str) -> str:
        h = hashlib.sha256()
        h.update(f"builder={BUILDER_VERSION}\nsuite={self.release.name}\nkey={client_pubkey.strip()}\n".encode())
        for p in self.inputs():
            rel = p.relative_to(paths.PROJECT_ROOT)
            h.update(f"{rel}\0{os.stat(p).st_mode & 0o111}\0".encode())
            h.update(p.read_bytes())
            h.update(b"\0")
        for pkg in self.extra:   # a workload's packages: another image, built once, cached by this digest
            h.update(f"pkg={pkg}\n".encode())
        for deb in self.debs:   # by content: a rebuilt package is a new image, wherever the file lies
            h.update(f"deb={deb.package}\0{deb.sha256}\n".encode())
        return h.hexdigest()[:16]
