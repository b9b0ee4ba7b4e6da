"""Each layer's flush counters on a running stack (``crash.ledger`` says what they mean).

The first sample is read before the workload starts (one SSH command per guest). During the
run each guest streams its counter files every ``INTERVAL`` over one SSH channel (a shell loop,
nothing stopped or flushed for it), so the sample at the cut costs no time: the guests' latest
readings and the outer QEMU's counters read over QMP at the cut itself. (A sample read over SSH
at the cut delayed it by seconds under TCG, and the workload ran on: 59 acks planned, 101 at
the cut.) qdisk's device model accounts no empty flush, so its fdatasync calls are counted by a
tracefs histogram in dom0 (the event enabled from boot, the histogram attached when armed)."""

from __future__ import annotations

import dataclasses
import logging
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..catalog.backends import Backend
from ..catalog.workloads import MOUNT
from ..errors import XdhError
from ..stack.xen import XenStack
from ..stack.xl import DUT_DEVID
from ..vm.ssh import Shell
from . import writelog
from .ledger import Ledger, Sample, blockstats, evidence, mounted_nobarrier, no_flush_nodes, stat_flushes

LOG = logging.getLogger(__name__)
DUT_NODE = "dut"          # the outer disk under test's node name (vm.argv.Drive)
DM_COMM = "qemu-system"   # dom0's device model threads (Debian's xen-qemu-system-i386: comm xen-qemu-system)
DM_PATTERN = "xen-qemu-system|qemu-system-i386"    # pgrep -f: dom0's device model processes
TRACING = "/sys/kernel/tracing/events/syscalls/sys_exit_fdatasync"
HIST = "hist:keys=common_pid.execname,ret"
DOMU_PATHS = ["/sys/block/xvdb/stat", "/sys/block/xvdb/queue/write_cache", "/proc/mounts"]   # the domU's counters
FATAL = (OSError, XdhError)


INTERVAL = 0.25          # seconds between two streamed readings of a guest's counters
MARK = "@@xdh-counters@@"   # ends each streamed reading
GONE = "@@xdh-gone@@"       # then a path: that file went away or is empty since the last reading


def parse_files(text: str, paths: list[str]) -> dict[str, str]:
    """The files' contents from ``grep -H ''`` output over them; missing ones are absent."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        path = next((p for p in paths if line.startswith(p + ":")), None)
        if path is not None:
            out[path] = out.get(path, "") + line[len(path) + 1:] + "\n"
    return out


def _files(shell: Shell, paths: list[str]) -> dict[str, str]:
    """The contents of small files (sysfs, procfs, tracefs), in one command."""
    return parse_files(shell.run(["grep", "-H", "", *paths], check=False, timeout=30).stdout, paths)


def loop_command(paths: list[str], interval: float = INTERVAL) -> list[str]:
    """A guest loop printing each file that changed since its last reading (all of them the first
    time) as ``grep -H ''`` would, then MARK, every ``interval`` (until the SSH channel closes); a
    file that went away or is empty (``grep`` prints nothing of it) as GONE and its path. Bash
    builtins only (``read``, ``printf``, and ``read -t`` on a pipe nobody writes as the sleep): no
    process per reading, and the SSH channel carries only what moved. A ``grep`` and a ``sleep``
    forked four times a second slowed the domU's workload by a third under TCG
    (docs/performance.md)."""
    files = " ".join(shlex.quote(p) for p in paths)
    return ["bash", "-c", "exec 9<> <(:); declare -A last; while :; do for f in " + files + "; do "
            "c=; [[ -r $f ]] && IFS= read -r -d '' c <\"$f\"; "
            f"if [[ -z $c ]]; then [[ ${{last[$f]+set}} ]] && {{ unset 'last[$f]'; echo \"{GONE}$f\"; }}; "
            "continue; fi; "
            "[[ ${last[$f]+set} && $c == \"${last[$f]}\" ]] && continue; last[$f]=$c; c=${c%$'\\n'}; "
            "printf '%s:%s\\n' \"$f\" \"${c//$'\\n'/$'\\n'\"$f:\"}\"; "
            f"done; echo {MARK}; read -t {interval} -u 9 _; done"]


class CounterTap:
    """One guest's counter files, streamed (``loop_command``: the files that changed) and read by a
    thread: ``latest`` is the last complete reading (every file as last seen), the acks the
    workload had when it arrived, and when (monotonic)."""

    def __init__(self, shell: Shell, paths: list[str], acks: Callable[[], int]):
        self.paths, self._acks = paths, acks
        self.latest: tuple[dict[str, str], int, float] | None = None
        self._stream = shell.stream(loop_command(paths))
        self._thread = threading.Thread(target=self._pump, name=f"counters-{shell.endpoint.name}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        block: list[str] = []
        known: dict[str, str] = {}
        try:
            for _, line in self._stream.lines():
                if line.startswith(GONE):
                    known.pop(line[len(GONE):], None)
                    continue
                if line != MARK:
                    block.append(line)
                    continue
                known |= parse_files("\n".join(block), self.paths)
                self.latest = (dict(known), self._acks(), time.monotonic())
                block = []
        except Exception as exc:  # noqa: BLE001 - the connection dies at the cut: expected
            LOG.debug("counter stream ended: %s", exc)

    def stop(self, timeout: float = 5.0) -> None:
        self._stream.close()
        self._thread.join(timeout)


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
        lines += [f"for f in /sys/bus/xen-backend/devices/vbd-*-{DUT_DEVID}/statistics/f_req; do "
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

    @property
    def dom0_paths(self) -> list[str]:
        dev = f"/sys/block/{self.armed.dom0_dev}"
        return [f"{dev}/stat", f"{dev}/queue/write_cache", *([self.armed.ring_path] if self.armed.ring_path else [])]

    def guests(self, acks: int) -> Sample:
        """The domU's and dom0's counters now (one SSH command each)."""
        assert self.stack.domu is not None and self.stack.dom0 is not None
        return self.reading(_files(self.stack.domu, DOMU_PATHS), _files(self.stack.dom0, self.dom0_paths), acks)

    def taps(self, acks: Callable[[], int]) -> tuple[CounterTap, CounterTap]:
        """Both guests' counters, streamed from now on."""
        assert self.stack.domu is not None and self.stack.dom0 is not None
        domu = CounterTap(self.stack.domu, DOMU_PATHS, acks)
        try:
            return domu, CounterTap(self.stack.dom0, self.dom0_paths, acks)
        except BaseException:
            domu.stop()
            raise

    def reading(self, domu: dict[str, str], dom0: dict[str, str], acks: int) -> Sample:
        """A sample (without the outer QEMU's counters) from the guests' counter files."""
        armed = self.armed
        dev = f"/sys/block/{armed.dom0_dev}"
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
    """The ledger of one crash run: the first sample as the workload starts, the guests' counters
    streamed during it, the outer QEMU's read at the cut, finished with the logs' evidence. A
    counter that cannot be read never fails the crash run: the ledger is then absent (the reason
    logged). ``seconds``: what sampling added to the crash run's own time (arming and the first
    sample before the workload; QMP at the cut)."""

    def __init__(self, stack: XenStack, backend: Backend, enabled: bool = True):
        self.counters = Counters(stack, backend)
        self.enabled = enabled      # off (--no-ledger): nothing read, no ledger
        self.start: Sample | None = None
        self.end: Sample | None = None
        self.eatmydata = False
        self.seconds = 0.0
        self._taps: tuple[CounterTap, CounterTap] | None = None

    def _timed(self, what: str, fn: Callable[[], Sample]) -> Sample | None:
        t0 = time.monotonic()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a counter that cannot be read: no ledger, the run goes on
            LOG.warning("flush ledger: %s sample failed: %s", what, exc)
            return None
        finally:
            self.seconds += time.monotonic() - t0

    def at_start(self, acks: Callable[[], int]) -> None:
        """Arm the counters, take the first sample (before the workload starts) and stream the
        guests' counters from then on (``acks``: the workload's acks so far)."""
        def arm() -> Sample:
            self.eatmydata = self.counters.arm().eatmydata
            sample = self.counters.sample(0)
            self._taps = self.counters.taps(acks)
            return sample
        if self.enabled:
            self.start = self._timed("start", arm)

    def at_cut(self, acks: int, changed: float = 0.0) -> None:
        """Every layer's counters at the cut: the guests' latest streamed readings, the outer
        QEMU's now. The cut waits for the next readings (about one INTERVAL) only when the latest
        cannot tell: none saw an ack yet (drop-flush acks hundreds a second), or a fault step ran
        after it (``changed``, monotonic: a dom0 write cache switched just before the cut). With
        no reading at all, the guests are read now, over SSH."""
        if self.start is None:
            return
        if self._taps and acks > 0:
            deadline = time.monotonic() + 4 * INTERVAL
            while not _fresh(self._taps, changed) and time.monotonic() < deadline:
                time.sleep(0.01)
        got = [t.latest for t in self._taps] if self._taps else []
        if len(got) == 2 and got[0] is not None and got[1] is not None:
            (domu, domu_acks, _), (dom0, _, _) = got[0], got[1]
            self.end = self._timed("cut", lambda: self.counters.outer(self.counters.reading(domu, dom0, domu_acks)))
        else:
            self.end = self._timed("cut", lambda: self.counters.sample(acks))

    def stop(self) -> None:
        """End the guests' streams (the cut has usually ended them already)."""
        for tap in self._taps or ():
            tap.stop()

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


def _fresh(taps: tuple[CounterTap, CounterTap], changed: float) -> bool:
    """Whether both guests' latest readings came after ``changed`` and the domU's saw an ack."""
    domu, dom0 = taps[0].latest, taps[1].latest
    return domu is not None and dom0 is not None and domu[1] > 0 and min(domu[2], dom0[2]) > changed


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
