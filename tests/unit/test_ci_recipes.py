"""The CI recipes under ci/ as their engines read them: GitHub's workflow schema and GitLab's CI
schema (both vendored by check-jsonschema), the Kubernetes Job schema (kubernetes-validate,
strict); each with a negative control (a broken copy the schema must reject). And every xdh
command in them is one this xdh accepts: parsed by its own argument parser."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli.parser import make_parser

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GITHUB, GITLAB = ROOT / "ci/github/nightly.yml", ROOT / "ci/gitlab/nightly.yml"
KUBERNETES = [ROOT / "ci/kubernetes/nightly.yaml", ROOT / "ci/kubernetes/merge.yaml"]
KUBERNETES_VERSION = "1.33.0"       # backoffLimitPerIndex: beta since 1.29, stable in 1.33


def _schema_check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    tool = BIN / "check-jsonschema"
    if not tool.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[test]')")
    return subprocess.run([str(tool), "--builtin-schema", schema, str(path)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("schema, path, break_it", [
    ("vendor.github-workflows", GITHUB, lambda d: d["jobs"]["merge"].pop("runs-on")),
    ("vendor.gitlab-ci", GITLAB, lambda d: d["xdh-merge"].update(when="at-night")),
])
def test_the_ci_engines_schemas_accept_the_recipe_and_reject_a_broken_one(schema, path, break_it, tmp_path):
    ok = _schema_check(schema, path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = yaml.safe_load(path.read_text())
    break_it(doc)
    broken = tmp_path / path.name
    broken.write_text(yaml.safe_dump(doc))
    assert _schema_check(schema, broken).returncode != 0


def test_the_kubernetes_jobs_are_valid_jobs():
    kv = pytest.importorskip("kubernetes_validate")
    docs = [d for f in KUBERNETES for d in yaml.safe_load_all(f.read_text())]
    assert [d["kind"] for d in docs] == ["Job"] * 3
    for d in docs:
        kv.validate(d, KUBERNETES_VERSION, strict=True)
    indexed = [d for d in docs if d["spec"].get("completionMode") == "Indexed"]
    assert len(indexed) == 2
    for d in indexed:     # the total a pod cannot read is passed to --shard auto
        env = {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["XDH_SHARDS"] == str(d["spec"]["completions"])
    broken = dict(docs[0], spec=dict(docs[0]["spec"], completionsMode="Indexed"))   # a typo
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES_VERSION, strict=True)


SAMPLE = {"$JOB_COMPLETION_INDEX": "1", "${{ matrix.control.fault }}": "none", "${{ matrix.control.expect }}": "clean",
          "${{ github.run_number }}": "12", "${{ matrix.shard }}": "2", "$XDH_ITERATIONS": "40",
          "$XDH_SEED": "12", "$CI_NODE_INDEX": "2", "$(XDH_SEED)": "12", "$(JOB_COMPLETION_INDEX)": "1",
          "$XDH_TORTURE_ARGS": "", '${XDH_LOCK:+--lock "$XDH_LOCK"}': "--lock ci/packages.lock",
          '"$XDH_SHARDS"': "4", '"$XDH_CAMPAIGNS"': "2"}


def _xdh_commands() -> list[list[str]]:
    """Every xdh command line of the recipes, variables replaced by sample values."""
    lines: list[str] = []
    github = yaml.safe_load(GITHUB.read_text())
    lines += [s["run"] for job in github["jobs"].values() for s in job["steps"] if "xdh " in s.get("run", "")]
    gitlab = yaml.safe_load(GITLAB.read_text())
    lines += [c for job in gitlab.values() if isinstance(job, dict)
              for c in [*job.get("before_script", []), *job.get("script", [])] if "xdh " in c]
    for f in KUBERNETES:
        for d in yaml.safe_load_all(f.read_text()):
            c = d["spec"]["template"]["spec"]["containers"][0]
            lines.append(c["args"][0] if c["command"][0] == "sh" else shlex.join([*c["command"], *c["args"]]))
    commands = []
    for raw in (part for line in lines for part in line.split("&&")):
        line = raw
        for var, value in SAMPLE.items():
            line = line.replace(var, value)
        assert "$" not in line, line
        argv = shlex.split(line)
        commands.append(argv[argv.index(next(a for a in argv if a.endswith("/xdh"))) + 1:])
    return commands


def test_every_xdh_command_in_the_recipes_is_accepted_by_this_xdh(monkeypatch):
    monkeypatch.setenv("CI_NODE_INDEX", "2")
    monkeypatch.setenv("CI_NODE_TOTAL", "4")
    commands = _xdh_commands()
    assert sorted({c[0] for c in commands}) == ["images", "report", "torture"] and len(commands) == 12
    for argv in commands:
        args = make_parser().parse_args(argv)
        if argv[0] == "images":
            assert argv[1] == "build"
        elif argv[0] == "torture":
            assert args.expect and args.time_budget == 5 * 3600 and args.shard in ((2, 4),)
        else:       # a whole lost campaign is noticed too
            assert (args.shards, args.campaigns) == (4, 2)


def test_every_torture_job_builds_its_images_first():
    """torture finds images, it does not build them: a fresh runner or pod must build them first."""
    github = yaml.safe_load(GITHUB.read_text())["jobs"]["torture"]["steps"]
    runs = [s.get("run", "") for s in github]
    assert next(i for i, r in enumerate(runs) if "images build" in r) < next(i for i, r in enumerate(runs)
                                                                             if "torture" in r)
    gitlab = yaml.safe_load(GITLAB.read_text())[".xdh-torture"]["before_script"]
    assert any("xdh images build" in c for c in gitlab)
    for d in yaml.safe_load_all(KUBERNETES[0].read_text()):
        assert d["spec"]["template"]["spec"]["containers"][0]["args"][0].startswith(".venv/bin/xdh images build &&")


def test_the_readme_points_at_the_recipes():
    readme = (ROOT / "README.md").read_text()
    for path in ("ci/github/nightly.yml", "ci/gitlab/nightly.yml", "ci/kubernetes/"):
        assert path in readme
    assert not re.search(r"^jobs:$", readme, re.M), "the README's own workflow copy: point at ci/github instead"
