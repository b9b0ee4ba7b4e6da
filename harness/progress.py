"""Progress: one-line messages for the user, passed down as a callable (stderr by default).

A message is a ``str``; a campaign's step is a ``Step``, a ``str`` that also carries how far the
campaign is, so that a console draws its bar from the numbers and a plain log prints the line."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


class Step(str):
    """One step of ``total``, done: ``[####------] 3/10 <text>`` as text, the numbers as fields."""

    done: int
    total: int

    def __new__(cls, done: int, total: int, text: str, width: int = 20) -> Step:
        filled = int(width * done / total) if total else width
        self = super().__new__(cls, "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total} {text}")
        self.done, self.total = done, total
        return self


def quiet(_msg: str) -> None:
    """A Progress that says nothing (nested stacks whose caller reports for them)."""
