"""The ``xdh`` command line. Every failure becomes one line and a distinct exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from . import backends, paths
from .cleanup import EXIT_INTERRUPTED, install_signal_handlers
from .errors import ConfigError, Interrupted, LaunchError, XdhError

LOG = logging.getLogger("xdh")

from .report import EXIT_CLEAN as EXIT_OK, EXIT_HARNESS  # noqa: E402 - one table of exit codes
EXIT_DIFFERENT = 4   # reproduce: the verdict differs from the recorded one


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _active_up_file() -> Path:
    return paths.cache_dir() / "up.json"


def _new_run_dir(kind: str, given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    return paths.runs_dir() / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


# --- images ------------------------------------------------------------------------------
def cmd_images_build(args) -> int:
    from .images import IMAGE_NAMES, ImageStore
    store = ImageStore()
    names = tuple(args.only) if args.only else IMAGE_NAMES
    t0 = time.monotonic()
    results = store.build(names, force=args.force, progress=_progress)
    print(f"{'image':6} {'digest':16} {'built':5} {'seconds':>7} {'size MiB':>8}  dir")
    for img, built in results:
        print(f"{img.name:6} {img.digest:16} {'yes' if built else 'no':5} {img.build_seconds:7.0f} "
              f"{img.size_bytes() / 2**20:8.0f}  {img.dir}")
    print(f"total {time.monotonic() - t0:.0f} s; hypervisor: {results[0][0].artifacts.get('xen', '-')}"
          if results and results[0][0].name == "dom0" else f"total {time.monotonic() - t0:.0f} s")
    return EXIT_OK


def cmd_images_list(args) -> int:
    from .images import ImageStore
    rows = ImageStore().list()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("no images built; run `xdh images build`")
        return EXIT_OK
    print(f"{'image':6} {'digest':16} {'current':7} {'size MiB':>8} {'build s':>7}  built at")
    for r in rows:
        print(f"{r['name']:6} {r['digest']:16} {'yes' if r['current'] else 'stale':7} {r['size_mib']:8} "
              f"{r['build_seconds']:7.0f}  {r['built_at']}")
    return EXIT_OK


def cmd_images_clean(args) -> int:
    from .images import ImageStore
    from .snapshot import clean_snapshots
    store = ImageStore()
    removed = clean_snapshots(store, everything=args.all) + store.clean(everything=args.all)
    for d in removed:
        print(f"removed {d}")
    if not removed:
        print("nothing to remove")
    return EXIT_OK


# --- stack -------------------------------------------------------------------------------
def _stack_config(args):
    from .stack import StackConfig
    cfg = StackConfig(backend=args.backend, accel=args.accel, memory_mib=args.memory,
                      domu_mem_mib=args.domu_memory, boot_timeout=args.boot_timeout)
    cfg.validate()
    return cfg


def cmd_up(args) -> int:
    from .stack import DOMU_IP, XenStack
    cfg = _stack_config(args)
    run_dir = _new_run_dir("up", args.run_dir)
    state = _active_up_file()
    if state.exists():
        old = json.loads(state.read_text())
        if _pid_alive(old.get("pid")):
            raise ConfigError(f"a stack is already up (pid {old['pid']}, {old['run_dir']})", hint="run `xdh down` first")
    dut = Path(args.dut).resolve() if args.dut else None
    _progress(f"run directory: {run_dir}")
    with XenStack(cfg, run_dir, dut=dut, progress=_progress) as stack:
        assert stack.info is not None
        key = stack.store.client_key
        kh = run_dir / "known_hosts"
        port = stack.info.ssh_port
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"pid": os.getpid(), "run_dir": str(run_dir), "ssh_port": port}) + "\n")
        common = f"-i {key} -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        print(f"\nstack is up in {stack.info.timings['domu_ssh']:.0f} s (backend {cfg.backend}); "
              f"disk under test: {stack.dut}")
        print(f"  dom0: ssh {common} -p {port} root@127.0.0.1")
        print(f"  domU: ssh {common} -o ProxyCommand='ssh {common} -p {port} -W %h:%p root@127.0.0.1' root@{DOMU_IP}")
        print("  or:   xdh ssh dom0 -- CMD   /   xdh ssh domu -- CMD")
        print("stop with Ctrl-C or `xdh down`", flush=True)
        try:
            while True:
                assert stack.machine is not None
                stack.machine.check_alive()
                time.sleep(2)
        finally:
            state.unlink(missing_ok=True)
    return EXIT_OK


def _pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError):
        return False


def _up_state() -> dict:
    state = _active_up_file()
    if not state.exists():
        raise ConfigError("no stack is up", hint="start one with `xdh up`")
    data = json.loads(state.read_text())
    if not _pid_alive(data.get("pid")):
        state.unlink(missing_ok=True)
        raise ConfigError("the recorded stack is gone", hint="start one with `xdh up`")
    return data


def cmd_down(args) -> int:
    data = _up_state()
    os.kill(int(data["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _pid_alive(data["pid"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _pid_alive(data["pid"]):
        raise XdhError(f"xdh up (pid {data['pid']}) did not stop in 60 s")
    print(f"stopped the stack in {data['run_dir']}")
    return EXIT_OK


def cmd_ssh(args) -> int:
    from .images import ImageStore
    from .ssh import Endpoint, Shell
    from .stack import DOMU_IP
    data = _up_state()
    store = ImageStore()
    cmd = args.command
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("no command given", hint="usage: xdh ssh dom0|domu -- CMD [ARG...]")
    dom0 = Shell.connect(Endpoint("dom0", "127.0.0.1", data["ssh_port"], store.require("dom0").host_key),
                         store.client_key)
    target = dom0
    try:
        if args.guest == "domu":
            target = Shell.connect(Endpoint("domu", DOMU_IP, 22, store.require("domu").host_key), store.client_key,
                                   sock=dom0.jump_channel(DOMU_IP))
        res = target.run(cmd if len(cmd) > 1 else cmd[0], timeout=args.timeout, check=False)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.status
    finally:
        if target is not dom0:
            target.close()
        dom0.close()


# --- torture -----------------------------------------------------------------------------
def _range(text: str, kind=int):
    try:
        lo, _, hi = text.partition("-")
        return kind(lo), kind(hi or lo)
    except ValueError:
        raise ConfigError(f"bad range {text!r}", hint="use LO-HI, e.g. 20-200") from None


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = text.split("/")
        return int(i), int(n)
    except ValueError:
        raise ConfigError(f"bad shard {text!r}", hint="use I/N, e.g. --shard 2/4") from None


def _torture_config(args):
    from .torture import TortureConfig
    cfg = TortureConfig(workload=args.workload, fault=args.fault, iterations=args.iterations, seed=args.seed,
                        cut=args.cut, cut_acks=_range(args.cut_acks), cut_seconds=_range(args.cut_seconds, float),
                        canary=not args.no_canary, shard=_shard(args.shard), keep_images=args.keep_images,
                        sync=args.sync, journal=args.journal, reset=args.reset, verify=args.verify,
                        disk_cache=args.disk_cache, crash_subsets=args.crash_subsets, flush_points=args.flush_points,
                        stack=_stack_config(args))
    cfg.validate()
    return cfg


def _versions() -> dict:
    from .images import ImageStore
    from .stack import versions
    store = ImageStore()
    return versions(store.require("dom0"), store.require("domu"))


def _print_summary(summary: dict, as_json: bool) -> None:
    from . import report
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(report.table(summary))
        print(f"run directory: {summary['run_dir']} (summary.json, junit.xml)")


def cmd_torture(args) -> int:
    from .torture import run_campaign
    cfg = _torture_config(args)
    run_dir = _new_run_dir("torture", args.run_dir)
    summary = run_campaign(cfg, run_dir, _progress, _versions())
    _print_summary(summary, args.json)
    return summary["exit_code"]


def cmd_reproduce(args) -> int:
    from . import report
    from .images import ImageStore
    from .torture import Fastpath, Iteration, load_iteration
    it_dir = Path(args.iteration).resolve()
    it = load_iteration(it_dir, _progress)
    store = ImageStore()
    images = (store.require("dom0"), store.require("domu"))
    if args.rerun:
        cfg = it.cfg
        cfg.canary = False
        out = it_dir.parent.parent / f"rerun-{it.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        _progress(f"rerunning {it.name} (seed {it.seed}) with its config into {out}")
        fast = None
        try:
            fast = Fastpath(cfg, out, store, images, _progress)
            rerun = Iteration(cfg, it.index, it.seed, out, _progress, name=it.name, images=images,
                              snapshot=fast.snapshot, verifier=fast.verifier)
            res = rerun.run()
        finally:
            if fast is not None:
                fast.stop()
        print(f"{it.name}: {res.status.upper()} acked={res.acked} lost={res.lost_acked}")
        for v in res.violations:
            print(f"  {v}")
        return {"pass": report.EXIT_CLEAN, "loss": report.EXIT_LOSS}.get(res.status, report.EXIT_HARNESS)
    out = it_dir / f"reproduce-{time.strftime('%Y%m%d-%H%M%S')}"
    path = args.verify
    _progress(f"re-verifying the crash image of {it.name} ({'fresh stack' if path == 'reboot' else 'fast verifier'}; "
              f"{out})")
    verifier = None
    try:
        if path == "fast":
            from .verify import FastVerifier
            verifier = FastVerifier(out / "verifier", images[1], store, accel=it.cfg.stack.accel, progress=_progress)
            verifier.start()
            it.verifier = verifier
        it.images = images
        verdict = it.reverify(out, path)
    finally:
        if verifier is not None:
            verifier.stop()
            for f in (out / "verifier").glob("*.qcow2"):
                f.unlink()
    old = json.loads((it_dir / "verdict.json").read_text())
    same = [v["kind"] + v["what"] + v["found"] for v in old["violations"]] == \
           [v.kind + v.what + v.found for v in verdict.violations]
    print(f"{it.name}: {'LOSS' if not verdict.ok else 'PASS'} acked={verdict.acked} lost={verdict.lost_acked}; "
          f"same verdict as recorded: {'yes' if same else 'NO'}")
    for v in verdict.violations:
        print(f"  {v.line()}")
    if not same:
        return EXIT_DIFFERENT
    return report.EXIT_CLEAN if verdict.ok else report.EXIT_LOSS


def cmd_bench(args) -> int:
    from . import bench
    cfg = bench.BenchConfig(workload=args.workload, fault=args.fault, iterations=args.iterations, seed=args.seed,
                            cut_acks=_range(args.cut_acks), modes=tuple(args.modes.split(",")),
                            stack=_stack_config(args))
    cfg.validate()
    run_dir = _new_run_dir("bench", args.run_dir)
    result = bench.run_bench(cfg, run_dir, _progress, _versions())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(bench.table(result))
        print(f"run directory: {run_dir} (bench.json, bench.md, one campaign per mode)")
    errors = any(s == "error" for f in result["modes"].values() for s in f["statuses"])
    return EXIT_HARNESS if errors else EXIT_OK


def _list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def cmd_compare(args) -> int:
    from . import compare
    command = "xdh " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else ""
    if args.report_from:
        out = Path(args.run_dir or "runs/compare-merged").resolve()
        data = compare.write_report([Path(d).resolve() for d in args.report_from], out, command)
        print((out / "report.md").read_text())
        print(f"report: {out / 'report.md'} and {out / 'report.html'}")
        return EXIT_OK if data["cells"] else EXIT_HARNESS
    cfg = compare.CompareConfig(backends=_list(args.backends), faults=_list(args.faults),
                                workloads=_list(args.workloads), disk_caches=_list(args.disk_cache),
                                direct_faults=_list(args.direct_faults), iterations=args.iterations, seed=args.seed,
                                cut_acks=_range(args.cut_acks), crash_subsets=args.crash_subsets,
                                flush_points=args.flush_points, canary=not args.no_canary,
                                stack=_stack_config(args))
    cfg.validate()
    run_dir = _new_run_dir("compare", args.run_dir)
    data = compare.run_compare(cfg, run_dir, _progress, _versions())
    compare.write_report([run_dir], run_dir, command)
    print((run_dir / "report.md").read_text())
    print(f"report: {run_dir / 'report.md'} and {run_dir / 'report.html'}")
    return EXIT_OK if data["cells"] else EXIT_HARNESS


def cmd_report_merge(args) -> int:
    from . import report
    out = Path(args.output).resolve()
    summary = report.merge([Path(d).resolve() for d in args.runs], out)
    _print_summary(summary, args.json)
    return summary["exit_code"]


def cmd_list(args) -> int:
    from . import faults, workloads
    print("workloads:")
    for w in workloads.WORKLOADS.values():
        print(f"  {w.name:10} {w.summary}")
    print("faults:")
    for f in faults.FAULTS.values():
        print(f"  {f.name:10} {f.summary}")
    print("backend modes:")
    for b in backends.BACKENDS.values():
        print(f"  {b.name:13} {b.summary}")
    return EXIT_OK


def cmd_backends(args) -> int:
    for b in backends.BACKENDS.values():
        print(f"{b.name:13} {b.summary}")
    return EXIT_OK


BACKENDS_HELP = "backend modes of the disk under test (xvdb in the domU):\n" + "\n".join(
    f"  {b.name:13} {b.summary}" for b in backends.BACKENDS.values())


# --- parser ------------------------------------------------------------------------------
def _add_stack_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stack")
    g.add_argument("--backend", default=backends.DEFAULT_BACKEND, metavar="MODE",
                   help="backend mode of the disk under test: " + ", ".join(backends.BACKENDS)
                   + f" (default {backends.DEFAULT_BACKEND}; `xdh backends` explains each)")
    g.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"),
                   help="outer QEMU accelerator; auto uses KVM only if a probe guest boots under it (default auto)")
    g.add_argument("--memory", type=int, default=3072, metavar="MiB", help="outer machine memory (default 3072)")
    g.add_argument("--domu-memory", type=int, default=512, metavar="MiB", help="domU memory (default 512)")
    g.add_argument("--boot-timeout", type=float, default=300, metavar="S",
                   help="seconds to wait for each of dom0 and the domU to answer SSH (default 300)")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xdh",
        description="Durability harness for Xen virtual block stacks: boots Xen PV guests inside QEMU, "
                    "runs fsync workloads, cuts the power and checks that acknowledged writes survived.",
        epilog="Images are cached in $XDH_CACHE (default ~/.cache/xdh); runs go to $XDH_RUNS (default ./runs).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    img = sub.add_parser("images", help="build, list or clean the guest images")
    isub = img.add_subparsers(dest="images_cmd", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="build missing or stale images (mmdebstrap, Debian 12 packages)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--only", action="append", choices=("dom0", "domu"), help="build only this image (repeatable)")
    b.set_defaults(func=cmd_images_build)
    lst = isub.add_parser("list", help="list built images")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_images_list)
    cl = isub.add_parser("clean", help="remove stale images and their saved stack snapshots (all with --all)")
    cl.add_argument("--all", action="store_true", help="remove every image and the SSH client key")
    cl.set_defaults(func=cmd_images_clean)

    up = sub.add_parser("up", help="boot the stack and keep it running until Ctrl-C or `xdh down`",
                        description="Boot outer QEMU -> Xen -> dom0 -> domU, print how to reach both guests, "
                                    "and keep running until Ctrl-C or `xdh down`.",
                        epilog=BACKENDS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_stack_options(up)
    up.add_argument("--run-dir", help="where logs and disks go (default ./runs/up-TIMESTAMP)")
    up.add_argument("--dut", metavar="PATH", help="use this disk image as the disk under test (created if missing)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the stack started by `xdh up`")
    down.set_defaults(func=cmd_down)

    ssh = sub.add_parser("ssh", help="run a command in dom0 or the domU of the running stack")
    ssh.add_argument("guest", choices=("dom0", "domu"))
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    ssh.add_argument("--timeout", type=float, default=600, help="seconds (default 600)")
    ssh.set_defaults(func=cmd_ssh)

    bk = sub.add_parser("backends", help="list the backend modes of the disk under test")
    bk.set_defaults(func=cmd_backends)

    ls = sub.add_parser("list", help="list workloads, faults and backend modes")
    ls.set_defaults(func=cmd_list)

    t = sub.add_parser("torture", help="the main job: crash iterations with power cuts, verified after reboot",
                       description="Run crash iterations: boot, run an fsync workload in the domU, cut the power "
                                   "at a seeded random point (QMP stop + kill), boot a fresh stack on the crash "
                                   "image and check that every acknowledged write survived. A canary iteration "
                                   "(drop-flush on append) runs first and must be caught.",
                       epilog=TORTURE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_torture_options(t)
    _add_stack_options(t)
    t.set_defaults(func=cmd_torture)

    r = sub.add_parser("reproduce", help="re-verify a saved crash image on a fresh stack (or --rerun it)",
                       description="Boot a fresh stack on an overlay of the iteration's saved crash image, verify "
                                   "and judge again; the verdict should match the recorded one. Exit 0 clean, "
                                   "1 loss, 2 harness error, 4 verdict differs from the recorded one.")
    r.add_argument("iteration", metavar="RUN/iterations/iter-NNNN", help="an iteration directory")
    r.add_argument("--verify", choices=("reboot", "fast"), default="reboot",
                   help="re-verify by a full reboot of the stack (default) or with the fast verifier VM")
    r.add_argument("--rerun", action="store_true",
                   help="instead, run the iteration again from scratch with its config and seed")
    r.set_defaults(func=cmd_reproduce)

    bn = sub.add_parser("bench", help="baseline (full reboots) vs fast path (snapshot + fast verifier), side by side",
                        description="Run the same workload, fault and seed twice: the baseline (a full boot per "
                                    "crash run and a full reboot per verification) and the fast path (snapshot "
                                    "reset, fast verifier). Prints seconds per iteration, iterations per hour, "
                                    "verified crash states per hour and the ratio. See docs/performance.md.")
    bn.add_argument("--workload", default="append", help="workload (default append)")
    bn.add_argument("--fault", default="none", help="fault (default none)")
    bn.add_argument("--iterations", type=int, default=3, help="iterations per mode (default 3)")
    bn.add_argument("--seed", type=int, default=1, help="campaign seed, the same for both modes (default 1)")
    bn.add_argument("--cut-acks", default="20-200", metavar="LO-HI", help="ack range of the cut (default 20-200)")
    bn.add_argument("--modes", default="baseline,fast", help="comma-separated: baseline, fast (default both)")
    bn.add_argument("--run-dir", help="output directory (default ./runs/bench-TIMESTAMP)")
    bn.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_stack_options(bn)
    bn.set_defaults(func=cmd_bench)

    cp = sub.add_parser("compare", help="the backend comparison: a matrix of backend x fault x workload x disk cache",
                        description="Run one short torture campaign per cell of backend mode x fault x workload x "
                                    "disk-cache model (on the fast path) and write report.md and a self-contained "
                                    "report.html: per cell iterations, iterations with loss, acked writes lost, "
                                    "crash states checked, fsyncs/s and fsync latency p50/p99 in the guest, and "
                                    "whether the canary of its (backend, disk cache) pair was caught.",
                        epilog="example: xdh compare --backends qdisk,phy,qdisk-qcow2 --faults none,drop-flush,"
                               "disk-lies,backend-lies,flush-eio --workloads append,direct --disk-cache none,volatile "
                               "--iterations 3", formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("--backends", default="qdisk,phy", help="comma-separated backend modes (default qdisk,phy)")
    cp.add_argument("--faults", default="none,drop-flush", help="comma-separated faults (default none,drop-flush)")
    cp.add_argument("--workloads", default="append", help="comma-separated workloads (default append)")
    cp.add_argument("--direct-faults", default="drop-flush,disk-lies",
                    help="faults the direct workload runs with (default drop-flush,disk-lies)")
    cp.add_argument("--disk-cache", default="none,volatile", help="comma-separated models (default none,volatile)")
    cp.add_argument("--iterations", type=int, default=3, help="iterations per cell (default 3)")
    cp.add_argument("--seed", type=int, default=1, help="campaign seed of every cell (default 1)")
    cp.add_argument("--cut-acks", default="20-200", metavar="LO-HI", help="ack range of the cut (default 20-200)")
    cp.add_argument("--crash-subsets", type=int, default=3, metavar="K", help="volatile: subsets per iteration")
    cp.add_argument("--flush-points", type=int, default=2, metavar="N", help="volatile: flush points per iteration")
    cp.add_argument("--no-canary", action="store_true", help="skip the per-(backend, disk cache) canaries")
    cp.add_argument("--run-dir", help="output directory (default ./runs/compare-TIMESTAMP)")
    cp.add_argument("--report-from", nargs="+", metavar="RUN",
                    help="do not run: write one report from these compare run directories (pieces of a matrix)")
    _add_stack_options(cp)
    cp.set_defaults(func=cmd_compare)

    rep = sub.add_parser("report", help="combine run directories")
    rsub = rep.add_subparsers(dest="report_cmd", metavar="ACTION", required=True)
    m = rsub.add_parser("merge", help="merge run directories (e.g. shards) into one summary and JUnit file")
    m.add_argument("runs", nargs="+", metavar="RUN")
    m.add_argument("-o", "--output", default="runs/merged", help="output directory (default runs/merged)")
    m.add_argument("--json", action="store_true", help="print the merged summary as JSON")
    m.set_defaults(func=cmd_report_merge)
    return p


TORTURE_EPILOG = """exit codes: 0 clean, 1 acknowledged writes lost, 2 harness error, 3 canary not caught
(this configuration cannot see a lost flush, so a clean result would prove nothing).

examples:
  xdh torture                                   3 iterations of append on qdisk, no fault
  xdh torture --fault drop-flush --workload direct --iterations 10
  xdh torture --shard 2/4 --seed 42 --iterations 40     one machine of a nightly matrix
"""


def _add_torture_options(t: argparse.ArgumentParser) -> None:
    g = t.add_argument_group("campaign")
    g.add_argument("--workload", default="append", help="append, replace, direct or sqlite (default append)")
    g.add_argument("--fault", default="none",
                   help="none, drop-flush, nobarrier, flush-eio, disk-lies or backend-lies (default none; xdh list)")
    g.add_argument("--iterations", type=int, default=3, help="crash iterations (default 3)")
    g.add_argument("--seed", type=int, help="campaign seed (default: random, recorded in the run directory)")
    g.add_argument("--cut", choices=("acks", "time"), default="acks",
                   help="cut after a random number of acks or a random delay (default acks)")
    g.add_argument("--cut-acks", default="20-200", metavar="LO-HI", help="ack range for --cut acks (default 20-200)")
    g.add_argument("--cut-seconds", default="1-8", metavar="LO-HI", help="delay range for --cut time (default 1-8)")
    g.add_argument("--no-canary", action="store_true", help="skip the drop-flush positive control at the start")
    g.add_argument("--shard", default="1/1", metavar="I/N", help="run only iterations with index %% N == I-1")
    g.add_argument("--keep-images", action="store_true", help="keep the crash image of passing iterations too")
    g.add_argument("--sync", choices=("fsync", "fdatasync"), default="fsync", help="append: sync call (default fsync)")
    g.add_argument("--journal", choices=("wal", "delete"), default="wal", help="sqlite: journal mode (default wal)")
    g.add_argument("--run-dir", help="output directory (default ./runs/torture-TIMESTAMP)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    d = t.add_argument_group("disk-cache model (see harness/crashstate.py)")
    d.add_argument("--disk-cache", choices=("none", "volatile"), default="none",
                   help="none: a completed write survives the cut (the host keeps it); volatile: record the disk "
                        "under test's writes and flushes (QEMU blklogwrites) and also verify the crash states a "
                        "disk with a volatile write cache allows: the last flush, random subsets of later writes, "
                        "earlier flush points (default none)")
    d.add_argument("--crash-subsets", type=int, default=3, metavar="K",
                   help="volatile: random subsets of the unflushed writes verified per iteration (default 3)")
    d.add_argument("--flush-points", type=int, default=2, metavar="N",
                   help="volatile: earlier flush points checked for integrity per iteration, -1 for all (default 2)")
    f = t.add_argument_group("speed (see docs/performance.md)")
    f.add_argument("--reset", choices=("snapshot", "boot"), default="snapshot",
                   help="snapshot: boot the stack once, save it, restore it for every crash run (seconds); "
                        "boot: a full boot per crash run (default snapshot)")
    f.add_argument("--verify", choices=("auto", "fast", "reboot", "both"), default="auto",
                   help="fast: hot-plug each crash image into one verifier VM (domU kernel, no Xen); reboot: boot "
                        "the whole stack on it; both: both, and they must agree; auto: fast where the backend "
                        "allows (not qdisk-qcow2). The canary always includes a reboot (default auto)")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    # paramiko logs every refused connection while a guest boots; qemu.qmp logs its EOF at quit
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    install_signal_handlers()
    try:
        return args.func(args)
    except (KeyboardInterrupt, Interrupted) as exc:
        msg = str(exc) if isinstance(exc, Interrupted) else "interrupted by SIGINT"
        print(f"xdh: {msg}; stopped cleanly", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LaunchError as exc:
        print(f"xdh: error: {exc.oneline()}", file=sys.stderr)
        if exc.log_tail:
            print("--- last lines of the logs ---\n" + exc.log_tail, file=sys.stderr)
        return EXIT_HARNESS
    except XdhError as exc:
        print(f"xdh: error: {exc.oneline()}", file=sys.stderr)
        return EXIT_HARNESS


if __name__ == "__main__":
    sys.exit(main())
