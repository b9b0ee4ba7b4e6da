"""argparse value types: bad values are usage errors (exit 2) with one line naming the fix."""

from __future__ import annotations

import argparse
from collections.abc import Callable
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


def shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shard {text!r} (use I/N, e.g. 2/4)") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"bad shard {text!r} (use I/N with 1 <= I <= N)")
    return i, n


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
