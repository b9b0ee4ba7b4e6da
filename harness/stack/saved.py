"""A saved stack on disk (see ``snapshot``): its key, what it holds, and cleaning old ones."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import LaunchError
from ..images import IMAGE_NAMES, ImagePair, ImageStore
from ..releases import RELEASES

SNAPSHOT_FORMAT = "1"
STATE_FILE = "state.bin"
DOM0_ROOT, DOMU_ROOT = "dom0-root.qcow2", "domu-root.qcow2"   # a stack's throwaway root overlays
ROOT_OVERLAYS = (DOM0_ROOT, DOMU_ROOT)
FROZEN_DISKS = (*ROOT_OVERLAYS, "dut.img")


def snapshot_key(stack_config: dict, images: ImagePair, machine: dict) -> str:
    """Digest of everything the saved machine depends on (boot timeout excluded; your kernel
    files by their content, which ``machine`` carries, not by where they lie)."""
    cfg = {k: v for k, v in stack_config.items() if k not in ("boot_timeout", "domu_kernel", "domu_initrd")}
    cfg["own_kernel"] = bool(stack_config.get("domu_kernel"))
    blob = json.dumps({"format": SNAPSHOT_FORMAT, "stack": cfg, "dom0": images[0].digest,
                       "domu": images[1].digest, "machine": machine}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Snapshot:
    """A saved stack on disk: frozen disks, the machine state, and what the stack looked like."""

    dir: Path
    key: str
    created: str = ""
    seconds_to_build: float = 0.0
    seconds_to_save: float = 0.0
    state_bytes: int = 0
    stack_info: dict = field(default_factory=dict)    # StackInfo of the boot that was saved

    @property
    def state(self) -> Path:
        return self.dir / STATE_FILE

    def disk(self, name: str) -> Path:
        return self.dir / name

    @classmethod
    def load(cls, d: Path) -> Snapshot:
        meta = json.loads((d / "snapshot.json").read_text())
        meta["dir"] = d
        return cls(**meta)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("dir")
        return d

    def write(self, directory: Path) -> None:
        """snapshot.json (the cache's own record, versioned by SNAPSHOT_FORMAT in the key)."""
        (directory / "snapshot.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")


def snapshots_root(store: ImageStore) -> Path:
    return (store.root / "snapshots").resolve()      # never through a symlink (see ImageStore)


def cached_or_built(store: ImageStore, key: str, build: Callable[[Path, Path], Snapshot]) -> Snapshot:
    """The saved machine ``key`` (a stack or the fast verifier): loaded if present, else made by
    ``build(work, final)`` in a private directory renamed into place when complete. A lock keeps
    concurrent campaigns from building it twice."""
    root = snapshots_root(store)
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "snapshot.json").exists():
            return Snapshot.load(final)
        work = root / f".build-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        snap = build(work, final)
        snap.write(work)
        os.rename(work, final)
        return snap


def check_restorable(snap: Snapshot) -> None:
    missing = [n for n in (*FROZEN_DISKS, STATE_FILE) if not snap.disk(n).exists()]
    if missing:
        raise LaunchError(f"snapshot {snap.key} is incomplete (missing {', '.join(missing)})",
                          hint=f"remove {snap.dir} and run again")


def clean_snapshots(store: ImageStore, everything: bool = False) -> list[Path]:
    """Remove snapshots of images that are no longer current (all with ``everything``)."""
    root = snapshots_root(store)
    removed: list[Path] = []
    if not root.exists():
        return removed
    current = {img.digest for n in IMAGE_NAMES for r in RELEASES if (img := store.current(n, r))}
    for d in sorted(root.iterdir()):
        if d.name.endswith(".lock"):
            continue
        used = _images_used(d) or {}     # incomplete or unreadable: remove
        if not everything and used and all(dg in current for dg in used.values()):
            continue
        _remove(d)
        removed.append(d)
    return removed


def _images_used(d: Path) -> dict[str, str] | None:
    """The image digests a saved machine booted (by name), as its snapshot.json records them."""
    try:
        return Snapshot.load(d).stack_info.get("versions", {}).get("images", {})
    except (OSError, ValueError, TypeError):
        return None


def drop_snapshots_of(store: ImageStore, digests: set[str]) -> list[Path]:
    """Remove the saved machines (stacks and verifiers) that booted an image of these digests: an
    image rebuilt in place (``--force``, a package lock) keeps its digest, so the snapshot key
    would still find a saved machine whose overlays now sit on other bytes."""
    root = snapshots_root(store)
    removed: list[Path] = []
    if not root.exists() or not digests:
        return removed
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        used = _images_used(d)      # None: incomplete, which `images clean` removes
        if used and set(used.values()) & digests:
            _remove(d)
            removed.append(d)
    return removed


def _remove(d: Path) -> None:
    for f in d.rglob("*"):
        if f.is_file():
            f.chmod(0o644)
    shutil.rmtree(d, ignore_errors=True)
