"""guests/xdh-replay, the in-guest half of batched verification, on the host: it applies a
write log exactly as the host's crash-image builder does, its device-mapper ioctl structures
have the kernel's sizes, and it runs the workload's own verify (imported from xdh-workload)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from pathlib import Path

from harness.crash import states, writelog

ROOT = Path(__file__).resolve().parents[2]
SS = 512


def _load(name: str):
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(ROOT / "guests" / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_dm_ioctl_structures_have_the_kernel_sizes():
    replay = _load("xdh-replay")
    assert replay.DM_IOCTL.size == 312 and replay.DM_TARGET.size == 40      # linux/dm-ioctl.h
    assert replay._ioc(replay.DM_DEV_CREATE) == 0xC138FD03                  # DM_DEV_CREATE as dmsetup issues it


def test_the_guest_applies_a_log_like_the_host_builder(tmp_path):
    replay = _load("xdh-replay")
    p = tmp_path / "log.bin"
    writelog.write_log(p, SS, [("write", 2, b"A" * SS * 2), ("flush", 0, b""), ("write", 8, b"B" * SS),
                               ("discard", 2, bytes(SS)), ("flush", 0, b""), ("write", 20, b"C" * SS),
                               ("write", 30, b"D" * SS * 3)])
    log = writelog.parse(p)
    base = tmp_path / "base.img"
    base.write_bytes(b"\xee" * 64 * SS)
    entries = log.rows()
    guest_log = replay.Log(str(p), SS, entries)
    for st in states.plan_states(log, [], 4, 3, -1).states:
        host = states.build(log, base, st, tmp_path / "host.img").read_bytes()
        guest = tmp_path / "guest.img"
        guest.write_bytes(base.read_bytes())
        fd = os.open(guest, os.O_RDWR)
        try:
            guest_log.apply(fd, range(st.flush + 1))
            guest_log.apply(fd, st.extra)
        finally:
            os.close(fd)
        assert guest.read_bytes() == host, st.name


def test_the_guest_runs_the_workloads_own_verify(tmp_path):
    replay = _load("xdh-replay")
    verify, args = replay.load_verify(str(ROOT / "guests" / "xdh-workload"),
                                      ["verify", "append", "--seed", "5", "--dir", str(tmp_path)])
    assert verify.__name__ == "verify_append" and args.seed == 5
    assert verify(args) == {"exists": False, "records": []}
