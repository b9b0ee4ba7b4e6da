"""Package locks: the exact Debian package versions an image was built from, so that every runner
of a nightly builds the same bytes (or says which version its release no longer serves).

A built image writes ``packages.lock`` beside its manifest; ``xdh images lock`` joins both images
of a release into one file to commit; ``xdh images build --lock FILE`` builds with apt pinned to
exactly those versions and fails, naming each package, if what got installed differs. The lock is
not part of the image digest (the digest says what the recipe asks for; the lock, what the
release served): an image already at its digest is rebuilt when its packages differ from the lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ImageError
from ..jsonio import read_json, write_json

LOCK_FILE = "packages.lock"


@dataclass(frozen=True)
class PackageLock:
    """Package -> version for each image of one release."""

    release: str
    images: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "images": {n: dict(sorted(p.items())) for n, p in sorted(self.images.items())}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PackageLock:
        return cls(release=str(d["release"]), images={str(n): {str(k): str(v) for k, v in p.items()}
                                                       for n, p in d["images"].items()})

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> PackageLock:
        data = read_json(path)
        try:
            return cls.from_json(data)
        except (KeyError, AttributeError, TypeError):
            raise ConfigError(f"{path} is not a package lock",
                              hint="write one with `xdh images lock -o FILE`") from None


def preferences(pins: dict[str, str]) -> str:
    """apt_preferences(5) pinning each package to its version (1001: even a downgrade)."""
    return "".join(f"Package: {p}\nPin: version {v}\nPin-Priority: 1001\n\n" for p, v in sorted(pins.items()))


def differences(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    """Each way ``installed`` differs from the lock, one phrase per package."""
    out = [f"{p} {v} (installed {installed[p]}: the release no longer serves {v})"
           for p, v in sorted(pins.items()) if p in installed and installed[p] != v]
    out += [f"{p} {v} (not installed)" for p, v in sorted(pins.items()) if p not in installed]
    out += [f"{p} {v} (installed, not in the lock)" for p, v in sorted(installed.items()) if p not in pins]
    return out


def check(name: str, pins: dict[str, str], installed: dict[str, str], lock_path: str) -> None:
    """Raise naming the packages whose installed version is not the locked one."""
    diff = differences(pins, installed)
    if diff:
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise ImageError(f"{name}: not the locked packages: {'; '.join(diff[:3])}{more}",
                         hint=f"the release moved on since {lock_path} was written: write a new one with "
                              "`xdh images lock -o FILE` after `xdh images build`")
