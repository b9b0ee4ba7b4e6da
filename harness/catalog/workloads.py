"""Workloads, host side: what runs in the domU, how it is set up and verified, and which oracle
model judges it. The built-in ones are a registry over guests/xdh-workload; your own come from a
manifest (``load``): a program with the same ``setup``/``run``/``verify`` modes and ack lines
(and, with ``verify_many``, a resident ``verify-many``), copied into the guest at run time.
See docs/workloads.md for the contract."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import Registry, manifest

MOUNT = "/mnt/dut"
DEVICE = "/dev/xvdb"
PROGRAM = "xdh-workload"
GUEST_BIN = "/usr/local/bin"
# Oracle models (harness/verify/oracle.py): what "every acked op survived" means for the ids
MODELS = ("set", "prefix", "register", "blocks")


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

    def to_json(self) -> dict[str, object]:
        """One line of acks.jsonl."""
        return {"id": self.ident, "t": self.t, "latency_us": self.latency_us, "log_bytes": self.log_bytes}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ack:
        return cls(str(d["id"]), float(d["t"]), int(d.get("latency_us", 0)), int(d.get("log_bytes", -1)))


@dataclass(frozen=True)
class Workload:
    """A workload: its program in the guest, its parameters and its oracle ``model``.
    ``source``: a manifest workload's program on the host, copied to ``GUEST_BIN`` before use."""

    name: str
    summary: str
    needs_fs: bool = True
    options: tuple[str, ...] = ()            # campaign options this workload takes (sync, journal)
    fixed: tuple[tuple[str, int], ...] = ()  # parameters it always gets
    model: str = "prefix"
    setup: bool = False                      # the program has a setup mode (run after mkfs, before the fault)
    packages: tuple[str, ...] = ()           # Debian packages the domU image needs for it
    given: tuple[tuple[str, str], ...] = ()  # a manifest's [params]
    source: str = ""                         # manifest workloads: the program file on the host
    manifest: str = ""                       # ... and the manifest itself
    verify_many: bool = False                # its program has a verify-many mode: one process per batch

    @property
    def program(self) -> str:
        return Path(self.source).name if self.source else PROGRAM

    def params(self, record_size: int, options: Mapping[str, str]) -> dict[str, Any]:
        """The program's parameters, from the campaign's options (built-ins) or the manifest."""
        if self.source:
            return dict(self.given)
        out: dict[str, Any] = {"record_size": record_size}
        out.update({k: options[k] for k in self.options})
        out.update(dict(self.fixed))
        return out

    def argv(self, mode: str, seed: int, params: Mapping[str, Any]) -> list[str]:
        """``PROGRAM MODE --seed S ...``: the built-ins take their name after the mode; a manifest
        workload gets ``--dir MOUNT`` (or ``--device DEV``) and one ``--key value`` per parameter."""
        if self.source:
            target = ["--dir", MOUNT] if self.needs_fs else ["--device", str(params.get("device", DEVICE))]
            argv = [self.program, mode, "--seed", str(seed), *target]
            for key, value in self.given:
                argv += [f"--{key.replace('_', '-')}", value]
            return argv
        argv = [PROGRAM, mode, self.name, "--seed", str(seed)]
        for key in ("record_size", "block_size", "blocks", "sync", "journal", "device"):
            if key in params and params[key] is not None:
                argv += [f"--{key.replace('_', '-')}", str(params[key])]
        if mode == "run":
            argv += ["--ops", str(params.get("ops", 1 << 30))]
        return argv

    def describe(self) -> dict[str, Any]:
        """What a run directory records of it (a manifest workload: its files' hashes too)."""
        out: dict[str, Any] = {"name": self.name, "model": self.model, "packages": list(self.packages)}
        if self.source:
            out |= {"manifest": self.manifest, "program": self.source,
                    "program_sha256": manifest.sha256(Path(self.source))}
        return out


WORKLOADS: Registry[Workload] = Registry("workload", (
    Workload("append", "fixed-size checksummed records appended to a file, fsync (or fdatasync) after each",
             options=("sync",)),
    Workload("replace", "new version to a temp file, fsync, rename over the target, fsync the directory",
             model="register"),
    Workload("direct", "O_DIRECT versioned blocks on the raw xvdb + fdatasync: empty flushes", needs_fs=False,
             fixed=(("block_size", 4096), ("blocks", 64)), model="blocks"),
    Workload("sqlite", "one-row transactions, journal WAL (synchronous=FULL) or DELETE (synchronous=EXTRA)",
             options=("journal",)),
))
MANIFEST_KEYS = {"name", "summary", "program", "model", "needs_fs", "setup", "packages", "params", "verify_many"}


def get(name: str) -> Workload:
    """A built-in workload by name, or a manifest workload by the path of its ``.toml``."""
    return load(name) if manifest.is_manifest(name) else WORKLOADS.get(name)


@functools.lru_cache(maxsize=32)
def load(path_text: str) -> Workload:
    """A workload from its manifest (docs/workloads.md); a ConfigError names any mistake."""
    path, data = manifest.read(path_text, "workload", MANIFEST_KEYS)
    where = f"workload manifest {path}"
    prog = manifest.program(where, path, data)
    return Workload(name=data["name"], summary=data.get("summary", ""),
                    needs_fs=manifest.flag(where, data, "needs_fs", True),
                    model=manifest.choice(where, data, "model", MODELS),
                    setup=manifest.flag(where, data, "setup", False),
                    verify_many=manifest.flag(where, data, "verify_many", False),
                    packages=manifest.strings(where, data, "packages", manifest.PACKAGE),
                    given=manifest.params(where, data), source=str(prog), manifest=str(path))


def setup_script(fs: str = "ext4") -> str:
    """Fresh filesystem on the disk under test, mounted and made durable before any op."""
    mkfs = ("mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0" if fs == "ext4" else "mkfs.xfs -q -f")
    return f"set -e; {mkfs} {DEVICE}; mkdir -p {MOUNT}; mount {DEVICE} {MOUNT}; sync"
