"""Progress output: plain lines for logs, a live bar on a terminal (rich), never both."""

from __future__ import annotations

import io

from harness.cli import console


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with console.live("torture") as say:
        say("[###-----] 3/10 iter-0002 seed=1 LOSS acked=5 lost=2")
    err = capsys.readouterr().err
    assert err == "[###-----] 3/10 iter-0002 seed=1 LOSS acked=5 lost=2\n"      # no control characters


def test_a_terminal_gets_the_lines_in_colour_and_a_live_bar(monkeypatch):
    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    for var in ("CI", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert console.interactive()
    with console.live("torture") as say:
        say("campaign seed 7: 10 iterations")
        say("[###-----] 3/10 iter-0002 seed=1 LOSS acked=5 lost=2")
    out = tty.getvalue()
    assert "campaign seed 7" in out and "\x1b[" in out and "3/10" in out
    monkeypatch.setenv("CI", "true")
    assert not console.interactive()
