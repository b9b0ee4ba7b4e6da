"""One verdict model and one table of exit codes.

An iteration ends in one ``Status``; a run ends in one ``Outcome``, whose exit code is what CI
reads. The codes keep apart what CI must tell apart: a finding (1, 3, 4), bad input (2), the
machine failing under the harness (5), a bug in the harness (6), an interrupt (130).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum, StrEnum

from .errors import ConfigError, ImageError, InfraError, Interrupted


class Status(StrEnum):
    """How one crash iteration ended."""

    PASS = "pass"              # every acknowledged write survived
    LOSS = "loss"              # an acknowledged write was lost or damaged: a finding
    GUEST_DIED = "guest-died"  # QEMU, Xen or a guest died or did not come up: no verdict
    ERROR = "error"            # the harness failed (a workload or verifier problem, a bug): no verdict


class Expect(StrEnum):
    """What a campaign is meant to find (``--expect``): a control that behaves so exits 0."""

    CLEAN = "clean"        # a negative control: every iteration must pass
    LOSS = "loss"          # a positive control: every iteration must lose acked writes


class ExitCode(IntEnum):
    CLEAN = 0
    LOSS = 1               # acknowledged writes lost (with --expect: a verdict other than expected)
    USAGE = 2              # bad input or configuration (argparse uses 2 as well)
    CANARY = 3             # the positive control was not caught: a clean result would prove nothing
    DIFFERENT = 4          # reproduce: the verdict differs from the recorded one
    INFRA = 5              # QEMU or a guest died, did not come up, or timed out; disk full
    ERROR = 6              # harness error: a bug or an unexpected failure in xdh
    INTERRUPTED = 130      # SIGINT, SIGTERM or SIGHUP; what ran is summarized


EXIT_CODES_HELP = ("exit codes: 0 clean (with --expect: every verdict as expected), 1 acknowledged writes lost "
                   "(with --expect: a verdict other than expected), 2 usage or configuration error, "
                   "3 canary not caught (a clean result would prove nothing), 4 reproduce: verdict differs, "
                   "5 infrastructure failure (QEMU or a guest died or timed out), 6 harness error, "
                   "130 interrupted")

class BisectExit(IntEnum):
    """What ``git bisect run`` makes of an exit code (``--bisect``)."""

    GOOD = 0               # clean: every acknowledged write survived
    BAD = 1                # acknowledged writes lost
    SKIP = 125             # no verdict at this commit (it did not build or boot, a harness failure): test another
    ABORT = 128            # the command line itself is wrong, or interrupted: stop bisecting (above 127)


BISECT_HELP = ("with --bisect, for `git bisect run`: 0 clean, 1 loss, 125 no verdict (usage or configuration, a "
               "canary not caught, infrastructure or harness failure: this commit cannot be tested), 128 a command "
               "line that does not parse, 130 interrupted (both stop the bisection)")


def bisect_exit(code: int) -> int:
    """``code`` as ``git bisect run`` reads it: only a verdict is good or bad; anything that could not
    reach one skips the commit (an unbuildable kernel is a usage error here); an interrupt stops."""
    if code in (ExitCode.CLEAN, ExitCode.LOSS):
        return code
    return ExitCode.INTERRUPTED if code == ExitCode.INTERRUPTED else BisectExit.SKIP


_STATUS_EXIT = {Status.PASS: ExitCode.CLEAN, Status.LOSS: ExitCode.LOSS,
                Status.GUEST_DIED: ExitCode.INFRA, Status.ERROR: ExitCode.ERROR}


def error_exit(exc: BaseException) -> ExitCode:
    """The exit code of what ended a command (``harness.cli.main`` and a campaign's summary)."""
    if isinstance(exc, KeyboardInterrupt | Interrupted):
        return ExitCode.INTERRUPTED
    if isinstance(exc, ConfigError | ImageError):
        return ExitCode.USAGE
    return ExitCode.INFRA if isinstance(exc, InfraError) else ExitCode.ERROR


def status_exit(status: Status | str) -> ExitCode:
    return _STATUS_EXIT[Status(status)]


def expected(expect: Expect | str | None) -> Status:
    """The verdict an iteration should reach: a pass, unless it is a positive control."""
    return Status.LOSS if expect == Expect.LOSS else Status.PASS


def campaign_exit(canary: Status | str | None, statuses: Iterable[Status | str],
                  expects: Iterable[Expect | str | None] = ()) -> ExitCode:
    """A canary that passed beats everything (the run proves nothing); a loss (with ``expects``,
    one per iteration: a verdict other than expected) beats a harness
    error, which beats an infrastructure failure. A canary that could not run gives its own code."""
    if canary is not None and Status(canary) != Status.LOSS:
        return ExitCode.CANARY if Status(canary) == Status.PASS else status_exit(canary)
    seen = [Status(s) for s in statuses]
    wanted = list(expects) or [None] * len(seen)      # one per iteration (a merge of controls differs)
    if any(s in (Status.PASS, Status.LOSS) and s != expected(e) for s, e in zip(seen, wanted, strict=True)):
        return ExitCode.LOSS
    for s in (Status.ERROR, Status.GUEST_DIED):
        if s in seen:
            return status_exit(s)
    return ExitCode.CLEAN
