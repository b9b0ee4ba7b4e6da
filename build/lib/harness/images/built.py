"""A built image, as its manifest.json describes it, and the pair one stack boots."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..releases import DEFAULT_RELEASE


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
    release: str = DEFAULT_RELEASE
    debs: list[dict] = field(default_factory=list)   # your own .debs installed (LocalDeb.to_json)

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs.img"

    @property
    def kernel_release(self) -> str:
        """What ``uname -r`` must say in the guest booted from this image (the extracted kernel's)."""
        return self.artifacts.get("kernel", "").removeprefix("vmlinuz-")

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
