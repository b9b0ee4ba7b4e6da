"""Where progress goes: plain lines when stderr is not a terminal (CI logs: append-only, no
control characters), and on a terminal the same lines above a live status bar (rich): the
campaign's progress, the latest step and the elapsed time. ``NO_COLOR``, ``CI`` or
``TERM=dumb`` keep the plain lines."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ..progress import Progress, Step


def plain(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("NO_COLOR") \
        and os.environ.get("TERM", "") != "dumb"


@contextmanager
def live(title: str) -> Iterator[Progress]:
    """A Progress for one long command: plain lines, or lines above a live status bar."""
    if not interactive():
        yield plain
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar
    from rich.text import Text
    console = Console(stderr=True, highlight=False)
    bar = Bar(SpinnerColumn(), TextColumn("[bold]{task.fields[title]}"), BarColumn(), MofNCompleteColumn(),
              TimeElapsedColumn(), TextColumn("{task.description}"), console=console, transient=True)
    task = bar.add_task("starting", total=None, title=title)

    def say(msg: str) -> None:
        text = Text(msg)
        for word, style in (("PASS", "bold green"), ("LOSS", "bold red"), ("ERROR", "bold yellow"),
                            ("GUEST-DIED", "bold yellow")):
            text.highlight_words([f" {word} ", f"{word}:"], style)
        console.print(text, soft_wrap=True)
        if isinstance(msg, Step):
            bar.update(task, completed=msg.done, total=msg.total)
        bar.update(task, description=msg.strip()[:70])
    with bar:
        yield say
