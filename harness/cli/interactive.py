"""The interactive subcommands: ``up`` (a stack restored from the snapshot, the workload
running), ``cut`` (its power, now), ``verify`` (the crash image, judged as torture judges it),
``ssh`` into either guest, ``down``. One session at a time; see harness/campaign/session.py."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

from ..campaign import session as session_mod
from ..campaign.session import Session
from ..components import Components
from ..config import StackConfig, TortureConfig, VerifyPath
from ..crash.run import CrashRun
from ..errors import ConfigError, InfraError
from ..images import ImageStore
from ..report.rundir import IterationDir
from ..stack.xen import make_stack
from ..stack.xl import DOMU_IP
from ..status import ExitCode, status_exit
from ..vm.disks import make_overlay
from ..vm.sockets import running, start_time
from ..vm.ssh import Endpoint, Shell
from .commands import prepared_run, progress, stack_config

Args = argparse.Namespace


def cmd_up(args: Args) -> int:
    old = Session.read()
    if old is not None and running(old.pid, old.started):
        raise ConfigError(f"a stack is already up (pid {old.pid}, {old.run_dir})", hint="run `xdh down` first")
    stack = stack_config(args)
    if args.dut:
        return _inspect(args, stack)
    cfg = TortureConfig(workload=args.workload or "append", fault=args.fault, seed=args.seed, iterations=1,
                        canary=False, disk_cache=args.disk_cache, reset=args.reset, keep_images=True, stack=stack)
    cfg.validate()
    cfg = cfg.resolved()
    store = ImageStore()
    run_dir, images = prepared_run("up", args.run_dir, cfg.stack.components(), store)
    t0 = time.monotonic()
    progress(f"run directory: {run_dir} (seed {cfg.seed})")

    def ready(s: Session, crash: CrashRun) -> None:
        what = (f"workload {crash.workload.name} running (acks: {Path(s.iteration) / 'acks.jsonl'})"
                if s.workload else "no workload (run one with `xdh ssh domu -- ...`)")
        print(f"\nstack is up in {time.monotonic() - t0:.1f} s (backend {stack.backend}, disk cache "
              f"{cfg.disk_cache}, fault {crash.fault.name}); {what}")
        print(f"  QMP:  {s.qmp}  (a second monitor for you; the harness holds the first)")
        print("\n".join(session_mod.ssh_hint(s, store.client_key, crash.stack.run_dir / "known_hosts")))
        print("  or:   xdh ssh dom0 -- CMD   /   xdh ssh domu -- CMD")
        print("cut the power with `xdh cut` (then `xdh verify`); stop with Ctrl-C or `xdh down`", flush=True)

    outcome = session_mod.up(cfg, run_dir, images, progress, args.workload is not None, ready, store)
    print(f"power cut after {len(outcome.acks)} acks; crash image {outcome.dut}"
          + (f" (write log {outcome.write_log})" if outcome.write_log else ""), flush=True)
    return ExitCode.CLEAN


def _inspect(args: Args, stack: StackConfig) -> int:
    """``xdh up --dut IMAGE``: a cold boot on an overlay over a crash image, to look at it."""
    image = Path(args.dut).resolve()
    if not image.is_file():
        raise ConfigError(f"--dut {image} is not a file", hint="pass a crash image (dut.img or dut.qcow2)")
    store = ImageStore()
    run_dir, images = prepared_run("up", args.run_dir, stack.components(), store)
    dut = run_dir / "dut-overlay.qcow2"
    make_overlay(image, dut, "qcow2" if image.suffix == ".qcow2" else "raw")
    progress(f"booting on an overlay over {image} (the crash image is not written): {run_dir}")
    with make_stack(stack, run_dir, store, dut, progress=progress, images=images) as st:
        assert st.info is not None
        s = Session(os.getpid(), str(run_dir), str(run_dir), st.info.ssh_port, "", dataclasses.asdict(
            stack.components()), False, start_time(os.getpid()))
        s.write()
        hint = session_mod.ssh_hint(s, store.client_key, run_dir / "known_hosts")
        print(f"\nstack is up on {image}; its disk is the domU's xvdb (mount it: xdh ssh domu -- mount /dev/xvdb "
              "/mnt)\n" + "\n".join(hint), flush=True)
        try:
            while True:
                st.alive()
                time.sleep(2)
        finally:
            Session.file().unlink(missing_ok=True)


def _wait_gone(s: Session, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while running(s.pid, s.started) and time.monotonic() < deadline:
        time.sleep(0.2)
    if running(s.pid, s.started):
        raise InfraError(f"xdh up (pid {s.pid}) did not {what} in {seconds:.0f} s", hint=f"kill {s.pid}")


def cmd_cut(args: Args) -> int:
    s = session_mod.running()
    if not s.qmp:
        raise ConfigError("this stack inspects a crash image (xdh up --dut)", hint="stop it with `xdh down`")
    t0 = time.monotonic()
    os.kill(s.pid, signal.SIGUSR1)
    _wait_gone(s, "cut the power")
    it = IterationDir(Path(s.iteration))
    if not it.cut.exists():
        raise InfraError(f"xdh up (pid {s.pid}) ended without cutting the power", hint="see its output")
    cut = it.read_cut()
    image = it.crash_image()
    print(f"power cut after {cut.acks_at_cut} acks ({time.monotonic() - t0:.1f} s); crash image {image}\n"
          f"verify it with `xdh verify` (or `xdh verify {it.path}`)")
    return ExitCode.CLEAN


def cmd_verify(args: Args) -> int:
    it = IterationDir(Path(args.iteration).resolve()) if args.iteration else session_mod.last_iteration()
    record = session_mod.verify(it, VerifyPath(args.verify), progress, workload=args.workload)
    states = f"; {record.crash_states} crash states" if record.crash_states > 1 else ""
    print(f"{record.name}: {record.status.value.upper()}: {record.acked} acked, {record.lost_acked} lost{states}")
    if record.flush is not None:
        print(f"  flush ledger: {record.flush.text}")
    for v in record.violations[:20]:
        print(f"  {v.line()}")
    if record.error:
        print(f"  {record.error}")
    print(f"verdict: {it.path / 'result.json'}")
    return status_exit(record.status)


def cmd_down(args: Args) -> int:
    s = session_mod.running()
    os.kill(s.pid, signal.SIGTERM)
    _wait_gone(s, "stop", 60)
    print(f"stopped the stack in {s.run_dir}")
    return ExitCode.CLEAN


def cmd_ssh(args: Args) -> int:
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        raise ConfigError("no command given", hint="usage: xdh ssh dom0|domu -- CMD [ARG...]")
    s = session_mod.running()
    store = ImageStore()
    images = store.pair(Components.from_json(s.components))
    dom0 = Shell.connect(Endpoint("dom0", "127.0.0.1", s.ssh_port, images.dom0.host_key), store.client_key)
    target = dom0
    try:
        if args.guest == "domu":
            target = Shell.connect(Endpoint("domu", DOMU_IP, 22, images.domu.host_key), store.client_key,
                                   gateway=dom0)
        res = target.run(cmd if len(cmd) > 1 else cmd[0], timeout=args.timeout, check=False)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.status
    finally:
        if target is not dom0:
            target.close()
        dom0.close()

