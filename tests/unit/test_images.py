"""Image recipes: loading, validation and the cache digest (no build)."""

import shutil

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
