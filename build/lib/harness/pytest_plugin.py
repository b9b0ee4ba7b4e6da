"""The pytest plugin (entry point ``xdh``): durability tests written as pytest tests, JUnit from
pytest itself. A test names its crash run with a marker and gets the stack restored from the
snapshot (seconds), both guests' shells, the power cut and the oracle::

    @pytest.mark.xdh(workload="examples/kvstore/workload.toml", fault="drop-flush")
    def test_kv_store_loses_acked_puts(xdh_domu, xdh_power_cut, xdh_oracle):
        crash = xdh_power_cut(after_acks=40)        # the same cut as torture's
        assert xdh_oracle(crash).status == "loss"   # fast verifier + the workload's oracle model

Fixtures: ``xdh_images`` (session; missing images skip the test, or are built with
``--xdh-build-images``), ``xdh_kit`` (session: the saved stack and the fast verifier),
``xdh_verifier``, ``xdh_run`` (the marked crash run, started), ``xdh_dom0``, ``xdh_domu``,
``xdh_acks``, ``xdh_power_cut`` and ``xdh_oracle``. Options: ``--xdh-backend``,
``--xdh-release``, ``--xdh-accel``. Every test's seed and run directory become JUnit properties.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .campaign.checks import Checked, check_outcome
from .campaign.kit import Kit
from .catalog import workloads
from .catalog.backends import DEFAULT_BACKEND
from .catalog.workloads import Ack
from .config import CutMode, Reset, StackConfig, TortureConfig, VerifyPath
from .crash.plan import CutPlan, IterationPlan
from .crash.run import CrashOutcome, CrashRun
from .errors import ImageError
from .images import ImagePair, ImageStore
from .releases import DEFAULT_RELEASE
from .report.records import CutRecord
from .report.rundir import IterationDir, RunDir
from .verify.fast import FastVerifier
from .vm.ssh import Shell

MARK = "xdh(workload='append', fault='none', disk_cache='none', seed=None, start=True): the crash run of a test's " \
       "xdh fixtures (start=False: the workload is not started; the filesystem is made and the fault injected)"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("xdh", "durability tests on the nested Xen stack (xdh)")
    g.addoption("--xdh-backend", default=DEFAULT_BACKEND, help="backend mode of the disk under test")
    g.addoption("--xdh-release", default=DEFAULT_RELEASE, help="Debian release of both guests")
    g.addoption("--xdh-accel", default="auto", help="outer QEMU accelerator: auto, kvm or tcg")
    g.addoption("--xdh-build-images", action="store_true", help="build missing images instead of skipping")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARK)


def _say(msg: str) -> None:
    print(msg, flush=True)


@pytest.fixture(scope="session")
def xdh_stack_config(pytestconfig: pytest.Config) -> StackConfig:
    return StackConfig(backend=pytestconfig.getoption("xdh_backend"), release=pytestconfig.getoption("xdh_release"),
                       accel=pytestconfig.getoption("xdh_accel")).completed()


class Kits:
    """One kit per stack the session's tests boot (a workload's packages or a fault's device
    model make another), each set up once and stopped at the end of the session."""

    def __init__(self, build: bool, tmp: pytest.TempPathFactory):
        self.build, self.tmp = build, tmp
        self.store = ImageStore()
        self._kits: dict[str, Kit] = {}
        self._exit = contextlib.ExitStack()

    def images(self, stack: StackConfig) -> ImagePair:
        try:
            return self.store.pair(stack.components())
        except ImageError as exc:
            if not self.build:
                pytest.skip(f"xdh: {exc.oneline()} (or pass --xdh-build-images)")
            for name in ("dom0", "domu"):
                self.store.build((name,), progress=_say, spec=stack.components())
            return self.store.pair(stack.components())

    def get(self, stack: StackConfig) -> Kit:
        key = repr(stack)
        if key not in self._kits:
            cfg = TortureConfig(stack=stack, reset=Reset.SNAPSHOT, verify=VerifyPath.FAST)
            kit = Kit(cfg, self.tmp.mktemp("xdh-verifier"), self.store, self.images(stack), _say)
            self._kits[key] = self._exit.enter_context(kit)
        return self._kits[key]

    def close(self) -> None:
        self._exit.close()


@pytest.fixture(scope="session")
def xdh_kits(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kits]:
    kits = Kits(bool(pytestconfig.getoption("xdh_build_images")), tmp_path_factory)
    try:
        yield kits
    finally:
        kits.close()


@pytest.fixture(scope="session")
def xdh_images(xdh_kits: Kits, xdh_stack_config: StackConfig) -> ImagePair:
    return xdh_kits.images(xdh_stack_config)


@pytest.fixture(scope="session")
def xdh_kit(xdh_kits: Kits, xdh_stack_config: StackConfig) -> Kit:
    """The saved stack (built once per stack, then restored) and the fast verifier, for the session."""
    return xdh_kits.get(xdh_stack_config)


@pytest.fixture(scope="session")
def xdh_verifier(xdh_kit: Kit) -> FastVerifier:
    assert xdh_kit.fast is not None
    return xdh_kit.fast


@dataclasses.dataclass
class Rig:
    """A test's crash run: started by ``xdh_run``, cut by ``xdh_power_cut``, judged by ``xdh_oracle``."""

    crash: CrashRun
    plan: IterationPlan
    it: IterationDir
    kit: Kit
    outcome: CrashOutcome | None = None

    def cut(self, after_acks: int | None = None, after_seconds: float | None = None) -> CrashOutcome:
        """Wait for the point (acks of the running workload, or seconds), cut the power, stop the stack."""
        if self.outcome is not None:
            raise RuntimeError("the power was already cut")
        if after_acks is not None or after_seconds is not None:
            plan = CutPlan(CutMode.ACKS, after_acks=after_acks) if after_acks is not None \
                else CutPlan(CutMode.TIME, after_seconds=after_seconds)
            self.crash.wait_for(plan)
        else:
            plan = CutPlan(CutMode.ACKS)
        try:
            self.crash.cut()
        finally:
            self.outcome = self.crash.close(plan)
        self.it.write_cut(CutRecord(self.outcome.cut_t, len(self.outcome.acks), plan.to_json(),
                                    self.outcome.start_entry))
        return self.outcome

    def check(self, outcome: CrashOutcome) -> Checked:
        return check_outcome(self.plan, self.kit, self.it, outcome, _say)


def _config(marker: pytest.Mark | None, stack: StackConfig) -> tuple[TortureConfig, bool]:
    kw: dict[str, Any] = dict(marker.kwargs) if marker else {}
    start = bool(kw.pop("start", True))
    unknown = set(kw) - {"workload", "fault", "disk_cache", "seed"}
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.xdh: unknown arguments {sorted(unknown)}")
    cfg = TortureConfig(**kw, iterations=1, canary=False, stack=stack, verify=VerifyPath.FAST).resolved()
    cfg.validate()
    return cfg, start


@pytest.fixture
def xdh_run(request: pytest.FixtureRequest, xdh_kits: Kits, xdh_stack_config: StackConfig,
            tmp_path: Path) -> Iterator[Rig]:
    """The test's crash run (``@pytest.mark.xdh``): restored, filesystem made, fault injected,
    workload started. The stack is stopped after the test whatever happens."""
    cfg, start = _config(request.node.get_closest_marker("xdh"), xdh_stack_config)
    plan = IterationPlan.make(cfg, 0, "test")
    run = RunDir(tmp_path / "xdh-run").create()
    run.write_config(cfg.to_json(), cfg.seed, {"workload": workloads.get(cfg.workload).describe()})
    run.keep_own_files(cfg.own_files())
    it = run.iteration(0)
    it.write_meta(0, plan.seed, plan.name, plan.cut.to_json(), cfg.to_json())
    kit = xdh_kits.get(cfg.effective_stack())     # a workload's packages, a fault's device model: another
    request.node.user_properties += [("xdh_seed", plan.seed), ("xdh_run_dir", str(run.path)),
                                     ("xdh_workload", cfg.workload), ("xdh_fault", cfg.fault)]
    boot = kit.boot_source(plan.seed)
    crash = CrashRun(cfg, plan.seed, it.crash_paths(boot.dut_name), kit.images, boot, kit.store, _say)
    rig = Rig(crash, dataclasses.replace(plan, cfg=cfg), it, kit)
    try:
        crash.start(run_workload=start)
        yield rig
    finally:
        if rig.outcome is None:
            crash.close(plan.cut)


@pytest.fixture
def xdh_dom0(xdh_run: Rig) -> Shell:
    assert xdh_run.crash.stack.dom0 is not None
    return xdh_run.crash.stack.dom0


@pytest.fixture
def xdh_domu(xdh_run: Rig) -> Shell:
    assert xdh_run.crash.stack.domu is not None
    return xdh_run.crash.stack.domu


@pytest.fixture
def xdh_acks(xdh_run: Rig) -> list[Ack]:
    """The acks of the running workload so far (a live list, each with its arrival time)."""
    return xdh_run.crash.reader.acks if xdh_run.crash.reader is not None else []


@pytest.fixture
def xdh_power_cut(xdh_run: Rig) -> Callable[..., CrashOutcome]:
    """``xdh_power_cut(after_acks=N | after_seconds=S)`` -> the crash (its image: ``.dut``)."""
    return xdh_run.cut


@pytest.fixture
def xdh_oracle(xdh_run: Rig) -> Callable[[CrashOutcome], Checked]:
    """``xdh_oracle(crash)`` -> ``Checked``: verified and judged as torture does (every crash
    state too with ``disk_cache="volatile"``); ``.status``, ``.lost_acked``, ``.violations``."""
    return xdh_run.check
