"""Fixtures of the integration layer (marker ``stack``: the real nested stack under QEMU).

Which cache these tests use (``XDH_CACHE``), decided by what each part holds:
  - Shared with the user's cache (``XDH_CACHE``, else ~/.cache/xdh, as the session starts):
    what is content-addressed, where sharing is sound and a warm cache saves the boots and
    builds. The images (a directory per digest of recipe, packages and client key, built
    under a lock and renamed into place), the client key they embed, the saved stacks and
    the saved fast verifier (``snapshots/``: a directory per key of images, config and
    machine, built under a lock, renamed into place when complete, frozen read-only; each
    restore runs on fresh overlays in the test's own run directory), the device models (per
    release and build script) and the KVM probe results (keyed inside the file).
  - Private to the test session: what one xdh process leaves for another to act on.
    ``session.json`` (the running ``xdh up``) and ``last-session.json`` (what ``xdh cut`` and
    ``xdh verify`` act on) go to a tmp directory, so a test never cuts, verifies or forgets a
    user's session and a user's session never steers a test. Run directories (crash images,
    logs, verifier VMs) are per test: every test passes its own under ``tmp_path``, and
    ``XDH_RUNS`` points at a tmp directory for anything that would not.
The session's cache is that tmp directory with symlinks to the shared parts; ``XDH_CACHE``
points at it for this process and every ``xdh`` subprocess. The harness resolves the shared
parts' paths (``ImageStore``, ``snapshots_root``, ``devmodel.cache_root``), so nothing it saves
(a saved machine's overlays name their backing files) records a path through the view, which
pytest removes a few sessions later.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import paths
from harness.campaign.kit import Kit
from harness.config import StackConfig, TortureConfig
from harness.images import ImagePair, ImageStore
from harness.stack.boot import Restore
from harness.stack.saved import Snapshot
from harness.stack.snapshot import ensure_snapshot
from harness.stack.xen import machine_identity
from tests.integration import nightly

SHARED_DIRS = ("images", "keys", "snapshots", "devmodel")
SHARED_FILES = ("kvm-probe-*.json", ".*.lock")      # keyed probe results; locks of the shared parts


def _say(msg: str) -> None:
    print(msg, flush=True)


@pytest.fixture(scope="session", autouse=True)
def xdh_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's cache: the user's images, key and saved machines, a private session record
    (see the module docstring). Images missing from the user's cache are built there first."""
    real = paths.cache_dir()
    ImageStore(real).build(progress=_say)          # images and the client key exist before they are linked
    view = tmp_path_factory.mktemp("xdh-cache")
    for name in SHARED_DIRS:
        (real / name).mkdir(parents=True, exist_ok=True, mode=0o700 if name == "keys" else 0o777)
        (view / name).symlink_to(real / name, target_is_directory=True)
    for pattern in SHARED_FILES:
        for f in real.glob(pattern):
            (view / f.name).symlink_to(f)
    before = {k: os.environ.get(k) for k in ("XDH_CACHE", "XDH_RUNS")}
    os.environ["XDH_CACHE"] = str(view)
    os.environ["XDH_RUNS"] = str(tmp_path_factory.mktemp("xdh-runs"))
    try:
        yield view
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for f in view.glob("kvm-probe-*.json"):     # a probe made in this session (keyed: sound to keep)
            if not f.is_symlink() and not (real / f.name).exists():
                shutil.copyfile(f, real / f.name)


@pytest.fixture(scope="session")
def images(xdh_cache: Path) -> ImageStore:
    """The session's image store (built by ``xdh_cache``); a release or your .debs are built on demand."""
    return ImageStore(xdh_cache)


@pytest.fixture(scope="session")
def warm_campaign(images: ImageStore, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """What ``xdh torture`` on its defaults sets up before its first iteration: the saved stack
    and the saved fast verifier, found in the cache or made here (about 3 min on a cold cache),
    by the campaign's own kit. A test that interrupts campaigns (test_chaos) needs them made
    first, or its signals land inside the saves instead of in restores, workloads, cuts and
    verification."""
    cfg = TortureConfig(canary=False)       # `xdh torture --no-canary`: its saved stack and verifier
    with Kit(cfg, tmp_path_factory.mktemp("warm-verifier"), images, images.pair(cfg.stack.components()), _say) as kit:
        assert kit.snapshot is not None and kit.fast is not None
        return kit.snapshot


@pytest.fixture(scope="session")
def gitlab_nightly(images: ImageStore, tmp_path_factory: pytest.TempPathFactory) -> nightly.Nightly:
    """ci/gitlab/nightly.yml run green by gitlab-ci-local (tests/integration/nightly.py): 2 shards x
    1 iteration of the positive control (drop-flush on append, fast path, ``--expect loss``) and the
    merge job. test_ci_pipeline checks the engine's view of it; test_torture takes its merged
    iterations as the positive control (the same experiment, which it once ran on its own)."""
    return nightly.run(tmp_path_factory.mktemp("gitlab-nightly"))


SavedBoot = tuple[Restore, ImagePair, Snapshot]


@pytest.fixture(scope="session")
def saved_stack(images: ImageStore):
    """``saved_stack(cfg, **key)``: a restore of ``cfg``'s saved stack, booted cold and saved
    first if the cache has none (about a cold boot; later sessions restore it in seconds), as a
    campaign saves one (stack/snapshot.py). ``key`` joins the snapshot key (what a test checks
    about the boot that a campaign's key does not cover). A test of a stack's own properties
    (its mode, release, kernel) makes every assertion on the restored, running stack; the cold
    path itself is driven by test_torture's baseline (a boot per crash run) and reproduce[reboot]
    (a boot on a kept crash image)."""
    def restore(cfg: StackConfig, **key: object) -> SavedBoot:
        pair = images.pair(cfg.components())
        snap = ensure_snapshot(cfg, pair, images, _say, machine_identity(cfg, images, pair) | key)
        return Restore(snap), pair, snap
    return restore
