"""Faults: a declarative registry. Each is a positive control (a lost flush the oracle must
catch) or a real finding to expose.

A fault says in one place what it changes, layer by layer: the outer disk's block graph
(``stack.xen.dut_drive``), dom0's device model (``device_model``), and commands (``steps``) run in dom0
or the domU at named points of the crash run. ``check`` says which backends and workloads it
can be combined with. Your own faults come from a manifest in the same form (``load``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import ConfigError
from . import Registry, manifest
from .backends import Backend
from .workloads import DEVICE, MOUNT, Workload


class Where(StrEnum):
    DOM0 = "dom0"
    DOMU = "domu"


class When(StrEnum):
    BEFORE_MKFS = "before-mkfs"          # the stack is up, the disk under test still blank
    BEFORE_WORKLOAD = "before-workload"  # the filesystem made and mounted, the workload's setup done
    DURING = "during"                    # at a seeded random ack count before the cut


# Replaced in a step's argv (plain text substitution, so shell braces elsewhere are safe)
PLACEHOLDERS = {"{dom0_dut}": "dom0's device of the disk under test (/dev/vdX)", "{domu_dut}": DEVICE,
                "{mount}": MOUNT}


@dataclass(frozen=True)
class Step:
    """A command of a fault: where it runs, when, and its argv (``PLACEHOLDERS`` filled in)."""

    where: Where
    when: When
    argv: tuple[str, ...]

    def filled(self, dom0_dut: str) -> list[str]:
        values = PLACEHOLDERS | {"{dom0_dut}": dom0_dut}     # the one value known only once dom0 runs
        out = []
        for arg in self.argv:
            text = arg
            for key, value in values.items():
                text = text.replace(key, value)
            out.append(text)
        return out


def _domu(script: str) -> tuple[Step, ...]:
    return (Step(Where.DOMU, When.BEFORE_WORKLOAD, ("sh", "-c", script)),)

BLKDEBUG_FLUSH_EIO = """# xdh flush-eio: the first flush that reaches the outer disk fails with EIO
[inject-error]
event = "flush_to_disk"
errno = "5"
once = "on"
iotype = "flush"
"""


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    # the outer machine: the disk under test's block graph
    outer_blkdebug: str | None = None   # blkdebug rules under the format node
    outer_blkdebug_at: When | None = None   # None: from the boot on; DURING: inserted over QMP at the during point
    outer_no_flush: bool = False        # the outer disk acknowledges flushes without doing them
    # dom0
    device_model: str = ""              # qdisk modes: run dom0's device model through this wrapper
    # commands in dom0 and the domU
    steps: tuple[Step, ...] = ()
    needs_fs: bool = False              # a step acts on the workload's filesystem
    manifest: str = ""                  # your own fault: its manifest

    def at(self, when: When) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.when == when)

    def acts_during(self) -> bool:
        """Something happens at the seeded ``during`` point: a step, or the outer filter's insertion."""
        return bool(self.at(When.DURING)) or self.outer_blkdebug_at == When.DURING

    def check(self, backend: Backend, workload: Workload) -> None:
        """Raise ConfigError if this fault cannot act on ``backend`` with ``workload``."""
        if self.needs_fs and not workload.needs_fs:
            raise ConfigError(f"fault {self.name} needs a filesystem workload, and {workload.name} writes the raw "
                              "disk", hint="use --workload append, replace or sqlite")
        if self.outer_blkdebug and backend.on_filesystem:
            raise ConfigError(f"fault {self.name} fails dom0's own filesystem flushes in mode {backend.name}",
                              hint="use --backend qdisk, qdisk-direct or phy")
        if self.device_model and backend.backendtype != "qdisk":
            raise ConfigError(f"fault {self.name} needs a qdisk backend (it replaces dom0's device model)",
                              hint="use a qdisk mode: qdisk, qdisk-direct, qdisk-direct-threads or qdisk-qcow2")


FAULTS: Registry[Fault] = Registry("fault", (
    Fault("none", "no fault: a correct stack, where the oracle must report nothing"),
    Fault("drop-flush", "domU block layer drops PREFLUSH/FUA and completes empty flushes itself "
          "(write_cache = write through), as the 2010 blkfront bug did",
          steps=_domu('echo "write through" > /sys/block/xvdb/queue/write_cache; '
                      'cat /sys/block/xvdb/queue/write_cache')),
    Fault("nobarrier", "ext4 remounted with barrier=0: jbd2 and fsync send no flush",
          steps=_domu(f"mount -o remount,barrier=0 {MOUNT}; grep ' {MOUNT} ' /proc/mounts"), needs_fs=True),
    Fault("flush-eio", "the outer disk fails the first flush with EIO (QEMU blkdebug); Linux 6.1 blkfront "
          "turns a failed empty flush into success and turns flushing off",
          outer_blkdebug=BLKDEBUG_FLUSH_EIO),
    Fault("flush-eio-during", "as flush-eio, once the workload runs: the blkdebug filter is inserted over QMP at "
          "a seeded point before the cut, so mkfs and mount flush normally (a fixed blkfront fails that fsync)",
          outer_blkdebug=BLKDEBUG_FLUSH_EIO, outer_blkdebug_at=When.DURING),
    Fault("disk-lies", "the outer disk acknowledges flushes and does nothing (QEMU cache.no-flush=on on the disk "
          "under test); visible only with --disk-cache volatile", outer_no_flush=True),
    Fault("backend-lies", "qdisk's fdatasync does nothing: dom0's device model runs under eatmydata "
          "(device_model_override); qdisk modes only", device_model="/usr/local/sbin/xdh-qemu-eatmydata"),
))


MANIFEST_KEYS = {"name", "summary", "needs_fs", "outer", "device_model", "step"}


def get(name: str) -> Fault:
    """A built-in fault by name, or your own by the path of its manifest."""
    return load(name) if manifest.is_manifest(name) else FAULTS.get(name)


@functools.lru_cache(maxsize=32)
def load(path_text: str) -> Fault:
    """A fault from its manifest (docs/workloads.md); a ConfigError names any mistake."""
    path, data = manifest.read(path_text, "fault", MANIFEST_KEYS)
    where = f"fault manifest {path}"
    outer = data.get("outer", {})
    if not isinstance(outer, dict) or set(outer) - {"no_flush", "blkdebug"}:
        raise ConfigError(f"{where}: [outer] takes no_flush = true|false and blkdebug = \"rules\"")
    blkdebug = outer.get("blkdebug")
    if blkdebug is not None and not isinstance(blkdebug, str):
        raise ConfigError(f"{where}: [outer] blkdebug must be a string of blkdebug rules")
    dm = data.get("device_model", "")
    if not isinstance(dm, str) or (dm and not dm.startswith("/")):
        raise ConfigError(f"{where}: device_model must be an absolute path in dom0")
    steps = tuple(_step(where, n, s) for n, s in enumerate(data.get("step", [])))
    if not (steps or blkdebug or outer.get("no_flush") or dm):
        raise ConfigError(f"{where}: the fault changes nothing", hint="add [[step]], [outer] or device_model")
    return Fault(data["name"], data.get("summary", ""), outer_blkdebug=blkdebug,
                 outer_no_flush=manifest.flag(where, outer, "no_flush", False), device_model=dm, steps=steps,
                 needs_fs=manifest.flag(where, data, "needs_fs", False), manifest=str(path))


def _step(where: str, n: int, table: Any) -> Step:
    if not isinstance(table, dict) or set(table) - {"where", "when", "run"}:
        raise ConfigError(f"{where}: [[step]] {n + 1} takes where, when and run")
    run = table.get("run")
    if not isinstance(run, list) or not run or not all(isinstance(x, str) for x in run):
        raise ConfigError(f"{where}: [[step]] {n + 1}: run must be an argv list",
                          hint='e.g. run = ["sh", "-c", "echo ... > /sys/..."]')
    return Step(Where(manifest.choice(where, table, "where", tuple(w.value for w in Where))),
                When(manifest.choice(where, table, "when", tuple(w.value for w in When), When.BEFORE_WORKLOAD.value)),
                tuple(run))
