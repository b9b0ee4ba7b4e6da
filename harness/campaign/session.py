"""By hand: ``xdh up`` keeps one crash run's stack up (restored from the snapshot in seconds),
with the fault injected and the workload running; ``xdh cut`` cuts its power now, the same cut
as torture's; ``xdh verify`` checks the crash image as torture's check phase does. A session is
a run directory with one iteration, so ``xdh reproduce`` works on it as on any other.

The stack belongs to the ``xdh up`` process (it holds the QMP connection); ``xdh cut`` asks it
with SIGUSR1. ``session.json`` in the cache says where the running session is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import paths
from ..catalog import workloads
from ..config import Reset, TortureConfig, VerifyPath
from ..crash.plan import CutPlan, IterationPlan
from ..crash.run import CrashOutcome, CrashRun
from ..errors import ConfigError
from ..images import ImagePair, ImageStore
from ..progress import Progress
from ..report.records import CutRecord, IterationRecord
from ..report.rundir import IterationDir, RunDir
from ..stack.xl import DOMU_IP
from ..vm.sockets import running as alive
from ..vm.sockets import socket_dir, start_time
from .iteration import Crashed, check_phase
from .kit import Kit
from .reproduce import load_plan

BY_HAND = CutPlan.from_json({"mode": "acks", "after_acks": None})


@dataclass(frozen=True)
class Session:
    """What ``session.json`` records of a running ``xdh up``."""

    pid: int
    run_dir: str
    iteration: str
    ssh_port: int
    qmp: str
    components: dict[str, Any]
    workload: bool          # a workload runs (so ``xdh cut`` leaves acks to judge)
    started: str = ""       # the process's start time (/proc/PID/stat): a recycled pid is not the session

    @staticmethod
    def file(name: str = "session.json") -> Path:
        """The running session's record; ``last-session.json``: the newest that ended."""
        return paths.cache_dir() / name

    def write(self) -> None:
        self.file().parent.mkdir(parents=True, exist_ok=True)
        self.file().write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def read(cls, name: str = "session.json") -> Session | None:
        try:
            return cls(**json.loads(cls.file(name).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _own_record_gone() -> None:
    s = Session.read()
    if s is not None and s.pid == os.getpid():
        Session.file().unlink(missing_ok=True)


def running() -> Session:
    """The running session, or a ConfigError naming the fix (a stale record is removed)."""
    s = Session.read()
    if s is None:
        raise ConfigError("no stack is up", hint="start one with `xdh up`")
    if not alive(s.pid, s.started):
        Session.file().unlink(missing_ok=True)
        raise ConfigError("the recorded stack is gone", hint="start one with `xdh up`")
    return s


def last_iteration() -> IterationDir:
    """The iteration of the newest session (running or ended), for ``xdh verify``."""
    s = Session.read() or Session.read("last-session.json")
    if s is None:
        raise ConfigError("no session to verify", hint="run `xdh up --workload W`, then `xdh cut`, or pass ITER")
    return IterationDir(Path(s.iteration))


def up(cfg: TortureConfig, run_dir: Path, images: ImagePair, progress: Progress, with_workload: bool,
       on_ready: Callable[[Session, CrashRun], None], store: ImageStore | None = None) -> CrashOutcome:
    """Bring one crash run up and keep it until SIGUSR1: then cut its power and return the outcome,
    recorded as the iteration's cut. An interrupt stops the stack and propagates."""
    run = RunDir(run_dir).create()
    plan = IterationPlan(cfg, 0, IterationPlan.make(cfg, 0).seed, "iter-0000", BY_HAND)
    it = run.iteration(0)
    it.write_meta(plan.index, plan.seed, plan.name, plan.cut.to_json(), cfg.to_json())
    run.write_config(cfg.to_json(), cfg.seed, {"workload": workloads.get(cfg.workload).describe()})
    run.keep_own_files(cfg.own_files())
    store = store or ImageStore()
    cut = threading.Event()
    with Kit(dataclasses.replace(cfg, verify=VerifyPath.REBOOT), run.verifier, store, images, progress) as kit:
        boot = kit.boot_source(plan.seed)
        qmp = user_qmp_path(run_dir)
        crash = CrashRun(cfg, plan.seed, it.crash_paths(boot.dut_name), images, boot, store, progress, qmp)
        session: Session | None = None
        previous = signal.signal(signal.SIGUSR1, lambda *_: cut.set())
        try:
            progress("restoring the saved stack" if kit.reset == Reset.SNAPSHOT else "booting the stack")
            crash.start(run_workload=with_workload)
            assert crash.stack.info is not None
            session = Session(os.getpid(), str(run_dir), str(it.path), crash.stack.info.ssh_port, str(qmp),
                              asdict(cfg.stack.components()), with_workload, start_time(os.getpid()))
            session.write()
            on_ready(session, crash)
            while not cut.wait(1.0):
                crash.stack.alive()
            crash.cut()
        finally:
            outcome = crash.close(plan.cut)
            qmp.unlink(missing_ok=True)     # QEMU was killed: its listening socket stays behind
            signal.signal(signal.SIGUSR1, previous)
            _own_record_gone()
            if session is not None:
                Session.file("last-session.json").write_text(json.dumps(asdict(session)) + "\n")
        it.write_cut(CutRecord(outcome.cut_t, len(outcome.acks), plan.cut, outcome.start_entry))
        if outcome.ledger is not None:
            it.write_ledger(outcome.ledger)
        return outcome


def user_qmp_path(run_dir: Path) -> Path:
    """``qmp.sock`` in the run directory, or in a short temporary one when that path would pass
    the 107 bytes a unix socket's path may have."""
    path = run_dir / "qmp.sock"
    return path if len(str(path)) < 100 else socket_dir("up") / "qmp.sock"


def verify(it: IterationDir, path: VerifyPath, progress: Progress, workload: str | None = None,
           store: ImageStore | None = None) -> IterationRecord:
    """Torture's check phase on a session's crash image (or any kept iteration's): the same
    verdict, written to the iteration's result.json. ``workload``: verify as this one instead
    (a session whose workload you ran by hand: nothing acked is then required)."""
    plan = load_plan(it)
    if workload:
        plan = dataclasses.replace(plan, cfg=dataclasses.replace(plan.cfg, workload=workload))
    if not it.cut.exists():
        raise ConfigError(f"{it.path} has no cut.json: its power was never cut", hint="run `xdh cut` first")
    image = it.crash_image()
    if image is None:
        raise ConfigError(f"no crash image in {it.path}", hint="only a session or a failing iteration keeps one")
    cut = it.read_cut()
    cfg = dataclasses.replace(plan.cfg, canary=False, verify=path, keep_images=True)
    plan = dataclasses.replace(plan, cfg=cfg)
    store = store or ImageStore()
    volatile = it.write_log if it.write_log.exists() else None
    with Kit(cfg, it.path / "verifier", store, store.pair(cfg.stack.components()), progress) as kit:
        boot = kit.boot_source(plan.seed)      # as `xdh up` brought the stack up
        outcome = CrashOutcome(tuple(it.read_acks()), cut.cut_t, plan.cut, image, volatile, cut.workload_start_entry,
                               base_dut=boot.frozen_dut, reset=kit.reset, ledger=it.read_ledger_or_none())
        done = check_phase(Crashed(plan, it, time.monotonic(), outcome), kit, progress)
    if done.full is not None:
        raise done.full
    return done.record


def ssh_hint(session: Session, key: Path, known_hosts: Path) -> list[str]:
    common = (f"-i {key} -o UserKnownHostsFile={known_hosts} "
              "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")
    return [f"  dom0: ssh {common} -p {session.ssh_port} root@127.0.0.1",
            f"  domU: ssh {common} -o ProxyCommand='ssh {common} -p {session.ssh_port} -W %h:%p root@127.0.0.1' "
            f"root@{DOMU_IP}"]
