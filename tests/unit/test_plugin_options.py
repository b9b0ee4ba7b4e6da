"""The pytest plugin as pytest meets it, without a machine: loading it is cheap (no SSH, QMP or
stack), a bad option or ini value is one usage error, a bad ``@pytest.mark.xdh`` one collection
error naming it, and the seed of a test's crash run comes from its marker, ``--xdh-seed`` or
chance, in that order."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import pytest_plugin
from harness.config import StackConfig, TortureConfig

pytest_plugins = ["pytester"]

HEAVY = ("paramiko", "fabric", "invoke", "qemu.qmp", "harness.stack", "harness.vm.ssh", "harness.campaign")


def test_a_pytest_session_with_the_plugin_loads_no_machine(pytester: pytest.Pytester):
    """Loaded through its entry point, collecting and running a test (marked or not) that uses
    no xdh fixture imports none of SSH, QMP, the stack or the campaign."""
    pytester.makepyfile(f"""
        import sys
        import pytest

        def test_unrelated(request):
            assert request.config.pluginmanager.has_plugin("xdh")
            assert [m for m in {HEAVY!r} if m in sys.modules] == []

        @pytest.mark.xdh(workload="append", fault="drop-flush", seed=3)
        def test_marked_without_fixtures():
            assert [m for m in {HEAVY!r} if m in sys.modules] == []
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_loading_the_plugin_reads_no_config_either():
    """What every pytest session in the environment pays for: the registries of names, no more
    (harness.config reads manifests' TOML and the whole catalog; it waits for a marked test)."""
    code = ("import sys, pytest, harness.pytest_plugin; "
            f"print([m for m in {(*HEAVY, 'harness.config', 'harness.images')!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_bad_backend_is_one_usage_error(pytester: pytest.Pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--xdh-backend", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --xdh-backend: invalid choice: 'nope' (choose from 'qdisk', *"])
    assert "passed" not in result.stdout.str() and "error" not in result.stdout.str()


@pytest.mark.parametrize(("ini", "message"), [
    ("xdh_accel = banana", "ERROR: xdh_accel = 'banana' (ini): choose one of auto, kvm, tcg"),
    ("xdh_seed = soon", "ERROR: xdh_seed (ini): not an integer: 'soon'"),
])
def test_a_bad_ini_value_is_one_usage_error(pytester: pytest.Pytester, ini: str, message: str):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == message


def test_options_come_from_the_command_line_then_the_ini_file(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nxdh_backend = phy\nxdh_release = bookworm\nxdh_seed = 11\n")
    pytester.makepyfile("""
        from harness.pytest_plugin import Options, options

        def test_options(request):
            assert options(request.config) == Options(backend="phy", release="trixie", accel="tcg", seed=7,
                                                      build_images=True)
    """)
    result = pytester.runpytest("--xdh-release", "trixie", "--xdh-accel", "tcg", "--xdh-seed", "7",
                                "--xdh-build-images")
    result.assert_outcomes(passed=1)


def test_a_bad_marker_is_one_collection_error_naming_it(pytester: pytest.Pytester):
    pytester.makepyfile(test_kv="""
        import pytest

        @pytest.mark.xdh(falt="none")
        def test_typo(xdh_run):
            pass

        def test_fine():
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting test_kv.py*",
                                 "test_kv.py::test_typo: @pytest.mark.xdh(falt='none'): unknown argument falt "
                                 "(known: workload, fault, disk_cache, seed, start)"])
    assert "Traceback" not in result.stdout.str() and "xdh_run" not in result.stdout.str()


@pytest.mark.parametrize(("marker", "message"), [
    ("workload='apend'", "unknown workload 'apend' (choose one of: *"),
    ("seed='7'", "seed='7': must be an integer 0..2**63-1, or None"),
    ("'append'", "takes keyword arguments only (workload, fault, disk_cache, seed, start)"),
    ("workload='/nowhere/workload.toml'", "workload manifest /nowhere/workload.toml not found (*"),
])
def test_marker_mistakes_are_named_at_collection(pytester: pytest.Pytester, marker: str, message: str):
    pytester.makepyfile(f"""
        import pytest

        class TestKv:
            pytestmark = pytest.mark.xdh({marker})

            @pytest.mark.parametrize("n", [1, 2])
            def test_it(self, n):
                pass
    """)
    result = pytester.runpytest("--collect-only")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*::TestKv::test_it[[]1[]]: @pytest.mark.xdh({marker}): {message}"])


def test_good_markers_collect_and_run_without_a_machine(pytester: pytest.Pytester):
    pytester.makepyfile("""
        import pytest

        pytestmark = pytest.mark.xdh(fault="drop-flush", disk_cache="volatile")

        @pytest.mark.parametrize("n", [1, 2])
        def test_a(n):
            pass

        @pytest.mark.xdh(workload="direct", seed=5, start=False)
        def test_b():
            pass
    """)
    pytester.runpytest("--xdh-backend", "phy").assert_outcomes(passed=3)


def _cfg(**kw: object) -> TortureConfig:
    return TortureConfig(stack=StackConfig(), **kw)  # type: ignore[arg-type]


def test_the_seed_is_the_markers_then_the_options_then_random():
    given = pytest_plugin.Options(seed=42)
    cfg, replay = pytest_plugin._seeded(_cfg(seed=7), given)
    assert cfg.seed == 7 and replay == "xdh: seed 7 (the marker's)"
    cfg, replay = pytest_plugin._seeded(_cfg(), given)
    assert cfg.seed == 42 and replay == "xdh: seed 42 (--xdh-seed)"
    cfg, replay = pytest_plugin._seeded(_cfg(), pytest_plugin.Options())
    assert cfg.seed is not None and replay == f"xdh: seed {cfg.seed} (random; replay with --xdh-seed {cfg.seed})"


def test_the_marker_is_checked_against_the_stack():
    mark = pytest.mark.xdh(workload="append", fault="none", start=False).mark
    cfg, start = pytest_plugin.marker_config(mark, StackConfig(backend="phy"))
    assert (cfg.workload, cfg.fault, cfg.stack.backend, cfg.seed, start) == ("append", "none", "phy", None, False)
    assert pytest_plugin.marker_config(None, StackConfig())[1] is True
    with pytest.raises(ValueError, match="start='no': must be True or False"):
        pytest_plugin.marker_config(pytest.mark.xdh(start="no").mark, StackConfig())


def test_the_session_fixtures_import_the_machine_and_skip_without_images(pytester: pytest.Pytester):
    """The fixtures' own imports work (the stack, the image store), and an empty image cache
    (this test's $XDH_CACHE) skips the test naming the command, unless asked to build."""
    pytester.makepyfile("""
        import sys

        def test_stack(xdh_stack_config):
            assert xdh_stack_config.backend == "phy" and "harness.stack" in sys.modules

        def test_needs_images(xdh_images):
            raise AssertionError("not reached")
    """)
    result = pytester.runpytest("--xdh-backend", "phy", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*xdh: the dom0 image is not built in *(run `xdh images build`)*"
                                 "(or pass --xdh-build-images)"])
