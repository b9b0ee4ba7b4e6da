"""What actually runs, read from the guests after boot, and checked against the images it was
booted from: a stack that runs other components than the ones recorded proves nothing."""

from __future__ import annotations

import re

from ..errors import LaunchError
from ..images import ImagePair
from ..releases import Release
from ..vm.ssh import Shell


def read_running(dom0: Shell, domu: Shell) -> dict[str, str]:
    """Kernel releases of both guests, the hypervisor's version, the device model package's version."""
    xen = dom0.run(["sh", "-c", "xl info | sed -n 's/^xen_version *: *//p'"], check=False).stdout.strip()
    dm = dom0.run(["dpkg-query", "-W", "-f", "${Version}", "qemu-system-xen"], check=False).stdout.strip()
    return {"dom0_kernel": dom0.run(["uname", "-r"]).stdout.strip(),
            "domu_kernel": domu.run(["uname", "-r"]).stdout.strip(), "xen": xen, "device_model": dm}


def mismatches(running: dict[str, str], images: ImagePair, release: Release, domu_kernel: str = "") -> list[str]:
    """How what runs differs from what the images hold, or from ``domu_kernel`` (the release of
    your own domU kernel file, if one was given) (pure)."""
    out = []
    for guest, want, whose in (("dom0", images.dom0.kernel_release, "its image's"),
                               ("domu", domu_kernel or images.domu.kernel_release,
                                "your kernel file's" if domu_kernel else "its image's")):
        kernel = running.get(f"{guest}_kernel", "")
        if kernel != want:
            out.append(f"{guest} runs kernel {kernel!r}, not {whose} {want!r}")
    xen = _hypervisor_version(images.dom0.artifacts.get("xen", "")) or release.xen
    if not running.get("xen", "").startswith(xen + "."):
        out.append(f"the hypervisor is {running.get('xen')!r}, not Xen {xen}")
    if running.get("device_model") != images.dom0.packages.get("qemu-system-xen"):
        out.append(f"dom0's qemu-system-xen is {running.get('device_model')!r}, "
                   f"the image has {images.dom0.packages.get('qemu-system-xen')!r}")
    return out


def _hypervisor_version(artifact: str) -> str:
    """``4.17`` from the extracted hypervisor's name (``xen-4.17-amd64``), "" if it has none."""
    m = re.match(r"xen-(\d+\.\d+)", artifact)
    return m.group(1) if m else ""


def check_running(dom0: Shell, domu: Shell, images: ImagePair, release: Release,
                  domu_kernel: str = "") -> dict[str, str]:
    running = read_running(dom0, domu)
    found = mismatches(running, images, release, domu_kernel)
    if found:
        raise LaunchError("the stack does not run what its images hold: " + "; ".join(found))
    return running
