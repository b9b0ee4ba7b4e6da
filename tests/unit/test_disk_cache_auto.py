"""``--disk-cache auto`` (issue 24): each backend mode runs the model under which a lost flush is
visible; an explicit ``none`` on a mode whose dom0 keeps no cache is said before anything boots,
and the canary's exit 3 names the cause and the fix in one line. Fakes for every stage."""

from __future__ import annotations

import dataclasses
import json

import pytest

from harness.campaign.compare import CompareConfig, plan_cells
from harness.cli import main
from harness.config import DiskCache, StackConfig, TortureConfig
from harness.status import ExitCode


@pytest.mark.parametrize("backend, model", [("qdisk", "none"), ("qdisk-qcow2", "none"), ("phy", "volatile"),
                                            ("qdisk-direct", "volatile"), ("qdisk-direct-threads", "volatile")])
def test_auto_picks_the_model_that_can_see_a_lost_flush(backend, model):
    cfg = TortureConfig(stack=StackConfig(backend=backend))
    assert cfg.disk_cache == DiskCache(model) and cfg.disk_cache_auto
    assert cfg.disk_cache_reason().startswith(f"{model} (auto: {backend} ")
    assert not cfg.blind_to_lost_flushes()
    back = TortureConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert (back.disk_cache, back.disk_cache_auto) == (cfg.disk_cache, True)


def test_auto_chooses_again_for_another_stack_and_an_explicit_model_stays():
    auto = TortureConfig(stack=StackConfig(backend="qdisk"))
    assert dataclasses.replace(auto, stack=StackConfig(backend="phy")).disk_cache == DiskCache.VOLATILE
    none = TortureConfig(disk_cache="none", stack=StackConfig(backend="phy"))
    assert none.disk_cache == DiskCache.NONE and not none.disk_cache_auto
    assert "--disk-cache volatile" in none.blind_to_lost_flushes()
    assert not TortureConfig(disk_cache="none").blind_to_lost_flushes()      # qdisk: dom0's page cache is volatile


def test_compare_auto_cells_carry_the_model_they_run():
    cells = plan_cells(CompareConfig(backends=("qdisk", "phy"), faults=("none",)))
    assert [(c.backend, c.disk_cache) for c in cells] == [("qdisk", "none"), ("phy", "volatile")]
    both = plan_cells(CompareConfig(backends=("phy",), faults=("none",), disk_caches=("auto", "volatile", "none")))
    assert [c.disk_cache for c in both] == ["volatile", "none"]       # auto = volatile on phy: one cell


@pytest.fixture
def fakes(isolated, fake_stages):
    return fake_stages


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_an_explicit_none_on_phy_is_said_before_boot_and_exit_3_names_cause_and_fix(fakes, tmp_path, capsys):
    """The world of blkback with no volatile cache: drop-flush loses nothing at a plain cut."""
    crashes = fakes(lambda cfg, name: "pass")
    code = main(["torture", "--backend", "phy", "--disk-cache", "none", "--iterations", "2", "--seed", "3",
                 "--run-dir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == ExitCode.CANARY
    warning = [ln for ln in _lines(err) if ln.startswith("warning:")]
    assert len(warning) == 1 and "--disk-cache none on phy" in warning[0] and "--disk-cache volatile" in warning[0]
    assert _lines(err).index(warning[0]) < next(i for i, ln in enumerate(_lines(err)) if "canary" in ln)
    assert [c.name for c in crashes.calls] == ["canary"]            # the canary ran to prove it, nothing after
    said = [ln for ln in _lines(out) if ln.startswith("canary (drop-flush on append):")]
    assert len(said) == 1 and "NOT CAUGHT" in said[0] and "outer disk" in said[0] and \
        "--disk-cache volatile" in said[0]
    assert "disk cache model: none (--disk-cache none)" in out


def test_phy_on_defaults_runs_the_volatile_model_with_no_warning(fakes, tmp_path, capsys):
    crashes = fakes(lambda cfg, name: "loss" if name == "canary" else "pass")
    code = main(["torture", "--backend", "phy", "--iterations", "2", "--seed", "3", "--run-dir", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == ExitCode.CLEAN and "warning:" not in err
    assert {c.disk_cache for c in crashes.calls} == {"volatile"}
    assert "disk cache model: volatile (auto: phy keeps no volatile cache in dom0" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["disk_cache"].startswith("volatile (auto:") and summary["config"]["disk_cache_auto"] is True
    assert "volatile (auto: phy" in (tmp_path / "r" / "index.html").read_text()
