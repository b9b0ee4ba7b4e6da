"""The flush ledger's attribution from counters alone (crash/ledger.py): the pattern each fault
leaves (../shared/notes/layer-counters.md, "Attribution recipe"), written as counters with no
fault name anywhere, must name its layer; a clean path names none. The real counters of the
real stack: tests/integration/test_ledger.py."""

from __future__ import annotations

import dataclasses
import json

import pytest

from harness.crash.ledger import (
    Evidence,
    Kind,
    Layer,
    Ledger,
    Sample,
    attribute,
    blockstats,
    evidence,
    mounted_nobarrier,
    no_flush_nodes,
    stat_flushes,
)

WB, WT = "write back", "write through"
T0 = Sample(acks=0, domu_flushes=10, domu_write_cache=WB, backend_flushes=0, backend_failed=0, dom0_flushes=40,
            dom0_write_cache=WB, outer_flushes=50)


def _ledger(ring: str = "fdatasync", ev: Evidence | None = None, **end) -> Ledger:
    base = dict(acks=80, domu_flushes=90, domu_write_cache=WB, backend_flushes=78, backend_failed=0,
                dom0_flushes=120, dom0_write_cache=WB, outer_flushes=131)
    return Ledger("qdisk" if ring == "fdatasync" else "phy", ring, T0, Sample(**(base | end)), ev or Evidence())


CASES = {
    # fault (only as a test id): the counters it leaves -> (kind, layer)
    "none": (_ledger(), Kind.NONE, None),
    "none-phy": (_ledger("f_req"), Kind.NONE, None),
    "drop-flush": (_ledger(domu_flushes=10, domu_write_cache=WT, backend_flushes=0, dom0_flushes=40, outer_flushes=50),
                   Kind.DROP, Layer.DOMU_BLOCK),
    "nobarrier": (_ledger(domu_flushes=10, nobarrier=True, backend_flushes=0, dom0_flushes=40, outer_flushes=50),
                  Kind.DROP, Layer.FILESYSTEM),
    "flush-eio-6.1": (_ledger(domu_write_cache=WT, domu_flushes=15, backend_failed=1, outer_failed=1,
                              ev=Evidence(blkfront_failed=1, blkfront_disabled=True, dom0_errors=1)),
                      Kind.MASK, Layer.BLKFRONT),
    # the failed flush came in mkfs, before the workload: write through from the start, no domU flush
    # in the run, the outer disk's failure is in its totals only; the kernel logs still say it
    "flush-eio-6.1-in-mkfs": (Ledger("qdisk", "fdatasync", Sample(domu_write_cache=WT, outer_failed=1, outer_flushes=9,
                                                                  backend_flushes=0, backend_failed=1),
                                     Sample(acks=80, domu_write_cache=WT, outer_failed=1, outer_flushes=9,
                                            backend_flushes=0, backend_failed=1),
                                     Evidence(blkfront_failed=1, blkfront_disabled=True)),
                              Kind.MASK, Layer.BLKFRONT),
    "flush-eio-6.12": (_ledger(domu_flushes=90, backend_flushes=6, backend_failed=1, dom0_flushes=45,
                               outer_flushes=56, outer_failed=1, ev=Evidence(blkfront_failed=1)),
                       Kind.MASK, Layer.BLKFRONT),
    # a blkfront that passes the error up (examples/kernel/blkfront-flush-error.patch): no mask line,
    # flushing stays on, the domU's block layer logs the failed flush: nothing died, the guest was told
    "flush-eio-reported": (_ledger(backend_failed=1, outer_failed=1, ev=Evidence(dom0_errors=1, domu_errors=1)),
                           Kind.NONE, None),
    # failed below, and nothing in the domU says so: still a mask (the conservative reading)
    "flush-eio-unseen": (_ledger(backend_failed=1, outer_failed=1, ev=Evidence(dom0_errors=1)),
                         Kind.MASK, Layer.BLKFRONT),
    "flush-eio-phy": (_ledger("f_req", backend_failed=None, outer_failed=1, ev=Evidence(blkfront_failed=1)),
                      Kind.MASK, Layer.BLKFRONT),
    "backend-lies": (_ledger(backend_flushes=0, dom0_flushes=40, outer_flushes=50, ev=Evidence(eatmydata=True)),
                     Kind.LIE, Layer.BACKEND),
    "old-domu-kernel-clean": (Ledger("qdisk", "fdatasync", dataclasses.replace(T0, domu_flushes=None),
                                     Sample(acks=80, domu_flushes=None, domu_write_cache=WB, backend_flushes=78,
                                            dom0_flushes=120, dom0_write_cache=WB, outer_flushes=131)),
                              Kind.NONE, None),
    # trixie's qdisk-direct (QEMU 10 with linux-aio): the device model flushes with io_submit
    # (IOCB_CMD_FDSYNC), not fdatasync(2), so that counter stays 0 while dom0's device gets them all
    "clean-qdisk-direct-fdsync": (_ledger(backend_flushes=0, dom0_flushes=200), Kind.NONE, None),
    "disk-lies-qdisk-direct-fdsync": (_ledger(backend_flushes=0, dom0_flushes=200, outer_no_flush=True,
                                              ev=Evidence(log_flushes=0)), Kind.LIE, Layer.OUTER_DISK),
    "backend-lies-uncounted": (_ledger("", backend_flushes=None, dom0_flushes=40, outer_flushes=50,
                                       ev=Evidence(eatmydata=True)), Kind.LIE, Layer.BACKEND),
    "dom0-write-through": (_ledger(dom0_flushes=40, dom0_write_cache=WT, outer_flushes=50),
                           Kind.DROP, Layer.DOM0_DEVICE),
    "dom0-write-through-phy": (_ledger("f_req", dom0_flushes=40, dom0_write_cache=WT, outer_flushes=50),
                               Kind.DROP, Layer.DOM0_DEVICE),
    "dom0-switch-during": (_ledger(dom0_flushes=70, dom0_write_cache=WT, outer_flushes=80),
                           Kind.DROP, Layer.DOM0_DEVICE),
    "domu-switch-during": (_ledger(domu_flushes=50, domu_write_cache=WT), Kind.DROP, Layer.DOMU_BLOCK),
    "disk-lies-volatile": (_ledger(outer_no_flush=True, ev=Evidence(log_flushes=0)), Kind.LIE, Layer.OUTER_DISK),
    "disk-lies-none": (_ledger(outer_no_flush=True), Kind.LIE, Layer.OUTER_DISK),
    "clean-volatile": (_ledger(ev=Evidence(log_flushes=77)), Kind.NONE, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_pattern_is_attributed_to_its_layer_from_the_counters(name):
    ledger, kind, layer = CASES[name]
    got = attribute(ledger)
    assert (got.kind, got.layer) == (kind, layer), got.text
    assert got.text.startswith("flush path intact" if kind == Kind.NONE else ("flush ", "flush acknowledged"))


def test_the_two_blkfronts_are_told_apart_by_what_follows_the_mask():
    old = attribute(CASES["flush-eio-6.1"][0]).text
    new = attribute(CASES["flush-eio-6.12"][0]).text
    assert "switched off" in old and "died in the domU block layer" in old
    assert "without the ring" in new and "80 flush requests in the domU, 5 reached dom0's device" in new


def test_the_verdict_line_says_how_many_and_where():
    text = attribute(CASES["drop-flush"][0]).text
    assert text == ("flush died in the domU block layer: 80 durable ops, 0 flush requests reached blkfront "
                    "(write cache: write through)")


def test_no_acks_nothing_to_attribute():
    assert attribute(_ledger(acks=0)).kind == Kind.UNKNOWN


def test_a_clean_path_shows_the_flush_amplification():
    ledger = CASES["none"][0]
    assert ledger.per_op() == {"domU block layer": 1.0, "blkfront": 0.97, "dom0 block device": 1.0,
                               "outer disk": 1.01}
    assert "domU block layer 1.0" in attribute(ledger).text


def test_the_ledger_round_trips_as_data():
    ledger = CASES["flush-eio-6.12"][0]
    stored = json.loads(json.dumps(ledger.to_json()))
    assert Ledger.from_json(stored) == ledger
    assert stored["attribution"]["layer"] == "blkfront" and stored["rows"][0]["count"] == 80


# --- the layers' own formats ------------------------------------------------------------------
def test_readers_of_kernel_files_and_qmp_replies():
    stat = "   100 0 800 5  2000 0 16000 90  0 10 95  0 0 0 0  87 40\n"
    assert stat_flushes(stat) == 87 and stat_flushes("1 2 3") is None    # before Linux 5.5: no flush fields
    mounts = "/dev/xvda / ext4 rw 0 0\n/dev/xvdb /mnt/dut ext4 rw,relatime,nobarrier 0 0\n"
    assert mounted_nobarrier(mounts, "/mnt/dut") and not mounted_nobarrier(mounts, "/")
    reply = [{"device": "", "node-name": "dom0-root", "stats": {"flush_operations": 3}},
             {"device": "", "node-name": "dut", "stats": {"flush_operations": 9, "failed_flush_operations": 1}}]
    assert blockstats(reply, "dut") == (9, 1)
    nodes = [{"node-name": "dut-file", "cache": {"no-flush": True}}, {"node-name": "dom0-root", "cache": {}}]
    assert no_flush_nodes(nodes, "dut") and not no_flush_nodes(nodes[1:], "dut")


def test_evidence_from_the_kernel_logs():
    domu = ("[  10.1] blkfront: xvdb: empty flush op failed\n"
            "[  10.2] blkfront: xvdb: barrier or flush: disabled; persistent grants: enabled\n")
    dom0 = "[ 9.9] I/O error, dev vdc, sector 0 op 0x2:(FLUSH) flags 0x800\n[ 9.9] I/O error, dev vda, sector 8\n"
    ev = evidence(domu, dom0, "vdc")
    assert (ev.blkfront_failed, ev.blkfront_disabled, ev.dom0_errors, ev.domu_errors) == (1, True, 1, 0)
    # the patched blkfront (examples/kernel): the failed flush passed up, as 6.1.187-xdh-patched logged it
    patched = ("[ 28.1] blkfront: xvdb: flush op failed: I/O error\n"
               "[ 28.1] I/O error, dev xvdb, sector 0 op 0x1:(WRITE) flags 0x800 phys_seg 0 prio class 2\n")
    ev = evidence(patched, dom0, "vdc")
    assert (ev.blkfront_failed, ev.blkfront_disabled, ev.domu_errors) == (0, False, 1)


def test_the_device_models_failed_fdatasyncs_are_counted():
    from harness.crash.counters import _fdatasync_hist
    hist = ("# event histogram\n#\n"
            "{ common_pid: xen-qemu-system [      1234], ret:          0 } hitcount:         87\n"
            "{ common_pid: xen-qemu-system [      1240], ret: 18446744073709551611 } hitcount:          1\n"
            "{ common_pid: systemd-journal [       201], ret:          0 } hitcount:          5\n"
            "\nTotals:\n    Hits: 93\n")
    assert _fdatasync_hist(hist) == (88, 1)        # -5 (EIO) as the histogram prints it; other processes aside


def test_arming_is_one_dom0_command_that_registers_no_tracepoint():
    """The arm step's output names dom0's device, the backend counter and eatmydata; for qdisk
    it only attaches a histogram (the event is enabled from boot: DOM0_ARGS), never enables one."""
    from harness.crash.counters import TRACING, Armed, arm_script
    from harness.stack.xl import DOM0_ARGS
    assert "trace_event=syscalls:sys_exit_fdatasync" in DOM0_ARGS.split()
    q = arm_script("qdisk")
    assert "/enable" not in q and f"{TRACING}/trigger" in q and "libeatmydata" in q
    assert "f_req" in arm_script("phy") and "trigger" not in arm_script("phy")
    assert "trigger" not in arm_script("qdisk-qcow2") and "ring" not in arm_script("qdisk-qcow2")
    a = Armed.parse(f"dev vdc\nring {TRACING}/hist\neatmydata\n")
    assert (a.dom0_dev, a.ring, a.eatmydata) == ("vdc", "fdatasync", True)
    b = Armed.parse("dev vdc\nring /sys/bus/xen-backend/devices/vbd-1-51728/statistics/f_req\n")
    assert (b.ring, b.eatmydata) == ("f_req", False)
    assert Armed.parse("dev vdc\n").ring == ""


def test_counter_files_stream_as_one_guest_loop_and_parse_back():
    from harness.crash.counters import MARK, loop_command, parse_files
    argv = loop_command(["/sys/block/xvdb/stat", "/proc/mounts"], 0.5)
    assert argv[:2] == ["bash", "-c"] and f"echo {MARK}" in argv[2] and "read -t 0.5" in argv[2]
    got = parse_files("/sys/block/xvdb/stat: 1 2 3\n/proc/mounts:a b\n/proc/mounts:c d\n/other:x\n",
                      ["/sys/block/xvdb/stat", "/proc/mounts"])
    assert got == {"/sys/block/xvdb/stat": " 1 2 3\n", "/proc/mounts": "a b\nc d\n"}


def test_the_counter_loop_forks_nothing_and_prints_what_changed_as_grep_would(tmp_path):
    """The loop run here by bash: the first reading is ``grep -H ''``'s output over the files (one
    without a final newline, one missing); later ones hold only the files that changed; readings
    are paced by ``read -t``; no child process per reading."""
    import subprocess
    import time

    from harness.crash.counters import MARK, loop_command, parse_files
    a, b, gone = tmp_path / "stat", tmp_path / "mounts", tmp_path / "gone"
    a.write_text("   7 0 12\n")
    b.write_text("x / ext4 rw 0 0\ny /m ext4 ro 0 0")
    paths = [str(a), str(gone), str(b)]
    proc = subprocess.Popen(loop_command(paths, 0.3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def reading() -> list[str]:
        lines = []
        while (line := proc.stdout.readline().rstrip("\n")) != MARK:
            lines.append(line)
        return lines
    try:
        t0 = time.monotonic()
        first, second = reading(), reading()
        elapsed = time.monotonic() - t0
        grep = subprocess.run(["grep", "-H", "", *paths], capture_output=True, text=True,
                              check=False).stdout.splitlines()
        a.write_text("   8 0 13\n")
        changed = next(r for r in iter(reading, None) if r)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True,
                                  check=False).stdout.split()
    finally:
        proc.kill()
        proc.wait()
    assert first == grep and second == [] and changed == [f"{a}:   8 0 13"]
    assert parse_files("\n".join(first), paths) == {str(a): "   7 0 12\n",
                                                     str(b): "x / ext4 rw 0 0\ny /m ext4 ro 0 0\n"}
    assert elapsed >= 0.25      # a pause of 0.3 s between two readings (read -t waits)
    assert len(children) <= 1, children      # at most the exited <(:) not yet reaped: no grep, no sleep
    assert proc.stderr.read() == ""


def test_a_tap_keeps_the_files_as_last_seen_and_forgets_one_that_went(tmp_path):
    """CounterTap over the real loop, run here by bash (a shell whose stream is a local process):
    unchanged files stay in ``latest``; a file that goes away, or turns empty, leaves it; a path
    with ``&`` in it survives bash's pattern replacement on a continuation line."""
    import subprocess
    import time

    from harness.crash.counters import CounterTap

    class LocalStream:
        def __init__(self, argv):
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

        def lines(self):
            for line in self.proc.stdout:
                yield time.monotonic(), line.rstrip("\n")

        def close(self):
            self.proc.kill()
            self.proc.wait()

    class LocalShell:
        class endpoint:
            name = "local"

        def stream(self, argv):
            return LocalStream(argv)

    a, b = tmp_path / "stat", tmp_path / "a&b"
    a.write_text("1 2\n")
    b.write_text("x\ny\n")

    def wait_for(pred):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if tap.latest is not None and pred(tap.latest[0]):
                return tap.latest[0]
            time.sleep(0.05)
        raise AssertionError(tap.latest)
    tap = CounterTap(LocalShell(), [str(a), str(b)], lambda: 7)
    try:
        assert wait_for(lambda r: len(r) == 2) == {str(a): "1 2\n", str(b): "x\ny\n"}
        a.write_text("3 4\n")
        assert wait_for(lambda r: r.get(str(a)) == "3 4\n") == {str(a): "3 4\n", str(b): "x\ny\n"}
        b.unlink()
        assert wait_for(lambda r: str(b) not in r) == {str(a): "3 4\n"}
        a.write_text("")
        assert wait_for(lambda r: str(a) not in r) == {}
        assert tap.latest[1] == 7
    finally:
        tap.stop()


class _Tap:
    def __init__(self, latest):
        self.latest, self.stopped = latest, False

    def stop(self):
        self.stopped = True


class _Counters:
    """Counters whose guests must not be asked at the cut (they answer only before it)."""

    def __init__(self):
        self.guest_reads, self.outer_reads = 0, 0
        self.armed = None

    def arm(self):
        from harness.crash.counters import Armed
        self.armed = Armed("vdc", "", False)
        return self.armed

    def sample(self, acks):
        self.guest_reads += 1
        return self.outer(Sample(acks=acks, domu_flushes=0))

    def outer(self, s):
        self.outer_reads += 1
        return dataclasses.replace(s, outer_flushes=99)

    def reading(self, domu, dom0, acks):
        return Sample(acks=acks, domu_flushes=int(domu["f"]), dom0_flushes=int(dom0["f"]))

    def taps(self, acks):
        self.acks = acks
        return (_Tap(({"f": "40"}, 57, 1.0)), _Tap(({"f": "41"}, 58, 1.0)))


def test_the_cut_sample_is_the_streamed_readings_and_qmp_only():
    """At the cut no guest is asked (an SSH round trip delayed the cut by seconds): the guests'
    latest streamed readings, with the acks seen when the domU's arrived, and QMP now."""
    from harness.crash.counters import Recorder
    rec = Recorder.__new__(Recorder)
    rec.counters, rec.start, rec.end, rec.eatmydata, rec.seconds, rec._taps = _Counters(), None, None, False, 0.0, None
    rec.enabled = True
    rec.at_start(lambda: 0)
    assert rec.counters.guest_reads == 1 and rec.start.acks == 0
    rec.at_cut(60)
    assert rec.counters.guest_reads == 1 and rec.counters.outer_reads == 2
    assert (rec.end.acks, rec.end.domu_flushes, rec.end.dom0_flushes, rec.end.outer_flushes) == (57, 40, 41, 99)
    rec.stop()
    assert all(t.stopped for t in rec._taps)
    rec._taps = (_Tap(None), _Tap(({"f": "1"}, 1, 1.0)))       # no reading yet: read now, over SSH
    rec.at_cut(60)
    assert rec.counters.guest_reads == 2 and rec.end.acks == 60


def test_a_cut_before_any_reading_saw_an_ack_waits_for_the_next_reading():
    """drop-flush acks hundreds a second: its cut can come before a streamed reading saw an ack;
    the ledger then waits for the next reading (bounded), never reads the guests over SSH."""
    import threading

    from harness.crash.counters import Recorder
    rec = Recorder.__new__(Recorder)
    rec.counters, rec.start, rec.end, rec.eatmydata, rec.seconds = _Counters(), Sample(acks=0), None, False, 0.0
    rec.enabled = True
    rec._taps = (_Tap(({"f": "0"}, 0, 1.0)), _Tap(({"f": "0"}, 0, 1.0)))
    threading.Timer(0.1, lambda: setattr(rec._taps[0], "latest", ({"f": "12"}, 30, 2.0))).start()
    rec.at_cut(40)
    assert (rec.end.acks, rec.end.domu_flushes, rec.counters.guest_reads) == (30, 12, 0)
    # a fault step ran after the latest readings (at 3.0): the cut waits for newer ones of both guests
    threading.Timer(0.1, lambda: (setattr(rec._taps[0], "latest", ({"f": "20"}, 35, 4.0)),
                                  setattr(rec._taps[1], "latest", ({"f": "9"}, 35, 4.0)))).start()
    rec.at_cut(40, changed=3.0)
    assert (rec.end.acks, rec.end.domu_flushes, rec.end.dom0_flushes) == (35, 20, 9)
