"""The guest-side steps of verifying a crash image, the same on every verification path:
mount the disk under test (ext4 replays its journal, as after a reboot), run the workload's
``verify``, unmount; the JSON report."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..catalog.workloads import MOUNT, Workload
from ..errors import VerifyError
from ..stack.programs import install_program
from ..vm.ssh import Shell


@dataclass(frozen=True)
class VerifyJob:
    """What to verify on a crash image: the workload (with its seed and parameters) and the
    image's layout ("raw", or "qcow2-in-ext4" for qdisk-qcow2)."""

    workload: Workload
    seed: int
    params: dict[str, Any]
    layout: str = "raw"


@dataclass(frozen=True)
class VerifyReport:
    """The workload's verify output for one crash image, and the kernel logs written meanwhile."""

    data: dict[str, Any]
    kernel_logs: tuple[Path, ...] = ()


class Verifier(Protocol):
    """Anything that verifies a crash image (``FastVerifier``, ``RebootVerifier``)."""

    def verify(self, image: Path, job: VerifyJob, out_dir: Path) -> VerifyReport: ...


def verify_on(shell: Shell, device: str, workload: Workload, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    """Mount (filesystem workloads), run the workload's verify, unmount; the JSON report.
    A filesystem that does not mount is a finding: the report carries the error and fsck -n."""
    install_program(shell, workload)
    if workload.needs_fs:
        m = shell.run(["sh", "-c", f"mkdir -p {MOUNT} && mount {shlex.quote(device)} {MOUNT}"],
                      check=False, timeout=300)
        if m.status != 0:
            fsck = shell.run(["fsck.ext4", "-n", device], check=False, timeout=300)
            return {"mount_error": (m.stderr.strip() or m.stdout.strip())[-300:], "fsck": fsck.stdout[-2000:]}
    try:
        out = shell.run(workload.argv("verify", seed, params | {"device": device}), timeout=600).stdout
        try:
            report = json.loads(out)
        except ValueError:
            report = None
        if not isinstance(report, dict):
            raise VerifyError(f"{workload.program} verify printed no JSON object: {out.strip()[-300:]!r}",
                              hint="verify must print one JSON object (docs/workloads.md)")
        return report
    finally:
        if workload.needs_fs:
            shell.run(["umount", MOUNT], check=False, timeout=120)
