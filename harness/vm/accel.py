"""Accelerator choice for the outer QEMU.

KVM is used only if a probe guest really boots under it: on our 2-core machines
``/dev/kvm`` exists and KVM_CREATE_VM works, yet a Linux guest never leaves the
decompressor. Under TCG, Xen's dom0 needs SMAP/SMEP hidden (else it dies with
``#PF in create_bounce_frame``). The probe result is cached per host kernel and QEMU
version, since it costs up to PROBE_TIMEOUT seconds when KVM is broken.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from .disks import qemu_version

LOG = logging.getLogger(__name__)


ACCELS = ("auto", "kvm", "tcg")   # auto: KVM only if a probe guest boots under it (``config.Accel``)
PROBE_TIMEOUT = 25.0
TCG_CPU = "max,-smap,-smep,-xsave,-avx,-avx2,-fma,-f16c,-vaes,-vpclmulqdq"
# A kernel that got this far really ran under the accelerator.
PROBE_OK = re.compile(rb"Kernel panic|VFS: Unable to mount root|Run /init|Freeing unused kernel")


@dataclass(frozen=True)
class AccelChoice:
    accel: str          # "kvm" or "tcg"
    reason: str

    def qemu_args(self) -> list[str]:
        if self.accel == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        # one TCG thread per vCPU; SMAP/SMEP hidden for Xen PV dom0 under TCG (else #PF in
        # create_bounce_frame). XSAVE/AVX hidden too: with QEMU 7.2's new TCG AVX2, processes in
        # the domU crashed at random ("malloc(): corrupted top size", sshd failing to start).
        return ["-accel", "tcg,thread=multi", "-cpu", TCG_CPU]


def decide(requested: str, kvm_usable: bool | None, probe_reason: str) -> AccelChoice:
    """Pure decision. ``kvm_usable`` is None when no probe was run."""
    if requested not in ACCELS:
        raise ConfigError(f"unknown accelerator {requested!r}", hint="use one of: " + ", ".join(ACCELS))
    if requested == "tcg":
        return AccelChoice("tcg", "requested with --accel tcg")
    if requested == "kvm":
        if kvm_usable is False:
            raise ConfigError(f"--accel kvm requested but KVM is unusable here: {probe_reason}",
                              hint="use --accel auto or tcg")
        return AccelChoice("kvm", "requested with --accel kvm")
    if kvm_usable:
        return AccelChoice("kvm", f"KVM probe booted a kernel: {probe_reason}")
    return AccelChoice("tcg", f"KVM not usable ({probe_reason}); TCG with -cpu {TCG_CPU}")


def kvm_device_ok() -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    return True, "/dev/kvm present"


def probe_kvm(qemu: str, kernel: Path, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot ``kernel`` under KVM with no root disk; usable if it reaches the root mount."""
    ok, why = kvm_device_ok()
    if not ok:
        return False, why
    with tempfile.TemporaryDirectory(prefix="xdh-kvmprobe-") as tmp:
        serial = Path(tmp) / "serial.log"
        argv = [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-display", "none", "-nodefaults",
                "-no-reboot", "-serial", f"file:{serial}", "-kernel", str(kernel),
                "-append", "console=ttyS0 panic=-1"]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            while time.monotonic() - t0 < timeout:
                if serial.exists() and PROBE_OK.search(serial.read_bytes()):
                    return True, f"kernel reached root mount in {time.monotonic() - t0:.1f} s"
                if proc.poll() is not None:
                    assert proc.stderr is not None   # stderr=PIPE
                    err = (proc.stderr.read() or b"").decode(errors="replace").strip().splitlines()
                    return False, "QEMU exited: " + (err[-1] if err else f"status {proc.returncode}")
                time.sleep(0.5)
            return False, f"a kernel under KVM printed nothing useful in {timeout:.0f} s"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def choose(requested: str, qemu: str, kernel: Path, cache_dir: Path) -> AccelChoice:
    """Choose the accelerator, probing KVM (with a cached result) when ``auto`` or ``kvm``."""
    if requested == "tcg":
        return decide(requested, None, "")
    if requested not in ACCELS:
        return decide(requested, None, "")
    key = {"host_kernel": platform.release(), "qemu": qemu_version(qemu), "kernel": kernel.name}
    # one file per probe kernel: stacks of several releases do not evict each other's result
    cache = cache_dir / f"kvm-probe-{kernel.name}.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return decide(requested, cached["usable"], cached["reason"] + " (cached probe)")
    except (OSError, ValueError, KeyError):
        pass
    LOG.info("probing KVM (up to %.0f s)...", PROBE_TIMEOUT)
    usable, reason = probe_kvm(qemu, kernel)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "usable": usable, "reason": reason}) + "\n")
    return decide(requested, usable, reason)


def to_json(choice: AccelChoice) -> dict:
    return asdict(choice)
