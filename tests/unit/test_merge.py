"""``xdh report merge`` of a night's shards: a night that lost a shard, ran one twice, was
interrupted, killed or empty, or ran shards of different seeds, configs or software, never merges
green; each bad shard is one line, an error case in junit.xml and a non-zero exit."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.config import CutMode, StackConfig, TortureConfig
from harness.crash.plan import CutPlan, shard_indices
from harness.errors import ConfigError
from harness.report import summary as report
from harness.report.records import IterationRecord
from harness.report.rundir import RunDir
from harness.status import ExitCode, Status

VERSIONS = {"dom0": {"xen-hypervisor-4.17-amd64": "4.17.5+72-g01c8f1b8-1"}, "domu": {"linux-image": "6.1.158-1"}}


def _shard(root: Path, i: int, n: int, *, seed: int = 77, status: str = "pass", iterations: int = 4,
           ended_by: str = "", exit_code: ExitCode | None = None, versions: dict | None = None, **config) -> Path:
    """A shard's run directory as torture writes it: config.json at the start, summary.json at the end."""
    cfg = TortureConfig(iterations=iterations, seed=seed, shard=(i, n), stack=StackConfig(), **config)
    d = root / f"shard-{i}-of-{n}-{len(list(root.glob('*')))}"
    rd = RunDir(d).create()
    rd.write_config(cfg.to_json(), seed, (versions or VERSIONS) | {"workload": {"name": cfg.workload}})   # as torture
    its = [IterationRecord(k, seed + k, f"iter-{k:04d}", Status(status), cfg.workload, cfg.fault, "qdisk",
                           CutPlan(CutMode.ACKS, 5), acked=10, seconds={"total": 10.0})
           for k in shard_indices(iterations, (i, n))]
    s = report.summarize(d, cfg.to_json(), seed, None, its, 40.0, versions=versions or VERSIONS)
    if ended_by:
        s = s.ended(ended_by, exit_code or ExitCode.INTERRUPTED)
    elif exit_code is not None:
        s = dataclasses.replace(s, exit_code=exit_code)
    report.write(s, d)
    return d


def _merge(tmp_path: Path, dirs: list[Path], shards: int | None = None, campaigns: int | None = None):
    merged = report.merge(dirs, tmp_path / "merged", shards, campaigns=campaigns)
    junit = ET.fromstring((tmp_path / "merged" / "junit.xml").read_text())
    errors = [c.find("error").get("message") for c in junit.iter("testcase") if c.get("classname") == "xdh.merge"]
    return merged, [p.line() for p in merged.merge_problems], errors


def test_a_complete_night_merges_green(tmp_path):
    merged, lines, errors = _merge(tmp_path, [_shard(tmp_path, i, 2) for i in (1, 2)], shards=2)
    assert merged.exit_code == ExitCode.CLEAN and lines == errors == [] and len(merged.iterations) == 4


@pytest.mark.parametrize("case, expected", [
    ("missing", "append/none on qdisk/bookworm cache=none shard 3/3: missing: no run directory of it was given"),
    ("duplicated", "shard 2/3: duplicates shard 2/3 (also "),
    ("interrupted", "shard 2/3: ended early: interrupted by SIGTERM (exit 130)"),
    ("empty", "shard 2/3: ran no iteration (exit 0)"),
    ("crashed", "shard 2/3: failed outside its iterations (exit 6)"),
    ("killed", "shard 2/3: no summary.json: its campaign never finished (killed, or its job timed out)"),
    ("seed", "shard 2/3: campaign seed 78, but append/none on qdisk/bookworm cache=none shard 1/3 has 77"),
    ("config", "shard 2/3: config cut_acks = [20, 40], but append/none on qdisk/bookworm cache=none shard 1/3 "
               "has [20, 200]"),
    ("versions", "shard 2/3: runs dom0.xen-hypervisor-4.17-amd64 4.17.6-1, but append/none on qdisk/bookworm "
                 "cache=none shard 1/3 runs 4.17.5+72-g01c8f1b8-1"),
    ("count", "shard 2/4: is shard 2/4, but the night has 3 shards"),
])
def test_a_bad_shard_is_named_on_one_line_and_the_night_is_not_green(tmp_path, case, expected):
    one, three = _shard(tmp_path, 1, 3), _shard(tmp_path, 3, 3)
    second = {
        "missing": lambda: _shard(tmp_path, 2, 3),
        "duplicated": lambda: _shard(tmp_path, 2, 3),
        "interrupted": lambda: _shard(tmp_path, 2, 3, ended_by="interrupted by SIGTERM"),
        "empty": lambda: _shard(tmp_path, 2, 3, iterations=4, ended_by="", exit_code=None),
        "crashed": lambda: _shard(tmp_path, 2, 3, exit_code=ExitCode.ERROR),
        "killed": lambda: _shard(tmp_path, 2, 3),
        "seed": lambda: _shard(tmp_path, 2, 3, seed=78),
        "config": lambda: _shard(tmp_path, 2, 3, cut_acks=(20, 40)),
        "versions": lambda: _shard(tmp_path, 2, 3, versions={**VERSIONS, "dom0": {
            "xen-hypervisor-4.17-amd64": "4.17.6-1"}}),
        "count": lambda: _shard(tmp_path, 2, 4),
    }[case]()
    dirs = [one, second, three]
    if case == "missing":
        dirs = [one, second]
    elif case == "duplicated":
        dirs.append(_shard(tmp_path, 2, 3))
    elif case == "empty":      # the shard's summary with its iterations gone (a campaign that ran none)
        s = RunDir(second).read_summary()
        report.write(dataclasses.replace(s, iterations=[]), second)
    elif case == "killed":
        RunDir(second).summary.unlink()
    merged, lines, errors = _merge(tmp_path, dirs, shards=3 if case == "count" else None)
    assert any(expected in line for line in lines), lines
    assert len(lines) == 1 or case == "count", lines      # one cause, one line
    assert errors == lines and "\n" not in "".join(lines)
    assert merged.exit_code == ExitCode.INFRA
    assert "bad shard: " in (tmp_path / "merged" / "summary.txt").read_text()
    page = (tmp_path / "merged" / "index.html").read_text()
    assert "bad shards: this night is not green" in page and "infrastructure" in page.split("<table>")[0].lower()


def test_a_loss_stays_a_loss_beside_a_bad_shard(tmp_path):
    dirs = [_shard(tmp_path, 1, 2, status="loss"), _shard(tmp_path, 2, 2, ended_by="interrupted by SIGTERM")]
    merged, lines, _ = _merge(tmp_path, dirs)
    assert merged.exit_code == ExitCode.LOSS and len(lines) == 1


def test_controls_are_separate_campaigns_and_unsharded_runs_no_shards(tmp_path):
    """A night of a negative and a positive control, two shards each, the same seed: complete."""
    dirs = [_shard(tmp_path, i, 2, fault=f, expect=e, status=st)
            for f, e, st in (("none", "clean", "pass"), ("drop-flush", "loss", "loss")) for i in (1, 2)]
    merged, lines, _ = _merge(tmp_path, dirs)
    assert lines == [] and merged.exit_code == ExitCode.CLEAN
    # two unsharded runs of one config (two seeds, two nights) are not shards of one campaign
    merged, lines, _ = _merge(tmp_path, [_shard(tmp_path, 1, 1), _shard(tmp_path, 1, 1, seed=5)])
    assert lines == [] and merged.exit_code == ExitCode.CLEAN


def test_a_shard_that_selects_no_iteration_is_a_usage_error():
    with pytest.raises(ConfigError, match=r"--shard 4/4 selects no iteration of 3"):
        TortureConfig(iterations=3, shard=(4, 4)).validate()
    TortureConfig(iterations=4, shard=(4, 4)).validate()


def test_the_cli_skips_files_and_exits_by_the_shards(tmp_path, capsys):
    from harness.cli import main
    root = tmp_path / "runs"
    root.mkdir()
    one, two = _shard(root, 1, 2), _shard(root, 2, 2, ended_by="interrupted by SIGTERM")
    (root / "index.html").write_text("<html>a runs index</html>")
    code = main(["report", "merge", str(one), str(two), str(root / "index.html"), "-o", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == ExitCode.INFRA
    assert f"skipped {root / 'index.html'}: not a run directory" in err
    assert ("xdh: bad shard: append/none on qdisk/bookworm cache=none shard 2/2: ended early: interrupted by "
            "SIGTERM") in err
    assert main(["report", "merge", str(tmp_path / "nope")]) == ExitCode.USAGE
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("env, expected", [
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4"}, (2, 4)),
    ({"JOB_COMPLETION_INDEX": "0", "XDH_SHARDS": "3"}, (1, 3)),
    ({"JOB_COMPLETION_INDEX": "2", "XDH_SHARDS": "3"}, (3, 3)),
    ({"JOB_COMPLETION_INDEX": "0"}, "set XDH_SHARDS to the Job's completions"),
    ({"CI_NODE_INDEX": "x", "CI_NODE_TOTAL": "4"}, "CI_NODE_INDEX='x' is not a number"),
    ({"JOB_COMPLETION_INDEX": "3", "XDH_SHARDS": "3"}, "shard 4/3 from the environment"),
    ({}, "no shard in the environment"),
])
def test_shard_auto_reads_the_ci_engine(env, expected):
    import argparse

    from harness.cli.types import shard_from_env
    if isinstance(expected, tuple):
        assert shard_from_env(env) == expected
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(expected)):
            shard_from_env(env)


def test_shard_auto_on_the_command_line(monkeypatch, capsys):
    from harness.cli import main
    monkeypatch.setenv("CI_NODE_INDEX", "3")
    monkeypatch.setenv("CI_NODE_TOTAL", "4")
    assert main(["torture", "--shard", "auto", "--iterations", "8", "--seed", "5", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["shard"] == [3, 4] and [it["index"] for it in plan["iterations"]] == [2, 6]


def _night(root: Path, name: str, started: str, versions: dict, p99_ms: list[float], lost: int = 0) -> Path:
    d = root / name
    RunDir(d).create()
    its = [IterationRecord(k, k, f"iter-{k:04d}", Status.LOSS if k < lost else Status.PASS, "append", "none", "phy",
                           CutPlan(CutMode.ACKS, 5), acked=10, lost_acked=3 * (k < lost), release="bookworm",
                           fsync_latency_us={"p50": 1000.0, "p99": v * 1000}, seconds={"total": 10.0})
           for k, v in enumerate(p99_ms)]
    report.write(report.summarize(d, {"workload": "append"}, 1, None, its, 40.0, versions=versions, started_at=started),
                 d)
    return d


def test_night_over_night(tmp_path, capsys):
    from harness.cli import main
    from harness.report import trend
    newer = {**VERSIONS, "dom0": {"xen-hypervisor-4.17-amd64": "4.17.6-1"}}
    dirs = [_night(tmp_path, "n2", "2026-12-02T02:17:00Z", newer, [30, 50, 40], lost=1),
            _night(tmp_path, "n1", "2026-12-01T02:17:00Z", VERSIONS, [20, 30, 25]),
            _night(tmp_path, "n3", "2026-12-03T02:17:00Z", newer, [22, 24, 26])]
    rows = trend.nights([(d.name, RunDir(d).read_summary()) for d in dirs])
    assert [n.run for n in rows] == ["n1", "n2", "n3"]         # by start time, not the order given
    assert [n.losses for n in rows] == [0, 1, 0] and [n.iterations for n in rows] == [3, 3, 3]
    assert [n.unexpected for n in rows] == [0, 1, 0]        # a negative control's loss
    positive = dataclasses.replace(RunDir(dirs[0]).read_summary(), expect="loss")
    assert trend.nights([("p", positive)])[0].unexpected == 2     # its two passes; its loss was expected
    assert [n.p99_ms for n in rows] == [{"bookworm/phy/none/none/append": v} for v in (25.0, 40.0, 24.0)]
    assert rows[0].changed == [] and rows[2].changed == []
    assert rows[1].changed == ["dom0.xen-hypervisor-4.17-amd64 4.17.5+72-g01c8f1b8-1 -> 4.17.6-1"]
    assert main(["report", "trend", *map(str, dirs), "-o", str(tmp_path / "t")]) == ExitCode.CLEAN
    md = capsys.readouterr().out
    assert "| 2026-12-02T02:17:00Z | n2 | 1 | 3 | 1 | 1 | 0 |" in md and "4.17.6-1" in md
    page = (tmp_path / "t" / "index.html").read_text()
    assert page.count("<polyline") == 1 and "n3" in page
    assert json.loads((tmp_path / "t" / "trend.json").read_text())["nights"][1]["losses"] == 1


def test_a_merge_starts_when_its_first_shard_did(tmp_path):
    a = _night(tmp_path, "a", "2026-12-01T02:20:00Z", VERSIONS, [20])
    b = _night(tmp_path, "b", "2026-12-01T02:17:00Z", VERSIONS, [20])
    assert report.merge([a, b], tmp_path / "m").started_at == "2026-12-01T02:17:00Z"


def test_what_differs_between_runners_by_nature_is_not_a_difference(tmp_path):
    """Image digests (each cache's own SSH key is in them) and the paths of your .debs differ per
    runner; the packages and the .debs' hashes must not."""
    deb = {"package": "xen", "version": "1", "sha256": "ab"}
    a = {**VERSIONS, "images": {"dom0": "1111", "domu": "2222"}, "own_debs": {"dom0": [deb | {"path": "/a/x.deb"}]}}
    b = {**VERSIONS, "images": {"dom0": "3333", "domu": "4444"}, "own_debs": {"dom0": [deb | {"path": "/b/x.deb"}]}}
    merged, lines, _ = _merge(tmp_path, [_shard(tmp_path, 1, 2, versions=a), _shard(tmp_path, 2, 2, versions=b)])
    assert lines == [] and merged.exit_code == ExitCode.CLEAN
    c = {**b, "own_debs": {"dom0": [deb | {"sha256": "cd"}]}}
    _, lines, _ = _merge(tmp_path, [_shard(tmp_path, 1, 2, versions=a), _shard(tmp_path, 2, 2, versions=c)])
    assert len(lines) == 1 and "own_debs.dom0" in lines[0]


def test_a_matrix_over_another_option_is_two_campaigns(tmp_path):
    dirs = [_shard(tmp_path, i, 2, sync=s) for s in ("fsync", "fdatasync") for i in (1, 2)]
    merged, lines, _ = _merge(tmp_path, dirs, shards=2, campaigns=2)
    assert lines == [] and merged.exit_code == ExitCode.CLEAN


def test_a_night_that_lost_a_whole_campaign_is_red_with_campaigns(tmp_path):
    dirs = [_shard(tmp_path, i, 2) for i in (1, 2)]        # the positive control's artifacts: all gone
    assert _merge(tmp_path, dirs, shards=2)[0].exit_code == ExitCode.CLEAN      # invisible without --campaigns
    merged, lines, errors = _merge(tmp_path, dirs, shards=2, campaigns=2)
    assert merged.exit_code == ExitCode.INFRA and errors == lines
    assert lines == ["the night: 1 campaign(s) of 2: a whole campaign has no run directory (all its shards lost)"]


def test_a_shard_that_never_started_or_left_an_old_summary_is_bad(tmp_path):
    one, two = _shard(tmp_path, 1, 2), _shard(tmp_path, 2, 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    _, lines, _ = _merge(tmp_path, [one, two, empty])
    assert lines == [f"?/? on ?/? cache=? shard 1/1: no config.json and no summary.json: its campaign never "
                     f"started ({empty})"]
    # tonight's run started in last night's directory (a new seed) and was killed: last night's summary
    # stays only if an older xdh wrote it; then it does not match tonight's config.json
    RunDir(two).write_config(TortureConfig(iterations=4, seed=99, shard=(2, 2)).to_json(), 99, VERSIONS)
    assert not RunDir(two).summary.exists()          # a campaign's start removes the old results
    _, lines, _ = _merge(tmp_path, [one, two])
    assert any("shard 2/2: no summary.json" in x for x in lines), lines


def test_duration_needs_a_unit_after_a_unit():
    import argparse

    from harness.cli.types import duration
    with pytest.raises(argparse.ArgumentTypeError):
        duration("1h30")
