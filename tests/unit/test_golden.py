"""Golden-file tests: the texts xdh generates, compared with reviewed files in tests/golden/.

Covered: the domU's xl config per backend mode (golden/xl/), the outer QEMU's argv of the
stack and of the fast verifier, one argument per line (golden/qemu-argv/), summary.txt,
junit.xml and a merged summary (golden/summary/), and the compare report.md (golden/compare/).
The argv goldens are taken from the real ``XenStack._launch`` and ``FastVerifier._start`` with
the launch replaced by a capture (no QEMU is ever started) and a constant SSH port.

Switch: ``XDH_REGEN_GOLDEN=1`` makes ``assert_golden`` (re)write the files instead of comparing
(the tests then pass):

    XDH_REGEN_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden.py -q
    git diff tests/golden        # read it: a golden is a reviewed expectation, not a snapshot

Without the switch a different or missing golden fails, with a diff and the switch named;
a golden no test writes any more (a renamed case) fails ``test_no_stale_goldens``: delete it.
Machine-specific text is normalized: temporary paths become ``<tmp>``, the inherited
state fd ``<fd>``, the merge timestamp ``<timestamp>``.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from harness.campaign import compare
from harness.campaign.compare import Cell, CompareConfig
from harness.catalog import backends, faults
from harness.catalog.workloads import Ack
from harness.config import Accel, CutMode, DiskCache, Reset, StackConfig, TortureConfig, VerifyPath
from harness.crash.ended import WorkloadEnd
from harness.crash.files import ack_line
from harness.crash.ledger import Attribution, Kind, Layer
from harness.crash.plan import CutPlan
from harness.images import BuiltImage, ImagePair
from harness.jsonio import write_json
from harness.report import matrix
from harness.report import summary as summary_mod
from harness.report.records import CampaignSummary, IterationRecord
from harness.report.rundir import RunDir
from harness.stack import xen as xen_mod
from harness.stack.boot import ColdBoot
from harness.stack.xl import domu_config
from harness.status import Status
from harness.verify import fast as fast_mod
from harness.verify.oracle import Violation
from harness.vm import accel as accel_mod
from harness.vm.accel import AccelChoice
from harness.vm.argv import MachineSpec, build_argv, quote_optarg

REGEN_ENV = "XDH_REGEN_GOLDEN"
GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
SSH_PORT = 40022            # the port launch_on_free_port would pick, fixed
ROOT_DEV, DUT_DEV = "/dev/vdb", "/dev/vdc"   # dom0's devices of the outer disks domu-root and dut


def assert_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``tests/golden/<name>``; with XDH_REGEN_GOLDEN=1, write it instead."""
    path = GOLDEN_DIR / name
    if os.environ.get(REGEN_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing: create it with {REGEN_ENV}=1, then review it", pytrace=False)
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), text.splitlines(keepends=True),
                                            f"golden/{name}", "actual"))
        pytest.fail(f"{name} differs from its golden file {path}:\n{diff}\n"
                    f"if the change is intended, regenerate with {REGEN_ENV}=1 and review the diff", pytrace=False)


def normalize(text: str, tmp: Path) -> str:
    """``tmp`` (as given, resolved, and comma-escaped as in a QEMU option) becomes ``<tmp>``."""
    for p in sorted({str(tmp.resolve()), str(tmp)}, key=len, reverse=True):
        text = text.replace(quote_optarg(p), "<tmp>").replace(p, "<tmp>")
    return text


# --- 1. the domU's xl config -------------------------------------------------------------------
DM_OVERRIDE_CASE = "qdisk-backend-lies"
XL_CASES = [*backends.BACKENDS.names(), DM_OVERRIDE_CASE]


@pytest.mark.parametrize("case", XL_CASES)
def test_domu_xl_config(case):
    if case == DM_OVERRIDE_CASE:
        config = TortureConfig(fault="backend-lies").effective_stack()
        assert config.device_model     # the fault replaces dom0's device model
    else:
        config = StackConfig(backend=case)
    text = domu_config(config, backends.get(config.backend), ROOT_DEV, DUT_DEV)
    assert_golden(f"xl/{case}.cfg", text)


# --- 2. the outer QEMU's argv ------------------------------------------------------------------
class _Captured(Exception):
    """Raised instead of launching: carries the spec the code under test built."""

    def __init__(self, spec: MachineSpec):
        super().__init__("captured")
        self.spec = spec


@pytest.fixture
def capture(monkeypatch):
    """No QEMU, no KVM probe: the accelerator is fixed, and a launch only captures its spec."""
    monkeypatch.setattr(accel_mod, "choose", lambda *a, **k: AccelChoice("tcg", "test"))

    def launch(make_spec, log_dir, name, attempts=3, before_retry=None, machines=None):
        raise _Captured(make_spec(SSH_PORT))
    for module in (xen_mod, fast_mod):
        monkeypatch.setattr(module, "launch_on_free_port", launch)
    monkeypatch.setattr(fast_mod, "make_overlay", lambda *a, **k: None)


def _image(tmp: Path, name: str, artifacts: dict[str, str]) -> BuiltImage:
    return BuiltImage(name=name, digest=f"{name}0123456789ab", dir=tmp / "cache" / "images" / f"{name}-0123456789ab",
                      host_key="ssh-ed25519 AAAAtest", artifacts=artifacts, packages={}, build_seconds=0.0,
                      built_at="", root_device="/dev/vda")


def _images(tmp: Path) -> ImagePair:
    k = {"kernel": "vmlinuz-6.1.0-28-amd64", "initrd": "initrd.img-6.1.0-28-amd64"}
    return ImagePair(_image(tmp, "dom0", {"xen": "xen-4.17-amd64", **k}), _image(tmp, "domu", k))


class _Store:
    def __init__(self, tmp: Path):
        self.root = tmp / "cache"


class _RestoreBoot:
    """The part of ``boot.Restore`` that ``_launch`` uses: a saved state to load, as a real fd
    (``_launch`` closes it)."""

    dut_name = "dut.qcow2"

    def __init__(self, state: Path):
        self.state = state
        self.fds: list[int] = []

    def state_fd(self) -> int | None:
        fd = os.open(self.state, os.O_RDONLY)
        self.fds.append(fd)
        return fd


# name -> (fault, volatile disk-cache model, restore from a snapshot)
STACK_CASES = {
    "stack-cold": ("none", False, False),
    "stack-flush-eio": ("flush-eio", False, False),
    "stack-volatile": ("none", True, False),
    "stack-disk-lies": ("disk-lies", False, False),
    "stack-disk-lies-volatile": ("disk-lies", True, False),
    "stack-flush-eio-volatile": ("flush-eio", True, False),
    "stack-restore": ("none", False, True),
}


def _render(spec: MachineSpec, tmp: Path) -> str:
    argv = build_argv(spec, tmp / "run" / "qmp.sock", tmp / "run" / "serial.log")
    assert all("\n" not in a for a in argv)
    return normalize("\n".join(argv) + "\n", tmp)


@pytest.mark.parametrize("case", list(STACK_CASES))
def test_stack_qemu_argv(case, tmp_path, capture):
    """The crash run's stack as ``crash.run.run_until_cut`` builds it: the disk under test's
    drive from the fault and the disk-cache model, the stack in iteration/boot-a."""
    fault_name, volatile, restore = STACK_CASES[case]
    boot = _RestoreBoot(tmp_path / "snapshot" / "state") if restore else ColdBoot()
    if restore:
        boot.state.parent.mkdir(parents=True)
        boot.state.write_bytes(b"")
    paths = RunDir(tmp_path / "run").iteration(3).crash_paths(boot.dut_name)
    cfg = TortureConfig(fault=fault_name, stack=StackConfig(accel=Accel.TCG))
    # the same drive as run_until_cut
    drive = xen_mod.dut_drive(paths.dut, paths.write_log if volatile else None, faults.get(fault_name), paths.boot)
    stack = xen_mod.XenStack(cfg.effective_stack(), paths.boot, _images(tmp_path), drive, boot, _Store(tmp_path),
                             progress=lambda m: None)
    with pytest.raises(_Captured) as got:
        stack._launch()
    text = _render(got.value.spec, tmp_path)
    if restore:
        (fd,) = boot.fds
        assert got.value.spec.incoming_fd == fd
        text = text.replace(f"\nfd:{fd}\n", "\nfd:<fd>\n")
    assert_golden(f"qemu-argv/{case}.txt", text)
    if fault_name == "flush-eio":
        assert_golden("qemu-argv/flush-eio-blkdebug.conf", (paths.boot / "blkdebug.conf").read_text())


def test_verifier_qemu_argv(tmp_path, capture):
    images = _images(tmp_path)
    verifier = fast_mod.FastVerifier(tmp_path / "run" / "verifier", images.domu, _Store(tmp_path), accel=Accel.TCG)
    with pytest.raises(_Captured) as got:
        verifier.start()
    # the first start boots it in the cache, to save it (verify/saved.py); the key hashes the QEMU version
    text = re.sub(r"verifier-[0-9a-f]{16}", "verifier-KEY", _render(got.value.spec, tmp_path))
    assert_golden("qemu-argv/verifier.txt", text)


# --- 3. summary.txt, junit.xml, merged summary --------------------------------------------------
def _cut(acks: int | None = None, seconds: float | None = None) -> CutPlan:
    return CutPlan(CutMode.ACKS if acks is not None else CutMode.TIME, acks, seconds)


def _rec(index: int, seed: int, status: Status, *, name: str = "", fault: str = "none", backend: str = "qdisk",
         cut: CutPlan | None = None, acked: int = 0, **kw) -> IterationRecord:
    kw["disk_cache"] = DiskCache(kw.get("disk_cache", "none"))
    return IterationRecord(index=index, seed=seed, name=name or f"iter-{index:04d}", status=status, workload="append",
                           fault=fault, backend=backend, cut=cut or _cut(acks=acked), acked=acked,
                           reset=Reset.SNAPSHOT, verify=VerifyPath.FAST, **kw)


def _lost(a: int, b: int, acked: int, state: str = "") -> Violation:
    return Violation("lost", f"acked records {a}..{b}" if a != b else f"acked records {a}", "zero", b - a + 1,
                     {"id": str(b), "t": 100.0, "before_cut_s": 0.25}, ranges=[(a, b)], state=state)


def _run_a() -> tuple[TortureConfig, IterationRecord | None, list[IterationRecord], float]:
    """qdisk, no fault, disk cache none: the canary caught, then each ending once."""
    cfg = TortureConfig(seed=1234, iterations=4)
    canary = _rec(-1, 70104251237745, Status.LOSS, name="canary", fault="drop-flush", acked=57, lost_acked=12,
                  violations=[_lost(45, 56, 57)], seconds={"boot": 12.3, "total": 41.7},
                  fault_applied="[write through]")
    its = [
        _rec(0, 11111111111111, Status.PASS, acked=131, seconds={"boot": 10.1, "verify": 8.2, "total": 35.4}),
        _rec(1, 22222222222222, Status.LOSS, acked=88, lost_acked=5, cut=_cut(seconds=3.25),
             violations=[_lost(83, 87, 88), Violation("corrupt", "acked records 80", "corrupt <0xab & 0xcd>", 1,
                                                      ranges=[(80, 80)]),
                         Violation("integrity", "file 'log'", "41472 < 45056 bytes", 88)],
             seconds={"boot": 9.9, "verify": 8.0, "total": 33.0},
             crash_image="/srv/xdh/runs/a/iterations/iter-0001/dut.qcow2"),
        _rec(2, 33333333333333, Status.GUEST_DIED, acked=20,
             error='QEMU exited (status 1): "xl create" never returned & dom0 panicked',
             seconds={"boot": 300.2, "total": 301.0}),
        _rec(3, 44444444444444, Status.ERROR, acked=0, cut=_cut(acks=150),
             error="verify: unexpected JSON from the verifier <none> (a bug in xdh)", seconds={"total": 2.5}),
    ]
    return cfg, canary, its, 600.0


def _run_b() -> tuple[TortureConfig, IterationRecord | None, list[IterationRecord], float]:
    """phy with the volatile disk-cache model: crash states beyond the cut; a workload that ended early."""
    cfg = TortureConfig(seed=99, iterations=2, disk_cache="volatile", stack=StackConfig(backend="phy"))
    canary = _rec(-1, 55555555555555, Status.LOSS, name="canary", fault="drop-flush", backend="phy", acked=40,
                  lost_acked=40, violations=[_lost(0, 39, 40)], disk_cache="volatile",
                  crash_states=6, seconds={"total": 50.0})
    its = [
        _rec(1, 66666666666666, Status.LOSS, backend="phy", acked=61, lost_acked=1, disk_cache="volatile",
             crash_states=6, violations=[_lost(60, 60, 61, state="subset-2")], seconds={"total": 44.0}),
        _rec(0, 77777777777777, Status.PASS, backend="phy", acked=77, disk_cache="volatile", crash_states=6,
             seconds={"total": 40.0},     # its fsync failed: judged on its 77 acks, the failure shown
             workload_error=WorkloadEnd(77, 1, "OSError: [Errno 5] Input/output error")),
    ]
    return cfg, canary, its, 150.0


def _run_canary_missed() -> tuple[TortureConfig, IterationRecord | None, list[IterationRecord], float]:
    """The canary not caught: the campaign runs no iteration (exit code 3)."""
    cfg = TortureConfig(seed=5, iterations=3, stack=StackConfig(backend="phy"))
    canary = _rec(-1, 88888888888888, Status.PASS, name="canary", fault="drop-flush", backend="phy", acked=101,
                  seconds={"total": 38.0})
    return cfg, canary, [], 38.4


RUNS = {"run-a": _run_a, "run-b": _run_b, "canary-missed": _run_canary_missed}


def _write_run(root: Path, name: str) -> Path:
    cfg, canary, its, seconds = RUNS[name]()
    run_dir = root / name
    RunDir(run_dir).create()
    summary = summary_mod.summarize(run_dir, cfg.to_json(), cfg.seed, canary, its, seconds)
    summary_mod.write(summary, run_dir)
    return run_dir


@pytest.mark.parametrize("name", list(RUNS))
def test_summary_and_junit(name, tmp_path):
    run_dir = _write_run(tmp_path, name)
    for f in ("summary.txt", "junit.xml"):
        assert_golden(f"summary/{name}/{f}", normalize((run_dir / f).read_text(), tmp_path))


def test_merged_summary(tmp_path):
    dirs = [_write_run(tmp_path, "run-a"), _write_run(tmp_path, "run-b")]
    out = tmp_path / "merged"
    merged = summary_mod.merge(dirs, out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", merged.merged_at)
    stamp = re.compile(r'"merged_at": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"')
    text, n = stamp.subn('"merged_at": "<timestamp>"', (out / "summary.json").read_text())
    assert n == 1
    assert_golden("summary/merged/summary.json", normalize(text, tmp_path))
    for f in ("summary.txt", "junit.xml"):
        assert_golden(f"summary/merged/{f}", normalize((out / f).read_text(), tmp_path))


# --- 4. the compare report ---------------------------------------------------------------------
COMMAND = "xdh compare --backends qdisk,phy --faults none,drop-flush,backend-lies --iterations 3 --seed 7"


def _fake_cell(root: Path, cell: Cell, statuses: list[str], lat=(100, 200, 300), ops: float = 50.0) -> None:
    """A cell's run directory as a campaign leaves it (the pattern of test_compare._fake_cell)."""
    d = root / "cells" / cell.name
    its = []
    for k, st in enumerate(statuses):
        name = f"iter-{k:04d}"
        (d / "iterations" / name).mkdir(parents=True)
        (d / "iterations" / name / "acks.jsonl").write_text("".join(ack_line(Ack(str(i), i, v))
                                                                    for i, v in enumerate(lat)))
        loss = st == "loss"
        its.append(IterationRecord(k, 7, name, Status(st), cell.workload, cell.fault, cell.backend,
                                   CutPlan(CutMode.ACKS, 20), acked=len(lat), lost_acked=2 if loss else 0,
                                   crash_states=5 if cell.disk_cache == "volatile" else 1,
                                   violations=[Violation("lost", "acked records 1..2", "zero", 2, ranges=[(1, 2)])]
                                   if loss else [],
                                   error="dom0 did not come up in 300 s (SSH)" if st == "guest-died" else "",
                                   fsync_latency_us={"ops_per_s": ops}, seconds={"total": 30.0},
                                   **_fake_ledger(cell, k)))
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "summary.json", CampaignSummary.make(str(d), {}, 7, None, its, 95.0).to_json())
    write_json(d / "config.json", {"config": {}, "seed": 7, "versions": VERSIONS})


def _fake_ledger(cell: Cell, k: int) -> dict:
    """What the flush ledger leaves in a record, by the pattern each fault leaves (the counters'
    attribution itself is tests/unit/test_ledger.py's)."""
    blamed = {"none": (Kind.NONE, None), "drop-flush": (Kind.DROP, Layer.DOMU_BLOCK),
              "backend-lies": (Kind.LIE, Layer.BACKEND)}[cell.fault]
    ring = 1.0 if cell.backend == "phy" else 1.1 + 0.1 * k
    per_op = {"domU block layer": 1.0 + 0.1 * k, "blkfront": ring, "dom0 block device": ring,
              "outer disk": ring + (0.5 if cell.disk_cache == "volatile" else 0.2)}
    if cell.fault == "drop-flush":
        per_op = dict.fromkeys(per_op, 0.0)
    return {"flush": Attribution(*blamed, "..."), "flush_per_op": per_op}


# what config.json records of the components (stack.xen.versions), as on bookworm
VERSIONS = {"host_qemu": "7.2.22", "release": "bookworm",
            "dom0": {"xen-hypervisor-4.17-amd64": "4.17.6+25-g2ea78ea1dc-1",
                     "qemu-system-xen": "1:7.2+dfsg-7+deb12u18+b3"},
            "domu": {"linux-image-amd64": "6.1.192-2"}, "dom0_kernel": "vmlinuz-6.1.0-56-amd64",
            "domu_kernel": "vmlinuz-6.1.0-56-amd64", "own_debs": {"dom0": [], "domu": []}}


def _fake_compare(root: Path, backend: str, wall: float) -> Path:
    """One piece of a compare matrix: one backend, three faults, both disk-cache models."""
    cfg = CompareConfig(backends=(backend,), faults=("none", "drop-flush", "backend-lies"), iterations=3, seed=7,
                        disk_caches=("none", "volatile"))
    run = RunDir(root / f"piece-{backend}").create()
    cells = compare.plan_cells(cfg)
    run.write_compare_config(asdict(cfg), [c.to_json() for c in cells])
    run.write_compare_wall(wall)
    slow = backend == "phy"
    for cell in cells:
        if cell.skip:
            continue
        if cell.name == "bookworm__qdisk__backend-lies__append__volatile":
            # a campaign that raised (a group whose canary could not run would say "stack unavailable")
            run.write_cell_error(cell.name, "LaunchError: dom0's device model did not create the disk")
            continue
        # as measured (docs/compare): phy without the model keeps what the domU did not flush
        lost = cell.fault != "none" and (backend != "phy" or cell.disk_cache == "volatile")
        statuses = ["loss"] * 3 if lost else ["pass"] * 3
        if cell.name == "bookworm__phy__none__append__none":
            statuses = ["pass", "guest-died", "pass"]
        _fake_cell(run.path, cell, statuses, lat=(900, 1200, 4000) if slow else (100, 200, 300),
                   ops=20.0 if slow else 55.5)
    for group in {c.group for c in cells}:
        caught = not (backend == "phy" and group.endswith("__none"))
        run.write_canary(group, {"status": "loss" if caught else "pass"})
    return run.path


def test_compare_report(tmp_path):
    pieces = [_fake_compare(tmp_path, "qdisk", 1800.0), _fake_compare(tmp_path, "phy", 1500.0)]
    out = tmp_path / "report"
    matrix.write_report(pieces, out, command=COMMAND)
    md = (out / "report.md").read_text()
    assert "Total wall time: 55 min" in md     # 3300 s from compare-wall.json, not the clock
    assert_golden("compare/report.md", normalize(md, tmp_path))


# --- the switch itself --------------------------------------------------------------------------
def _expected_goldens() -> set[str]:
    names = {f"xl/{c}.cfg" for c in XL_CASES}
    names |= {f"qemu-argv/{c}.txt" for c in STACK_CASES} | {"qemu-argv/verifier.txt",
                                                            "qemu-argv/flush-eio-blkdebug.conf"}
    names |= {f"summary/{r}/{f}" for r in RUNS for f in ("summary.txt", "junit.xml")}
    names |= {"summary/merged/summary.json", "summary/merged/summary.txt", "summary/merged/junit.xml",
              "compare/report.md"}
    return names


def test_no_stale_goldens():
    """Every file in tests/golden is checked by a test (a renamed case leaves no orphan behind)."""
    if os.environ.get(REGEN_ENV) == "1":
        pytest.skip("regenerating")
    present = {str(p.relative_to(GOLDEN_DIR)) for p in GOLDEN_DIR.rglob("*") if p.is_file()}
    assert present == _expected_goldens(), (f"orphaned: {sorted(present - _expected_goldens())}, "
                                            f"missing: {sorted(_expected_goldens() - present)}")


def test_switch_off_fails_on_a_changed_or_missing_golden(tmp_path, monkeypatch):
    name = "xl/qdisk.cfg"
    actual = domu_config(StackConfig(), backends.get("qdisk"), ROOT_DEV, DUT_DEV)
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN_DIR, copy)
    assert (copy / name).read_text() == actual, f"the golden {name} itself is stale"
    (copy / name).write_text(actual.replace("memory = 512", "memory = 1024"))
    monkeypatch.setattr(sys.modules[__name__], "GOLDEN_DIR", copy)
    monkeypatch.delenv(REGEN_ENV, raising=False)

    with pytest.raises(pytest.fail.Exception, match=REGEN_ENV) as changed:
        assert_golden(name, actual)
    assert "-memory = 1024" in str(changed.value) and "+memory = 512" in str(changed.value)
    with pytest.raises(pytest.fail.Exception, match=f"missing: create it with {REGEN_ENV}=1"):
        assert_golden("xl/no-such-mode.cfg", actual)

    monkeypatch.setenv(REGEN_ENV, "1")          # the switch on: rewrite, pass
    assert_golden(name, actual)
    assert (copy / name).read_text() == actual
    monkeypatch.setenv(REGEN_ENV, "0")          # anything but "1" compares
    (copy / name).write_text(actual + "# edited\n")
    with pytest.raises(pytest.fail.Exception, match=REGEN_ENV):
        assert_golden(name, actual)


def test_normalize_leaves_no_tmp_path(tmp_path):
    odd = tmp_path / "a,b"
    text = normalize(f"filename={quote_optarg(str(odd))}/dut.img,x={odd.resolve()}", odd)
    assert text == "filename=<tmp>/dut.img,x=<tmp>"

