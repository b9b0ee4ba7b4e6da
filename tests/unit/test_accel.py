"""Accelerator choice (no VM): KVM only when a probe guest booted under it."""

import json

import pytest

from harness.errors import ConfigError
from harness.vm import accel


def test_auto_without_working_kvm_falls_back_to_tcg():
    c = accel.decide("auto", False, "a kernel under KVM printed nothing useful in 25 s")
    assert c.accel == "tcg" and "printed nothing" in c.reason
    assert c.qemu_args()[-1].startswith("max,-smap,-smep")


def test_auto_with_working_kvm_uses_kvm():
    assert accel.decide("auto", True, "booted").accel == "kvm"


def test_forced_tcg_skips_probe():
    assert accel.decide("tcg", None, "").accel == "tcg"


def test_forced_kvm_on_broken_kvm_is_a_clear_error():
    with pytest.raises(ConfigError) as ei:
        accel.decide("kvm", False, "/dev/kvm does not exist")
    assert "/dev/kvm does not exist" in str(ei.value) and "--accel" in ei.value.hint


def test_unknown_accel():
    with pytest.raises(ConfigError):
        accel.decide("whpx", None, "")


def test_cached_probe_result_is_used(tmp_path, monkeypatch):
    kernel = tmp_path / "vmlinuz-test"
    kernel.write_bytes(b"")
    calls = []
    monkeypatch.setattr(accel, "probe_kvm", lambda q, k: calls.append(k) or (False, "probe says no"))
    first = accel.choose("auto", "qemu-system-x86_64", kernel, tmp_path)
    second = accel.choose("auto", "qemu-system-x86_64", kernel, tmp_path)
    assert first.accel == second.accel == "tcg"
    assert len(calls) == 1 and "cached" in second.reason
    assert json.loads((tmp_path / "kvm-probe-vmlinuz-test.json").read_text())["usable"] is False
    # another release's kernel is probed once too, and does not evict the first result
    other = tmp_path / "vmlinuz-other"
    other.write_bytes(b"")
    accel.choose("auto", "qemu-system-x86_64", other, tmp_path)
    accel.choose("auto", "qemu-system-x86_64", kernel, tmp_path)
    assert len(calls) == 2


def test_missing_kvm_device(monkeypatch):
    monkeypatch.setattr(accel.os.path, "exists", lambda p: False)
    ok, why = accel.kvm_device_ok()
    assert not ok and "does not exist" in why
