"""The CLI without booting: `xdh torture --dry-run` (its seeds and cut points are a real run's),
`xdh check MANIFEST...`, global options after the subcommand, compare's --backend/--release,
and help texts whose defaults come from the configs. Fakes from ``tests.fakes`` stand in for
every heavy stage, as in test_control_flow.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.campaign import compare as compare_mod
from harness.campaign import space
from harness.cli import main
from harness.cli.parser import make_parser
from harness.config import StackConfig, TortureConfig
from harness.crash.plan import CutPlan
from harness.errors import ConfigError
from harness.paths import PROJECT_ROOT
from harness.status import ExitCode

EXAMPLES = PROJECT_ROOT / "examples"


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def fake_run(monkeypatch, fake_stages):
    """Every heavy stage of a campaign faked; returns what each crash run was given, by iteration
    name: (seed, cut plan)."""
    crashes = fake_stages(lambda cfg, name: "loss" if name == "canary" else "pass")     # the canary caught
    given: dict[str, tuple[int, dict]] = {}

    def run_until_cut(cfg, seed, cut, paths, *a, **kw):
        given[paths.dut.parent.name] = (seed, cut.to_json())
        return crashes.run_until_cut(cfg, seed, cut, paths, *a, **kw)
    monkeypatch.setattr("harness.campaign.iteration.run_until_cut", run_until_cut)
    return given


def _plan(capsys, *argv: str) -> dict:
    assert main(["torture", "--dry-run", "--json", *argv]) == ExitCode.CLEAN
    return json.loads(capsys.readouterr().out)


# --- xdh torture --dry-run ----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ("--seed", "11", "--iterations", "5"),
    ("--seed", "11", "--iterations", "5", "--shard", "2/2"),
    ("--seed", "12", "--iterations", "3", "--cut", "time", "--cut-seconds", "0.5-3", "--no-canary"),
    ("--seed", "13", "--iterations", "4", "--cut-acks", "30-40", "--jobs", "2", "--disk-cache", "volatile"),
])
def test_the_dry_run_plans_the_seeds_and_cuts_a_run_uses(fake_run, capsys, tmp_path, argv):
    plan = _plan(capsys, *argv)
    assert fake_run == {} and not (tmp_path / "runs").exists()        # nothing ran, nothing was written
    planned = {p["name"]: (p["seed"], p["cut"]) for p in [plan["canary"], *plan["iterations"]] if p}
    assert main(["torture", *argv, "--run-dir", str(tmp_path / "run")]) == ExitCode.CLEAN
    capsys.readouterr()
    assert fake_run == planned
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [(i["name"], i["seed"]) for i in summary["iterations"]] == [(p["name"], p["seed"])
                                                                        for p in plan["iterations"]]


def test_the_dry_run_draws_the_seed_a_run_with_it_repeats(fake_run, capsys, tmp_path):
    plan = _plan(capsys, "--iterations", "2")
    assert not plan["seed_given"]
    main(["torture", "--dry-run", "--iterations", "2", "--seed", str(plan["seed"])])
    text = capsys.readouterr().out
    assert f"campaign seed {plan['seed']}\n" in text and "drawn now" not in text
    main(["torture", "--dry-run", "--iterations", "2"])
    assert "drawn now: pass --seed" in capsys.readouterr().out
    assert main(["torture", "--iterations", "2", "--seed", str(plan["seed"]), "--run-dir", str(tmp_path / "r")]) == 0
    assert {n: s for n, (s, _) in fake_run.items()} == {p["name"]: p["seed"] for p in [plan["canary"],
                                                                                        *plan["iterations"]]}


def test_the_dry_run_text_names_shard_canary_states_and_estimates(images, capsys):
    assert main(["torture", "--dry-run", "--seed", "7", "--iterations", "3", "--shard", "1/2",
                 "--disk-cache", "volatile", "--flush-points", "5", "--verify", "reboot"]) == ExitCode.CLEAN
    text = capsys.readouterr().out
    assert "nothing is booted" in text and "shard 1/2: 2 of 3 iterations" in text
    assert "iter-0000" in text and "iter-0002" in text and "iter-0001" not in text
    assert "canary" in text and "drop-flush on append" in text and "verified reboot" in text
    assert "5 sampled flush states" in text and "one image at a time" in text
    assert "estimated time: about" in text and "an estimate" in text and "docs/performance.md" in text
    assert "estimated space: about" in text and "MiB free there" in text and "images: ready" in text
    # the documented seed: docs/workloads.md's `--seed 7` run gave iter-0000 this workload seed
    plan = _plan(capsys, "--seed", "7", "--iterations", "1")
    assert plan["iterations"][0]["seed"] == 36515040580731174


def test_a_shard_without_iterations_is_a_usage_error(images, capsys):
    """It would run nothing and pass (issue 22): a night with too many shards says so at once."""
    assert main(["torture", "--dry-run", "--seed", "1", "--iterations", "3", "--shard", "4/4"]) == ExitCode.USAGE
    assert "--shard 4/4 selects no iteration of 3" in capsys.readouterr().err


def test_the_dry_run_checks_the_config_as_a_run_does(images, capsys):
    assert main(["torture", "--dry-run", "--fault", "backend-lies", "--backend", "phy"]) == ExitCode.USAGE
    assert "needs a qdisk backend" in capsys.readouterr().err


def test_the_time_estimate_follows_the_documented_figures():
    """docs/performance.md: 12.8 s per fast-path iteration (110 acks), 173 s for the baseline,
    about 70 s with every flush state batched."""
    cut = CutPlan.draw(TortureConfig(seed=1, cut_acks=(110, 110)), 1)
    fast = space.iteration_seconds(TortureConfig(), cut)
    assert fast == pytest.approx(12.8, abs=0.1)
    assert space.iteration_seconds(TortureConfig(reset="boot", verify="reboot"), cut) == pytest.approx(173.3, abs=1)
    assert 60 < space.iteration_seconds(TortureConfig(disk_cache="volatile"), cut) < 80
    sampled = TortureConfig(disk_cache="volatile", flush_points=4)
    assert space.iteration_seconds(sampled, cut) < space.iteration_seconds(TortureConfig(disk_cache="volatile"), cut)
    assert space.flush_points(TortureConfig(disk_cache="volatile", verify="reboot")) == 2
    assert not space.states_batched(TortureConfig(stack=StackConfig(backend="qdisk-qcow2")))


# --- xdh check ----------------------------------------------------------------------------------
def test_check_prints_one_line_per_manifest(tmp_path, capsys):
    kv, fault = EXAMPLES / "kvstore" / "workload.toml", EXAMPLES / "faults" / "dom0-write-through.toml"
    assert main(["check", str(kv), str(fault), str(EXAMPLES / "postgres" / "workload.toml")]) == ExitCode.CLEAN
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{kv}: ok: workload kvstore: program kv-fsync, model set, params --keys 64")
    assert lines[1].startswith(f"{fault}: ok: fault dom0-write-through: 1 step (dom0 before-mkfs)")
    assert "packages postgresql, python3-psycopg2" in lines[2] and "with setup" in lines[2]
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = 1\nname = "x"\nprogram = "p"\nmodle = "set"\n')
    assert main(["check", str(kv), str(bad), str(tmp_path / "none.toml")]) == ExitCode.USAGE
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and ": ok: " in lines[0]
    assert lines[1] == f"{bad}: error: workload manifest {bad}: unknown keys ['modle'] (allowed: model, name, " \
                       "needs_fs, packages, params, program, setup, summary, verify_many)"
    assert lines[2].startswith(f"{tmp_path / 'none.toml'}: error: workload manifest") and "not found" in lines[2]


def test_check_tells_a_fault_manifest_from_a_workload_one(tmp_path, capsys):
    f = tmp_path / "f.toml"
    f.write_text('schema = 1\nname = "f"\n[outer]\nno_flush = true\n')
    empty = tmp_path / "e.toml"
    empty.write_text('schema = 1\nname = "e"\n[[step]]\nwhere = "domu"\nrun = []\n')
    assert main(["check", str(f), str(empty)]) == ExitCode.USAGE
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{f}: ok: fault f: 0 steps (-), outer disk no_flush, device model -"
    assert out[1].startswith(f"{empty}: error: fault manifest") and "run must be an argv list" in out[1]


# --- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, verbose", [
    (["torture"], False), (["-v", "torture"], True), (["torture", "-v"], True), (["torture", "--verbose"], True),
    (["images", "build", "-v"], True), (["report", "merge", "r", "-v"], True), (["-v", "check", "m.toml"], True),
])
def test_global_options_go_before_or_after_the_subcommand(argv, verbose):
    assert make_parser().parse_args(argv).verbose is verbose


@pytest.mark.parametrize("argv, verbose", [
    (["ssh", "domu", "--", "ls", "-v"], False), (["ssh", "domu", "ls", "-v"], False),
    (["ssh", "-v", "domu", "ls", "-v"], True),
])
def test_ssh_keeps_its_command_options(argv, verbose):
    args = make_parser().parse_args(argv)
    assert args.command == ["ls", "-v"] and args.verbose is verbose


def _subparsers(p: argparse.ArgumentParser):
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                yield sp
                yield from _subparsers(sp)


def test_every_help_renders_its_defaults_from_the_configs():
    parsers = list(_subparsers(make_parser()))
    assert len(parsers) > 15
    for sp in parsers:
        text = sp.format_help()
        assert "%(" not in text and "(default None)" not in text, sp.prog
    torture = make_parser().parse_args(["torture"])
    cfg = TortureConfig()
    assert (torture.iterations, torture.cut_acks, torture.jobs, torture.crash_subsets, torture.flush_points) == \
        (cfg.iterations, cfg.cut_acks, cfg.jobs, cfg.crash_subsets, cfg.flush_points)
    assert (torture.memory, torture.domu_memory) == (StackConfig().memory_mib, StackConfig().domu_mem_mib)
    compare = make_parser().parse_args(["compare"])
    assert (compare.backends, compare.releases, compare.faults) == (compare_mod.CompareConfig().backends,
                                                                    compare_mod.CompareConfig().releases,
                                                                    compare_mod.CompareConfig().faults)


def test_help_does_not_say_every_crash_image_is_verified_after_a_reboot():
    top = make_parser().format_help()
    torture = next(sp for sp in _subparsers(make_parser()) if sp.prog == "xdh torture").format_help()
    assert "after reboot" not in top and "verifier VM" in torture


@pytest.mark.parametrize("argv, backends, releases", [
    (["--backend", "phy"], ("phy",), ("bookworm",)),
    (["--backends", "qdisk,phy-x", "--backend", "phy"], ("phy",), ("bookworm",)),    # the last one given
    (["--release", "trixie", "--backends", "qdisk"], ("qdisk",), ("trixie",)),
    (["--releases", "trixie,bookworm"], ("qdisk", "phy"), ("trixie", "bookworm")),
])
def test_compare_backend_and_release_restrict_the_matrix(images, monkeypatch, argv, backends, releases):
    seen = []

    def run_compare(cfg, out, say, command="", store=None):
        seen.append(cfg)
        raise ConfigError("stop here")
    monkeypatch.setattr(compare_mod, "run_compare", run_compare)
    assert main(["compare", *argv, "--faults", "none", "--disk-cache", "none"]) == ExitCode.USAGE
    cfg, = seen
    assert cfg.backends == backends and cfg.releases == releases
    assert cfg.stack.release == releases[0] and cfg.stack.backend == "qdisk"      # each cell sets its own
    assert {(c.backend, c.release) for c in compare_mod.plan_cells(cfg)} == {(b, r) for b in backends
                                                                             for r in releases}


def test_removed_dead_code_stays_removed():
    from harness.cli import commands, types
    from harness.crash.writelog import WriteLog
    from harness.images import debs
    assert not hasattr(commands, "_active_up_file") and not hasattr(types, "flush_points")
    assert not hasattr(debs, "ROLES") and not hasattr(WriteLog, "tail_writes")
    assert not (PROJECT_ROOT / "scripts" / "campaign-table.py").exists()
    assert hasattr(commands, "prepared_run") and hasattr(commands, "stack_config")
    assert Path(commands.__file__).parent.joinpath("interactive.py").read_text().count("commands import _") == 0
