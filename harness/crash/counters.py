"""Each layer's flush counters on a running stack (``crash.ledger`` says what they mean): one SSH
command per guest and two QMP commands per sample, taken beside the running workload (nothing
is stopped or flushed for it). qdisk's device model accounts no empty flush, so its fdatasync
calls are counted by a tracefs histogram in dom0, armed when the workload starts."""

from __future__ import annotations

import dataclasses
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from ..catalog.backends import Backend
from ..catalog.workloads import MOUNT
from ..errors import XdhError
from ..stack.xen import XenStack
from ..vm.ssh import Shell
from . import writelog
from .ledger import Ledger, Sample, blockstats, evidence, mounted_nobarrier, no_flush_nodes, stat_flushes

LOG = logging.getLogger(__name__)
DUT_NODE = "dut"          # the outer disk under test's node name (vm.argv.Drive)
DM_COMM = "qemu-system"   # dom0's device model threads (Debian's xen-qemu-system-i386: comm xen-qemu-system)
TRACING = "/sys/kernel/tracing/events/syscalls/sys_exit_fdatasync"
FATAL = (OSError, XdhError)


def _files(shell: Shell, paths: list[str]) -> dict[str, str]:
    """The contents of small files (sysfs, procfs, tracefs), in one command; missing ones are absent."""
    res = shell.run(["grep", "-H", "", *paths], check=False, timeout=30)
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        path = next((p for p in paths if line.startswith(p + ":")), None)
        if path is not None:
            out[path] = out.get(path, "") + line[len(path) + 1:] + "\n"
    return out


def _fdatasync_hist(text: str) -> tuple[int, int]:
    """(calls, failed) of the device model from the sys_exit_fdatasync histogram (keys: comm, ret)."""
    calls = failed = 0
    for line in text.splitlines():
        if DM_COMM not in line or "hitcount:" not in line:
            continue
        n = int(line.rsplit("hitcount:", 1)[1].split()[0])
        ret = int(line.split("ret:", 1)[1].split("}", 1)[0]) if "ret:" in line else 0
        calls += n
        failed += n if ret >= 1 << 63 or ret < 0 else 0      # the histogram prints keys unsigned (-5: 2**64-5)
    return calls, failed


class Counters:
    """Samples one running stack's counters; ``arm`` once before the first sample."""

    def __init__(self, stack: XenStack, backend: Backend):
        self.stack, self.backend = stack, backend
        self.dom0_dev = ""
        self.ring = "f_req" if backend.backendtype == "phy" else ""

    def arm(self) -> None:
        """Find dom0's device; for qdisk, the fdatasync histogram (a failure: not countable)."""
        dom0 = self.stack.dom0
        assert dom0 is not None
        self.dom0_dev = dom0.run(["readlink", "-f", "/dev/disk/by-id/virtio-dut"]).stdout.strip().rsplit("/", 1)[-1]
        if self.backend.backendtype == "qdisk":
            res = dom0.run(["sh", "-c", f"echo 'hist:keys=common_pid.execname,ret' > {TRACING}/trigger"],
                           check=False, timeout=30)
            self.ring = "fdatasync" if res.status == 0 else ""
            if res.status != 0:
                LOG.debug("no fdatasync histogram in dom0: %s", res.stderr.strip())

    def sample(self, acks: int) -> Sample:
        return self.outer(self.guests(acks))

    def outer(self, s: Sample) -> Sample:
        """``s`` with the outer QEMU's counters (QMP: milliseconds, taken at the cut itself)."""
        flushes, failed = blockstats(self.stack.machine.qmp("query-blockstats"), DUT_NODE)
        nodes = self.stack.machine.qmp("query-named-block-nodes")
        return dataclasses.replace(s, outer_flushes=flushes, outer_failed=failed,
                                   outer_no_flush=no_flush_nodes(nodes, DUT_NODE))

    def guests(self, acks: int) -> Sample:
        """The domU's and dom0's counters (one SSH command each)."""
        stack = self.stack
        assert stack.domu is not None and stack.dom0 is not None
        domu = _files(stack.domu, ["/sys/block/xvdb/stat", "/sys/block/xvdb/queue/write_cache", "/proc/mounts"])
        ring = (["/sys/bus/xen-backend/devices/vbd-*-51728/statistics/f_req"] if self.ring == "f_req"
                else [f"{TRACING}/hist"] if self.ring == "fdatasync" else [])
        dev = f"/sys/block/{self.dom0_dev}"
        if ring and "*" in ring[0]:     # the one vbd of the domU's xvdb
            ring = [stack.dom0.run(["sh", "-c", f"ls {ring[0]}"], check=False).stdout.strip() or ring[0]]
        dom0 = _files(stack.dom0, [f"{dev}/stat", f"{dev}/queue/write_cache", *ring])
        backend_flushes: int | None = None
        backend_failed: int | None = None
        if self.ring == "f_req" and ring[0] in dom0:
            backend_flushes = int(dom0[ring[0]].split()[0])
        elif self.ring == "fdatasync":
            backend_flushes, backend_failed = _fdatasync_hist(dom0.get(ring[0], ""))
        return Sample(acks=acks, domu_flushes=stat_flushes(domu.get("/sys/block/xvdb/stat", "")),
                      domu_write_cache=domu.get("/sys/block/xvdb/queue/write_cache", "").strip(),
                      nobarrier=mounted_nobarrier(domu.get("/proc/mounts", ""), MOUNT),
                      backend_flushes=backend_flushes, backend_failed=backend_failed,
                      dom0_flushes=stat_flushes(dom0.get(f"{dev}/stat", "")),
                      dom0_write_cache=dom0.get(f"{dev}/queue/write_cache", "").strip())

    def eatmydata(self) -> bool:
        """Whether dom0's device model runs with libeatmydata mapped (its fdatasync a no-op)."""
        if self.backend.backendtype != "qdisk" or self.stack.dom0 is None:
            return False
        script = f"for p in $(pgrep -f {shlex.quote('xen-qemu-system|qemu-system-i386')}); do " \
                 "grep -q libeatmydata /proc/$p/maps && echo $p; done"
        return bool(self.stack.dom0.run(["sh", "-c", script], check=False, timeout=30).stdout.strip())


class Recorder:
    """The ledger of one crash run: the first sample as the workload starts, the second read
    once right before the cut (before QMP ``stop``: the guests still answer), finished with the
    logs' evidence. The second sample delays the cut by its duration (``Ledger.sampled_seconds``;
    the acks at the cut are recorded as they were). A counter that cannot be read never fails the
    crash run: the ledger is then absent (the reason logged)."""

    def __init__(self, stack: XenStack, backend: Backend):
        self.counters = Counters(stack, backend)
        self.start: Sample | None = None
        self.end: Sample | None = None
        self.eatmydata = False
        self.seconds = 0.0

    def _timed(self, what: str, fn: Callable[[], Sample]) -> Sample | None:
        t0 = time.monotonic()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a counter that cannot be read: no ledger, the run goes on
            LOG.warning("flush ledger: %s sample failed: %s", what, exc)
            return None
        finally:
            self.seconds += time.monotonic() - t0

    def at_start(self) -> None:
        """Arm the counters and take the first sample (before the workload starts)."""
        def arm() -> Sample:
            self.counters.arm()
            self.eatmydata = self.counters.eatmydata()
            return self.counters.sample(0)
        self.start = self._timed("start", arm)

    def at_cut(self, acks: int) -> None:
        """Every layer's counters now, right before the power is cut."""
        if self.start is not None:
            self.end = self._timed("cut", lambda: self.counters.sample(acks))

    def ledger(self, kmsg_domu: Path, kmsg_dom0: Path, write_log: Path | None, start_entry: int) -> Ledger | None:
        if self.start is None or self.end is None:
            return None
        try:
            log_flushes = None
            if write_log is not None and write_log.exists():
                log_flushes = sum(1 for i in writelog.parse(write_log).flushes() if i >= start_entry)
            ev = evidence(_text(kmsg_domu), _text(kmsg_dom0), self.counters.dom0_dev)
            ev = dataclasses.replace(ev, log_flushes=log_flushes, eatmydata=self.eatmydata)
        except Exception as exc:  # noqa: BLE001 - the logs of a broken run: no ledger, its own error stands
            LOG.warning("flush ledger: evidence unreadable: %s", exc)
            return None
        return Ledger(self.counters.backend.name, self.counters.ring, self.start, self.end, ev,
                      round(self.seconds, 2))


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
