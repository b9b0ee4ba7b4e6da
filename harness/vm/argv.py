"""The outer QEMU's command line, as a pure function of a ``MachineSpec`` (golden-tested).

The argv is a list and never goes through a shell; each disk is a ``-blockdev`` graph built
bottom-up (file -> optional blkdebug -> format -> optional blklogwrites) so that a fault or the
disk-cache model is a node in the graph, not a flag on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .accel import AccelChoice
from .disks import QEMU_BINARY


def quote_optarg(value: str) -> str:
    """QEMU option values escape a comma by doubling it."""
    return value.replace(",", ",,")


def backing_child(graph: dict[str, Any], node: str) -> str | None:
    """The node name of ``node``'s backing child in ``x-debug-query-block-graph``'s reply (None:
    it has none)."""
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    parent = next((i for i, name in names.items() if name == node), None)
    return next((names[e["child"]] for e in graph["edges"] if e["parent"] == parent and e["name"] == "backing"), None)


@dataclass(frozen=True)
class Drive:
    """One outer disk: a host file seen by dom0 as a virtio disk with a stable serial."""

    node: str            # name of the node the device uses, also the virtio serial (/dev/disk/by-id/virtio-<node>)
    path: Path
    fmt: str = "qcow2"   # "qcow2" or "raw"
    readonly: bool = False
    blkdebug: Path | None = None   # blkdebug rules file: a fault-injecting filter under the format node
    write_log: Path | None = None  # record every write and flush here (blklogwrites, dm-log-writes format)
    no_flush: bool = False         # the disk acknowledges flushes without doing them (cache.no-flush=on)
    later_blkdebug: Path | None = None   # blkdebug rules inserted under the format node while it runs

    @property
    def format_node(self) -> str:
        return f"{self.node}-fmt" if self.write_log is not None else self.node

    @property
    def format_child(self) -> str:
        """The node under the format node as ``args`` builds it: the boot-time blkdebug, or the file."""
        return f"{self.node}-dbg" if self.blkdebug is not None else f"{self.node}-file"

    @property
    def later_node(self) -> str:
        """The node name of ``later_blkdebug``'s filter once inserted."""
        return f"{self.node}-dbg-later"

    def insert_blkdebug(self, backing: str | None = None) -> list[tuple[str, dict[str, object]]]:
        """The QMP commands that put ``later_blkdebug``'s filter between the format node and its
        file child of a running machine: a new blkdebug node over the child, then the format node
        reopened onto it with the options ``args`` gave it, so nothing else changes. A reopen
        resets what it does not name: a qcow2 overlay's ``backing`` (the node QEMU opened from
        the image's header, ``backing_child``) must be named."""
        assert self.later_blkdebug is not None
        options: dict[str, object] = {"driver": self.fmt, "node-name": self.format_node, "file": self.later_node,
                                      "read-only": self.readonly}
        if backing is not None:
            options["backing"] = backing
        return [("blockdev-add", {"driver": "blkdebug", "node-name": self.later_node,
                                  "config": str(self.later_blkdebug), "image": self.format_child}),
                ("blockdev-reopen", {"options": [options]})]

    def args(self) -> list[str]:
        logged = self.write_log is not None
        # QEMU flushes a node's children whatever the node's own cache.no-flush (bdrv_co_flush):
        # without a log, only the file node's flag stops the host's fdatasync
        file_no_flush = "on" if self.no_flush and not logged else "off"
        file_node = f"file,node-name={self.node}-file,filename={quote_optarg(str(self.path))}"
        args = ["-blockdev", "driver=" + file_node + f",cache.direct=off,cache.no-flush={file_no_flush}"]
        if self.blkdebug is not None:
            args += ["-blockdev", f"driver=blkdebug,node-name={self.format_child},"
                                  f"config={quote_optarg(str(self.blkdebug))},image={self.node}-file"]
        fmt_name = self.format_node
        fmt_node = (f"driver={self.fmt},node-name={fmt_name},file={self.format_child},"
                    f"read-only={'on' if self.readonly else 'off'}")
        args += ["-blockdev", fmt_node]
        if logged:
            # above the format node, so the log holds guest-visible offsets of the disk
            args += ["-blockdev", f"driver=file,node-name={self.node}-log,"
                                  f"filename={quote_optarg(str(self.write_log))},cache.no-flush=off",
                     "-blockdev", f"driver=blklogwrites,node-name={self.node},file={fmt_name},"
                                  f"log={self.node}-log,log-sector-size=512,log-append=off"
                                  + (",cache.no-flush=on" if self.no_flush else "")]
        return [*args, "-device", f"virtio-blk-pci,drive={self.node},serial={self.node}"]


@dataclass
class MachineSpec:
    """Everything that defines an outer QEMU's command line.

    ``kernel``/``append``/``initrds`` are Xen and its multiboot modules for the nested stack,
    or a Linux kernel and its one initramfs for the fast verifier: QEMU takes both the same way.
    """

    accel: AccelChoice
    kernel: Path
    append: str
    initrds: list[tuple[Path, str]]      # multiboot modules (path, command line), or one initramfs
    drives: list[Drive]
    ssh_port: int
    memory_mib: int = 3072
    smp: int = 2
    binary: str = QEMU_BINARY
    name: str = "xdh-l0"
    net_options: str = ""                # extra -netdev user options, e.g. net=/host= for a static guest
    guest_ssh: str = ""                  # guest address of the SSH forward ("": slirp's default guest)
    scsi_hotplug: bool = False           # a virtio-scsi bus to hot-plug disks into (the fast verifier)
    incoming_fd: int | None = None       # restore a saved state from this inherited fd (snapshot reset)
    extra: list[str] = field(default_factory=list)


def build_argv(spec: MachineSpec, qmp_socket: Path, serial_log: Path) -> list[str]:
    """The full argv, as a list; never goes through a shell."""
    initrd = ",".join(quote_optarg(f"{p} {cmd}".strip()) for p, cmd in spec.initrds)
    argv = [spec.binary, "-name", spec.name, "-nodefaults", "-display", "none", "-no-reboot",
            *spec.accel.qemu_args(),
            "-m", str(spec.memory_mib), "-smp", str(spec.smp),
            "-chardev", f"socket,id=qmp,path={quote_optarg(str(qmp_socket))}",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"file,id=serial0,path={quote_optarg(str(serial_log))}",
            "-serial", "chardev:serial0",
            "-kernel", str(spec.kernel), "-append", spec.append,
            "-initrd", initrd]
    for d in spec.drives:
        argv += d.args()
    net = "user,id=net0,restrict=on"
    if spec.net_options:
        net += "," + spec.net_options
    argv += ["-netdev", f"{net},hostfwd=tcp:127.0.0.1:{spec.ssh_port}-{spec.guest_ssh}:22",
             "-device", "virtio-net-pci,netdev=net0"]
    if spec.scsi_hotplug:
        argv += ["-device", "virtio-scsi-pci,id=scsi0"]
    if spec.incoming_fd is not None:
        argv += ["-incoming", f"fd:{spec.incoming_fd}"]
    return argv + list(spec.extra)
