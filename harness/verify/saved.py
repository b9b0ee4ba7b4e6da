"""The fast verifier's saved state: booted once per domU image and machine, then restored in
seconds, so a campaign's first verdict does not wait for a boot (~29 s under TCG).

Same mechanism as the stack's snapshot (``stack.snapshot``): QMP ``migrate`` to a file, the
root overlay frozen next to it, each restore on a fresh overlay over it with ``-incoming``.
Before the save the verifier loads what every batch needs (device-mapper snapshots, the RAM
disks, Python's modules in the page cache). After a restore its clock is set to the host's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..images import BuiltImage, ImageStore
from ..jsonio import utc_stamp
from ..progress import Progress
from ..stack.saved import STATE_FILE, Snapshot, cached_or_built

FORMAT = "1"
ROOT = "root.qcow2"
PREPARE = "xdh-replay --prepare && python3 -c 'import json, ctypes, sqlite3, hashlib, zlib, argparse'"


def verifier_key(image: BuiltImage, machine: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, "domu": image.digest, "machine": machine}, sort_keys=True)
    return "verifier-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_once(store: ImageStore, key: str, image: BuiltImage,
              boot_and_save: Callable[[Path], tuple[Path, float]], progress: Progress) -> Snapshot:
    """The saved verifier for ``key``: reused, or ``boot_and_save(workdir)`` (which boots, saves
    the state to ``workdir/state.bin`` and returns its root overlay and the seconds it took)."""
    def build(work: Path, final: Path) -> Snapshot:
        t0 = time.monotonic()
        overlay, save_s = boot_and_save(work)
        shutil.move(str(overlay), work / ROOT)
        for name in (ROOT, STATE_FILE):
            (work / name).chmod(0o444)
        progress(f"fast verifier saved in {time.monotonic() - t0:.0f} s "
                 f"(state {(work / STATE_FILE).stat().st_size / 2**20:.0f} MiB)")
        return Snapshot(dir=final, key=key, created=utc_stamp(),
                        seconds_to_build=round(time.monotonic() - t0, 1), seconds_to_save=round(save_s, 1),
                        state_bytes=(work / STATE_FILE).stat().st_size,
                        stack_info={"versions": {"images": {"domu": image.digest}}})
    return cached_or_built(store, key, build)
