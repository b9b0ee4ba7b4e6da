"""One exception root, so the CLI can turn any harness failure into one line.

The tree (``main`` in ``harness.cli`` is the only place that maps it to exit codes)::

    BaseException
     +-- Interrupted            SIGINT/SIGTERM/SIGHUP; like KeyboardInterrupt, never an ordinary error
    Exception
     +-- XdhError               everything the harness raises on purpose; .hint names the fix
          +-- ConfigError       bad input or configuration (exit 2, the usage code)
          +-- ImageError        images missing, stale or failing to build (exit 2)
          +-- InfraError        the machine failed us (exit 5): nothing is known about durability
          |    +-- LaunchError  QEMU or a guest did not come up; carries the logs' tail and argv
          |    +-- GuestDied    QEMU exited or a layer panicked while running
          |    +-- DiskFull     a host file system filled up (QEMU paused on ENOSPC): ends the campaign
          +-- GuestCommandError a command in dom0 or the domU failed or timed out
          +-- WorkloadError     the workload misbehaved (ended before the cut, stopped acking)
          +-- VerifyError       a verifier could not verify (device never appeared, paths disagree)
          +-- LogError          a write log is not a dm-log-writes log or is damaged

Anything else that escapes is a bug in xdh (exit 6, with the traceback written to a file).
"""

from __future__ import annotations


class XdhError(Exception):
    """Root of every error the harness raises on purpose.

    ``hint`` names the fix; the CLI prints ``error: <msg> (<hint>)``.
    """

    def __init__(self, msg: str, hint: str = ""):
        super().__init__(msg)
        self.hint = hint

    def oneline(self) -> str:
        text = str(self).strip().splitlines()[0] if str(self).strip() else type(self).__name__
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(XdhError):
    """Bad user input: unknown backend, bad value, unwritable run directory, ..."""


class ImageError(XdhError):
    """Images missing, stale or failing to build."""


class InfraError(XdhError):
    """The machine under the harness failed; carries the tail of its logs when there is one."""

    def __init__(self, msg: str, hint: str = "", log_tail: str = "", argv: list[str] | None = None):
        super().__init__(msg, hint)
        self.log_tail = log_tail
        self.argv = argv or []

    def with_tail(self, log_tail: str) -> InfraError:
        """The same error with a log tail, when it has none yet (callers know where the logs are)."""
        if not self.log_tail and log_tail:
            self.log_tail = log_tail
        return self


class LaunchError(InfraError):
    """QEMU or a guest failed to come up."""


class GuestDied(InfraError):
    """QEMU exited, or Xen or a guest kernel panicked, while the harness was using it."""


class DiskFull(InfraError):
    """A host file system filled up: QEMU paused on ENOSPC (seen on QMP). Ends the whole
    campaign, not one iteration: every later one would fail the same way. ``record``: the
    iteration it ended (an ``IterationRecord``), for the summary."""

    record: object = None


class GuestCommandError(XdhError):
    """A command run over SSH in dom0 or the domU failed."""

    def __init__(self, msg: str, exit_status: int = -1, stdout: str = "", stderr: str = ""):
        super().__init__(msg)
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


class WorkloadError(XdhError):
    """The workload ended before the cut or stopped acknowledging."""


class VerifyError(XdhError):
    """A crash image could not be verified (the image never appeared, the two paths disagree)."""


class LogError(XdhError):
    """The write log is not a dm-log-writes log, or is damaged."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception``/``except XdhError`` can swallow it: every exit goes through the one
    cleanup path and ends with exit code 130."""
