"""Which images a stack boots: a Debian release, plus your own .debs for each guest. A plain
value (the files are inspected by ``images.debs``), shared by the config and the image store."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .releases import DEFAULT_RELEASE


@dataclass(frozen=True)
class Components:
    """A release and the local .debs installed on top of it (absolute paths), per image."""

    release: str = DEFAULT_RELEASE
    dom0_debs: tuple[str, ...] = ()
    domu_debs: tuple[str, ...] = ()
    domu_packages: tuple[str, ...] = ()   # Debian packages a workload needs in the domU (its manifest)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Components:
        return cls(d["release"], *(tuple(d.get(k, ())) for k in ("dom0_debs", "domu_debs", "domu_packages")))

    def paths(self, image: str) -> tuple[str, ...]:
        return self.dom0_debs if image == "dom0" else self.domu_debs

    def packages(self, image: str) -> tuple[str, ...]:
        return self.domu_packages if image == "domu" else ()

    @property
    def stock(self) -> bool:
        return not (self.dom0_debs or self.domu_debs or self.domu_packages)

    def flags(self) -> str:
        """The command-line options that select these components (for hints)."""
        out = [] if self.release == DEFAULT_RELEASE else ["--release", self.release]
        for p in self.dom0_debs:
            out += ["--dom0-deb", p]
        for p in self.domu_debs:
            out += ["--domu-deb", p]
        return shlex.join(out)

    def describe(self) -> str:
        """``bookworm``, or ``bookworm + domu:linux-image-6.12...deb``: for people."""
        own = [f"{image}:{Path(p).name}" for image in ("dom0", "domu") for p in self.paths(image)]
        own += [f"domu:{p}" for p in self.domu_packages]
        return " + ".join([self.release, *own])
