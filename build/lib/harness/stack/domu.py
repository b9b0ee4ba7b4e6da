"""dom0's side of bringing up the domU: prepare the backend, write the xl config, ``xl create``,
and read what dom0 knows when something goes wrong."""

from __future__ import annotations

from pathlib import Path

import paramiko

from ..catalog.backends import Backend
from ..config import StackConfig
from ..errors import LaunchError, XdhError
from ..progress import Progress
from ..vm.ssh import Shell
from .xl import BRIDGE, DOMU_CFG, DOMU_INITRD, DOMU_KERNEL, DOMU_NAME, EXTRACT_DOMU_KERNEL, domu_config


def dom0_device(dom0: Shell, serial: str) -> str:
    """dom0's device node of the outer disk with this virtio serial."""
    return dom0.run(["readlink", "-f", f"/dev/disk/by-id/virtio-{serial}"]).stdout.strip()


def create_domu(dom0: Shell, config: StackConfig, backend: Backend, run_dir: Path, step: Progress,
                boot_files: tuple[str, str]) -> dict[str, str]:
    """Prepare the backend, copy the domU's kernel and initramfs (``boot_files``, names under its
    /boot) out of its root, write domu.cfg, ``xl create``; returns dom0's device names of the domU's disks."""
    root_dev = dom0_device(dom0, "domu-root")
    dut_dev = dom0_device(dom0, "dut")
    prep = backend.dom0_prepare(dut_dev, config.dut_size_mib)
    if prep:
        step(f"dom0: preparing {backend.name} on {dut_dev}")
        dom0.run(["sh", "-c", prep], timeout=180)
    dom0.run(["sh", "-c", EXTRACT_DOMU_KERNEL, "sh", root_dev, *boot_files], timeout=120)
    if config.domu_kernel:    # your kernel from a build tree replaces the image's (and its initramfs, if any)
        step(f"dom0: domU kernel {config.domu_kernel}")
        dom0.put_bytes(Path(config.domu_kernel).read_bytes(), DOMU_KERNEL)
        if config.domu_initrd:
            dom0.put_bytes(Path(config.domu_initrd).read_bytes(), DOMU_INITRD)
    dom0.run(["sh", "-c", BRIDGE])
    cfg = domu_config(config, backend, root_dev, dut_dev)
    (run_dir / "domu.cfg").write_text(cfg)
    dom0.put_bytes(cfg.encode(), DOMU_CFG)
    step(f"dom0: xl create (disk under test: {backend.xl_disk(dut_dev)})")
    res = dom0.run(["xl", "create", DOMU_CFG], check=False, timeout=180)
    if res.status != 0:
        raise LaunchError(f"xl create failed: {(res.stderr.strip() or res.stdout.strip())[-500:]}")
    check_device_model(dom0, config, backend, run_dir, step)
    return {"domu_root": root_dev, "dut": dut_dev}


def check_device_model(dom0: Shell, config: StackConfig, backend: Backend, run_dir: Path, step: Progress) -> None:
    """qdisk backends are created by the domU's QEMU in dom0; libxl does not notice when that
    fails, and the domU then waits for its disk forever. Read the device model's log instead."""
    log = dom0.run(["sh", "-c", f"cat /var/log/xen/qemu-dm-{DOMU_NAME}.log 2>/dev/null"], check=False).stdout
    # only the disks count: QEMU 10 also reports declining the console, which xenconsoled serves
    failed = [line for line in log.splitlines() if "failed to create 'qdisk'" in line]
    if failed:
        (run_dir / "qemu-dm.log").write_text(log)
        hint = ""
        if "aio=native" in failed[0]:
            hint = ("Debian's qemu-system-xen is built without linux-aio, which qdisk needs for "
                    f"direct-io-safe: run `xdh images devmodel --release {config.release}` once, then "
                    "--backend qdisk-direct installs it (or use qdisk-direct-threads)")
        raise LaunchError(f"backend {backend.name}: dom0's device model could not create the disk: "
                          f"{failed[0].strip()}", hint=hint)
    if config.device_model:
        # the wrapper must really be in place: the running device model has libeatmydata mapped
        res = dom0.run(["sh", "-c", "for p in $(pgrep -f xen-qemu-system); do "
                        "grep -q libeatmydata /proc/$p/maps && echo $p; done"], check=False)
        if not res.stdout.strip():
            raise LaunchError(f"device model override {config.device_model} is not in effect "
                              "(no device model process has libeatmydata loaded)")
        step(f"dom0: device model runs under eatmydata (pid {res.stdout.split()[0]})")


def save_domu_console(dom0: Shell | None, run_dir: Path) -> str:
    """Copy the domU console log that xenconsoled keeps in dom0 into the run directory."""
    if dom0 is None:
        return ""
    try:
        text = dom0.get_bytes(f"/var/log/xen/console/guest-{DOMU_NAME}.log").decode(errors="replace")
    except (OSError, paramiko.SSHException, XdhError):
        return ""
    (run_dir / "domu-console.log").write_text(text)
    return text


def dom0_diagnostics(dom0: Shell | None, run_dir: Path) -> str:
    """What dom0 knows about the domU's disks and network; saved to the run directory."""
    if dom0 is None:
        return ""
    script = ("xl list; xl network-list domu; xl block-list domu; ip -br addr; ip -br link show master xenbr0; "
              "tail -n 20 /var/log/xen/xen-hotplug.log")
    try:
        res = dom0.run(["sh", "-c", script], check=False, timeout=60)
    except (OSError, paramiko.SSHException, XdhError):
        return ""
    text = res.stdout + res.stderr
    (run_dir / "dom0-diagnostics.txt").write_text(text)
    return text


def domu_failure_text(dom0: Shell | None, run_dir: Path) -> str:
    """The domU console's and dom0's last lines, for an error about a domU that did not come up."""
    console = save_domu_console(dom0, run_dir)
    diag = dom0_diagnostics(dom0, run_dir)
    return "\n".join(x for x in (
        "[domU console]\n" + "\n".join(console.splitlines()[-20:]) if console else "",
        "[dom0 diagnostics]\n" + "\n".join(diag.splitlines()[-25:]) if diag else "") if x)
