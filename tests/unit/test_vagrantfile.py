"""The Vagrantfile is checked with `vagrant validate` where vagrant is installed."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
def test_vagrant_validate():
    # --ignore-provider: the provider plugins (libvirt, virtualbox) need not be installed to check syntax
    res = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_vagrantfile_provisions_this_project():
    text = (ROOT / "Vagrantfile").read_text()
    assert "debian/bookworm64" in text and "scripts/setup.sh" in text and "nested" in text
