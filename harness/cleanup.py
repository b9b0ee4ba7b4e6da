"""One cleanup path for every way out.

SIGINT, SIGTERM and SIGHUP are turned into ``Interrupted`` (raised in the main thread), so the
same ``finally``/``__exit__`` code stops QEMU whatever ended the run. Not KeyboardInterrupt for
SIGINT: invoke (under fabric) catches KeyboardInterrupt during a remote command, forwards ^C to
the guest and carries on, so a Ctrl-C would be swallowed. QEMU also carries PR_SET_PDEATHSIG
as a last resort.
"""

from __future__ import annotations

import signal

from .errors import Interrupted


def _raise(signum: int, _frame: object) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def install_signal_handlers() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


class signals_ignored:
    """Context manager: ignore SIGINT/SIGTERM/SIGHUP while cleanup runs, then restore."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> signals_ignored:
        self._saved: dict = {}
        try:
            for sig in self.SIGNALS:
                self._saved[sig] = signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread: nothing to protect
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
