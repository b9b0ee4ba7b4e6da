"""Config validation and one-line errors for bad input (no VM)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.catalog import backends
from harness.config import StackConfig
from harness.errors import ConfigError, ImageError
from harness.images import ImageStore

ROOT = Path(__file__).resolve().parents[2]


def test_default_config_is_valid():
    StackConfig().validate()


@pytest.mark.parametrize("name", sorted(backends.BACKENDS.names()))
def test_every_backend_mode_validates(name):
    StackConfig(backend=name).validate()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"backend": "xen_disk"}, "unknown backend mode 'xen_disk'"),
    ({"accel": "hvf"}, "unknown accelerator"),
    ({"domu_mem_mib": 256}, "too small"),
    ({"memory_mib": 1024}, "cannot hold"),
    ({"dut_size_mib": 1}, "out of range"),
])
def test_bad_config_is_rejected(kwargs, fragment):
    with pytest.raises(ConfigError) as ei:
        StackConfig(**kwargs).validate()
    assert fragment in str(ei.value)
    assert "\n" not in ei.value.oneline()


def test_bad_backend_error_names_the_choices():
    with pytest.raises(ConfigError) as ei:
        backends.get("blktap")
    assert "qdisk" in ei.value.hint and "phy" in ei.value.hint


def test_missing_images_say_how_to_build(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(ImageError) as ei:
        store.require("dom0")
    assert "xdh images build" in ei.value.oneline()


def _xdh(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_bad_backend_is_one_line_exit_2():
    res = _xdh("up", "--backend", "nope")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "invalid choice: 'nope'" in lines[0] and "qdisk-qcow2" in lines[0] and "Traceback" not in res.stderr


def test_cli_missing_images_is_one_line_exit_2(tmp_path):
    res = _xdh("up", "--run-dir", str(tmp_path / "run"), env_extra={"XDH_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("xdh: error:") and "xdh images build" in lines[-1], res.stderr
    assert "Traceback" not in res.stderr


def test_cli_ssh_without_stack_is_one_line(tmp_path):
    res = _xdh("ssh", "dom0", "--", "true", env_extra={"XDH_CACHE": str(tmp_path)})
    assert res.returncode == 2
    assert res.stderr.strip() == "xdh: error: no stack is up (start one with `xdh up`)"


def test_cli_help_explains_backends():
    res = _xdh("up", "--help")
    assert res.returncode == 0
    for name in backends.BACKENDS:
        assert name in res.stdout
