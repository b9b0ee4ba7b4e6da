"""``--bisect``: exit codes that ``git bisect run`` reads right. Only a verdict is good (0) or bad
(1); a commit where no verdict could be reached is skipped (125); a command line that does not
parse, or an interrupt, stops the bisection (above 127). The commands are fakes: no VM."""

from __future__ import annotations

import pytest

from harness.cli import commands, main
from harness.errors import ConfigError, ImageError, InfraError, Interrupted
from harness.status import BisectExit, ExitCode, bisect_exit


def test_each_exit_code_has_its_bisect_meaning():
    assert {c: bisect_exit(c) for c in ExitCode} == {
        ExitCode.CLEAN: 0, ExitCode.LOSS: 1, ExitCode.USAGE: 125, ExitCode.CANARY: 125, ExitCode.DIFFERENT: 125,
        ExitCode.INFRA: 125, ExitCode.ERROR: 125, ExitCode.INTERRUPTED: 130}


def _fake(monkeypatch, name, outcome):
    def cmd(args):
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    monkeypatch.setattr(commands, name, cmd)


@pytest.mark.parametrize("outcome, plain, bisect", [
    (ExitCode.CLEAN, 0, 0),
    (ExitCode.LOSS, 1, 1),
    (ExitCode.CANARY, 3, 125),                         # the run proves nothing at this commit
    (InfraError("the domU did not come up"), 5, 125),  # a kernel that does not boot
    (ImageError("the domU image is not built"), 2, 125),
    (ConfigError("bzImage not found in TREE"), 2, 125),  # a kernel that did not build
    (RuntimeError("a bug"), 6, 125),
    (Interrupted("interrupted by SIGTERM"), 130, 130),
])
def test_torture_and_a_rerun_exit_for_git_bisect(monkeypatch, outcome, plain, bisect, tmp_path):
    for name in ("cmd_torture", "cmd_reproduce"):
        _fake(monkeypatch, name, outcome)
    assert main(["torture"]) == plain
    assert main(["torture", "--bisect"]) == bisect
    assert main(["reproduce", str(tmp_path), "--rerun", "--bisect"]) == bisect


def test_a_command_line_that_cannot_work_stops_the_bisection(capsys):
    assert main(["torture", "--bisect", "--no-such-option"]) == BisectExit.ABORT
    assert main(["torture", "--bisect", "--expect", "loss"]) == BisectExit.ABORT     # two judges of one verdict
    assert "not allowed with argument --bisect" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:      # without --bisect: argparse's usage exit, as ever
        main(["torture", "--no-such-option"])
    assert e.value.code == 2


def test_bisect_judges_a_run_not_a_re_verification(tmp_path, capsys):
    """Refused in one line; a configuration error, so 125 (no commit can be tested this way: the
    bisection ends with only skipped commits, each saying why)."""
    assert main(["reproduce", str(tmp_path), "--bisect"]) == BisectExit.SKIP
    assert "--bisect apply to --rerun only" in capsys.readouterr().err
