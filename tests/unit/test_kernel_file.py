"""Your domU kernel from a build tree: its release read from the file, checked at boot, in the
record and the snapshot key; the xl config boots it without an initramfs unless given one."""

from __future__ import annotations

import dataclasses

import pytest

from harness.catalog import backends
from harness.config import StackConfig
from harness.errors import ConfigError
from harness.images import kernel
from harness.stack import inputs
from harness.stack.xl import domu_config


def bzimage(release: str = "6.13.0-rc1-mine") -> bytes:
    """The parts of an x86 boot image the release is read from: the setup header's magic and its
    kernel_version pointer (relative to 0x200) to "release (user@host) #1 ..."."""
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x300 - 0x200).to_bytes(2, "little")
    text = f"{release} (dev@box) #1 SMP PREEMPT_DYNAMIC\0".encode()
    data[0x300:0x300 + len(text)] = text
    return bytes(data)


def test_the_release_comes_from_a_bzimage_or_a_vmlinux():
    assert kernel.release_of(bzimage()) == "6.13.0-rc1-mine"
    elf = b"\x7fELF" + b"\0" * 100 + b"Linux version 6.12.0-xdh+ (dev@box) (gcc 12) #3 SMP\n"
    assert kernel.release_of(elf) == "6.12.0-xdh+"
    assert kernel.release_of(b"MZ not a kernel") == ""


def test_a_build_tree_means_its_bzimage(tmp_path):
    (tmp_path / "arch/x86/boot").mkdir(parents=True)
    (tmp_path / "arch/x86/boot/bzImage").write_bytes(bzimage())
    path = kernel.resolve(str(tmp_path))
    assert path.endswith("arch/x86/boot/bzImage") and kernel.inspect(path).release == "6.13.0-rc1-mine"


@pytest.mark.parametrize("cfg, message", [
    ({"domu_kernel": "/nonexistent/bzImage"}, "does not exist"),
    ({"domu_kernel": "NOTAKERNEL"}, "not a Linux kernel image"),
    ({"domu_initrd": "/x/initrd.img"}, "--domu-initrd needs --domu-kernel"),
])
def test_bad_kernel_files_are_config_errors(tmp_path, cfg, message):
    (tmp_path / "junk").write_bytes(b"junk" * 100)
    cfg = {k: (str(tmp_path / "junk") if v == "NOTAKERNEL" else v) for k, v in cfg.items()}
    with pytest.raises(ConfigError, match=message):
        inputs.check(StackConfig(**cfg))


def test_xl_boots_your_kernel_without_the_images_initramfs(tmp_path):
    k = tmp_path / "bzImage"
    k.write_bytes(bzimage())
    qdisk = backends.get("qdisk")
    stock = domu_config(StackConfig(), qdisk, "/dev/vdb", "/dev/vdc")
    own = domu_config(StackConfig(domu_kernel=str(k)), qdisk, "/dev/vdb", "/dev/vdc")
    with_initrd = domu_config(StackConfig(domu_kernel=str(k), domu_initrd=str(k)), qdisk, "/dev/vdb", "/dev/vdc")
    assert "ramdisk" in stock and "ramdisk" not in own and "ramdisk" in with_initrd


def test_your_kernel_is_in_the_record_and_in_the_snapshot_key(tmp_path, monkeypatch):
    from harness.stack import xen
    k = tmp_path / "bzImage"
    k.write_bytes(bzimage())
    cfg = StackConfig(domu_kernel=str(k))
    rec = xen.own_kernel(cfg)["domu_kernel_file"]
    assert rec["release"] == "6.13.0-rc1-mine" and len(rec["sha256"]) == 64 and rec["initrd"] == {}
    k.write_bytes(bzimage("6.13.0-rc1-mine-v2"))     # rebuilt in place: another key
    assert xen.own_kernel(dataclasses.replace(cfg))["domu_kernel_file"]["sha256"] != rec["sha256"]


def test_the_saved_stack_follows_your_kernels_content_not_its_path(tmp_path):
    """The same kernel copied elsewhere restores the same saved stack (a build tree moved, a
    test's tmp directory); another kernel at the same path does not."""
    from harness.jsonio import without_paths
    from harness.stack import xen
    from harness.stack.saved import snapshot_key

    def key(path) -> str:
        cfg = StackConfig(domu_kernel=str(path))
        own = {k: without_paths(v) for k, v in xen.own_kernel(cfg).items()}
        return snapshot_key(dataclasses.asdict(cfg), (FakeImage("a"), FakeImage("b")), own)   # type: ignore[arg-type]

    a, b = tmp_path / "a" / "bzImage", tmp_path / "b" / "bzImage"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(bzimage())
    assert key(a) == key(b)
    b.write_bytes(bzimage("6.13.0-rc1-mine-v2"))
    assert key(a) != key(b)
    stock = snapshot_key(dataclasses.asdict(StackConfig()), (FakeImage("a"), FakeImage("b")), {})  # type: ignore[arg-type]
    assert stock not in (key(a), key(b))


@dataclasses.dataclass
class FakeImage:
    digest: str
