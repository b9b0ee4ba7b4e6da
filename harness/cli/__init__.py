"""The ``xdh`` command line. ``main`` is the one place where errors become exit codes: every
failure is one line (a bug's traceback goes to a file), and an interrupt always ends with 130."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

from ..cleanup import install_signal_handlers
from ..errors import ConfigError, ImageError, InfraError, Interrupted, XdhError
from ..status import BisectExit, ExitCode, bisect_exit, error_exit
from ..vm.watch import enospc
from .parser import make_parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    # paramiko logs every refused connection while a guest boots; qemu.qmp logs its EOF at quit
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def _say(msg: str) -> None:
    print(f"xdh: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    bisecting = "--bisect" in (sys.argv[1:] if argv is None else argv)
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exc:      # argparse's usage error (2) would read as "bad" to git bisect
        if bisecting and exc.code not in (0, None):
            return BisectExit.ABORT
        raise
    code = _run(args)
    return bisect_exit(code) if getattr(args, "bisect", False) else code


def _run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    install_signal_handlers()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _say("interrupted by SIGINT; stopped cleanly")
        return ExitCode.INTERRUPTED
    except Interrupted as exc:
        _say(f"{exc}; stopped cleanly")
        return error_exit(exc)
    except (ConfigError, ImageError) as exc:
        _say(f"error: {exc.oneline()}")
        return error_exit(exc)
    except BrokenPipeError:     # `xdh list | head`: the reader went away; not a bug, never a clean exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())    # nothing more to flush at exit
        _say("stdout was closed before xdh finished writing (a reader went away)")
        return ExitCode.ERROR
    except OSError as exc:
        full = enospc(exc, Path.cwd())
        if full is None:
            return _bug(exc)
        _say(f"error: {full.oneline()}")
        return ExitCode.INFRA
    except InfraError as exc:
        _say(f"error: {exc.oneline()}")
        if exc.log_tail:
            print("--- last lines of the logs ---\n" + exc.log_tail, file=sys.stderr)
        return error_exit(exc)
    except XdhError as exc:
        _say(f"error: {exc.oneline()}")
        return error_exit(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        return _bug(exc)


def _bug(exc: BaseException) -> int:
    with tempfile.NamedTemporaryFile("w", prefix="xdh-traceback-", suffix=".txt", delete=False) as f:
        traceback.print_exc(file=f)
    _say(f"internal error: {type(exc).__name__}: {exc} (a bug in xdh; traceback in {f.name})")
    return ExitCode.ERROR


__all__ = ["main"]
