"""Shared fixtures. Integration tests boot the real nested stack (TCG here)."""

from __future__ import annotations

import pytest

from harness.images import ImageStore


@pytest.fixture(scope="session")
def images() -> ImageStore:
    """The image cache, built if missing or stale (a clean clone builds here, ~2.5 min)."""
    store = ImageStore()
    store.build(progress=lambda m: print(m, flush=True))
    return store
