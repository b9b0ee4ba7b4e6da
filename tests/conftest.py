"""Shared fixtures. Integration tests boot the real nested stack (TCG here)."""

from __future__ import annotations

import pytest

from harness.images import ImageStore


def pytest_configure(config: pytest.Config) -> None:
    """The plugin's fixtures (tests/integration/test_plugin.py) build missing images here, as
    ``images`` does, instead of skipping."""
    config.option.xdh_build_images = True


@pytest.fixture(scope="session")
def images() -> ImageStore:
    """The image cache, built if missing or stale (a clean clone builds here, ~2.5 min)."""
    store = ImageStore()
    store.build(progress=lambda m: print(m, flush=True))
    return store
