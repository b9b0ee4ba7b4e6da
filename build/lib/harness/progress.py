"""Progress: one-line messages for the user, passed down as a callable (stderr by default)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def quiet(_msg: str) -> None:
    """A Progress that says nothing (nested stacks whose caller reports for them)."""
