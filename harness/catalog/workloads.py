"""Workloads, host side: a declarative registry of what runs in the domU and how it is set
up and verified. The programs themselves are in guests/xdh-workload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import Registry

MOUNT = "/mnt/dut"
DEVICE = "/dev/xvdb"
PROGRAM = "xdh-workload"


@dataclass(frozen=True)
class Ack:
    """One line ``A <id> [latency_us]`` of a workload's output: the op is durable now.
    ``log_bytes``: with a write log, its size on the host when the line arrived; the flush that
    made the op durable had completed by then, so it lies within those bytes (-1: no log)."""

    ident: str           # as printed by the workload: "17", "3:5" (block:version)
    t: float             # host time the line arrived
    latency_us: int = 0
    log_bytes: int = -1

    @classmethod
    def parse(cls, line: str, t: float) -> Ack | None:
        parts = line.split()
        if len(parts) < 2 or parts[0] != "A":
            return None
        lat = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
        return cls(parts[1], t, lat)


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    needs_fs: bool = True
    options: tuple[str, ...] = ()            # campaign options this workload takes (sync, journal)
    fixed: tuple[tuple[str, int], ...] = ()  # parameters it always gets

    def params(self, record_size: int, options: Mapping[str, str]) -> dict[str, Any]:
        """The parameters of ``xdh-workload`` for this workload, from the campaign's options."""
        out: dict[str, Any] = {"record_size": record_size}
        out.update({k: options[k] for k in self.options})
        out.update(dict(self.fixed))
        return out

    def argv(self, mode: str, seed: int, params: Mapping[str, Any]) -> list[str]:
        """``xdh-workload run|verify NAME --seed S ...`` with this workload's parameters."""
        argv = [PROGRAM, mode, self.name, "--seed", str(seed)]
        for key in ("record_size", "block_size", "blocks", "sync", "journal", "device"):
            if key in params and params[key] is not None:
                argv += [f"--{key.replace('_', '-')}", str(params[key])]
        if mode == "run":
            argv += ["--ops", str(params.get("ops", 1 << 30))]
        return argv


WORKLOADS: Registry[Workload] = Registry("workload", (
    Workload("append", "fixed-size checksummed records appended to a file, fsync (or fdatasync) after each",
             options=("sync",)),
    Workload("replace", "new version to a temp file, fsync, rename over the target, fsync the directory"),
    Workload("direct", "O_DIRECT versioned blocks on the raw xvdb + fdatasync: empty flushes", needs_fs=False,
             fixed=(("block_size", 4096), ("blocks", 64))),
    Workload("sqlite", "one-row transactions, journal WAL (synchronous=FULL) or DELETE (synchronous=EXTRA)",
             options=("journal",)),
))


def get(name: str) -> Workload:
    return WORKLOADS.get(name)


def setup_script(fs: str = "ext4") -> str:
    """Fresh filesystem on the disk under test, mounted and made durable before any op."""
    mkfs = ("mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0" if fs == "ext4" else "mkfs.xfs -q -f")
    return f"set -e; {mkfs} {DEVICE}; mkdir -p {MOUNT}; mount {DEVICE} {MOUNT}; sync"
