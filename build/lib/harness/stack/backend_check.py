"""The disk under test as both ends see it: parsed from dom0's xenstore and the domU's sysfs
and dmesg (pure), and checked against the backend mode that was asked for."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..catalog.backends import O_DIRECT, Backend
from ..errors import LaunchError
from ..vm.ssh import Shell
from .xl import DOMU_NAME, DUT_DEVID, DUT_VDEV


@dataclass(frozen=True)
class BackendInfo:
    """The disk under test as both ends see it, read back after the domU is up."""

    mode: str
    xenstore_path: str
    backend_kind: str                 # "qdisk" or "vbd" (blkback)
    params: str
    feature_flush_cache: str | None
    feature_barrier: str | None
    direct_io_safe: str | None
    write_cache: str                  # domU /sys/block/xvdb/queue/write_cache
    fua: str
    blkfront_line: str                # domU dmesg "blkfront: xvdb: ..."
    dm_open_flags: tuple[str, ...] = ()   # O_DIRECT modes: the device model's fds on the disk (octal flags)

    @property
    def dm_o_direct(self) -> bool:
        """Every fd dom0's device model holds on the disk under test has O_DIRECT (and there is one)."""
        return bool(self.dm_open_flags) and all(int(f, 8) & O_DIRECT for f in self.dm_open_flags)


def parse_backend(backend: Backend, path: str, xenstore_ls: str, write_cache: str, fua: str,
                  dmesg: str) -> BackendInfo:
    """Pure: ``xenstore-ls -f PATH`` output plus the domU's view -> BackendInfo."""
    keys = {}
    for line in xenstore_ls.splitlines():
        k, _, v = line.partition(" = ")
        keys[k.rsplit("/", 1)[-1]] = v.strip().strip('"')
    lines = [line for line in dmesg.splitlines() if f"blkfront: {DUT_VDEV}:" in line]
    return BackendInfo(mode=backend.name, xenstore_path=path, backend_kind=backend.xenstore_kind,
                       params=keys.get("params", ""), feature_flush_cache=keys.get("feature-flush-cache"),
                       feature_barrier=keys.get("feature-barrier"), direct_io_safe=keys.get("direct-io-safe"),
                       write_cache=write_cache, fua=fua,
                       blkfront_line=lines[-1].split("] ", 1)[-1] if lines else "")


def problems(backend: Backend, info: BackendInfo) -> list[str]:
    """How ``info`` differs from what ``backend`` must look like (empty: as asked)."""
    out = []
    if backend.o_direct and not info.dm_o_direct:
        out.append(f"the device model does not hold the disk with O_DIRECT (fd flags {list(info.dm_open_flags)})")
    if info.feature_flush_cache != "1":
        out.append(f"feature-flush-cache is {info.feature_flush_cache!r}")
    if backend.direct_io_safe != (info.direct_io_safe == "1"):
        out.append(f"direct-io-safe is {info.direct_io_safe!r}")
    if backend.on_filesystem and not info.params.startswith("qcow2:"):
        out.append(f"params {info.params!r} is not a qcow2 image")
    if not info.blkfront_line:
        out.append("no blkfront line for xvdb in the domU's dmesg")
    return out


def dm_open_flags(dom0: Shell, device: str) -> tuple[str, ...]:
    """The open(2) flags (octal, from /proc/<pid>/fdinfo) of every fd dom0's device models hold on ``device``."""
    script = ('for p in $(pgrep -f xen-qemu-system); do for f in /proc/$p/fd/*; do '
              '[ "$(readlink "$f")" = "$1" ] && awk \'/^flags:/{print $2}\' "/proc/$p/fdinfo/${f##*/}"; '
              'done; done; true')
    return tuple(dom0.run(["sh", "-c", script, "sh", device], check=False).stdout.split())


def read_backend(dom0: Shell, domu: Shell, backend: Backend, dut_device: str = "") -> BackendInfo:
    """Read the disk under test back from dom0's xenstore and the domU; fail if it is not the
    requested mode."""
    domid = dom0.run(["xl", "domid", DOMU_NAME]).stdout.strip()
    kind = backend.xenstore_kind
    path = f"/local/domain/0/backend/{kind}/{domid}/{DUT_DEVID}"
    res = dom0.run(["xenstore-ls", "-f", path], check=False)
    if res.status != 0:
        other = "vbd" if kind == "qdisk" else "qdisk"
        raise LaunchError(f"backend {backend.name}: no xenstore node {path} (is xvdb attached through {other}?)")
    info = parse_backend(backend, path, res.stdout,
                         domu.run(["cat", f"/sys/block/{DUT_VDEV}/queue/write_cache"]).stdout.strip(),
                         domu.run(["cat", f"/sys/block/{DUT_VDEV}/queue/fua"]).stdout.strip(),
                         domu.run(["dmesg"]).stdout)
    if backend.o_direct and dut_device:
        info = dataclasses.replace(info, dm_open_flags=dm_open_flags(dom0, dut_device))
    found = problems(backend, info)
    if found:
        raise LaunchError(f"backend {backend.name} not set up as asked: " + "; ".join(found))
    return info
