"""Your own .deb in an image, for real: mmdebstrap installs it beside the release's packages, the
manifest records it, and the image digest is its own (no VM: the package is read off the image)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.components import Components
from harness.images import ImageStore
from tests.unit.test_debs import make_deb

pytestmark = pytest.mark.stack


def test_a_local_deb_is_installed_recorded_and_keyed(images: ImageStore, tmp_path):
    deb = make_deb(tmp_path, package="xdh-marker", version="1.0-xdh1",
                   files=("usr/share/xdh-marker/hello",), arch="all")
    spec = Components(domu_debs=(str(deb),))
    (img, built), = images.build(("domu",), spec=spec, progress=lambda m: print(m, flush=True))
    try:
        assert img.digest != images.require("domu").digest          # not the stock image
        assert img.packages["xdh-marker"] == "1.0-xdh1"
        assert img.debs == [{"path": str(deb), "sha256": img.debs[0]["sha256"], "package": "xdh-marker",
                             "version": "1.0-xdh1", "architecture": "all"}]
        out = subprocess.run(["debugfs", "-R", "cat /usr/share/xdh-marker/hello", str(img.rootfs)],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == "xdh-marker 1.0-xdh1"
        assert images.pair(spec).domu.digest == img.digest                # a stack on these components finds it
        assert ["xdh-marker 1.0-xdh1"] in [r["debs"] for r in images.rows()]
    finally:
        shutil.rmtree(img.dir)
