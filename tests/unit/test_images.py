"""Image recipes: loading, validation and the cache digest (no build)."""

import shutil
from pathlib import Path

import pytest

from harness import images, paths
from harness.errors import ConfigError, ImageError


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    shutil.copytree(paths.IMAGES_DIR, root / "images")
    (root / "guests").mkdir()
    (root / "guests" / "tool").write_text("#!/bin/sh\n")
    monkeypatch.setattr(paths, "PROJECT_ROOT", root)
    monkeypatch.setattr(paths, "IMAGES_DIR", root / "images")
    monkeypatch.setattr(paths, "GUESTS_DIR", root / "guests")
    return root


def test_shipped_recipes_load():
    for name in images.IMAGE_NAMES:
        r = images.Recipe.load(name)
        assert "openssh-server" in r.packages and "linux-image-amd64" in r.packages
    dom0 = images.Recipe.load("dom0")
    assert {"xen-hypervisor-4.17-amd64", "xen-utils-4.17", "qemu-system-xen"} <= set(dom0.packages)
    assert "serial-getty@hvc0.service" in dom0.mask
    assert {"python3", "sqlite3", "xfsprogs"} <= set(images.Recipe.load("domu").packages)


def test_unknown_image_name():
    with pytest.raises(ConfigError):
        images.Recipe.load("dom1")


def test_digest_follows_every_input(project):
    r = images.Recipe.load("domu")
    d0 = r.digest("ssh-ed25519 AAAA k")
    assert r.digest("ssh-ed25519 AAAA k") == d0
    assert r.digest("ssh-ed25519 BBBB k") != d0                      # client key
    (project / "guests" / "tool").write_text("#!/bin/sh\necho\n")
    d1 = r.digest("ssh-ed25519 AAAA k")
    assert d1 != d0                                                   # guest programs
    (project / "images/domu/overlay/etc/extra").write_text("x")
    assert r.digest("ssh-ed25519 AAAA k") != d1                      # overlay files
    # dom0 does not install guests/: changing them does not rebuild dom0
    dom0 = images.Recipe.load("dom0")
    before = dom0.digest("k")
    (project / "guests" / "tool").write_text("changed")
    assert dom0.digest("k") == before


def test_recipe_with_unknown_key_is_rejected(project):
    p = project / "images/domu/recipe.toml"
    p.write_text(p.read_text() + "\nfrobnicate = 1\n")
    with pytest.raises(ImageError) as ei:
        images.Recipe.load("domu")
    assert "frobnicate" in str(ei.value)


def test_empty_store_lists_nothing(tmp_path):
    store = images.ImageStore(tmp_path)
    assert store.rows() == [] and store.current("dom0") is None
    assert store.clean() == []


def test_recipes_are_filled_per_release():
    from harness import releases
    b, t = images.Recipe.load("dom0", "bookworm"), images.Recipe.load("dom0", "trixie")
    assert "xen-hypervisor-4.17-amd64" in b.packages and "xen-utils-4.17" in b.packages
    assert "xen-hypervisor-4.20-amd64" in t.packages and "xen-utils-4.20" in t.packages
    assert b.extract["xen"] == "boot/xen-4.17-amd64.gz" and t.extract["xen"] == "boot/xen-4.20-amd64.gz"
    assert not any("{" in p for r in (b, t) for p in r.packages)
    assert b.digest("ssh-ed25519 AAAA k") != t.digest("ssh-ed25519 AAAA k")
    with pytest.raises(ConfigError, match="unknown release 'sid'"):
        images.Recipe.load("domu", "sid")
    assert releases.get("trixie").xen == "4.20"


def test_apt_sources_of_another_release_are_the_hosts_rewritten(tmp_path, monkeypatch):
    from harness import releases
    host = tmp_path / "debian.sources"
    host.write_text("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\n"
                    "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n")
    monkeypatch.delenv("XDH_APT_SOURCES", raising=False)
    monkeypatch.setattr("harness.images.build._host_sources", lambda: [str(host)])
    assert images.apt_sources(releases.get("bookworm"), tmp_path) == [str(host)]
    (out,) = images.apt_sources(releases.get("trixie"), tmp_path)
    text = Path(out).read_text()
    assert out.endswith(".sources") and "bookworm" not in text
    assert "Suites: trixie trixie-updates" in text and "Suites: trixie-security" in text
