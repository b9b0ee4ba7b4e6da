"""The write-log parser and crash-image builder: byte-exact on a crafted log and on a log
written by the real QEMU (qemu-io with the blklogwrites driver)."""

import shutil
import subprocess

import pytest

from harness.catalog.workloads import Ack
from harness.crash import states as st_mod
from harness.crash import writelog as cs

SS = 512


def _img(tmp_path, name="base.img", size=64 * SS):
    p = tmp_path / name
    p.write_bytes(bytes(size))
    return p


def _crafted(tmp_path, **kw):
    log = tmp_path / "log.bin"
    cs.write_log(log, SS, [
        ("write", 2, b"A" * SS * 2),
        ("flush", 0, b""),
        ("write", 8, b"B" * SS),
        ("discard", 2, bytes(SS)),
        ("flush", 0, b""),
        ("write", 20, b"C" * SS),
        ("write", 30, b"D" * SS * 3),
    ], **kw)
    return log


def _tail_writes(log):
    """Positions of the writes (and discards) after the last flush: the last, unflushed epoch."""
    return [i for i in range(log.last_flush() + 1, len(log.entries))
            if log.entries[i].is_write or log.entries[i].flags & cs.DISCARD]


def test_parse_crafted_log(tmp_path):
    log = cs.parse(_crafted(tmp_path))
    assert log.sectorsize == SS and log.nr_entries == 7
    assert [(e.sector, e.nr_sectors, e.flags) for e in log.entries] == [
        (2, 2, 0), (0, 0, cs.FLUSH), (8, 1, 0), (2, 1, cs.DISCARD), (0, 0, cs.FLUSH), (20, 1, 0), (30, 3, 0)]
    assert log.flushes() == [1, 4] and log.last_flush() == 4 and _tail_writes(log) == [5, 6]


def test_entries_past_a_stale_super_block_are_read(tmp_path):
    """At a cut QEMU may not have rewritten nr_entries yet: the tail is still in the log."""
    log = cs.parse(_crafted(tmp_path, nr_entries=5))
    assert log.nr_entries == 5 and len(log.entries) == 7


def _plan(log, acks=(), seed=3, subsets=4, points=-1, first=0):
    return st_mod.plan_states(log, list(acks), seed, subsets, points, first)


def test_build_states_byte_exact(tmp_path):
    log = cs.parse(_crafted(tmp_path))
    base = _img(tmp_path)
    states = {s.name: s for s in _plan(log).states}
    worst = st_mod.build(log, base, states["flush-4"], tmp_path / "worst.img").read_bytes()
    want = bytearray(64 * SS)
    want[2 * SS:4 * SS] = b"A" * 2 * SS
    want[8 * SS:9 * SS] = b"B" * SS
    want[2 * SS:3 * SS] = bytes(SS)          # the discard
    assert worst == bytes(want)
    first = st_mod.build(log, base, states["flush-1"], tmp_path / "f1.img").read_bytes()
    assert first[2 * SS:4 * SS] == b"A" * 2 * SS and first[8 * SS:9 * SS] == bytes(SS)
    assert {"flush-1", "flush-4", "flush-4+0"} <= set(states)
    for name, st in states.items():
        if name.startswith("flush-4+"):       # subsets of the tail epoch: proper, non-empty
            assert set(st.positions) - set(range(5)) < {5, 6} and st.positions[:5] == (0, 1, 2, 3, 4)
        if name.startswith("flush-1+"):       # the epoch after flush 1 (a write and a discard)
            assert st.extra in ((2,), (3,))


def test_plan_is_seeded_and_samples_flush_points(tmp_path):
    log = cs.parse(_crafted(tmp_path))
    a = _plan(log, seed=9, subsets=5, points=0)
    assert a == _plan(log, seed=9, subsets=5, points=0)
    assert [s.name for s in a.states if "+" not in s.name] == ["flush-4"]     # the last flush always
    assert [s.name for s in _plan(log, subsets=0).states] == ["no-flush", "flush-1", "flush-4"]
    assert [s.name for s in _plan(log, subsets=0, first=2).states] == ["flush-1", "flush-4"]


def test_acks_map_to_the_last_flush_the_log_held_when_they_arrived(tmp_path):
    log = cs.parse(_crafted(tmp_path))
    f1, f4 = log.entries[1].end, log.entries[4].end
    acks = [Ack("0", 1.0, 0, f1), Ack("1", 2.0, 0, f4 - 1), Ack("2", 3.0, 0, f4), Ack("3", 4.0, 0, -1),
            Ack("4", 5.0, 0, 100)]
    assert st_mod.ack_bounds(log, acks) == [1, 1, 4, 4, -1]
    req = {s.name: s.required for s in _plan(log, acks[:3], subsets=0).states}
    assert req == {"no-flush": 0, "flush-1": 2, "flush-4": 3}   # acks hold from their flush on, never before


def test_equal_content_is_one_distinct_state(tmp_path):
    p = tmp_path / "log.bin"
    cs.write_log(p, SS, [("write", 2, b"A" * SS), ("flush", 0, b""), ("flush", 0, b""),      # nothing between
                         ("write", 2, b"B" * SS), ("flush", 0, b""), ("write", 2, b"A" * SS),  # back to A
                         ("flush", 0, b""), ("write", 5, b"C" * SS), ("write", 6, b"D" * SS)])
    plan = _plan(cs.parse(p), subsets=6)
    keys = {s.name: s.key for s in plan.states}
    assert keys["flush-1"] == keys["flush-2"] == keys["flush-6"] != keys["flush-4"]
    assert keys["flush-6+0"] != keys["flush-6"] and len({keys["flush-6+0"], keys["flush-6+1"]}) == 2
    assert [s.name for s in plan.distinct] == ["no-flush", "flush-1", "flush-4", "flush-6+0", "flush-6+1"]
    assert len(plan.distinct) == len(set(keys.values())) == 5
    assert plan.summary() == {"generated": len(plan.states), "distinct": 5}


def test_a_recipe_rebuilds_its_state(tmp_path):
    log = cs.parse(_crafted(tmp_path))
    for st in _plan(log).states:
        assert st_mod.CrashState.from_recipe(st.recipe()) == st


@pytest.mark.parametrize("damage, msg", [
    (lambda b: b"\0" * 8 + b[8:], "bad magic"),
    (lambda b: b[:SS] + b[SS:SS + 16] + (99).to_bytes(8, "little") + b[SS + 24:], "unknown flags"),
    (lambda b: b[:SS + SS // 2], "past the end"),
    (lambda b: b[:SS * 5], "promises"),
])
def test_damaged_logs_are_rejected(tmp_path, damage, msg):
    p = _crafted(tmp_path)
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(cs.LogError, match=msg):
        cs.parse(p)


needs_qemu_io = pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io (qemu-utils) not installed")


def _qemu_logged(tmp_path, cmds, extra_opts=""):
    """Run qemu-io commands on a 1 MiB disk through blklogwrites; (data disk, empty base, log)."""
    data = _img(tmp_path, "data.img", 1 << 20)
    base = _img(tmp_path, "base.img", 1 << 20)
    logf = tmp_path / "qemu.log"
    logf.write_bytes(b"")
    opts = (f"driver=blklogwrites,{extra_opts}file.driver=file,file.filename={data},"
            f"log.driver=file,log.filename={logf},log-sector-size={SS}")
    argv = ["qemu-io", "--image-opts", opts]
    for c in cmds:
        argv += ["-c", c]
    subprocess.run(argv, check=True, capture_output=True)
    return data, base, logf


@needs_qemu_io
def test_a_log_written_by_qemu_rebuilds_the_disk_exactly(tmp_path):
    data, base, logf = _qemu_logged(tmp_path, ["write -P 0xab 0 4k", "flush", "write -P 0xcd 8k 8k",
                                               "write -z 64k 4k", "flush", "write -P 0xef 512 1k"])
    log = cs.parse(logf)
    writes = [(e.sector * SS, e.nr_sectors * SS) for e in log.entries if e.is_write]
    assert writes == [(0, 4096), (8192, 8192), (65536, 4096), (512, 1024)]
    assert log.entries[-1].is_flush          # qemu-io flushes when it closes the image
    everything = st_mod.CrashState("all", len(log.entries) - 1, (), 0, "")
    assert st_mod.build(log, base, everything, tmp_path / "all.img").read_bytes() == data.read_bytes()
    # the state at the last flush before the 0xef write: that write is not there yet
    last_w = max(i for i, e in enumerate(log.entries) if e.is_write)
    f = max(i for i in log.flushes() if i < last_w)
    st = {s.name: s for s in _plan(log, subsets=0).states}[f"flush-{f}"]
    img = st_mod.build(log, base, st, tmp_path / "flush.img").read_bytes()
    assert img[:4096] == b"\xab" * 4096 and img[8192:16384] == b"\xcd" * 8192
    assert img[512:1536] == b"\xab" * 1024


@needs_qemu_io
def test_a_lying_disk_logs_no_flush_so_the_worst_state_keeps_nothing(tmp_path):
    """disk-lies (cache.no-flush=on on the logging node): QEMU never logs a flush, never even
    writes the super block; the worst crash state is the disk as it was before the run."""
    data, base, logf = _qemu_logged(tmp_path, ["write -P 0xab 0 4k", "flush", "write -P 0xcd 8k 4k"],
                                    extra_opts="cache.no-flush=on,")
    log = cs.parse(logf)
    assert log.nr_entries == 0 and log.flushes() == [] and len(_tail_writes(log)) == 2
    worst = _plan(log, subsets=0).states[0]
    assert worst.name == "no-flush"
    assert st_mod.build(log, base, worst, tmp_path / "w.img").read_bytes() == base.read_bytes()
    assert data.read_bytes()[:4096] == b"\xab" * 4096          # the data itself did reach the file
