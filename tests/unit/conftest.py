"""Fakes for the heavy stages under a campaign, shared by the unit tests that drive campaigns
through ``main`` or ``run_campaign`` (tests/fakes.py holds the fakes themselves)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from harness.images import ImageStore
from harness.images.built import ImagePair
from tests.fakes import FakeCrashes, FakeVerifier, fake_pair, fake_snapshot, reset_fakes


@pytest.fixture
def images(tmp_path, monkeypatch) -> ImagePair:
    """The image store answers with fake built images (nothing is booted from them)."""
    pair = fake_pair(tmp_path / "fake-images")
    monkeypatch.setattr(ImageStore, "pair", lambda self, spec="bookworm": pair)
    monkeypatch.setattr(ImageStore, "require", lambda self, name, spec="bookworm": getattr(pair, name))
    return pair


@pytest.fixture
def fake_stages(tmp_path, monkeypatch, images) -> Callable[..., FakeCrashes]:
    """Install fakes for every heavy stage under campaigns; returns ``install(script) -> FakeCrashes``."""
    snap = fake_snapshot(tmp_path)

    def install(script) -> FakeCrashes:
        crashes = FakeCrashes(script)
        monkeypatch.setattr("harness.campaign.iteration.run_until_cut", crashes.run_until_cut)
        monkeypatch.setattr("harness.campaign.iteration.check_outcome", crashes.check_outcome)
        monkeypatch.setattr("harness.campaign.kit.ensure_snapshot", lambda *a, **kw: snap)
        monkeypatch.setattr("harness.campaign.kit.machine_identity", lambda *a, **kw: {"fake": True})
        monkeypatch.setattr("harness.campaign.kit.FastVerifier", FakeVerifier)
        monkeypatch.setattr("harness.campaign.compare.FastVerifier", FakeVerifier)
        monkeypatch.setattr("harness.cli.commands.versions", lambda images, stack=None: {"fake": True})
        return crashes
    return install


SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """For tests that drive ``main``: the cwd in tmp_path (cache, runs and TMPDIR are there
    already: tests/conftest.py); fakes reset; signal handlers restored."""
    monkeypatch.chdir(tmp_path)
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    reset_fakes()
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    reset_fakes()
