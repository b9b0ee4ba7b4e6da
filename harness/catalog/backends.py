"""Backend modes for the disk under test: a declarative registry.

Each mode says how the domU's ``xvdb`` is attached (the xl disk spec, always with an
explicit ``backendtype=``: without it libxl silently picks blkback for raw files), what
dom0 must prepare first, and what xenstore must show once it is attached.
docs/stack.md has the xl/libxl facts behind each mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Registry

# dom0 paths for the qcow2 mode: an ext4 filesystem on the disk under test holds the image.
QCOW2_MOUNT = "/srv/dut"
QCOW2_IMAGE = f"{QCOW2_MOUNT}/dut.qcow2"
# qdisk-direct-threads: a small libxl-managed qdisk disk, so that the domain gets a device model at all
DM_ANCHOR = "/run/xdh/dm-anchor.img"
DM_ANCHOR_VDEV = "xvdc"
O_DIRECT = 0o40000    # open(2) flag, as /proc/<pid>/fdinfo prints it (octal)


@dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    backendtype: str            # "qdisk" or "phy": the xenstore backend dir is qdisk/ or vbd/
    fmt: str = "raw"
    direct_io_safe: bool = False
    on_filesystem: bool = False  # the image is a qcow2 file in a dom0 ext4 on the device
    dm_created: bool = False     # dom0's device model creates the xen-disk itself (device_model_args), not libxl
    o_direct: bool = False       # the device model must hold the disk with O_DIRECT (checked after boot)

    @property
    def writes_through(self) -> bool:
        """dom0 keeps no volatile cache: every completed write is in the outer disk's file (blkback,
        O_DIRECT), which a plain power cut keeps, so only the volatile disk-cache model sees a lost flush."""
        return self.backendtype == "phy" or self.o_direct or self.direct_io_safe

    @property
    def disk_cache(self) -> str:
        """The disk-cache model ``--disk-cache auto`` picks for this mode, and why."""
        return "volatile" if self.writes_through else "none"

    def disk_cache_reason(self) -> str:
        if self.writes_through:
            return (f"{self.name} keeps no volatile cache in dom0: every completed write reaches the outer disk, "
                    "which a plain power cut keeps; only the volatile model can lose what was not flushed")
        return f"{self.name} writes through dom0's page cache, a volatile cache the power cut loses"

    @property
    def holds_dut_state(self) -> bool:
        """dom0 keeps the disk under test's metadata in memory (its ext4 mounted, the qcow2 file's
        tables open): a saved stack is then valid only over the very bytes it was saved with."""
        return self.on_filesystem

    @property
    def layout(self) -> str:
        """What the crash image holds: the domU's disk itself ("raw"), or dom0's ext4 with the
        domU's disk as a qcow2 file in it ("qcow2-in-ext4")."""
        return "qcow2-in-ext4" if self.on_filesystem else "raw"

    @property
    def xenstore_kind(self) -> str:
        return "qdisk" if self.backendtype == "qdisk" else "vbd"

    def target(self, dut_device: str) -> str:
        return QCOW2_IMAGE if self.on_filesystem else dut_device

    def xl_disk(self, dut_device: str, vdev: str = "xvdb") -> str:
        """The xl disk spec (``target=`` must come last); for a device-model-created disk, the
        spec of the small qdisk disk that makes libxl start the device model."""
        if self.dm_created:
            return f"format=raw,vdev={DM_ANCHOR_VDEV},access=rw,backendtype=qdisk,target={DM_ANCHOR}"
        parts = [f"format={self.fmt}", f"vdev={vdev}", "access=rw", f"backendtype={self.backendtype}"]
        if self.direct_io_safe:
            parts.append("direct-io-safe")
        parts.append(f"target={self.target(dut_device)}")
        return ",".join(parts)

    def device_model_args(self, dut_device: str, vdev: str = "xvdb") -> list[str]:
        """Extra argv for dom0's device model: the xen-disk as xen-block would build it for a
        ``direct-io-safe`` disk (locking off, discard, an iothread per vdev), but with thread-pool
        I/O instead of ``aio=native``, which Debian's qemu-system-xen is built without."""
        if not self.dm_created:
            return []
        node = f"xdh-{vdev}"
        return ["-object", f"iothread,id=xdhio-{vdev}",
                "-blockdev", f"driver=raw,node-name={node},discard=unmap,file.driver=host_device,"
                             f"file.filename={dut_device},file.cache.direct=on,file.aio=threads,"
                             "file.locking=off,file.discard=unmap",
                "-device", f"xen-disk,vdev={vdev},drive={node},iothread=xdhio-{vdev}"]

    def dom0_prepare(self, dut_device: str, size_mib: int) -> str | None:
        """A dom0 shell script run before ``xl create`` (None: nothing to do).

        Idempotent: after a power cut the filesystem and image already exist and are reused.
        """
        if self.dm_created:
            return f"set -e; mkdir -p {DM_ANCHOR.rsplit('/', 1)[0]}; [ -e {DM_ANCHOR} ] || truncate -s 1M {DM_ANCHOR}"
        if not self.on_filesystem:
            return None
        return (
            "set -e\n"
            f"dev={dut_device}\n"
            "if ! blkid -o value -s TYPE \"$dev\" | grep -qx ext4; then mkfs.ext4 -q -F -L xdh-dut \"$dev\"; fi\n"
            f"mkdir -p {QCOW2_MOUNT}\n"
            f"mountpoint -q {QCOW2_MOUNT} || mount -o barrier=1 \"$dev\" {QCOW2_MOUNT}\n"
            f"[ -e {QCOW2_IMAGE} ] || qemu-img create -q -f qcow2 {QCOW2_IMAGE} {size_mib}M\n"
            "sync\n"
        )


BACKENDS: Registry[Backend] = Registry("backend mode", (
    Backend("qdisk", "QEMU qdisk backend on the raw dom0 device, buffered (dom0 page cache)", "qdisk"),
    Backend("qdisk-direct", "QEMU qdisk backend with direct-io-safe (O_DIRECT, bypasses dom0 page cache)",
            "qdisk", direct_io_safe=True, o_direct=True),
    Backend("qdisk-direct-threads", "the same xen-block code with O_DIRECT, created by dom0's QEMU from "
            "device_model_args with aio=threads (stock Debian packages lack the aio=native that "
            "direct-io-safe needs)", "qdisk", dm_created=True, o_direct=True),
    Backend("phy", "kernel blkback on the raw dom0 device", "phy"),
    Backend("qdisk-qcow2", "QEMU qdisk backend on a qcow2 file in a dom0 ext4 on the device", "qdisk",
            fmt="qcow2", on_filesystem=True),
))
DEFAULT_BACKEND = "qdisk"



def get(name: str) -> Backend:
    return BACKENDS.get(name)
