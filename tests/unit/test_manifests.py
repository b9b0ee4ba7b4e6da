"""Your own workloads and faults: manifests read into the same values as the built-ins, their
argv, the packages they bring into the domU image, and the generic oracle models with their
positive and negative controls (pure, no VM)."""

import pytest

from harness.catalog import faults, workloads
from harness.catalog.workloads import Ack
from harness.components import Components
from harness.config import TortureConfig
from harness.errors import ConfigError
from harness.images.recipe import Recipe
from harness.stack.xen import dut_drive
from harness.verify.oracle import judge


def _workload(tmp_path, body='model = "set"\n', name="kv"):
    prog = tmp_path / "kv-fsync"
    prog.write_text("#!/usr/bin/env python3\n")
    prog.chmod(0o755)
    path = tmp_path / f"{name}.toml"
    path.write_text(f'schema = 1\nname = "{name}"\nsummary = "a kv store"\nprogram = "kv-fsync"\n' + body)
    return path


def acks(*ids):
    return [Ack(str(i), 100.0 + n) for n, i in enumerate(ids)]


def test_manifest_workload_argv_and_params(tmp_path):
    path = _workload(tmp_path, 'model = "prefix"\nsetup = true\npackages = ["postgresql"]\n'
                               '[params]\nrow_size = 256\nfast = true\n')
    w = workloads.get(str(path))
    assert (w.name, w.model, w.setup, w.packages, w.program) == ("kv", "prefix", True, ("postgresql",), "kv-fsync")
    assert w.argv("run", 7, w.params(512, {})) == ["kv-fsync", "run", "--seed", "7", "--dir", "/mnt/dut",
                                                    "--row-size", "256", "--fast", "true"]
    raw = workloads.get(str(_workload(tmp_path, 'model = "blocks"\nneeds_fs = false\n', "raw")))
    assert raw.argv("verify", 1, {"device": "/dev/dm-3"})[4:6] == ["--device", "/dev/dm-3"]
    assert w.describe()["program_sha256"]


def test_builtins_go_through_the_models():
    assert {n: workloads.get(n).model for n in workloads.WORKLOADS} == \
        {"append": "prefix", "replace": "register", "direct": "blocks", "sqlite": "prefix"}
    assert workloads.get("append").argv("run", 3, {"record_size": 512})[:3] == ["xdh-workload", "run", "append"]


def test_config_records_the_manifest_path_and_its_packages(tmp_path, monkeypatch):
    path = _workload(tmp_path, 'model = "set"\npackages = ["python3-psycopg2", "postgresql"]\n')
    monkeypatch.chdir(tmp_path)
    cfg = TortureConfig(workload="kv.toml")
    assert cfg.workload == str(path) and cfg.stack.domu_packages == ("python3-psycopg2", "postgresql")
    assert TortureConfig.from_json(cfg.to_json()) == cfg
    assert "domu:postgresql" in cfg.stack.components().describe()


def test_packages_make_another_domu_image():
    plain = Recipe.load("domu")
    pg = Recipe.load("domu", extra=("postgresql", "python3-psycopg2"))
    assert "postgresql" in pg.packages and "postgresql" not in plain.packages
    assert pg.digest("key") != plain.digest("key")
    assert Recipe.load("domu", extra=("python3-psycopg2", "postgresql")).digest("key") == pg.digest("key")
    assert Components(domu_packages=("x",)).packages("domu") == ("x",) and Components().stock


@pytest.mark.parametrize("body, error", [
    ('model = "set"\nschema = 2\n', "schema 2 is not supported"),
    ('model = "set"\npackages = ["Bad Name"]\n', "packages has bad entries"),
    ('model = "set"\n[params]\nx = [1]\n', "must be a name with a scalar value"),
    ('model = "set"\nneeds_fs = "yes"\n', "needs_fs must be true or false"),
    ('model = "set"\nverify_many = "yes"\n', "verify_many must be true or false"),
])
def test_bad_manifests_say_what_is_wrong(tmp_path, body, error):
    path = _workload(tmp_path, body, name="bad")
    text = path.read_text().replace("schema = 1\n", "") if "schema = 2" in body else path.read_text()
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):
        workloads.load(str(path))


def test_verify_many_is_a_flag_of_the_manifest(tmp_path):
    """Off unless the manifest says so (a verify process per crash state); the examples have it."""
    from harness import paths
    assert not workloads.load(str(_workload(tmp_path, 'model = "set"\n', "one"))).verify_many
    assert workloads.load(str(_workload(tmp_path, 'model = "set"\nverify_many = true\n', "many"))).verify_many
    for example in ("kvstore", "postgres"):
        assert workloads.load(str(paths.EXAMPLES_DIR / example / "workload.toml")).verify_many
    with pytest.raises(ConfigError) as err:
        workloads.load(str(_workload(tmp_path, 'model = "set"\nverify_many = 1\n', "bad")))
    assert err.value.oneline().endswith(": verify_many must be true or false (write verify_many = true or "
                                        "verify_many = false, a TOML boolean without quotes)")


# --- the generic oracle models: positive and negative controls --------------------------
def test_set_model(tmp_path):
    w = workloads.get(str(_workload(tmp_path)))
    ok = judge(w, acks("k1=1", "k2=1", "k1=2"), {"present": ["k1=1", "k1=2", "k2=1", "k9=1"]})
    assert ok.ok
    lost = judge(w, acks("k1=1", "k2=1", "k1=2"), {"present": ["k1=1"], "corrupt": ["k2=1"]})
    assert [(v.kind, v.count) for v in lost.violations] == [("lost", 1), ("corrupt", 1)]
    assert lost.lost_acked == 2 and "k1=2" in lost.violations[0].what
    broken = judge(w, acks("k1=1"), {"present": [], "error": "database refuses to start"})
    assert [v.kind for v in broken.violations] == ["integrity", "lost"]


def test_prefix_model(tmp_path):
    w = workloads.get(str(_workload(tmp_path, 'model = "prefix"\n')))
    assert judge(w, acks(0, 1, 2), {"present": [[0, 3]]}).ok          # the op in flight may be there too
    assert judge(w, acks(0, 1, 2), {"present": [[0, 2]], "error": None}).ok
    v = judge(w, acks(0, 1, 2), {"present": [[0, 0], [2, 2], [4, 4]]})
    assert [(x.kind, x.what) for x in v.violations] == [("lost", "acked ops 1"), ("hole", "ops 3 before durable op 4")]
    assert judge(w, acks(0, 1), {"present": [[0, 1]], "corrupt": [1]}).lost_acked == 1


def test_register_and_blocks_models(tmp_path):
    reg = workloads.get(str(_workload(tmp_path, 'model = "register"\n', "reg")))
    assert judge(reg, acks(1, 2), {"value": 2}).ok and judge(reg, acks(1, 2), {"value": 3}).ok
    assert [v.kind for v in judge(reg, acks(1, 2), {"value": 1}).violations] == ["stale"]
    assert [v.kind for v in judge(reg, acks(1, 2), {"value": None}).violations] == ["missing"]
    blk = workloads.get(str(_workload(tmp_path, 'model = "blocks"\nneeds_fs = false\n', "blk")))
    two = acks("0:1", "1:1")
    assert judge(blk, two, {"blocks": {"0": ["ok", 1], "1": ["ok", 1]}}).ok
    assert judge(blk, two, {"blocks": {"0": ["ok", 1], "1": ["ok", 2]}}).ok       # the op in flight
    assert not judge(blk, two, {"blocks": {"0": ["ok", 2], "1": ["ok", 2]}}).ok    # two ahead: one op was in flight
    assert [v.kind for v in judge(blk, two, {"blocks": {"0": ["zero", None], "1": ["ok", 1]}}).violations] == ["lost"]


# --- fault manifests ---------------------------------------------------------------------
def test_fault_manifest_steps_and_outer(tmp_path):
    path = tmp_path / "wt.toml"
    path.write_text('schema = 1\nname = "dom0-write-through"\nsummary = "s"\n[outer]\nno_flush = true\n'
                    '[[step]]\nwhere = "dom0"\nwhen = "before-mkfs"\n'
                    'run = ["sh", "-c", "echo w > /sys/block/$(basename {dom0_dut})/queue/write_cache"]\n'
                    '[[step]]\nwhere = "domu"\nwhen = "during"\nrun = ["sync", "{mount}"]\n')
    f = faults.get(str(path))
    assert f.name == "dom0-write-through" and f.manifest == str(path)
    assert [s.when for s in f.steps] == [faults.When.BEFORE_MKFS, faults.When.DURING]
    assert "$(basename /dev/vdc)" in f.at(faults.When.BEFORE_MKFS)[0].filled("/dev/vdc")[-1]
    assert f.at(faults.When.DURING)[0].filled("") == ["sync", "/mnt/dut"]
    assert dut_drive(tmp_path / "d.img", fault=f, rules_dir=tmp_path).no_flush
    assert TortureConfig(fault=str(path)).fault == str(path)


def test_builtin_faults_are_steps_too():
    drop = faults.get("drop-flush")
    assert [(s.where, s.when) for s in drop.steps] == [(faults.Where.DOMU, faults.When.BEFORE_WORKLOAD)]


def test_reserved_names_are_xdhs_guest_programs():
    from harness import paths
    from harness.catalog.manifest import RESERVED
    assert {p.name for p in paths.GUESTS_DIR.iterdir() if p.is_file()} == RESERVED


@pytest.mark.parametrize("body, error", [
    ('model = "set"\n[params]\ndir = "/tmp"\n', "parameter dir is xdh's own"),
    ('model = "set"\n[params]\nseed = 1\n', "parameter seed is xdh's own"),
])
def test_params_cannot_override_the_harness(tmp_path, body, error):
    with pytest.raises(ConfigError, match=error):
        workloads.load(str(_workload(tmp_path, body, name="p")))


def test_a_workload_outside_its_models_form_is_a_workload_error(tmp_path):
    from harness.errors import WorkloadError
    pre = workloads.get(str(_workload(tmp_path, 'model = "prefix"\n', "pre")))
    with pytest.raises(WorkloadError, match="acked id 'row-1'"):
        judge(pre, acks("row-1"), {"present": ["row-1"]})
    reg = workloads.get(str(_workload(tmp_path, 'model = "register"\n', "reg2")))
    with pytest.raises(WorkloadError, match="value '3'"):
        judge(reg, acks(1), {"value": "3"})
    blk = workloads.get(str(_workload(tmp_path, 'model = "blocks"\nneeds_fs = false\n', "blk2")))
    assert [v.kind for v in judge(blk, acks("0:1"), {"blocks": {"0": ["ok", 1]}, "error": "bad"}).violations] == \
        ["integrity"]
    # a manifest's own nblocks does not switch to the built-in direct schedule
    assert judge(blk, acks("0:1", "1:1"), {"blocks": {"0": ["ok", 1], "1": ["ok", 2]}, "nblocks": 4}).ok
