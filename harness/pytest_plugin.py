"""The pytest plugin (entry point ``xdh``): durability tests written as pytest tests, JUnit from
pytest itself. A test names its crash run with a marker and gets the stack restored from the
snapshot (seconds), both guests' shells, the power cut and the oracle::

    @pytest.mark.xdh(workload="examples/kvstore/workload.toml", fault="drop-flush")
    def test_kv_store_loses_acked_puts(xdh_domu, xdh_power_cut, xdh_oracle):
        crash = xdh_power_cut(after_acks=40)        # the same cut as torture's
        assert xdh_oracle(crash).status == "loss"   # fast verifier + the workload's oracle model

(``examples/`` is in the checkout, or in ``<prefix>/share/xdh/examples`` of an installed xdh:
``harness.paths.EXAMPLES_DIR``.)

Fixtures: ``xdh_images`` (session; missing images skip the test, or are built with
``--xdh-build-images``), ``xdh_kit`` (session: the saved stack and the fast verifier),
``xdh_verifier``, ``xdh_run`` (the marked crash run, started), ``xdh_dom0``, ``xdh_domu``,
``xdh_acks``, ``xdh_power_cut`` and ``xdh_oracle``. Options (and ini keys of the same name,
``xdh_backend = ...``): ``--xdh-backend``, ``--xdh-release``, ``--xdh-accel``, ``--xdh-seed``,
``--xdh-build-images``. Every test's seed and run directory become JUnit properties.

The entry point loads this module in every pytest session of the environment, so loading it is
cheap: the registries it takes its choices from are plain data, and the machine (QEMU, QMP, SSH,
the stack) is imported only by a test that uses an ``xdh_*`` fixture. A bad option is one usage
error at start-up; a bad ``@pytest.mark.xdh(...)`` is a collection error of its module.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .catalog.backends import BACKENDS, DEFAULT_BACKEND
from .releases import DEFAULT_RELEASE, RELEASES
from .vm.accel import ACCELS

if TYPE_CHECKING:     # the machine: imported by the fixtures that use it, never at load
    from .campaign.checks import Checked
    from .campaign.kit import Kit
    from .catalog.workloads import Ack
    from .config import StackConfig, TortureConfig
    from .crash.plan import IterationPlan
    from .crash.run import CrashOutcome, CrashRun
    from .images import ImagePair
    from .report.rundir import IterationDir
    from .verify.fast import FastVerifier
    from .vm.ssh import Shell

MARK_ARGS = ("workload", "fault", "disk_cache", "seed", "start")
MARK = "xdh(workload='append', fault='none', disk_cache='auto', seed=None, start=True): the crash run of a test's " \
       "xdh fixtures (start=False: the workload is not started; the filesystem is made and the fault injected)"
SEED_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Options:
    """The plugin's settings: each from its command-line option, else its ini key, else the default."""

    backend: str = DEFAULT_BACKEND
    release: str = DEFAULT_RELEASE
    accel: str = "auto"
    seed: int | None = None         # for every test whose marker names none (default: a random one each)
    build_images: bool = False


# option name -> (choices, default, help); the ini key is the option's dest (xdh_backend, ...)
_CHOICES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "backend": (tuple(BACKENDS), DEFAULT_BACKEND, "backend mode of the disk under test"),
    "release": (tuple(RELEASES), DEFAULT_RELEASE, "Debian release of both guests"),
    "accel": (ACCELS, "auto", "outer QEMU accelerator (auto: KVM only where a probe guest boots under it)"),
}


def _seed(text: str) -> int:
    try:
        seed = int(text, 0)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{seed} is out of range (0..2**63-1)")
    return seed


def _seed_option(text: str) -> int:
    try:
        return _seed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("xdh", "durability tests on the nested Xen stack (xdh)")
    for name, (choices, default, text) in _CHOICES.items():
        g.addoption(f"--xdh-{name}", choices=choices, default=None, metavar="|".join(choices),
                    help=f"{text} (default: ini xdh_{name}, else {default})")
        parser.addini(f"xdh_{name}", f"xdh: {text} (one of {', '.join(choices)})", default=default)
    g.addoption("--xdh-seed", type=_seed_option, default=None, metavar="S",
                help="the seed of every xdh test whose marker names none (default: ini xdh_seed, else a random "
                     "one per test, recorded as the JUnit property xdh_seed): replays a test's crash run")
    parser.addini("xdh_seed", "xdh: the seed of every xdh test whose marker names none", default="")
    g.addoption("--xdh-build-images", action="store_true", default=None,
                help="build missing images instead of skipping the tests that need them")
    parser.addini("xdh_build_images", "xdh: build missing images instead of skipping", type="bool", default=False)


def options(config: pytest.Config) -> Options:
    """The session's settings, options over ini keys (read when needed: a conftest may set an
    option in its own pytest_configure); a bad ini value is a UsageError (options have choices)."""
    values: dict[str, Any] = {}
    for name, (choices, _, _) in _CHOICES.items():
        value = config.getoption(f"xdh_{name}") or str(config.getini(f"xdh_{name}")).strip()
        if value not in choices:
            raise pytest.UsageError(f"xdh_{name} = {value!r} (ini): choose one of {', '.join(choices)}")
        values[name] = value
    seed = config.getoption("xdh_seed")
    if seed is None and str(config.getini("xdh_seed")).strip():
        try:
            seed = _seed(str(config.getini("xdh_seed")).strip())
        except ValueError as exc:
            raise pytest.UsageError(f"xdh_seed (ini): {exc}") from None
    build = config.getoption("xdh_build_images")
    return Options(**values, seed=seed, build_images=bool(config.getini("xdh_build_images") if build is None
                                                          else build))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARK)
    options(config)     # a bad ini value: one usage error now


# --- the marker, checked when the test is collected ---------------------------------------

def _stack(opts: Options) -> StackConfig:
    from .config import Accel, StackConfig
    return StackConfig(backend=opts.backend, release=opts.release, accel=Accel(opts.accel))


def _marker_text(marker: pytest.Mark) -> str:
    args = [repr(a) for a in marker.args] + [f"{k}={v!r}" for k, v in marker.kwargs.items()]
    return f"@pytest.mark.xdh({', '.join(args)})"


def marker_config(marker: pytest.Mark | None, stack: StackConfig) -> tuple[TortureConfig, bool]:
    """The crash run a marker names, validated against the stack (not yet seeded), and whether
    the workload starts; a ValueError saying what is wrong."""
    from .config import TortureConfig, VerifyPath
    from .errors import XdhError
    kw: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if marker is not None and marker.args:
        raise ValueError(f"takes keyword arguments only ({', '.join(MARK_ARGS)})")
    unknown = sorted(set(kw) - set(MARK_ARGS))
    if unknown:
        raise ValueError(f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         f"(known: {', '.join(MARK_ARGS)})")
    start = kw.pop("start", True)
    if not isinstance(start, bool):
        raise ValueError(f"start={start!r}: must be True or False")
    seed = kw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise ValueError(f"seed={seed!r}: must be an integer 0..2**63-1, or None")
    for key in ("workload", "fault", "disk_cache"):
        if key in kw and not isinstance(kw[key], str):
            raise ValueError(f"{key}={kw[key]!r}: must be a string")
    try:
        cfg = TortureConfig(**kw, iterations=1, canary=False, stack=stack, verify=VerifyPath.FAST)
        cfg.validate()
    except XdhError as exc:
        raise ValueError(exc.oneline()) from None
    return cfg, start


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """A test with a bad ``@pytest.mark.xdh`` fails the collection of its module, once, naming
    the marker (checked here, not at setup: no session fixture boots for it)."""
    made = yield
    items = made if isinstance(made, list) else [made]
    for item in items:
        marker = item.get_closest_marker("xdh") if isinstance(item, pytest.Item) else None
        if marker is None:
            continue
        try:
            marker_config(marker, _stack(options(item.config)))
        except ValueError as exc:
            raise collector.CollectError(f"{item.nodeid}: {_marker_text(marker)}: {exc}") from None
    return made


# --- fixtures: the machine is imported from here on ---------------------------------------

def _say(msg: str) -> None:
    print(msg, flush=True)


@pytest.fixture(scope="session")
def xdh_stack_config(pytestconfig: pytest.Config) -> StackConfig:
    """The stack the session boots (``--xdh-backend``/``--xdh-release``/``--xdh-accel``); a
    conftest may override this fixture for another stack."""
    from .stack import inputs
    return inputs.completed(_stack(options(pytestconfig)))


class Kits:
    """One kit per stack the session's tests boot (a workload's packages or a fault's device
    model make another), each set up once and stopped at the end of the session."""

    def __init__(self, build: bool, tmp: pytest.TempPathFactory):
        from .images import ImageStore
        self.build, self.tmp = build, tmp
        self.store = ImageStore()
        self._kits: dict[str, Kit] = {}
        self._exit = contextlib.ExitStack()

    def images(self, stack: StackConfig) -> ImagePair:
        from .errors import ImageError
        try:
            return self.store.pair(stack.components())
        except ImageError as exc:
            if not self.build:
                pytest.skip(f"xdh: {exc.oneline()} (or pass --xdh-build-images)")
            # another worker (pytest-xdist) or job building the same image is waited for
            for name in ("dom0", "domu"):
                self.store.build((name,), progress=_say, spec=stack.components())
            return self.store.pair(stack.components())

    def get(self, stack: StackConfig) -> Kit:
        from .campaign.kit import Kit
        from .config import Reset, TortureConfig, VerifyPath
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
    kits = Kits(options(pytestconfig).build_images, tmp_path_factory)
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
        from .config import CutMode
        from .crash.plan import CutPlan
        from .report.records import CutRecord
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
        self.it.write_cut(CutRecord(self.outcome.cut_t, len(self.outcome.acks), plan, self.outcome.start_entry))
        return self.outcome

    def check(self, outcome: CrashOutcome) -> Checked:
        from .campaign.checks import check_outcome
        return check_outcome(self.plan, self.kit, self.it, outcome, _say)


def _seeded(cfg: TortureConfig, opts: Options) -> tuple[TortureConfig, str]:
    """The run's seed: the marker's, else ``--xdh-seed``, else a random one; and how to replay it."""
    if cfg.seed is not None:
        return cfg, f"xdh: seed {cfg.seed} (the marker's)"
    if opts.seed is not None:
        return dataclasses.replace(cfg, seed=opts.seed), f"xdh: seed {opts.seed} (--xdh-seed)"
    cfg = cfg.resolved()
    return cfg, f"xdh: seed {cfg.seed} (random; replay with --xdh-seed {cfg.seed})"


@pytest.fixture
def xdh_run(request: pytest.FixtureRequest, xdh_kits: Kits, xdh_stack_config: StackConfig,
            tmp_path: Path) -> Iterator[Rig]:
    """The test's crash run (``@pytest.mark.xdh``): restored, filesystem made, fault injected,
    workload started. The stack is stopped after the test whatever happens."""
    from .catalog import workloads
    from .crash.plan import IterationPlan
    from .crash.run import CrashRun
    from .report.rundir import RunDir
    marker = request.node.get_closest_marker("xdh")
    try:    # checked at collection against the options' stack; here against xdh_stack_config's
        cfg, start = marker_config(marker, xdh_stack_config)
    except ValueError as exc:
        pytest.fail(f"{_marker_text(marker) if marker else 'xdh'}: {exc}", pytrace=False)
    cfg, replay = _seeded(cfg, options(request.config))
    assert cfg.seed is not None
    request.node.add_report_section("setup", "xdh", replay)
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
