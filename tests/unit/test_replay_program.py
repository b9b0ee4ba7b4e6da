"""guests/xdh-replay, the in-guest half of batched verification, on the host: it applies a
write log exactly as the host's crash-image builder does, its device-mapper ioctl structures
have the kernel's sizes, it runs the workload's own verify (imported from xdh-workload), and a
manifest program's resident verify-many (fake programs, and examples/kvstore/kv-fsync)."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.crash import states, writelog

ROOT = Path(__file__).resolve().parents[2]
SS = 512


def _load(name: str, where: str = "guests"):
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(ROOT / where / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_dm_ioctl_structures_have_the_kernel_sizes():
    replay = _load("xdh-replay")
    assert replay.DM_IOCTL.size == 312 and replay.DM_TARGET.size == 40      # linux/dm-ioctl.h
    assert replay._ioc(replay.DM_DEV_CREATE) == 0xC138FD03                  # DM_DEV_CREATE as dmsetup issues it


def guest_build(guest_log, base, st, out) -> bytes:
    """A crash state as ``xdh-replay`` builds it (its ``Log``), on a copy of ``base``."""
    out.write_bytes(base.read_bytes())
    fd = os.open(out, os.O_RDWR)
    try:
        guest_log.apply(fd, range(st.flush + 1))
        guest_log.apply(fd, st.extra)
        guest_log.apply_pieces(fd, [list(p) for p in st.torn])
    finally:
        os.close(fd)
    return out.read_bytes()


def test_the_guest_applies_a_log_like_the_host_builder(tmp_path):
    replay = _load("xdh-replay")
    p = tmp_path / "log.bin"
    writelog.write_log(p, SS, [("write", 2, b"A" * SS * 2), ("flush", 0, b""), ("write", 8, b"B" * SS),
                               ("discard", 2, bytes(SS)), ("flush", 0, b""), ("write", 20, b"C" * SS),
                               ("write", 30, b"D" * SS * 3)])
    log = writelog.parse(p)
    base = tmp_path / "base.img"
    base.write_bytes(b"\xee" * 64 * SS)
    guest_log = replay.Log(str(p), SS, log.rows())
    for st in states.plan_states(log, [], 4, 3, -1).states:
        host = states.build(log, base, st, tmp_path / "host.img").read_bytes()
        assert guest_build(guest_log, base, st, tmp_path / "guest.img") == host, st.name


def test_the_guest_runs_the_workloads_own_verify(tmp_path):
    replay = _load("xdh-replay")
    verify, args = replay.load_verify(str(ROOT / "guests" / "xdh-workload"),
                                      ["verify", "append", "--seed", "5", "--dir", str(tmp_path)])
    assert verify.__name__ == "verify_append" and args.seed == 5
    assert verify(args) == {"exists": False, "records": []}


# --- verify-many: one resident program per batch ---------------------------------------------
FAKE = """#!{python}
import json, os, sys
how = sys.argv[1]
print("fake: started", file=sys.stderr, flush=True)
for n, line in enumerate(sys.stdin):
    req = json.loads(line)
    if how == "dies" and n == 1:
        print("fake: lost its database", file=sys.stderr)
        sys.exit(3)
    if how == "hangs":
        continue
    if how == "garbles":
        print("Traceback (most recent call last):", flush=True)
        continue
    print(json.dumps({{"request": req, "pid": os.getpid(), "argv": sys.argv[2:]}}), flush=True)
"""


@pytest.fixture
def replay(tmp_path, monkeypatch):
    mod = _load("xdh-replay")
    monkeypatch.setattr(mod, "VERIFY_MANY_ERR", str(tmp_path / "verify-many.err"))
    return mod


@pytest.fixture
def fake(tmp_path) -> str:
    prog = tmp_path / "fake-verify"
    prog.write_text(FAKE.format(python=sys.executable))
    prog.chmod(0o755)
    return str(prog)


def _state(n: int, device: str = "/dev/xdh/xdh-check") -> argparse.Namespace:
    return argparse.Namespace(state=n, device=device)


@pytest.mark.parametrize("needs_fs, target", [(True, {"dir": "/mnt/dut"}), (False, {"device": "/dev/xdh/xdh-check"})])
def test_a_resident_verify_answers_every_state_in_order_from_one_process(replay, fake, needs_fs, target):
    resident = replay.Resident([fake, "ok"], needs_fs)
    answers = [resident(_state(n)) for n in (0, 3, 7)]
    resident.close()
    assert [a["request"] for a in answers] == [{"state": n, **target} for n in (0, 3, 7)]
    assert len({a["pid"] for a in answers}) == 1 and resident.proc.returncode == 0     # EOF: exit 0


def test_a_resident_verify_that_dies_mid_batch_names_its_exit_and_stderr(replay, fake):
    resident = replay.Resident([fake, "dies"], True)
    assert "request" in resident(_state(0))
    error = resident(_state(1))["verify_error"]
    assert error.startswith("fake-verify verify-many exited 3 at state 1; stderr: ")
    assert error.endswith("fake: lost its database")
    assert resident(_state(2)) == {"verify_error": error}       # stopped: no answer is trusted after it
    resident.close()


def test_a_resident_verify_that_prints_no_json_or_hangs_is_stopped(replay, fake):
    garbles = replay.Resident([fake, "garbles"], True)
    error = garbles(_state(4))["verify_error"]
    assert error.startswith("fake-verify verify-many printed no JSON object for state 4: "
                            "'Traceback (most recent call last):'; stderr: fake: started")
    assert garbles.proc.returncode is not None
    hangs = replay.Resident([fake, "hangs"], True, timeout=0.3)
    assert hangs(_state(5))["verify_error"].startswith("fake-verify verify-many did not answer state 5 within 0.3 s")
    assert hangs.proc.returncode is not None
    missing = replay.Resident([fake + "-missing"], True)
    assert "fake-verify-missing verify-many did not start: " in missing(_state(0))["verify_error"]
    missing.close()


def test_the_plan_chooses_the_resident_and_names_the_check_device(replay, fake):
    verify, vargs, close = replay.make_verify({"verify_many_command": [fake, "ok", "--device", "{device}"],
                                               "needs_fs": False})
    vargs.device, vargs.state = "/dev/xdh/xdh-check", 2
    try:
        answer = verify(vargs)
    finally:
        close()
    assert answer["argv"] == ["--device", "/dev/xdh/xdh-check"] and answer["request"]["state"] == 2
    verify, vargs, close = replay.make_verify({"verify_command": ["true"], "needs_fs": True})
    assert vars(vargs) == {"device": None} and close() is None


def test_kv_fsyncs_verify_many_reports_as_its_verify_does(tmp_path, replay, monkeypatch):
    kv = _load("kv-fsync", "examples/kvstore")
    seed, prog = 9, str(ROOT / "examples" / "kvstore" / "kv-fsync")

    def put(key: str, version: int, size: int) -> bytes:
        return kv.record(key, version, kv.value(seed, key, version, size))

    good = put("k1", 1, 100) + put("k2", 1, 7) + put("k1", 2, 300)
    damaged = bytearray(good + put("k3", 1, 50))
    damaged[len(good) - 10] ^= 0xFF                              # k1=2's value, with k3=1 valid after it
    logs = {"empty": None, "clean": good, "torn": good + put("k2", 2, 200)[:40], "damaged": bytes(damaged)}
    for name, data in logs.items():
        (tmp_path / name).mkdir()
        if data is not None:
            (tmp_path / name / "kv.log").write_bytes(data)
    expected = [json.loads(subprocess.run([sys.executable, prog, "verify", "--seed", str(seed), "--dir",
                                           str(tmp_path / name)], capture_output=True, check=True).stdout)
                for name in logs]
    three = ["k1=1", "k2=1", "k1=2"]
    assert [e["present"] for e in expected] == [[], three, three, three[:2]]
    assert [e["corrupt"] for e in expected] == [[], [], [], ["k1=2", "k3=1"]]    # a torn tail is no damage
    resident = replay.Resident([prog, "verify-many", "--seed", str(seed), "--dir", "/mnt/dut"], True)
    got = []
    for n, name in enumerate(logs):
        monkeypatch.setattr(replay, "MOUNT", str(tmp_path / name))          # xdh mounts each state there
        got.append(resident(_state(n)))
    resident.close()
    assert got == expected and resident.proc.returncode == 0


def test_create_fsyncs_verify_many_reports_as_its_verify_does(tmp_path, replay, monkeypatch):
    cf = _load("create-fsync", "examples/createfile")
    seed, prog = 4, str(ROOT / "examples" / "createfile" / "create-fsync")
    dirs = {"empty": {}, "two": {0: True, 1: True}, "torn": {0: True, 1: True, 2: False}}
    for name, files in dirs.items():
        (tmp_path / name).mkdir()
        for n, whole in files.items():
            data = cf.content(seed, n, 3000)
            (tmp_path / name / f"f{n}").write_bytes(data if whole else data[:1])
    expected = [json.loads(subprocess.run([sys.executable, prog, "verify", "--seed", str(seed), "--dir",
                                           str(tmp_path / name)], capture_output=True, check=True).stdout)
                for name in dirs]
    assert [(e["present"], e["corrupt"]) for e in expected] == [([], []), (["f0", "f1"], []),
                                                                (["f0", "f1"], ["f2"])]
    resident = replay.Resident([prog, "verify-many", "--seed", str(seed), "--dir", "/mnt/dut"], True)
    got = []
    for n, name in enumerate(dirs):
        monkeypatch.setattr(replay, "MOUNT", str(tmp_path / name))
        got.append(resident(_state(n)))
    resident.close()
    assert got == expected and resident.proc.returncode == 0


def test_the_torn_record_control_tells_a_torn_record_from_a_whole_one(tmp_path, replay):
    """The integration test's torn-write workload (tests/integration/workloads/torn-record), on
    files standing in for the raw device: whole versions read back, a record with one 4 KiB unit
    of the next version on it does not; its verify-many answers as its verify does."""
    tr = _load("torn-record", "tests/integration/workloads/torn-record")
    disks = {"blank": b"", "v3": tr.record(3), "torn": tr.record(3)[:4096] + tr.record(2)[4096:]}
    for name, rec in disks.items():
        with open(tmp_path / name, "wb") as f:
            f.truncate(tr.OFFSET + tr.SIZE)
            f.seek(tr.OFFSET)
            f.write(rec)
    expected = [tr.verify(str(tmp_path / name)) for name in disks]
    assert [e["value"] for e in expected] == [None, 3, None] and "torn" in expected[2]["error"]
    prog = str(ROOT / "tests/integration/workloads/torn-record/torn-record")
    resident = replay.Resident([prog, "verify-many", "--seed", "1", "--device", "{device}"], False)
    got = [resident(_state(n, str(tmp_path / name))) for n, name in enumerate(disks)]
    resident.close()
    assert got == expected and resident.proc.returncode == 0
