"""The options several ``xdh`` subcommands share, their defaults taken from the configs
themselves (help texts say ``%(default)s``: no second copy of a default), and the parser class
every subcommand's parser is (bad input: one line, exit 2; -v and --version anywhere)."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from ..campaign.bench import BenchConfig
from ..campaign.compare import CompareConfig
from ..catalog import backends
from ..config import MAX_EXHAUSTIVE_K, Accel, StackConfig, TortureConfig, choices
from ..crash.plan import PER_IMAGE_FLUSH_POINTS
from ..releases import DEFAULT_RELEASE, RELEASES
from ..status import ExitCode
from .types import at_least, int_range

Group = argparse._ArgumentGroup | argparse.ArgumentParser

# Defaults come from the configs themselves (help texts say "%(default)s"): one copy of each. The
# classes, not instances: a field's declared default, before __post_init__ resolves it (auto values).
STACK, TORTURE, BENCH, COMPARE = StackConfig, TortureConfig, BenchConfig, CompareConfig


class Parser(argparse.ArgumentParser):
    """Bad input is one line naming the fix, and the usage exit code (2): no usage dump. The
    global options (-v, --version) are taken before or after the subcommand, like pytest's."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # SUPPRESS: a subcommand's parser sets the option only when given (make_parser's default stays)
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        self.add_argument("--version", action=Version, nargs=0,
                          help="print the version and the commit (or install) and exit")

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def stack_options(p: argparse.ArgumentParser, matrix: bool = False) -> None:
    """The stack to boot; ``matrix``: compare's, whose backends and releases are its dimensions."""
    g = p.add_argument_group("stack")
    if matrix:
        deb_options(g)
    else:
        g.add_argument("--backend", default=STACK.backend, metavar="MODE", choices=backends.BACKENDS.names(),
                       help="backend mode of the disk under test: " + ", ".join(backends.BACKENDS.names())
                       + " (default %(default)s; `xdh backends` explains each)")
        release_option(g)
    g.add_argument("--accel", default=STACK.accel.value, choices=choices(Accel),
                   help="outer QEMU accelerator; auto uses KVM only if a probe guest boots under it "
                        "(default %(default)s)")
    g.add_argument("--memory", type=at_least(1024), default=STACK.memory_mib, metavar="MiB",
                   help="outer machine memory (default %(default)s)")
    g.add_argument("--domu-memory", type=at_least(512), default=STACK.domu_mem_mib, metavar="MiB",
                   help="domU memory (default %(default)s)")
    g.add_argument("--boot-timeout", type=at_least(1, float), default=STACK.boot_timeout, metavar="S",
                   help="seconds to wait for each of dom0 and the domU to answer SSH (default %(default)g)")
    kernel_options(g)


def kernel_options(g: Group) -> None:
    g.add_argument("--domu-kernel", metavar="FILE", default="",
                   help="boot the domU with this kernel from a build tree (arch/x86/boot/bzImage, vmlinux, or the "
                   "tree itself) instead of its image's; no initramfs unless --domu-initrd, so blkfront, "
                   "netfront and ext4 must be built in (=y); `uname -r` is checked after boot")
    g.add_argument("--domu-initrd", metavar="FILE", default="", help="an initramfs for --domu-kernel")


def release_option(g: Group) -> None:
    g.add_argument("--release", default=DEFAULT_RELEASE, choices=list(RELEASES),
                   help="Debian release of dom0 and the domU: " + "; ".join(r.summary for r in RELEASES.values())
                   + " (default %(default)s)")
    deb_options(g)


def deb_options(g: Group, rerun: bool = False) -> None:
    what = "rerun with" if rerun else "install"
    g.add_argument("--dom0-deb", action="append", default=[], metavar="FILE",
                   help=f"{what} your own .deb in dom0's image (repeatable): a rebuilt qemu-system-xen, a Xen "
                   "or a kernel build; its hash is part of the image digest, its version is recorded")
    g.add_argument("--domu-deb", action="append", default=[], metavar="FILE",
                   help=f"{what} your own .deb in the domU's image (repeatable), e.g. a kernel from "
                   "`make bindeb-pkg`: the domU then boots that kernel, and the run checks `uname -r`")


def run_dir(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--run-dir", help=f"output directory (default ./runs/{kind}-TIMESTAMP)")


def sample_options(g: Group,
                    cfg: type[TortureConfig | BenchConfig | CompareConfig], seed_help: str) -> None:
    """--iterations, --seed, --cut-acks: the same meaning in torture, bench and compare."""
    g.add_argument("--iterations", type=at_least(1), default=cfg.iterations,
                   help="crash iterations (default %(default)s)")
    g.add_argument("--seed", type=at_least(0), default=cfg.seed, help=seed_help)
    g.add_argument("--cut-acks", type=int_range(int, 1), default=cfg.cut_acks, metavar="LO-HI",
                   help="cut after a random number of acks in this range (default {}-{})".format(*cfg.cut_acks))


def state_options(g: Group, cfg: type[TortureConfig | CompareConfig]) -> None:
    g.add_argument("--crash-subsets", type=at_least(0), default=cfg.crash_subsets, metavar="K",
                   help="volatile: seeded random subsets of each epoch's unflushed writes, per flush state "
                        "(default %(default)s; duplicates by content are verified once)")
    g.add_argument("--flush-points", type=at_least(-1), default=cfg.flush_points, metavar="N",
                   help="volatile: flush states per iteration, each with the acks it must hold; -1 for every "
                        "flush of the workload (default %(default)s; batched in the fast verifier; a reboot or "
                        f"qdisk-qcow2 verifies {PER_IMAGE_FLUSH_POINTS} unless given)")


def depth_options(g: Group, cfg: type[TortureConfig]) -> None:
    """How deep and how fast the volatile model's crash states go (torture only)."""
    g.add_argument("--exhaustive-k", type=at_least(0), default=cfg.exhaustive_k, metavar="K",
                   help="volatile: every subset of an epoch (the writes between two flushes) of at most K writes, "
                        f"seeded --crash-subsets samples above (default %(default)s, at most {MAX_EXHAUSTIVE_K}; "
                        "0: samples only)")
    g.add_argument("--atomic-write", type=at_least(0), default=cfg.atomic_write, metavar="BYTES",
                   help="volatile: the disk writes BYTES atomically (e.g. 4096); a larger write may be torn at the "
                        "cut, and seeded torn states (flush-P~K) apply some of its units (default %(default)s: "
                        "writes are whole)")
    g.add_argument("--states-budget", type=at_least(0), default=cfg.states_budget, metavar="N",
                   help="volatile: verify at most N distinct crash states per iteration: every flush state first, "
                        "then seeded subsets; the rest are counted as skipped (default %(default)s: all)")
    g.add_argument("--no-resident-verify", action="store_true",
                   help="start a manifest workload's verify once per crash state even if it has a verify-many mode "
                        "(to measure what the resident mode saves)")


class Version(argparse.Action):
    """--version, computed only when asked (it runs git in a checkout)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        from .. import __version__, paths
        where = f"data in {paths.INSTALLED}" if paths.source() == "installed" else f"checkout {paths.CHECKOUT}"
        print(f"xdh {__version__} ({paths.source()}; {where})")
        parser.exit()


def bisect_option(g: Group) -> None:
    g.add_argument("--bisect", action="store_true",
                   help="exit codes for `git bisect run`: 0 clean, 1 loss, 125 when no verdict could be reached "
                        "(this commit cannot be tested), 128 a bad command line")
