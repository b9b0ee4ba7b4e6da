"""Package locks, and images moved between caches (export / import), on fake images: no
mmdebstrap, no VM. The real builds and a real import are in docs/ci.md's two-cache run."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ConfigError, ImageError
from harness.images import ImageStore, store, transfer
from harness.images.built import BuiltImage
from harness.images.lock import PackageLock, check, differences, preferences
from harness.stack.saved import Snapshot, drop_snapshots_of

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheUnitTestsOnly xdh-harness"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAnotherFakeKeyOfAnotherCache xdh-harness"
PACKAGES = {"xen-hypervisor-4.17-amd64": "4.17.7+13-g2445b30a44-0+deb12u1", "linux-image-amd64": "6.1.192-3"}


def _cache(root: Path, pub: str = KEY) -> ImageStore:
    s = ImageStore(root)
    s.keys_dir.mkdir(parents=True)
    s.client_key.write_text(f"private of {pub}\n")
    s.client_key.with_suffix(".pub").write_text(pub + "\n")
    return s


def _image(s: ImageStore, name: str, packages: dict[str, str] | None = None, host: str = "HOST") -> BuiltImage:
    """A built image where this checkout's recipe puts it: a sparse rootfs, a kernel, a manifest."""
    digest = s.recipe(name).digest(s.client_pubkey())
    d = s.images_dir / f"{name}-{digest}"
    d.mkdir(parents=True)
    with open(d / "rootfs.img", "wb") as f:      # sparse: 64 MiB, 4 KiB of it written
        f.seek(32 << 20)
        f.write(b"x" * 4096)
        f.truncate(64 << 20)
    (d / "vmlinuz").write_bytes(b"kernel " + name.encode())
    img = BuiltImage(name=name, digest=digest, dir=d, host_key=f"ssh-ed25519 {host}", artifacts={"kernel": "vmlinuz"},
                     packages=dict(packages or PACKAGES), build_seconds=1.0, built_at="now", root_device="/dev/xvda")
    (d / "manifest.json").write_text(json.dumps(img.to_json() | {"dir": None}))
    return img


# --- locks ----------------------------------------------------------------------------------
def test_a_lock_names_every_package_that_differs_and_pins_apt_to_it():
    pins = {"xen-hypervisor-4.17-amd64": "4.17.5+72-g01140da4e8-1", "linux-image-amd64": "6.1.192-3", "gone": "1"}
    got = dict(PACKAGES, extra="2")
    assert differences(pins, got) == [
        "xen-hypervisor-4.17-amd64 4.17.5+72-g01140da4e8-1 (installed 4.17.7+13-g2445b30a44-0+deb12u1: "
        "the release no longer serves 4.17.5+72-g01140da4e8-1)",
        "gone 1 (not installed)", "extra 2 (installed, not in the lock)"]
    assert differences(PACKAGES, PACKAGES) == []
    with pytest.raises(ImageError) as e:
        check("dom0", pins, got, "ci/packages.lock")
    assert e.value.oneline().startswith("dom0: not the locked packages: xen-hypervisor-4.17-amd64 4.17.5")
    assert "ci/packages.lock" in e.value.hint
    assert preferences({"b": "2", "a": "1"}) == ("Package: a\nPin: version 1\nPin-Priority: 1001\n\n"
                                                  "Package: b\nPin: version 2\nPin-Priority: 1001\n\n")


def test_a_lock_round_trips_and_a_wrong_file_is_one_line(tmp_path):
    lock = PackageLock("bookworm", {"dom0": PACKAGES})
    lock.write(tmp_path / "l.lock")
    assert PackageLock.read(tmp_path / "l.lock") == lock
    (tmp_path / "bad.lock").write_text('{"schema": 2, "release": "bookworm"}')
    with pytest.raises(ConfigError, match="is not a package lock"):
        PackageLock.read(tmp_path / "bad.lock")


@pytest.fixture
def fake_builds(monkeypatch):
    """build_image replaced: records what it was asked for, writes an image with the pinned versions."""
    calls: list[tuple[str, dict | None]] = []

    def fake(recipe, digest, pub, images_dir, progress, pins=None, lock_path=""):
        calls.append((recipe.name, pins))
        final = images_dir / f"{recipe.name}-{digest}"
        if final.exists():
            for f in final.iterdir():
                f.unlink()
            final.rmdir()
        final.mkdir(parents=True)
        img = BuiltImage(name=recipe.name, digest=digest, dir=final, host_key="ssh-ed25519 NEW", artifacts={},
                         packages=dict(pins or PACKAGES), build_seconds=1.0, built_at="now", root_device="/dev/xvda")
        (final / "manifest.json").write_text(json.dumps(img.to_json() | {"dir": None}))
        return img
    monkeypatch.setattr(store, "build_image", fake)
    return calls


def test_build_with_a_lock_rebuilds_only_an_image_holding_other_versions(tmp_path, fake_builds):
    s = _cache(tmp_path / "cache")
    _image(s, "dom0")
    _image(s, "domu")
    same = PackageLock("bookworm", {"dom0": PACKAGES, "domu": PACKAGES})
    assert [b for _, b in s.build(lock=same)] == [False, False] and fake_builds == []
    older = dict(PACKAGES, **{"xen-hypervisor-4.17-amd64": "4.17.5+72-g01140da4e8-1"})
    said: list[str] = []
    built = s.build(lock=PackageLock("bookworm", {"dom0": older, "domu": PACKAGES}), lock_path="l.lock",
                    progress=said.append)
    assert [b for _, b in built] == [True, False] and fake_builds == [("dom0", older)]
    assert any("holds other package versions than l.lock: rebuilding" in m for m in said)
    with pytest.raises(ImageError, match="is for trixie, not bookworm"):
        s.build(lock=PackageLock("trixie", {}))


def test_an_image_rebuilt_in_place_takes_its_saved_machines_with_it(tmp_path):
    s = _cache(tmp_path / "cache")
    root = tmp_path / "cache/snapshots"
    for key, images in (("stack", {"dom0": "d0", "domu": "du"}), ("verifier-x", {"domu": "du"}),
                        ("other", {"dom0": "e0", "domu": "eu"})):
        (root / key).mkdir(parents=True)
        Snapshot(dir=root / key, key=key, stack_info={"versions": {"images": images}}).write(root / key)
    (root / "stack" / "state.bin").write_bytes(b"s")
    (root / "stack" / "state.bin").chmod(0o444)
    removed = drop_snapshots_of(s, {"du"})
    assert sorted(p.name for p in removed) == ["stack", "verifier-x"]
    assert sorted(p.name for p in root.iterdir()) == ["other"]


# --- export / import --------------------------------------------------------------------------
def test_images_move_between_two_caches_with_their_key_and_hashes(tmp_path):
    a = _cache(tmp_path / "a")
    imgs = [_image(a, "dom0"), _image(a, "domu")]
    bundle_file = tmp_path / "images.tar"
    bundle = transfer.export(a, imgs, bundle_file, lambda m: None)
    assert {i.digest for i in bundle.images} == {i.digest for i in imgs}
    with tarfile.open(bundle_file) as tar:
        names = tar.getnames()
    assert transfer.INDEX in names and "keys/id_ed25519" in names
    assert bundle_file.stat().st_blocks * 512 < 4 << 20, "the sparse rootfs stayed sparse"

    b = ImageStore(tmp_path / "b")              # a fresh runner: no key, no images
    rows = transfer.import_(b, bundle_file, lambda m: None)
    assert [(r.image.name, r.status, r.current) for r in rows] == [("dom0", "imported", True),
                                                                    ("domu", "imported", True)]
    assert b.client_pubkey() == KEY and (b.client_key.stat().st_mode & 0o777) == 0o600
    assert b.pair().dom0.digest == imgs[0].digest      # what a run on b boots
    assert (b.pair().dom0.rootfs.stat().st_blocks * 512) < 1 << 20
    again = transfer.import_(b, bundle_file, lambda m: None)
    assert [r.status for r in again] == ["present", "present"]
    assert not list(b.images_dir.glob(".import-*"))


def test_an_import_refuses_another_key_and_damaged_bytes(tmp_path):
    a = _cache(tmp_path / "a")
    bundle_file = tmp_path / "images.tar"
    transfer.export(a, [_image(a, "dom0")], bundle_file, lambda m: None)
    with pytest.raises(ImageError, match="has its own SSH client key"):
        transfer.import_(_cache(tmp_path / "c", OTHER), bundle_file, lambda m: None)

    work = tmp_path / "unpacked"                # one byte of the rootfs changed in transit
    work.mkdir()
    subprocess.run(["tar", "-xf", str(bundle_file), "-C", str(work)], check=True)
    rootfs = next(work.glob("images/dom0-*/rootfs.img"))
    with open(rootfs, "r+b") as f:
        f.seek(32 << 20)
        f.write(b"y")
    subprocess.run(["tar", "--sparse", "-cf", str(bundle_file), "-C", str(work), *(p.name for p in work.iterdir())],
                   check=True)
    fresh = ImageStore(tmp_path / "d")
    with pytest.raises(ImageError, match=r"dom0-\w+ in .* is damaged: rootfs.img differ"):
        transfer.import_(fresh, bundle_file, lambda m: None)
    assert not fresh.client_key.exists() and not list(fresh.images_dir.iterdir())


def test_the_cli_says_in_one_line_what_is_wrong(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "not.tar").write_text("hello")
    assert main(["images", "import", str(tmp_path / "not.tar")]) == 2
    assert main(["images", "import", str(tmp_path / "missing.tar")]) == 2
    assert main(["images", "build", "--lock", str(tmp_path / "missing.lock")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("xdh: error:") for line in err), err
    assert "not.tar is not an xdh image export: tar: " in err[0] and "`xdh images export`" in err[0]
    assert "missing.tar does not exist" in err[1] and "missing.lock does not exist" in err[2]

