"""argparse value types: bad values are usage errors (exit 2) with one line naming the fix."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

N = TypeVar("N", int, float)


def at_least(low: float, kind: Callable[[str], N] = int) -> Callable[[str], N]:
    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is too small (use {low:g} or more)")
        return value
    parse.__name__ = kind.__name__      # argparse names the type in its messages
    return parse


def int_range(kind: Callable[[str], N], low: float) -> Callable[[str], tuple[N, N]]:
    """LO-HI (or one number) with low <= LO <= HI."""
    def parse(text: str) -> tuple[N, N]:
        lo_s, _, hi_s = text.partition("-")
        try:
            lo, hi = kind(lo_s), kind(hi_s or lo_s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad range {text!r} (use LO-HI, e.g. 20-200)") from None
        if not low <= lo <= hi:
            raise argparse.ArgumentTypeError(f"bad range {text!r} (use LO-HI with {low:g} <= LO <= HI)")
        return lo, hi
    parse.__name__ = "range"
    return parse


def shard_from_env(env: Mapping[str, str]) -> tuple[int, int]:
    """``--shard auto``: this job's shard as the CI engine numbers it: GitLab's ``parallel: N``
    (CI_NODE_INDEX, 1-based, of CI_NODE_TOTAL), or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX,
    0-based; the total, which the pod cannot read, in XDH_SHARDS)."""
    def number(name: str) -> int:
        try:
            return int(env[name])
        except ValueError:
            raise argparse.ArgumentTypeError(f"--shard auto: {name}={env[name]!r} is not a number") from None
    if "CI_NODE_INDEX" in env and "CI_NODE_TOTAL" in env:
        i, n = number("CI_NODE_INDEX"), number("CI_NODE_TOTAL")
    elif "JOB_COMPLETION_INDEX" in env:
        if "XDH_SHARDS" not in env:
            raise argparse.ArgumentTypeError("--shard auto: JOB_COMPLETION_INDEX is set but not the total: set "
                                             "XDH_SHARDS to the Job's completions")
        i, n = number("JOB_COMPLETION_INDEX") + 1, number("XDH_SHARDS")
    else:
        raise argparse.ArgumentTypeError("--shard auto: no shard in the environment (GitLab: CI_NODE_INDEX and "
                                         "CI_NODE_TOTAL, from parallel: N; Kubernetes: JOB_COMPLETION_INDEX and "
                                         "XDH_SHARDS); or pass --shard I/N")
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard auto: shard {i}/{n} from the environment is not 1 <= I <= N")
    return i, n


def shard(text: str) -> tuple[int, int]:
    if text == "auto":
        return shard_from_env(os.environ)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shard {text!r} (use I/N, e.g. 2/4)") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"bad shard {text!r} (use I/N with 1 <= I <= N)")
    return i, n


def duration(text: str) -> float:
    """``--time-budget``: seconds from 3600, 3600s, 90m, 2h or 1h30m."""
    plain = text.strip()
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", plain)     # a unit after every number
    if plain.isdigit():
        h, mins, secs = 0, 0, int(plain)
    elif m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (use e.g. 90m, 2h, 1h30m or 3600s)")
    else:
        h, mins, secs = (int(g or 0) for g in m.groups())
    if h * 3600 + mins * 60 + secs <= 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: must be more than 0")
    return float(h * 3600 + mins * 60 + secs)


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def named_or_file(names: list[str], kind: str) -> Callable[[str], str]:
    """A built-in name, or the path of a manifest (read and checked later, with the config)."""
    def parse(text: str) -> str:
        if text in names or text.endswith(".toml") or "/" in text:
            return text
        raise argparse.ArgumentTypeError(f"unknown {kind} {text!r} (choose one of: {', '.join(names)}; "
                                         f"or pass a {kind} manifest, e.g. ./my-{kind}.toml)")
    parse.__name__ = kind
    return parse
