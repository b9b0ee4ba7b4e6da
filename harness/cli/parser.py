"""The ``xdh`` argument parser: one function per subcommand, shared option groups, and
``choices=`` taken from the enums and registries, so bad input is a usage error (exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from ..catalog import backends, faults, workloads
from ..config import CutMode, DiskCache, Expect, Journal, Reset, Sync, VerifyPath, choices
from ..releases import DEFAULT_RELEASE, RELEASES
from ..status import BISECT_HELP, EXIT_CODES_HELP
from . import commands as c
from . import interactive as i
from . import options as o
from . import preview
from .options import BENCH, COMPARE, TORTURE, Parser
from .types import at_least, comma_list, duration, int_range, named_or_file, shard

Sub: TypeAlias = "argparse._SubParsersAction[Parser]"


def _images(sub: Sub) -> None:
    img = sub.add_parser("images", help="build, list or clean the guest images")
    isub = img.add_subparsers(dest="images_cmd", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="build missing or stale images (mmdebstrap, Debian packages of one release)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--only", action="append", choices=("dom0", "domu"), help="build only this image (repeatable)")
    b.add_argument("--workload", metavar="MANIFEST", help="with the Debian packages this workload manifest needs in "
                                                          "the domU (xdh torture --workload builds them itself)")
    b.add_argument("--lock", metavar="FILE", help="build with exactly the package versions of this lock (from "
                   "`xdh images lock`): an image holding other versions is rebuilt; fails naming each package the "
                   "release no longer serves")
    o.release_option(b)
    b.set_defaults(func=c.cmd_images_build)
    for name, func, what, desc in (
            ("lock", c.cmd_images_lock, "write the package versions of the current images (a lock for --lock)",
             "Write the exact Debian package versions of both current images of a release as one JSON file, to "
             "commit beside your pipeline: `xdh images build --lock FILE` on every runner then builds the same "
             "versions (each image also keeps its own packages.lock beside its manifest)."),
            ("export", c.cmd_images_export, "write both current images and the SSH client key to one tar file",
             "Write both current images of a release (and your .debs') to one tar file with every file's SHA-256, "
             "for `xdh images import` on another machine: a pipeline builds once and every shard runs the same "
             "bytes. The file holds the SSH client key the images trust: keep it where you keep the images.")):
        sp = isub.add_parser(name, help=what, description=desc)
        sp.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write")
        sp.add_argument("--workload", metavar="MANIFEST", help="the images with this workload manifest's packages")
        o.release_option(sp)
        sp.set_defaults(func=func)
    im = isub.add_parser("import", help="check and add the images of an export to this cache",
                         description="Check every file of an `xdh images export` against its SHA-256 and move its "
                                     "images into this cache. A cache without an SSH client key takes the export's; "
                                     "a cache with another key is refused (its images trust that one). Exits 2 if "
                                     "an image is not the one this checkout builds (another commit's recipe).")
    im.add_argument("bundle", metavar="FILE", help="a file written by `xdh images export`")
    im.set_defaults(func=c.cmd_images_import)
    dm = isub.add_parser("devmodel", help="build (once, cached) dom0's device model with linux-aio, for qdisk-direct",
                         description="Debian builds qemu-system-xen without linux-aio, so libxl's direct-io-safe "
                         "disk (aio=native) cannot open. This rebuilds the Xen flavour of the release's own qemu "
                         "source package with QEMU_XEN_CONFIGURE_OPTIONS=--enable-linux-aio in a throwaway build "
                         "chroot, repacks the release's qemu-system-xen with it (version +xdhaio1), caches the "
                         ".deb and prints its path. --backend qdisk-direct then installs it in dom0. Takes about "
                         "6 minutes on 2 cores (measured: 327 s for bookworm).")
    dm.add_argument("--release", default=DEFAULT_RELEASE, choices=list(RELEASES),
                    help="Debian release to build for (default %(default)s)")
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
    g.add_argument("--fault", default=TORTURE.fault, metavar="NAME|MANIFEST",
                   type=named_or_file(faults.FAULTS.names(), "fault"), help="inject this fault (default %(default)s)")
    g.add_argument("--seed", type=at_least(0), help="the seed (default: random); iter-0000 of a torture run with "
                                                   "this seed runs the same workload")
    g.add_argument("--disk-cache", choices=choices(DiskCache), default=TORTURE.disk_cache.value,
                   help="volatile: record the outer disk's write log, so `xdh verify` checks every crash state "
                        "(default %(default)s)")
    g.add_argument("--reset", choices=choices(Reset), default=TORTURE.reset.value,
                   help="snapshot: restore the saved stack (saved once); boot: a full boot (default %(default)s)")
    g.add_argument("--run-dir", help="where logs and disks go (default ./runs/up-TIMESTAMP)")
    g.add_argument("--dut", metavar="IMAGE", help="boot on an overlay over this crash image to inspect it (a full "
                                                  "boot; the image is not written)")
    o.stack_options(up)
    up.set_defaults(func=i.cmd_up)
    cut = sub.add_parser("cut", help="cut the power of the stack started by `xdh up`, now",
                         description="The same power cut as a torture crash run's (QMP stop, then kill; with "
                                     "--disk-cache volatile a SIGKILL that flushes nothing). The crash image, acks "
                                     "and logs stay in the session's run directory; `xdh verify` checks them.")
    cut.set_defaults(func=i.cmd_cut)
    ver = sub.add_parser("verify", help="verify the crash image of `xdh cut` and print the verdict",
                         description="Torture's check phase on the last session's crash image (or ITER): the fast "
                                     "verifier (or a full reboot) mounts it, runs the workload's verify and judges "
                                     "the acks; with --disk-cache volatile every crash state too. Exit 0 pass, 1 loss, "
                                     "2 usage (no session, bad ITER), 5 the verifier failed, 6 harness error.")
    ver.add_argument("iteration", nargs="?", metavar="ITER",
                     help="an iteration directory (default: the last session's)")
    ver.add_argument("--workload", metavar="NAME|MANIFEST", type=named_or_file(workloads.WORKLOADS.names(), "workload"),
                     help="verify as this workload (default: the session's)")
    ver.add_argument("--verify", choices=[VerifyPath.FAST.value, VerifyPath.REBOOT.value, VerifyPath.BOTH.value],
                     default=VerifyPath.FAST.value,
                     help="fast verifier, the Xen stack brought up on the crash image (reboot) or both "
                          "(default %(default)s)")
    ver.set_defaults(func=i.cmd_verify)
    down = sub.add_parser("down", help="stop the stack started by `xdh up`",
                          description="Stop the stack started by `xdh up` (its QEMU, then the session).")
    down.set_defaults(func=i.cmd_down)
    ssh = sub.add_parser("ssh", help="run a command in dom0 or the domU of the running stack",
                         description="Run CMD in a guest of the stack `xdh up` started; its output is printed "
                                     "and its exit status is xdh's.")
    ssh.add_argument("guest", choices=("dom0", "domu"), help="where to run it")
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    ssh.add_argument("--timeout", type=at_least(1, float), default=600.0, help="seconds (default %(default)g)")
    ssh.set_defaults(func=i.cmd_ssh)


def _catalog(sub: Sub) -> None:
    """What can be run: the built-in workloads, faults and backends, and your own manifests checked."""
    bk = sub.add_parser("backends", help="list the backend modes of the disk under test",
                        description="The backend modes of the disk under test (xvdb in the domU), one line each.")
    bk.set_defaults(func=c.cmd_backends)
    ls = sub.add_parser("list", help="list workloads, faults and backend modes",
                        description="The built-in workloads (with their oracle model), faults and backend modes; "
                                    "`xdh check MANIFEST` shows your own.")
    ls.set_defaults(func=c.cmd_list)
    ck = sub.add_parser("check", help="check workload and fault manifests without booting anything",
                        description="Read each manifest as a campaign reads it (schema, keys, name, program, "
                                    "model, parameters, packages, steps) and print one line: ok and what it holds, "
                                    "or the error naming the fix. Exit 0 if every one is ok, else 2.")
    ck.add_argument("manifests", nargs="+", metavar="MANIFEST", help="a workload.toml or a fault.toml")
    ck.set_defaults(func=preview.cmd_check)


TORTURE_EPILOG = f"""{EXIT_CODES_HELP}; {BISECT_HELP}.

examples:
  xdh torture                                   3 iterations of append on qdisk, no fault
  xdh torture --fault drop-flush --workload direct --iterations 10
  xdh torture --shard 2/4 --seed 42 --iterations 40     one machine of a nightly matrix
  xdh torture --shard 2/4 --seed 42 --iterations 40 --dry-run     its seeds and cut points, nothing booted
"""


def _torture(sub: Sub) -> None:
    t = sub.add_parser("torture", help="the main job: crash iterations with power cuts, each crash image verified",
                       description="Run crash iterations: restore (or boot) the stack, run an fsync workload in the "
                                   "domU, cut the power at a seeded random point (QMP stop + kill), verify the crash "
                                   "image (by default hot-plugged into a verifier VM running the domU's kernel; "
                                   "--verify reboot brings the Xen stack up on it) and check that every acknowledged "
                                   "write survived. A canary iteration (drop-flush on append) runs first and must "
                                   "be caught.",
                       epilog=TORTURE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = t.add_argument_group("campaign")
    g.add_argument("--workload", default=TORTURE.workload, metavar="NAME|MANIFEST",
                   type=named_or_file(workloads.WORKLOADS.names(), "workload"),
                   help="the workload in the domU: a built-in (default %(default)s; `xdh list` explains each) or "
                        "your own workload.toml (docs/workloads.md; `xdh check` reads it)")
    g.add_argument("--fault", default=TORTURE.fault, metavar="NAME|MANIFEST",
                   type=named_or_file(faults.FAULTS.names(), "fault"),
                   help="the fault to inject: a built-in (default %(default)s; `xdh list` explains each) or your "
                        "own fault.toml (docs/workloads.md)")
    o.sample_options(g, TORTURE, "campaign seed (default: random, recorded in the run directory)")
    g.add_argument("--cut", choices=choices(CutMode), default=TORTURE.cut.value,
                   help="cut after a random number of acks or a random delay (default %(default)s)")
    g.add_argument("--cut-seconds", type=int_range(float, 0.001), default=TORTURE.cut_seconds, metavar="LO-HI",
                   help=f"delay range for --cut time (default {TORTURE.cut_seconds[0]:g}-{TORTURE.cut_seconds[1]:g})")
    g.add_argument("--no-canary", action="store_true", help="skip the drop-flush positive control at the start")
    g.add_argument("--shard", type=shard, default=TORTURE.shard, metavar="I/N|auto",
                   help="run only iterations with index %% N == I-1; auto: from the CI engine (GitLab's "
                        "CI_NODE_INDEX/CI_NODE_TOTAL, a Kubernetes Indexed Job's JOB_COMPLETION_INDEX with "
                        "XDH_SHARDS)")
    g.add_argument("--time-budget", type=duration, default=0.0, metavar="DURATION",
                   help="end the campaign cleanly in this time (e.g. 2h, 90m; under the CI job's own timeout): "
                        "no iteration starts that would not end in time, judged by the longest so far; the "
                        "summary records the iterations not started, and `xdh report merge` counts them")
    g.add_argument("--keep-images", action="store_true", help="keep the crash image of passing iterations too")
    g.add_argument("--sync", choices=choices(Sync), default=TORTURE.sync.value,
                   help="append: sync call (default %(default)s)")
    g.add_argument("--journal", choices=choices(Journal), default=TORTURE.journal.value,
                   help="sqlite: journal mode (default %(default)s)")
    judge = g.add_mutually_exclusive_group()     # both say what a verdict means for the exit code
    judge.add_argument("--expect", choices=choices(Expect),
                   help="this campaign is a control: clean (every iteration must pass) or loss (every iteration "
                        "must lose acked writes); a control that behaves so exits 0, and JUnit marks the "
                        "iterations that did not (default: no expectation; a loss exits 1)")
    o.bisect_option(judge)
    g.add_argument("--run-dir", help="output directory (default ./runs/torture-TIMESTAMP)")
    g.add_argument("--json", action="store_true", help="print the summary (or the --dry-run plan) as JSON")
    g.add_argument("--dry-run", action="store_true", help="print the plan, boot nothing: the seeds and cut "
                   "points a run with these options uses, the crash-state model, estimated time and space")
    d = t.add_argument_group("disk-cache model (see harness/crash/writelog.py)")
    d.add_argument("--disk-cache", choices=choices(DiskCache), default=TORTURE.disk_cache.value,
                   help="none: a completed write survives the cut (the host keeps it); volatile: record the disk "
                        "under test's writes and flushes (QEMU blklogwrites) and also verify every crash state a "
                        "disk with a volatile write cache allows: each flush of the workload with the acks it must "
                        "hold, seeded subsets of each epoch's writes; built and verified in one batch in the fast "
                        "verifier (default %(default)s)")
    o.state_options(d, TORTURE)
    o.depth_options(d, TORTURE)
    _speed(t)
    o.stack_options(t)
    t.set_defaults(func=c.cmd_torture)


def _speed(t: argparse.ArgumentParser) -> None:
    f = t.add_argument_group("speed (see docs/performance.md)")
    f.add_argument("--reset", choices=choices(Reset), default=TORTURE.reset.value,
                   help="snapshot: boot the stack once, save it, restore it for every crash run (seconds); "
                        "boot: a full boot per crash run (default %(default)s)")
    f.add_argument("--verify", choices=choices(VerifyPath), default=TORTURE.verify.value,
                   help="fast: hot-plug each crash image into one verifier VM (domU kernel, no Xen); reboot: the whole "
                        "stack on it (the saved stack restored onto it; a cold boot with --reset boot or for "
                        "qdisk-qcow2); both: both, and they must agree; auto: fast (default %(default)s). "
                        "The canary always includes a reboot")
    f.add_argument("--jobs", type=at_least(1), default=TORTURE.jobs, metavar="N",
                   help="lanes, each with its own stack and fast verifier (default %(default)s; each lane already "
                        "runs the next crash beside the last verification: about one lane per two cores)")
    f.add_argument("--no-ledger", action="store_true",
                   help="no flush ledger (flushes.json, where the flush died; its counters are read before the "
                        "workload and streamed during it): to measure what it costs")


def _reproduce(sub: Sub) -> None:
    r = sub.add_parser("reproduce", help="re-verify a saved crash image on a fresh stack (or --rerun it)",
                       description="Bring a fresh stack up on an overlay of the iteration's saved crash image (the "
                                   "saved stack restored onto it, or a cold boot: as the run did, or --reset), verify "
                                   "and judge again; the verdict should match the recorded one.",
                       epilog="exit codes: 0 the recorded verdict again, a pass; 1 the recorded verdict again, a "
                              "loss (--rerun: a loss); 4 the verdict differs from the recorded one; 2 usage or "
                              "configuration error; 5 infrastructure failure; 6 harness error; 130 interrupted; "
                              + BISECT_HELP + " (with --rerun)")
    r.add_argument("iteration", metavar="RUN/iterations/iter-NNNN", help="an iteration directory")
    r.add_argument("--verify", choices=(VerifyPath.REBOOT.value, VerifyPath.FAST.value, VerifyPath.BOTH.value),
                   help="re-verify by a full reboot of the stack, with the fast verifier VM, or both (default: "
                        "reboot; with --state both)")
    r.add_argument("--reset", choices=choices(Reset),
                   help="how a reboot verification brings the stack up: snapshot (the saved stack restored onto the "
                        "crash image, in seconds; saved once on a machine without it) or boot (a cold boot, minutes); "
                        "default: as the recorded run did")
    r.add_argument("--state", metavar="NAME",
                   help="volatile model: rebuild this crash state (e.g. flush-62+1, from states/states.json) from "
                        "the run's base disk and write log, and verify it alone")
    r.add_argument("--rerun", action="store_true",
                   help="instead, run the iteration again from scratch with its config, seed and cut plan; "
                        "both verdicts are printed side by side")
    g = r.add_argument_group("other components (with --rerun; default: the recorded ones)")
    g.add_argument("--release", choices=list(RELEASES),
                   help="rerun on this Debian release instead of the recorded one")
    o.deb_options(g, rerun=True)
    o.kernel_options(g)
    g.add_argument("--stock", action="store_true",
                   help="rerun without the recorded run's own .debs and kernel file (the release's stock packages)")
    o.bisect_option(g)
    r.set_defaults(func=c.cmd_reproduce)


def _bench(sub: Sub) -> None:
    bn = sub.add_parser("bench", help="baseline, fast path and every-flush crash states, side by side",
                        description="Run the same workload, fault and seed in each mode: baseline (a full boot per "
                                    "crash run and a full reboot per verification), fast (snapshot reset, fast "
                                    "verifier) and states (the fast path with the volatile disk-cache model: every "
                                    "flush a crash state, verified in one batch). Prints seconds per iteration, "
                                    "iterations per hour, distinct verified crash states per hour and the ratios. "
                                    "See docs/performance.md.")
    bn.add_argument("--workload", default=BENCH.workload, metavar="NAME|MANIFEST",
                    type=named_or_file(workloads.WORKLOADS.names(), "workload"), help="workload (default %(default)s)")
    bn.add_argument("--fault", default=BENCH.fault, metavar="NAME|MANIFEST",
                    type=named_or_file(faults.FAULTS.names(), "fault"), help="fault (default %(default)s)")
    o.sample_options(bn, BENCH, "campaign seed, the same for every mode (default %(default)s)")
    bn.add_argument("--modes", type=comma_list, default=BENCH.modes, metavar="LIST",
                    help="comma-separated: baseline, fast, states, states-process (states with a manifest "
                         "workload's verify started per crash state, to measure its resident verify-many mode; "
                         "default " + ",".join(BENCH.modes) + ")")
    bn.add_argument("--jobs", type=at_least(1), default=BENCH.jobs, metavar="N",
                    help="lanes per campaign, as in torture (default %(default)s)")
    o.run_dir(bn, "bench")
    bn.add_argument("--json", action="store_true", help="print the result as JSON")
    o.stack_options(bn)
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
    def dimension(names: tuple[str, ...], *flags: str, what: str) -> None:
        cp.add_argument(*flags, type=comma_list, default=names, metavar="LIST", dest=flags[0][2:].replace("-", "_"),
                        help=f"comma-separated {what} (default {','.join(names)})")
    dimension(COMPARE.releases, "--releases", "--release", what="Debian releases (" + ", ".join(RELEASES)
              + "; the first also runs the verifier VM; the report names each column's component versions)")
    dimension(COMPARE.backends, "--backends", "--backend", what="backend modes (`xdh backends`)")
    dimension(COMPARE.faults, "--faults", what="faults")
    dimension(COMPARE.workloads, "--workloads", what="workloads")
    dimension(COMPARE.direct_faults, "--direct-faults", what="faults the direct workload runs with")
    dimension(COMPARE.disk_caches, "--disk-cache", what="disk-cache models")
    o.sample_options(cp, COMPARE, "campaign seed of every cell (default %(default)s)")
    o.state_options(cp, COMPARE)
    cp.add_argument("--no-canary", action="store_true", help="skip the per-(backend, disk cache) canaries")
    cp.add_argument("--run-dir", help="output directory (default ./runs/compare-TIMESTAMP; with --report-from "
                                      "./runs/compare-merged)")
    cp.add_argument("--report-from", nargs="+", metavar="RUN",
                    help="do not run: write one report from these compare run directories (pieces of a matrix)")
    o.stack_options(cp, matrix=True)
    cp.set_defaults(func=c.cmd_compare)


def _report(sub: Sub) -> None:
    rep = sub.add_parser("report", help="combine run directories")
    rsub = rep.add_subparsers(dest="report_cmd", metavar="ACTION", required=True)
    m = rsub.add_parser("merge", help="merge run directories (e.g. shards) into one summary and JUnit file",
                        description="Merge torture run directories (e.g. the shards of one campaign, or the "
                                    "controls of a night) into one summary.json, junit.xml and page. A night "
                                    "cannot merge green by mistake: a shard that is missing, given twice, was "
                                    "interrupted or killed (no summary.json), ran no iteration or failed outside "
                                    "its iterations, or whose seed, config or component versions differ from its "
                                    "siblings', is named on one line, becomes an error test case in junit.xml "
                                    "and makes the exit code non-zero (5, or 1 with a loss).",
                        epilog="Files among RUN (a runs index.html a glob picked up) are skipped.")
    m.add_argument("runs", nargs="+", metavar="RUN", help="a torture run directory (holding summary.json)")
    m.add_argument("--allow-shortfall", action="store_true",
                   help="a shard that --time-budget stopped early is not a bad shard")
    m.add_argument("--shards", type=at_least(1), metavar="N",
                   help="the night's shard count: every campaign must have shards 1/N..N/N (default: the count "
                        "each sharded campaign's shards recorded, from --shard I/N)")
    m.add_argument("--campaigns", type=at_least(1), metavar="N",
                   help="how many campaigns the night has (e.g. 2: the negative and the positive control): one "
                        "whose every shard is lost is then noticed too")
    m.add_argument("-o", "--output", help="output directory (default $XDH_RUNS/merged, i.e. ./runs/merged)")
    m.add_argument("--json", action="store_true", help="print the merged summary as JSON")
    m.set_defaults(func=c.cmd_report_merge)
    tr = rsub.add_parser("trend", help="night over night: losses, crash states, fsync p99, what changed",
                         description="One row per night (a run or a merged run directory), oldest first: "
                                     "iterations, losses, crash states, fsync p99 per configuration, and the "
                                     "component versions that changed since the night before; written as "
                                     "trend.md, trend.json and index.html (with a plot) in the output directory.")
    tr.add_argument("runs", nargs="+", metavar="RUN", help="a run directory (holding summary.json), one per night")
    tr.add_argument("-o", "--output", help="output directory (default $XDH_RUNS/trend, i.e. ./runs/trend)")
    tr.set_defaults(func=c.cmd_report_trend)
    what = ("write DIR/index.html: every run directory in DIR, newest first, linked to its own index.html "
            "(torture writes both as it ends)")
    ix = rsub.add_parser("index", help=what, description=what[0].upper() + what[1:] + ".")
    ix.add_argument("dir", nargs="?", metavar="DIR", help="the directory holding runs (default $XDH_RUNS, ./runs)")
    ix.set_defaults(func=c.cmd_report_index)


SUBCOMMANDS: tuple[Callable[[Sub], None], ...] = (_images, _interactive, _catalog, _torture, _reproduce, _bench,
                                                  _compare, _report)


def make_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="xdh",
        description="Durability harness for Xen virtual block stacks: boots Xen PV guests inside QEMU, "
                    "runs fsync workloads, cuts the power and checks that acknowledged writes survived.",
        epilog="Images are cached in $XDH_CACHE (default $XDG_CACHE_HOME/xdh, i.e. ~/.cache/xdh); runs go to "
               "$XDH_RUNS (default ./runs);\nimages are built from the host's apt sources ($XDH_APT_SOURCES: "
               "comma-separated sources files instead).\n" + EXIT_CODES_HELP + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(verbose=False)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return p
