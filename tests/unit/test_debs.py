"""Your own .debs: inspected, hashed into the image digest, preferred at boot, passed to reruns."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from harness.cli import main
from harness.components import Components
from harness.config import StackConfig, TortureConfig
from harness.crash.plan import IterationPlan
from harness.errors import ConfigError
from harness.images import ImageStore, Recipe
from harness.images.build import pick
from harness.images.debs import inspect, inspect_all
from harness.report.records import IterationRecord
from harness.report.rundir import RunDir
from harness.stack import inputs
from harness.status import Status


def make_deb(tmp: Path, package: str = "linux-image-9.9.9-xdh", version: str = "9.9.9-1",
             files: tuple[str, ...] = ("boot/vmlinuz-9.9.9-xdh",), arch: str = "amd64") -> Path:
    root = tmp / f"{package}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
                                         "Maintainer: t <t@example.org>\nDescription: test\n")
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(f"{package} {version}\n")
    out = tmp / f"{package}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)], check=True, capture_output=True)
    return out


def test_a_deb_is_known_by_its_control_fields_hash_and_boot_files(tmp_path):
    deb = inspect(str(make_deb(tmp_path)))
    assert (deb.package, deb.version, deb.architecture) == ("linux-image-9.9.9-xdh", "9.9.9-1", "amd64")
    assert deb.boot_files == ("boot/vmlinuz-9.9.9-xdh",) and len(deb.sha256) == 64


@pytest.mark.parametrize("bad, message", [("missing.deb", "does not exist"), ("notadeb.deb", "not a readable .deb")])
def test_a_bad_package_file_is_a_config_error(tmp_path, bad, message):
    (tmp_path / "notadeb.deb").write_text("hello")
    with pytest.raises(ConfigError, match=message):
        inspect(str(tmp_path / bad))


def test_a_package_for_another_architecture_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="architecture 'arm64'"):
        inspect(str(make_deb(tmp_path, arch="arm64")))


def test_the_same_package_twice_is_refused(tmp_path):
    a = make_deb(tmp_path / "a")
    b = make_deb(tmp_path / "b", version="9.9.9-2")
    with pytest.raises(ConfigError, match="two files for package"):
        inspect_all((str(a), str(b)))


def test_the_image_digest_follows_the_package_content_not_its_path(tmp_path):
    key = "ssh-ed25519 AAAA"
    stock = Recipe.load("domu").digest(key)
    a = make_deb(tmp_path / "a")
    with_a = Recipe.load("domu", debs=inspect_all((str(a),))).digest(key)
    moved = tmp_path / "elsewhere.deb"
    moved.write_bytes(a.read_bytes())
    with_moved = Recipe.load("domu", debs=inspect_all((str(moved),))).digest(key)
    rebuilt = make_deb(tmp_path / "b", version="9.9.9-2")
    with_rebuilt = Recipe.load("domu", debs=inspect_all((str(rebuilt),))).digest(key)
    assert stock != with_a == with_moved != with_rebuilt
    assert Recipe.load("dom0").digest(key) == Recipe.load("dom0").digest(key)


def test_the_image_boots_the_kernel_your_package_ships(tmp_path):
    tree = tmp_path
    debian, own = str(tree / "boot/vmlinuz-6.1.0-41-amd64"), str(tree / "boot/vmlinuz-5.99-mine")
    assert pick([debian, own], tree, {"boot/vmlinuz-5.99-mine"}) == own      # older by name, still yours
    assert pick([own, debian], tree, set()) == debian                          # stock: the last by name


def test_missing_images_for_your_debs_name_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDH_CACHE", str(tmp_path / "cache"))
    deb = make_deb(tmp_path)
    store = ImageStore(tmp_path / "cache")
    store.client_pubkey(create=True)
    with pytest.raises(Exception, match="not built") as err:
        store.pair(Components(domu_debs=(str(deb),)))
    assert f"--domu-deb {deb}" in str(getattr(err.value, "hint", ""))


def test_a_missing_deb_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    assert main(["torture", "--domu-deb", str(tmp_path / "nope.deb"), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.deb does not exist" in err[0]


@pytest.fixture
def recorded_with_deb(tmp_path):
    deb = make_deb(tmp_path)
    cfg = TortureConfig(fault="drop-flush", seed=7, stack=StackConfig(domu_debs=(str(deb),)))
    plan = IterationPlan.make(cfg, 0)
    it = RunDir(tmp_path / "run").create().iteration(0)
    it.write_meta(plan.index, plan.seed, plan.name, plan.cut.to_json(), cfg.to_json())
    it.write_result(IterationRecord(0, plan.seed, plan.name, Status.LOSS, "append", "drop-flush", "qdisk",
                                    plan.cut, acked=5, lost_acked=5))
    return it, deb


@pytest.mark.parametrize("extra, expect_debs", [([], True), (["--stock"], False), (["--domu-deb", "OTHER"], True)])
def test_rerun_keeps_drops_or_replaces_the_recorded_debs(tmp_path, recorded_with_deb, extra, expect_debs,
                                                         monkeypatch):
    it, deb = recorded_with_deb
    other = make_deb(tmp_path / "o", version="9.9.9-3")
    extra = [str(other) if x == "OTHER" else x for x in extra]
    seen = []

    def fake_run_iteration(p, kit, where, progress):
        seen.append(p.cfg.stack)
        return IterationRecord(p.index, p.seed, p.name, Status.PASS, "append", p.cfg.fault, "qdisk",
                               p.cut, acked=5)
    monkeypatch.setattr("harness.campaign.reproduce.run_iteration", fake_run_iteration)
    monkeypatch.setattr("harness.campaign.reproduce.Kit", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(ImageStore, "pair", lambda self, spec="bookworm": ("images of", spec))
    assert main(["reproduce", str(it.path), "--rerun", *extra]) == 0
    (stack,), = [seen]
    want = (str(other),) if "--domu-deb" in extra else ((str(deb),) if expect_debs else ())
    assert stack.domu_debs == want and stack.release == "bookworm"


def test_build_sources_gain_source_lines_in_both_formats():
    from harness.images.devmodel import with_source_lines
    deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n"
    assert with_source_lines(deb822).startswith("Types: deb deb-src\n")
    one_line = "deb http://deb.debian.org/debian bookworm main\n# deb http://x y z\n"
    assert with_source_lines(one_line).splitlines() == ["deb http://deb.debian.org/debian bookworm main",
                                                        "deb-src http://deb.debian.org/debian bookworm main",
                                                        "# deb http://x y z"]


def test_qdisk_direct_takes_the_cached_aio_device_model_or_names_the_command(tmp_path):
    from harness.errors import ImageError
    from harness.images import devmodel
    from harness.releases import get
    with pytest.raises(ImageError, match="none is cached for trixie") as err:
        devmodel.dom0_debs(True, "trixie", (), root=tmp_path)
    assert "xdh images devmodel --release trixie" in str(err.value.hint)
    assert devmodel.dom0_debs(False, "trixie", (), root=tmp_path) == ()      # other backends: nothing added
    own = str(make_deb(tmp_path, package="qemu-system-xen", version="1:7.2+mine", files=()))
    assert devmodel.dom0_debs(True, "trixie", (own,), root=tmp_path) == (own,)   # yours wins
    d = devmodel.cache_dir(get("trixie"), tmp_path)
    d.mkdir(parents=True)
    (d / "q.deb").write_bytes(b"x")
    (d / "devmodel.json").write_text('{"deb": "q.deb", "version": "v", "source_version": "s", "build_seconds": 1}')
    assert devmodel.dom0_debs(True, "trixie", (), root=tmp_path) == (str(d / "q.deb"),)


def test_a_rerun_on_another_release_takes_that_releases_device_model(tmp_path, monkeypatch):
    """The recorded qdisk-direct stack names bookworm's device model; on trixie it must be trixie's,
    and --stock keeps the one the backend needs."""
    from harness.campaign.reproduce import other_stack
    from harness.images import devmodel
    from harness.releases import get
    monkeypatch.setenv("XDH_CACHE", str(tmp_path))
    built = {}
    for rel in ("bookworm", "trixie"):
        d = devmodel.cache_dir(get(rel))
        d.mkdir(parents=True)
        (d / "q.deb").write_bytes(b"x")
        (d / "devmodel.json").write_text('{"deb": "q.deb", "version": "v", "source_version": "s", '
                                         '"build_seconds": 1}')
        built[rel] = str(d / "q.deb")
    recorded = inputs.completed(StackConfig(backend="qdisk-direct"))
    assert recorded.dom0_debs == (built["bookworm"],)
    assert other_stack(recorded, release="trixie").dom0_debs == (built["trixie"],)
    assert other_stack(recorded, stock=True).dom0_debs == (built["bookworm"],)
