"""The batch plan names a manifest workload's resident ``verify-many`` (its argv) when the
manifest has ``verify_many = true`` and the caller wants it, else the ``verify`` run per state.
A fake verifier stands in for the VM (tests/unit/test_verifier_stop.py's machine and shell)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import paths
from harness.catalog import workloads
from harness.images import ImageStore
from harness.verify import batch, fast
from harness.verify.batch import LogView, StateJob, verify_states
from harness.verify.fast import FastVerifier
from harness.verify.guest import VerifyJob
from tests.fakes import fake_image
from tests.unit.test_verifier_stop import FakeMachine, FakeShell


class PlanShell(FakeShell):
    """Keeps what is copied into the guest (the plan, the program)."""

    def __init__(self, machine: FakeMachine):
        super().__init__(machine)
        self.files: dict[str, bytes] = {}
        self.stream_lines = ['{"id": 0, "report": {"present": []}, "seconds": 0.1}', '{"done": 1}']

    def put_bytes(self, data: bytes, path: str, mode: int | None = None) -> None:
        self.files[path] = data


@pytest.fixture
def verifier(tmp_path, monkeypatch) -> FastVerifier:
    monkeypatch.setattr(fast, "make_overlay", lambda image, overlay, *a, **kw: Path(overlay).touch())
    fv = FastVerifier(tmp_path / "verifier", fake_image(tmp_path, "domu"), ImageStore(tmp_path / "cache"))
    fv.machine = FakeMachine()            # type: ignore[assignment]
    return fv


def _plan(fv, tmp_path, workload: workloads.Workload, **kw) -> dict:
    fv.shell = PlanShell(fv.machine)
    job = VerifyJob(workload, 7, workload.params(512, {}), "raw")
    log = LogView(tmp_path / "log", 512, [[0, 0, 1, 0, 0]])
    states = [StateJob(0, (0,))]
    assert len(list(verify_states(fv, tmp_path / "base", log, states, job, tmp_path / "states", **kw))) == 1
    return json.loads(fv.shell.files[batch.PLAN])


def test_a_verify_many_workload_gets_one_resident_program_per_batch(verifier, tmp_path):
    kv = workloads.load(str(paths.EXAMPLES_DIR / "kvstore" / "workload.toml"))
    plan = _plan(verifier, tmp_path, kv)
    assert plan["verify_many_command"] == ["kv-fsync", "verify-many", "--seed", "7", "--dir", "/mnt/dut",
                                           "--keys", "64", "--max-value-size", "512"]
    assert "verify_command" not in plan and plan["needs_fs"]
    assert "verify_many_command" not in _plan(verifier, tmp_path, kv, resident=False)
    assert _plan(verifier, tmp_path, kv, resident=False)["verify_command"][1] == "verify"


@pytest.mark.parametrize("verify_many", [True, False])
def test_a_raw_device_workload_names_the_device_per_state(verifier, tmp_path, verify_many):
    kv = workloads.load(str(paths.EXAMPLES_DIR / "kvstore" / "workload.toml"))
    raw = workloads.Workload("raw", "", needs_fs=False, model="blocks", source=kv.source, verify_many=verify_many)
    plan = _plan(verifier, tmp_path, raw)
    argv = plan["verify_many_command" if verify_many else "verify_command"]
    assert argv[1:6] == ["verify-many" if verify_many else "verify", "--seed", "7", "--device", "{device}"]
