"""Outer QEMU command-line assembly (no VM)."""

from pathlib import Path

from harness.vm.accel import AccelChoice
from harness.vm.argv import Drive, MachineSpec, build_argv, quote_optarg


def _spec(accel="tcg", port=40022):
    return MachineSpec(
        accel=AccelChoice(accel, "test"),
        kernel=Path("/c/xen-4.17-amd64"),
        append="console=com1 dom0_mem=1536M,max:1536M",
        initrds=[(Path("/c/vmlinuz"), "console=hvc0 root=/dev/vda"), (Path("/c/initrd.img"), "")],
        drives=[Drive("dom0-root", Path("/r/dom0-root.qcow2")), Drive("dut", Path("/r/a,b/dut.img"), "raw")],
        ssh_port=port,
    )


def _opt(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_is_a_list_of_strings():
    argv = build_argv(_spec(), Path("/s/qmp.sock"), Path("/r/serial.log"))
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert argv[0] == "qemu-system-x86_64"


def test_tcg_hides_smap_smep():
    argv = build_argv(_spec("tcg"), Path("/s/q"), Path("/r/s"))
    assert _opt(argv, "-cpu")[0].startswith("max,-smap,-smep,")
    assert "-avx2" in _opt(argv, "-cpu")[0].split(",")
    assert _opt(argv, "-accel")[0].startswith("tcg")


def test_kvm_uses_host_cpu():
    argv = build_argv(_spec("kvm"), Path("/s/q"), Path("/r/s"))
    assert _opt(argv, "-accel") == ["kvm"] and _opt(argv, "-cpu") == ["host"]


def test_network_is_restricted_and_loopback_only():
    argv = build_argv(_spec(port=41234), Path("/s/q"), Path("/r/s"))
    (netdev,) = _opt(argv, "-netdev")
    assert "restrict=on" in netdev.split(",")
    assert "hostfwd=tcp:127.0.0.1:41234-:22" in netdev.split(",")


def test_multiboot_modules_and_comma_escaping():
    argv = build_argv(_spec(), Path("/s/q"), Path("/r/s"))
    assert _opt(argv, "-kernel") == ["/c/xen-4.17-amd64"]
    assert _opt(argv, "-initrd") == ["/c/vmlinuz console=hvc0 root=/dev/vda,/c/initrd.img"]
    blockdevs = _opt(argv, "-blockdev")
    assert any("filename=/r/a,,b/dut.img" in b for b in blockdevs)
    assert quote_optarg("a,b,,c") == "a,,b,,,,c"


def test_each_outer_disk_is_its_own_device_with_a_serial():
    argv = build_argv(_spec(), Path("/s/q"), Path("/r/s"))
    devices = _opt(argv, "-device")
    assert "virtio-blk-pci,drive=dom0-root,serial=dom0-root" in devices
    assert "virtio-blk-pci,drive=dut,serial=dut" in devices
    assert any(b.startswith("driver=raw,node-name=dut,") for b in _opt(argv, "-blockdev"))


def test_qmp_and_serial_go_to_files_and_sockets():
    argv = build_argv(_spec(), Path("/s/qmp.sock"), Path("/r/serial.log"))
    chardevs = _opt(argv, "-chardev")
    assert "socket,id=qmp,path=/s/qmp.sock" in chardevs
    assert "file,id=serial0,path=/r/serial.log" in chardevs
    assert "-no-reboot" in argv and "-nodefaults" in argv
