"""The Xen side's fixed facts and the domU's xl config, as pure text (golden-tested)."""

from __future__ import annotations

from ..catalog.backends import Backend
from ..config import StackConfig

DOMU_NAME = "domu"
DOMU_IP = "169.254.77.2"
DOM0_BRIDGE_IP = "169.254.77.1"
DOMU_NET = "169.254.77.0/24"
DOMU_MAC = "00:16:3e:77:00:02"
DUT_VDEV = "xvdb"
DUT_DEVID = 51728          # xenstore device id of xvdb: 202 << 8 | 16
XEN_ARGS = "console=com1 com1=115200,8n1 dom0_mem={mem}M,max:{mem}M dom0_max_vcpus=2 noreboot"
# cpufreq.off: udev would load powernow_k8 for the AMD-flavoured TCG CPU; in a Xen PV guest the
# boot then hung intermittently right after "powernow_k8: Power state transitions not supported".
# trace_event: the device model's fdatasync calls are the qdisk backend's flush counter (crash/
# counters.py). Enabled at boot, so arming its histogram at run time only attaches a trigger: a
# tracepoint registered at run time patches kernel text, and once left dom0 unresponsive for a
# minute (a CI run, restored stack, TCG).
DOM0_ARGS = "console=hvc0 root=/dev/vda rw net.ifnames=0 cpufreq.off=1 quiet trace_event=syscalls:sys_exit_fdatasync"
DOMU_ARGS = "root=/dev/xvda rw console=hvc0 net.ifnames=0 cpufreq.off=1"
DOMU_KERNEL = "/run/xdh/vmlinuz"
DOMU_INITRD = "/run/xdh/initrd.img"
DOMU_CFG = "/run/xdh/domu.cfg"

# The domU's kernel and initramfs come from its own image, so they match its modules ($1: its root);
# the ones the image build chose ($2, $3: file names under /boot), e.g. your kernel beside Debian's.
EXTRACT_DOMU_KERNEL = ("set -e; m=/run/xdh/domu-root; mkdir -p $m; mount -o ro,noload \"$1\" $m; "
                       f"cp \"$m/boot/$2\" {DOMU_KERNEL}; cp \"$m/boot/$3\" {DOMU_INITRD}; umount $m")
# the domU's network: a bridge local to dom0, link-local addresses, routed nowhere
BRIDGE = ("ip link show xenbr0 >/dev/null 2>&1 || ip link add xenbr0 type bridge; "
          f"ip addr replace {DOM0_BRIDGE_IP}/24 dev xenbr0; ip link set xenbr0 up")


def _xl_list(key: str, items: list[str]) -> str:
    return f"{key} = [ " + ", ".join(f'"{x}"' for x in items) + " ]"


def domu_config(config: StackConfig, backend: Backend, root_dev: str, dut_dev: str) -> str:
    """The xl config of the domU: its root through blkback, the disk under test through ``backend``."""
    disks = [f"format=raw,vdev=xvda,access=rw,backendtype=phy,target={root_dev}",
             backend.xl_disk(dut_dev, DUT_VDEV)]
    return "\n".join([
        f'name = "{DOMU_NAME}"',
        'type = "pv"',
        f'kernel = "{DOMU_KERNEL}"',
        *([f'ramdisk = "{DOMU_INITRD}"'] if config.domu_initrd or not config.domu_kernel else []),
        f'extra = "{DOMU_ARGS}"',
        f"memory = {config.domu_mem_mib}",
        f"vcpus = {config.domu_vcpus}",
        "disk = [ " + ", ".join(f'"{d}"' for d in disks) + " ]",
        f'vif = [ "bridge=xenbr0,mac={DOMU_MAC}" ]',
        'on_crash = "preserve"',
        *([f'device_model_override = "{config.device_model}"', 'device_model_version = "qemu-xen"']
          if config.device_model else []),
        *([_xl_list("device_model_args", dm_args)] if (dm_args := backend.device_model_args(dut_dev, DUT_VDEV))
          else []),
        "",
    ])
