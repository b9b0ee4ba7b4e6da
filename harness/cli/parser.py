"""The ``xdh`` argument parser: one function per subcommand, shared option groups, and
``choices=`` taken from the enums and registries, so bad input is a usage error (exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn, TypeAlias

from ..campaign.checks import PER_IMAGE_FLUSH_POINTS
from ..catalog import backends, faults, workloads
from ..config import Accel, CutMode, DiskCache, Expect, Journal, Reset, Sync, VerifyPath, choices
from ..releases import DEFAULT_RELEASE, RELEASES
from ..status import EXIT_CODES_HELP, ExitCode
from . import commands as c
from . import interactive as i
from .types import at_least, comma_list, flush_points, int_range, named_or_file, shard

Sub: TypeAlias = "argparse._SubParsersAction[Parser]"


class Parser(argparse.ArgumentParser):
    """Bad input is one line naming the fix, and the usage exit code (2): no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _stack_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stack")
    g.add_argument("--backend", default=backends.DEFAULT_BACKEND, metavar="MODE", choices=backends.BACKENDS.names(),
                   help="backend mode of the disk under test: " + ", ".join(backends.BACKENDS.names())
                   + f" (default {backends.DEFAULT_BACKEND}; `xdh backends` explains each)")
    _release_option(g)
    g.add_argument("--accel", default=Accel.AUTO.value, choices=choices(Accel),
                   help="outer QEMU accelerator; auto uses KVM only if a probe guest boots under it (default auto)")
    g.add_argument("--memory", type=at_least(1024), default=3072, metavar="MiB",
                   help="outer machine memory (default 3072)")
    g.add_argument("--domu-memory", type=at_least(512), default=512, metavar="MiB", help="domU memory (default 512)")
    g.add_argument("--boot-timeout", type=at_least(1, float), default=300, metavar="S",
                   help="seconds to wait for each of dom0 and the domU to answer SSH (default 300)")
    _kernel_options(g)


def _kernel_options(g: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    g.add_argument("--domu-kernel", metavar="FILE", default="",
                   help="boot the domU with this kernel from a build tree (arch/x86/boot/bzImage, vmlinux, or the "
                   "tree itself) instead of its image's; no initramfs unless --domu-initrd, so blkfront, "
                   "netfront and ext4 must be built in (=y); `uname -r` is checked after boot")
    g.add_argument("--domu-initrd", metavar="FILE", default="", help="an initramfs for --domu-kernel")


def _release_option(g: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    g.add_argument("--release", default=DEFAULT_RELEASE, choices=list(RELEASES),
                   help="Debian release of dom0 and the domU: " + "; ".join(r.summary for r in RELEASES.values())
                   + f" (default {DEFAULT_RELEASE})")
    _deb_options(g)


def _deb_options(g: argparse._ArgumentGroup | argparse.ArgumentParser, rerun: bool = False) -> None:
    what = "rerun with" if rerun else "install"
    g.add_argument("--dom0-deb", action="append", default=[], metavar="FILE",
                   help=f"{what} your own .deb in dom0's image (repeatable): a rebuilt qemu-system-xen, a Xen "
                   "or a kernel build; its hash is part of the image digest, its version is recorded")
    g.add_argument("--domu-deb", action="append", default=[], metavar="FILE",
                   help=f"{what} your own .deb in the domU's image (repeatable), e.g. a kernel from "
                   "`make bindeb-pkg`: the domU then boots that kernel, and the run checks `uname -r`")


def _run_dir(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--run-dir", help=f"output directory (default ./runs/{kind}-TIMESTAMP)")


def _sample_options(g: argparse._ArgumentGroup | argparse.ArgumentParser, seed_default: int | None,
                    seed_help: str) -> None:
    """--iterations, --seed, --cut-acks: the same meaning in torture, bench and compare."""
    g.add_argument("--iterations", type=at_least(1), default=3, help="crash iterations (default 3)")
    g.add_argument("--seed", type=at_least(0), default=seed_default, help=seed_help)
    g.add_argument("--cut-acks", type=int_range(int, 1), default=(20, 200), metavar="LO-HI",
                   help="cut after a random number of acks in this range (default 20-200)")


def _images(sub: Sub) -> None:
    img = sub.add_parser("images", help="build, list or clean the guest images")
    isub = img.add_subparsers(dest="images_cmd", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="build missing or stale images (mmdebstrap, Debian packages of one release)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--only", action="append", choices=("dom0", "domu"), help="build only this image (repeatable)")
    b.add_argument("--workload", metavar="MANIFEST", help="with the Debian packages this workload manifest needs in "
                                                          "the domU (xdh torture --workload builds them itself)")
    _release_option(b)
    b.set_defaults(func=c.cmd_images_build)
    dm = isub.add_parser("devmodel", help="build (once, cached) dom0's device model with linux-aio, for qdisk-direct",
                         description="Debian builds qemu-system-xen without linux-aio, so libxl's direct-io-safe "
                         "disk (aio=native) cannot open. This rebuilds the Xen flavour of the release's own qemu "
                         "source package with QEMU_XEN_CONFIGURE_OPTIONS=--enable-linux-aio in a throwaway build "
                         "chroot, repacks the release's qemu-system-xen with it (version +xdhaio1), caches the "
                         ".deb and prints its path. --backend qdisk-direct then installs it in dom0. Takes about "
                         "6 minutes on 2 cores (measured: 327 s for bookworm).")
    dm.add_argument("--release", default=DEFAULT_RELEASE, choices=list(RELEASES),
                    help=f"Debian release to build for (default {DEFAULT_RELEASE})")
    dm.add_argument("--force", action="store_true", help="rebuild even if cached")
    dm.set_defaults(func=c.cmd_images_devmodel)
    lst = isub.add_parser("list", help="list built images")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=c.cmd_images_list)
    cl = isub.add_parser("clean", help="remove stale images and their saved stack snapshots (all with --all)")
    cl.add_argument("--all", action="store_true",
                    help="remove every image, the SSH client key and the built device models")
    cl.set_defaults(func=c.cmd_images_clean)


def _interactive(sub: Sub) -> None:
    up = sub.add_parser("up", help="restore the stack (seconds), start a workload, keep it up for `xdh cut`",
                        description="Restore the saved stack (outer QEMU -> Xen -> dom0 -> domU; built once, then "
                                    "seconds), make the filesystem, inject the fault and start the workload as a "
                                    "torture crash run does, print the QMP socket and how to reach both guests, and "
                                    "keep running until `xdh cut` (the power cut; then `xdh verify`), Ctrl-C or "
                                    "`xdh down`. --dut IMAGE instead boots on a crash image to inspect it.",
                        epilog="examples:\n  xdh up --workload append --fault drop-flush --seed 7\n  xdh cut\n"
                               "  xdh verify\n\nbackend modes of the disk under test (xvdb in the domU):\n"
                               + backends.BACKENDS.describe(), formatter_class=argparse.RawDescriptionHelpFormatter)
    g = up.add_argument_group("session")
    g.add_argument("--workload", metavar="NAME|MANIFEST", type=named_or_file(workloads.WORKLOADS.names(), "workload"),
                   help="start this workload, its acks recorded (default: none; append's filesystem is made)")
    g.add_argument("--fault", default="none", metavar="NAME|MANIFEST",
                   type=named_or_file(faults.FAULTS.names(), "fault"), help="inject this fault (default none)")
    g.add_argument("--seed", type=at_least(0), help="the seed (default: random); iter-0000 of a torture run with "
                                                   "this seed runs the same workload")
    g.add_argument("--disk-cache", choices=choices(DiskCache), default=DiskCache.NONE.value,
                   help="volatile: record the outer disk's write log, so `xdh verify` checks every crash state")
    g.add_argument("--reset", choices=choices(Reset), default=Reset.SNAPSHOT.value,
                   help="snapshot: restore the saved stack (default; saved once); boot: a full boot")
    g.add_argument("--run-dir", help="where logs and disks go (default ./runs/up-TIMESTAMP)")
    g.add_argument("--dut", metavar="IMAGE", help="boot on an overlay over this crash image to inspect it (a full "
                                                  "boot; the image is not written)")
    _stack_options(up)
    up.set_defaults(func=i.cmd_up)
    cut = sub.add_parser("cut", help="cut the power of the stack started by `xdh up`, now",
                         description="The same power cut as a torture crash run's (QMP stop, then kill; with "
                                     "--disk-cache volatile a SIGKILL that flushes nothing). The crash image, acks "
                                     "and logs stay in the session's run directory; `xdh verify` checks them.")
    cut.set_defaults(func=i.cmd_cut)
    ver = sub.add_parser("verify", help="verify the crash image of `xdh cut` and print the verdict",
                         description="Torture's check phase on the last session's crash image (or ITER): the fast "
                                     "verifier (or a full reboot) mounts it, runs the workload's verify and judges "
                                     "the acks; with --disk-cache volatile every crash state too. Exit 0 pass, 1 loss.")
    ver.add_argument("iteration", nargs="?", metavar="ITER",
                     help="an iteration directory (default: the last session's)")
    ver.add_argument("--workload", metavar="NAME|MANIFEST", type=named_or_file(workloads.WORKLOADS.names(), "workload"),
                     help="verify as this workload (default: the session's)")
    ver.add_argument("--verify", choices=[VerifyPath.FAST.value, VerifyPath.REBOOT.value, VerifyPath.BOTH.value],
                     default=VerifyPath.FAST.value, help="fast verifier, full reboot or both (default fast)")
    ver.set_defaults(func=i.cmd_verify)
    down = sub.add_parser("down", help="stop the stack started by `xdh up`")
    down.set_defaults(func=i.cmd_down)
    ssh = sub.add_parser("ssh", help="run a command in dom0 or the domU of the running stack")
    ssh.add_argument("guest", choices=("dom0", "domu"))
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    ssh.add_argument("--timeout", type=at_least(1, float), default=600, help="seconds (default 600)")
    ssh.set_defaults(func=i.cmd_ssh)
    bk = sub.add_parser("backends", help="list the backend modes of the disk under test")
    bk.set_defaults(func=c.cmd_backends)
    ls = sub.add_parser("list", help="list workloads, faults and backend modes")
    ls.set_defaults(func=c.cmd_list)


TORTURE_EPILOG = f"""{EXIT_CODES_HELP}.

examples:
  xdh torture                                   3 iterations of append on qdisk, no fault
  xdh torture --fault drop-flush --workload direct --iterations 10
  xdh torture --shard 2/4 --seed 42 --iterations 40     one machine of a nightly matrix
"""


def _torture(sub: Sub) -> None:
    t = sub.add_parser("torture", help="the main job: crash iterations with power cuts, verified after reboot",
                       description="Run crash iterations: boot, run an fsync workload in the domU, cut the power "
                                   "at a seeded random point (QMP stop + kill), boot a fresh stack on the crash "
                                   "image and check that every acknowledged write survived. A canary iteration "
                                   "(drop-flush on append) runs first and must be caught.",
                       epilog=TORTURE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = t.add_argument_group("campaign")
    g.add_argument("--workload", default="append", metavar="NAME|MANIFEST",
                   type=named_or_file(workloads.WORKLOADS.names(), "workload"),
                   help="the workload in the domU: a built-in (default append; `xdh list` explains each) or "
                        "your own workload.toml (docs/workloads.md)")
    g.add_argument("--fault", default="none", metavar="NAME|MANIFEST",
                   type=named_or_file(faults.FAULTS.names(), "fault"),
                   help="the fault to inject: a built-in (default none; `xdh list` explains each) or your own "
                        "fault.toml (docs/workloads.md)")
    _sample_options(g, None, "campaign seed (default: random, recorded in the run directory)")
    g.add_argument("--cut", choices=choices(CutMode), default=CutMode.ACKS.value,
                   help="cut after a random number of acks or a random delay (default acks)")
    g.add_argument("--cut-seconds", type=int_range(float, 0.001), default=(1.0, 8.0), metavar="LO-HI",
                   help="delay range for --cut time (default 1-8)")
    g.add_argument("--no-canary", action="store_true", help="skip the drop-flush positive control at the start")
    g.add_argument("--shard", type=shard, default=(1, 1), metavar="I/N",
                   help="run only iterations with index %% N == I-1")
    g.add_argument("--keep-images", action="store_true", help="keep the crash image of passing iterations too")
    g.add_argument("--sync", choices=choices(Sync), default=Sync.FSYNC.value, help="append: sync call (default fsync)")
    g.add_argument("--journal", choices=choices(Journal), default=Journal.WAL.value,
                   help="sqlite: journal mode (default wal)")
    g.add_argument("--expect", choices=choices(Expect),
                   help="this campaign is a control: clean (every iteration must pass) or loss (every iteration "
                        "must lose acked writes); a control that behaves so exits 0, and JUnit marks the "
                        "iterations that did not (default: no expectation; a loss exits 1)")
    g.add_argument("--run-dir", help="output directory (default ./runs/torture-TIMESTAMP)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    d = t.add_argument_group("disk-cache model (see harness/crash/writelog.py)")
    d.add_argument("--disk-cache", choices=choices(DiskCache), default=DiskCache.NONE.value,
                   help="none: a completed write survives the cut (the host keeps it); volatile: record the disk "
                        "under test's writes and flushes (QEMU blklogwrites) and also verify every crash state a "
                        "disk with a volatile write cache allows: each flush of the workload with the acks it must "
                        "hold, seeded subsets of each epoch's writes; built and verified in one batch in the fast "
                        "verifier (default none)")
    _state_options(d)
    f = t.add_argument_group("speed (see docs/performance.md)")
    f.add_argument("--reset", choices=choices(Reset), default=Reset.SNAPSHOT.value,
                   help="snapshot: boot the stack once, save it, restore it for every crash run (seconds); "
                        "boot: a full boot per crash run (default snapshot)")
    f.add_argument("--verify", choices=choices(VerifyPath), default=VerifyPath.AUTO.value,
                   help="fast: hot-plug each crash image into one verifier VM (domU kernel, no Xen); reboot: boot "
                        "the whole stack on it; both: both, and they must agree; auto: fast (default auto). "
                        "The canary always includes a reboot")
    f.add_argument("--jobs", type=at_least(1), default=1, metavar="N",
                   help="lanes, each with its own stack and fast verifier (default 1; each lane already runs "
                        "the next crash beside the last verification: about one lane per two cores)")
    _stack_options(t)
    t.set_defaults(func=c.cmd_torture)


def _state_options(g: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    g.add_argument("--crash-subsets", type=at_least(0), default=3, metavar="K",
                   help="volatile: seeded random subsets of each epoch's unflushed writes, per flush state "
                        "(default 3; duplicates by content are verified once)")
    g.add_argument("--flush-points", type=flush_points, default=-1, metavar="N",
                   help="volatile: flush states per iteration, each with the acks it must hold; -1 for every "
                        "flush of the workload (default; batched in the fast verifier; a reboot or qdisk-qcow2 "
                        f"verifies {PER_IMAGE_FLUSH_POINTS} unless given)")


def _reproduce(sub: Sub) -> None:
    r = sub.add_parser("reproduce", help="re-verify a saved crash image on a fresh stack (or --rerun it)",
                       description="Boot a fresh stack on an overlay of the iteration's saved crash image, verify "
                                   "and judge again; the verdict should match the recorded one.",
                       epilog=EXIT_CODES_HELP)
    r.add_argument("iteration", metavar="RUN/iterations/iter-NNNN", help="an iteration directory")
    r.add_argument("--verify", choices=(VerifyPath.REBOOT.value, VerifyPath.FAST.value, VerifyPath.BOTH.value),
                   help="re-verify by a full reboot of the stack, with the fast verifier VM, or both (default: "
                        "reboot; with --state both)")
    r.add_argument("--state", metavar="NAME",
                   help="volatile model: rebuild this crash state (e.g. flush-62+1, from states/states.json) from "
                        "the run's base disk and write log, and verify it alone")
    r.add_argument("--rerun", action="store_true",
                   help="instead, run the iteration again from scratch with its config, seed and cut plan; "
                        "both verdicts are printed side by side")
    g = r.add_argument_group("other components (with --rerun; default: the recorded ones)")
    g.add_argument("--release", choices=list(RELEASES),
                   help="rerun on this Debian release instead of the recorded one")
    _deb_options(g, rerun=True)
    _kernel_options(g)
    g.add_argument("--stock", action="store_true",
                   help="rerun without the recorded run's own .debs and kernel file (the release's stock packages)")
    r.set_defaults(func=c.cmd_reproduce)


def _bench(sub: Sub) -> None:
    bn = sub.add_parser("bench", help="baseline, fast path and every-flush crash states, side by side",
                        description="Run the same workload, fault and seed in each mode: baseline (a full boot per "
                                    "crash run and a full reboot per verification), fast (snapshot reset, fast "
                                    "verifier) and states (the fast path with the volatile disk-cache model: every "
                                    "flush a crash state, verified in one batch). Prints seconds per iteration, "
                                    "iterations per hour, distinct verified crash states per hour and the ratios. "
                                    "See docs/performance.md.")
    bn.add_argument("--workload", default="append", metavar="NAME|MANIFEST",
                    type=named_or_file(workloads.WORKLOADS.names(), "workload"), help="workload (default append)")
    bn.add_argument("--fault", default="none", metavar="NAME|MANIFEST",
                    type=named_or_file(faults.FAULTS.names(), "fault"),
                    help="fault (default none)")
    _sample_options(bn, 1, "campaign seed, the same for both modes (default 1)")
    bn.add_argument("--modes", type=comma_list, default=("baseline", "fast", "states"),
                    help="comma-separated: baseline, fast, states (default all three)")
    bn.add_argument("--jobs", type=at_least(1), default=1, metavar="N",
                    help="lanes per campaign, as in torture (default 1)")
    _run_dir(bn, "bench")
    bn.add_argument("--json", action="store_true", help="print the result as JSON")
    _stack_options(bn)
    bn.set_defaults(func=c.cmd_bench)


def _compare(sub: Sub) -> None:
    cp = sub.add_parser("compare", help="the backend comparison: a matrix of backend x fault x workload x disk cache",
                        description="Run one short torture campaign per cell of backend mode x fault x workload x "
                                    "disk-cache model (on the fast path) and write report.md and a self-contained "
                                    "report.html: per cell iterations, iterations with loss, acked writes lost, "
                                    "crash states checked, fsyncs/s and fsync latency p50/p99 in the guest, and "
                                    "whether the canary of its (backend, disk cache) pair was caught.",
                        epilog="example: xdh compare --backends qdisk,phy,qdisk-qcow2 --faults none,drop-flush,"
                               "disk-lies,backend-lies,flush-eio --workloads append,direct --disk-cache none,volatile "
                               "--iterations 3\n\nexit codes: 0 every cell reached verdicts (losses are the "
                               "matrix's content), 2 usage, 5 a cell's stack failed, 6 a harness error, 130 "
                               "interrupted (the report of the cells that ran is written)",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("--releases", type=comma_list, metavar="LIST",
                    help="comma-separated Debian releases, a dimension of the matrix: " + ", ".join(RELEASES)
                    + " (default: --release); the report names each column's component versions")
    cp.add_argument("--backends", type=comma_list, default=("qdisk", "phy"),
                    help="comma-separated backend modes (default qdisk,phy)")
    cp.add_argument("--faults", type=comma_list, default=("none", "drop-flush"),
                    help="comma-separated faults (default none,drop-flush)")
    cp.add_argument("--workloads", type=comma_list, default=("append",),
                    help="comma-separated workloads (default append)")
    cp.add_argument("--direct-faults", type=comma_list, default=("drop-flush", "disk-lies"),
                    help="faults the direct workload runs with (default drop-flush,disk-lies)")
    cp.add_argument("--disk-cache", type=comma_list, default=("none", "volatile"),
                    help="comma-separated models (default none,volatile)")
    _sample_options(cp, 1, "campaign seed of every cell (default 1)")
    _state_options(cp)
    cp.add_argument("--no-canary", action="store_true", help="skip the per-(backend, disk cache) canaries")
    cp.add_argument("--run-dir", help="output directory (default ./runs/compare-TIMESTAMP; with --report-from "
                                      "./runs/compare-merged)")
    cp.add_argument("--report-from", nargs="+", metavar="RUN",
                    help="do not run: write one report from these compare run directories (pieces of a matrix)")
    _stack_options(cp)
    cp.set_defaults(func=c.cmd_compare)


def _report(sub: Sub) -> None:
    rep = sub.add_parser("report", help="combine run directories")
    rsub = rep.add_subparsers(dest="report_cmd", metavar="ACTION", required=True)
    m = rsub.add_parser("merge", help="merge run directories (e.g. shards) into one summary and JUnit file")
    m.add_argument("runs", nargs="+", metavar="RUN")
    m.add_argument("-o", "--output", help="output directory (default $XDH_RUNS/merged, i.e. ./runs/merged)")
    m.add_argument("--json", action="store_true", help="print the merged summary as JSON")
    m.set_defaults(func=c.cmd_report_merge)
    ix = rsub.add_parser("index", help="write DIR/index.html: every run directory in DIR, newest first, linked to "
                                       "its own index.html (torture writes both as it ends)")
    ix.add_argument("dir", nargs="?", metavar="DIR", help="the directory holding runs (default $XDH_RUNS, ./runs)")
    ix.set_defaults(func=c.cmd_report_index)


SUBCOMMANDS: tuple[Callable[[Sub], None], ...] = (_images, _interactive, _torture, _reproduce, _bench, _compare,
                                                  _report)


def make_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="xdh",
        description="Durability harness for Xen virtual block stacks: boots Xen PV guests inside QEMU, "
                    "runs fsync workloads, cuts the power and checks that acknowledged writes survived.",
        epilog="Images are cached in $XDH_CACHE (default ~/.cache/xdh); runs go to $XDH_RUNS (default ./runs).\n"
               + EXIT_CODES_HELP + ".", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action=Version, nargs=0, help="print the version and the commit (or install) and exit")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return p


class Version(argparse.Action):
    """--version, computed only when asked (it runs git in a checkout)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        from .. import __version__, paths
        where = f"data in {paths.INSTALLED}" if paths.source() == "installed" else f"checkout {paths.CHECKOUT}"
        print(f"xdh {__version__} ({paths.source()}; {where})")
        parser.exit()
