"""The fast path's pure parts: restore/hot-plug argv, snapshot keys, verify-mode choice,
bench arithmetic (no VM)."""

from dataclasses import asdict
from pathlib import Path

import pytest

from harness.campaign import bench
from harness.campaign.campaign import canary_config
from harness.catalog.workloads import get as workload
from harness.config import CutMode, StackConfig, TortureConfig
from harness.crash.plan import CutPlan
from harness.errors import ConfigError
from harness.images import BuiltImage
from harness.report.records import CampaignSummary, IterationRecord
from harness.stack.saved import snapshot_key
from harness.status import Status
from harness.vm.accel import AccelChoice
from harness.vm.argv import Drive, MachineSpec, build_argv


def _spec(**kw):
    return MachineSpec(accel=AccelChoice("tcg", "t"), kernel=Path("/k"), append="root=/dev/vda",
                       initrds=[(Path("/i"), "")], drives=[Drive("root", Path("/r.qcow2"))], ssh_port=4000, **kw)


def test_restore_passes_the_state_as_an_inherited_fd():
    argv = build_argv(_spec(incoming_fd=7), Path("/q"), Path("/s"))
    assert argv[argv.index("-incoming") + 1] == "fd:7"
    assert "-incoming" not in build_argv(_spec(), Path("/q"), Path("/s"))


def test_verifier_machine_has_a_scsi_bus_and_a_static_guest_forward():
    argv = build_argv(_spec(scsi_hotplug=True, net_options="net=169.254.77.0/24,host=169.254.77.1",
                            guest_ssh="169.254.77.2"), Path("/q"), Path("/s"))
    assert "virtio-scsi-pci,id=scsi0" in argv
    netdev = argv[argv.index("-netdev") + 1].split(",")
    assert "restrict=on" in netdev and "net=169.254.77.0/24" in netdev
    assert "hostfwd=tcp:127.0.0.1:4000-169.254.77.2:22" in netdev
    assert argv[argv.index("-initrd") + 1] == "/i"


def _img(name, digest):
    return BuiltImage(name=name, digest=digest, dir=None, host_key="ssh-ed25519 AAAA", artifacts={}, packages={},
                      built_at="", build_seconds=0, root_device="/dev/vda")


def test_snapshot_key_follows_everything_that_shapes_the_machine():
    imgs = (_img("dom0", "a" * 16), _img("domu", "b" * 16))
    cfg = asdict(StackConfig())
    m = {"accel": "tcg", "qemu": "QEMU emulator version 7.2.x"}
    k = snapshot_key(cfg, imgs, m)
    assert k == snapshot_key(dict(cfg), imgs, dict(m))
    assert k == snapshot_key(cfg | {"boot_timeout": 999.0}, imgs, m)     # not part of the machine
    assert k != snapshot_key(cfg | {"backend": "phy"}, imgs, m)
    assert k != snapshot_key(cfg, (imgs[0], _img("domu", "c" * 16)), m)
    assert k != snapshot_key(cfg, imgs, m | {"qemu": "QEMU emulator version 8.0"})


def test_verify_mode_auto_is_fast_for_every_layout():
    assert TortureConfig().verify_mode() == "fast"
    q = TortureConfig(stack=StackConfig(backend="qdisk-qcow2"))
    assert q.verify_mode() == "fast"
    from harness.catalog.backends import get
    assert get("qdisk-qcow2").layout == "qcow2-in-ext4" and get("phy").layout == "raw"
    with pytest.raises(ConfigError, match="reset"):
        TortureConfig(reset="fork").validate()


def test_canary_is_always_verified_by_a_reboot():
    assert canary_config(TortureConfig()).verify == "both"
    assert canary_config(TortureConfig(verify="reboot")).verify == "reboot"
    assert canary_config(TortureConfig(stack=StackConfig(backend="qdisk-qcow2"))).verify == "both"


def test_the_reboot_verifier_restores_the_saved_stack_only_where_that_is_sound(tmp_path):
    """Restored onto the crash image: only the kit's own stack, never qdisk-qcow2 (dom0 holds the
    saved bytes' ext4 and qcow2 tables in memory), a cold boot without a saved stack."""
    from harness.campaign.kit import Kit
    from harness.images import ImageStore
    from harness.stack.boot import ColdBoot, Restore
    from harness.stack.saved import Snapshot
    snap = Snapshot(dir=tmp_path, key="k", created="now", seconds_to_build=1, seconds_to_save=1, state_bytes=1,
                    stack_info={})
    store = ImageStore(tmp_path)
    for backend, restored in (("qdisk", True), ("phy", True), ("qdisk-direct", True), ("qdisk-qcow2", False)):
        cfg = TortureConfig(stack=StackConfig(backend=backend))
        kit = Kit(cfg, tmp_path, store, None, lambda m: None)
        assert isinstance(kit.verifier("reboot", cfg.effective_stack()).boot_source(1), ColdBoot)
        kit.snapshot = snap
        source = kit.verifier("reboot", cfg.effective_stack()).boot_source(3)
        assert isinstance(source, Restore if restored else ColdBoot), backend
        if restored:
            assert source.snapshot is snap and source.guest_seed not in (0, 3)    # not the crash run's entropy
        # another stack than the one saved (e.g. a fault's own device model): booted
        other = StackConfig(backend=backend, device_model="/opt/qemu")
        assert isinstance(kit.verifier("reboot", other).boot_source(3), ColdBoot)


def test_config_round_trip_keeps_the_fast_path_choice():
    cfg = TortureConfig(reset="boot", verify="both")
    again = TortureConfig.from_json(cfg.to_json())
    assert (again.reset, again.verify) == ("boot", "both")


def test_verify_argv_names_the_device():
    argv = workload("direct").argv("verify", 5, {"blocks": 64, "device": "/dev/sda"})
    assert argv[argv.index("--device") + 1] == "/dev/sda" and "--ops" not in argv


def _summary(totals, statuses, setup=None, states=None):
    its = [IterationRecord(index=k, seed=k, name=f"iter-{k:04d}", status=Status(st), workload="append", fault="none",
                           backend="qdisk", cut=CutPlan(CutMode.ACKS, 20), seconds={"boot": t / 2, "total": t},
                           crash_states=n, states_generated=n + 1)
           for k, (t, st, n) in enumerate(zip(totals, statuses, states or [1] * len(totals), strict=True))]
    return CampaignSummary.make("run", {}, 1, None, its, sum(totals), setup_seconds=setup or {})


def test_bench_figures_and_ratio():
    base = bench.mode_figures(_summary([180, 160], ["pass", "pass"]), wall=340)
    fast = bench.mode_figures(_summary([12, 8], ["pass", "error"], {"snapshot": 90, "verifier": 30}), wall=140)
    states = bench.mode_figures(_summary([40, 50], ["pass", "pass"], {"verifier": 1}, [300, 500]), wall=61)
    assert base["iterations_per_hour"] == 21.2 and base["seconds_per_iteration"] == 170.0
    assert fast["seconds_per_iteration"] == 10.0 and fast["iterations_per_hour"] == 360.0   # wall minus setup
    assert fast["verified"] == 1 and fast["verified_states_per_hour"] == 180.0   # an error verifies nothing
    assert states["states_verified"] == 800 and states["verified_states_per_hour"] == 48000.0
    assert states["states_generated"] == 802
    r = bench.ratios({"baseline": base, "fast": fast, "states": states})
    assert r["fast/baseline"]["steady"] == round(360.0 / base["iterations_per_hour"], 1)
    assert r["states/fast"]["steady"] == round(48000.0 / 180.0, 1)
    text = bench.table({"modes": {"baseline": base, "fast": fast, "states": states}, "ratio": r})
    assert "ratio fast/baseline" in text and "ratio states/fast" in text and "crash states per hour" in text


def test_bench_rejects_unknown_modes():
    with pytest.raises(ConfigError, match="bench mode"):
        bench.BenchConfig(modes=("baseline", "turbo")).validate()
