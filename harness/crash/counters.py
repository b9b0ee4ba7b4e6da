"""Each layer's flush counters on a running stack (``crash.ledger`` says what they mean): one SSH
command per guest and two QMP commands per sample, taken beside the running workload (nothing
is stopped or flushed for it). qdisk's device model accounts no empty flush, so its fdatasync
calls are counted by a tracefs histogram in dom0 (the event enabled from boot, the histogram
attached before the first sample)."""

from __future__ import annotations

import dataclasses
import logging
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
DM_PATTERN = "xen-qemu-system|qemu-system-i386"    # pgrep -f: dom0's device model processes
TRACING = "/sys/kernel/tracing/events/syscalls/sys_exit_fdatasync"
HIST = "hist:keys=common_pid.execname,ret"
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


ARM_TIMEOUT = 15.0       # one dom0 command; a dom0 that does not answer in it has no ledger this run


def arm_script(backendtype: str) -> str:
    """One dom0 command that prints ``dev NAME``, ``ring PATH`` (the backend's flush counter, if
    countable) and ``eatmydata`` (dom0's device model runs with libeatmydata: its fdatasync a
    no-op). For qdisk it attaches the fdatasync histogram unless a restored stack has it already;
    the event itself is enabled from boot (stack/xl.py, DOM0_ARGS)."""
    lines = ['dev=$(readlink -f /dev/disk/by-id/virtio-dut) && echo "dev ${dev##*/}"']
    if backendtype == "qdisk":
        lines += [f"t={TRACING}/trigger",
                  f"grep -q '^hist' $t || echo '{HIST}' > $t",
                  f"grep -q '^hist' $t && echo 'ring {TRACING}/hist'",
                  f"for p in $(pgrep -f '{DM_PATTERN}'); do "
                  "grep -q libeatmydata /proc/$p/maps && echo eatmydata && break; done"]
    elif backendtype == "phy":        # the one vbd of the domU's xvdb
        lines += ["for f in /sys/bus/xen-backend/devices/vbd-*-51728/statistics/f_req; do "
                  '[ -e "$f" ] && echo "ring $f"; done']
    return "; ".join(lines) + "; true"


@dataclasses.dataclass(frozen=True)
class Armed:
    """What ``arm_script`` found."""

    dom0_dev: str = ""
    ring_path: str = ""       # "" when the backend's flushes are not countable here
    eatmydata: bool = False

    @classmethod
    def parse(cls, out: str) -> Armed:
        words = {k: v for k, _, v in (line.partition(" ") for line in out.splitlines()) if k}
        return cls(words.get("dev", ""), words.get("ring", ""), "eatmydata" in words)

    @property
    def ring(self) -> str:
        """The backend counter's kind, as the ledger records it."""
        return "" if not self.ring_path else "f_req" if self.ring_path.endswith("f_req") else "fdatasync"


class Counters:
    """Samples one running stack's counters; ``arm`` once before the first sample."""

    def __init__(self, stack: XenStack, backend: Backend):
        self.stack, self.backend = stack, backend
        self.armed = Armed()

    def arm(self) -> Armed:
        dom0 = self.stack.dom0
        assert dom0 is not None
        res = dom0.run(["sh", "-c", arm_script(self.backend.backendtype)], check=False, timeout=ARM_TIMEOUT)
        self.armed = Armed.parse(res.stdout)
        if not self.armed.dom0_dev:
            raise XdhError(f"dom0's disk under test not found: {res.stderr.strip()}")
        return self.armed

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
        stack, armed = self.stack, self.armed
        assert stack.domu is not None and stack.dom0 is not None
        domu = _files(stack.domu, ["/sys/block/xvdb/stat", "/sys/block/xvdb/queue/write_cache", "/proc/mounts"])
        dev = f"/sys/block/{armed.dom0_dev}"
        ring = [armed.ring_path] if armed.ring_path else []
        dom0 = _files(stack.dom0, [f"{dev}/stat", f"{dev}/queue/write_cache", *ring])
        backend_flushes: int | None = None
        backend_failed: int | None = None
        if armed.ring == "f_req" and armed.ring_path in dom0:
            backend_flushes = int(dom0[armed.ring_path].split()[0])
        elif armed.ring == "fdatasync":
            backend_flushes, backend_failed = _fdatasync_hist(dom0.get(armed.ring_path, ""))
        return Sample(acks=acks, domu_flushes=stat_flushes(domu.get("/sys/block/xvdb/stat", "")),
                      domu_write_cache=domu.get("/sys/block/xvdb/queue/write_cache", "").strip(),
                      nobarrier=mounted_nobarrier(domu.get("/proc/mounts", ""), MOUNT),
                      backend_flushes=backend_flushes, backend_failed=backend_failed,
                      dom0_flushes=stat_flushes(dom0.get(f"{dev}/stat", "")),
                      dom0_write_cache=dom0.get(f"{dev}/queue/write_cache", "").strip())


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
            self.eatmydata = self.counters.arm().eatmydata
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
            ev = evidence(_text(kmsg_domu), _text(kmsg_dom0), self.counters.armed.dom0_dev)
            ev = dataclasses.replace(ev, log_flushes=log_flushes, eatmydata=self.eatmydata)
        except Exception as exc:  # noqa: BLE001 - the logs of a broken run: no ledger, its own error stands
            LOG.warning("flush ledger: evidence unreadable: %s", exc)
            return None
        return Ledger(self.counters.backend.name, self.counters.armed.ring, self.start, self.end, ev,
                      round(self.seconds, 2))


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
