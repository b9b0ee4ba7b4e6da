"""Shared fixtures. Integration tests boot the real nested stack (TCG here) with the real image
cache; unit tests (tests/unit) are hermetic: see ``hermetic_unit``."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.images import ImageStore
from harness.vm import disks, host

UNIT = Path(__file__).resolve().parent / "unit"
FAKE_QEMU_VERSION = "QEMU emulator version 0.0.0 (xdh unit tests)"


def pytest_configure(config: pytest.Config) -> None:
    """The plugin's fixtures (tests/integration/test_plugin.py) build missing images here, as
    ``images`` does, instead of skipping."""
    config.option.xdh_build_images = True


def _stub_everywhere(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, module: Any, name: str,
                     stub: Callable[..., Any]) -> None:
    """Replace ``module.name`` and every copy bound by ``from ... import name`` in a loaded harness
    module; a module first imported during the test (which then binds the stub) is restored too."""
    original = getattr(module, name)
    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("harness") and getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, stub)

    def restore() -> None:
        for mod_name, mod in list(sys.modules.items()):
            if mod_name.startswith("harness") and getattr(mod, name, None) is stub:
                setattr(mod, name, original)
    request.addfinalizer(restore)


@pytest.fixture(autouse=True)
def hermetic_unit(request: pytest.FixtureRequest) -> Iterator[None]:
    """For tests/unit only: the image cache, the runs directory and every temporary file in the
    test's tmp_path (``cache``, ``runs``, ``tmp``), and the host-tool probes stubbed, so that the
    unit layer passes without QEMU installed and leaves nothing behind (a bug path's
    xdh-traceback-*.txt included). Integration tests keep the real cache and the real host."""
    if not request.node.path.is_relative_to(UNIT):
        yield
        return
    tmp_path: Path = request.getfixturevalue("tmp_path")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("XDH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TMPDIR", str(tmp))              # subprocesses too
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # tempfile caches gettempdir()
    if request.node.get_closest_marker("host_tools") is None:
        _stub_everywhere(monkeypatch, request, host, "require_tools", lambda: None)
        _stub_everywhere(monkeypatch, request, disks, "qemu_version", lambda binary="": FAKE_QEMU_VERSION)
    yield


@pytest.fixture(scope="session")
def images() -> ImageStore:
    """The image cache, built if missing or stale (a clean clone builds here, ~2.5 min)."""
    store = ImageStore()
    store.build(progress=lambda m: print(m, flush=True))
    return store
