"""Workloads, host side: a declarative registry of what runs in the domU and how it is set
up and verified. The programs themselves are in guests/xdh-workload."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

MOUNT = "/mnt/dut"
DEVICE = "/dev/xvdb"
PROGRAM = "xdh-workload"


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    needs_fs: bool = True

    def argv(self, mode: str, seed: int, params: dict) -> list[str]:
        """``xdh-workload run|verify NAME --seed S ...`` with this workload's parameters."""
        argv = [PROGRAM, mode, self.name, "--seed", str(seed)]
        for key in ("record_size", "block_size", "blocks", "sync", "journal", "device"):
            if key in params and params[key] is not None:
                argv += [f"--{key.replace('_', '-')}", str(params[key])]
        if mode == "run":
            argv += ["--ops", str(params.get("ops", 1 << 30))]
        return argv


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("append", "fixed-size checksummed records appended to a file, fsync (or fdatasync) after each"),
    Workload("replace", "new version to a temp file, fsync, rename over the target, fsync the directory"),
    Workload("direct", "O_DIRECT versioned blocks on the raw xvdb + fdatasync: empty flushes", needs_fs=False),
    Workload("sqlite", "one-row transactions, journal WAL (synchronous=FULL) or DELETE (synchronous=EXTRA)"),
)}


def get(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ConfigError(f"unknown workload {name!r}", hint="choose one of: " + ", ".join(WORKLOADS)) from None


def setup_script(fs: str = "ext4") -> str:
    """Fresh filesystem on the disk under test, mounted and made durable before any op."""
    mkfs = ("mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0" if fs == "ext4" else "mkfs.xfs -q -f")
    return f"set -e; {mkfs} {DEVICE}; mkdir -p {MOUNT}; mount {DEVICE} {MOUNT}; sync"
