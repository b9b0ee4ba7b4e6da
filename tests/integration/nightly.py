"""ci/gitlab/nightly.yml run by gitlab-ci-local, as a project includes it: the machinery of
``test_ci_pipeline`` and of the session fixture ``gitlab_nightly`` (conftest), whose green pipeline
is also test_torture's positive control (2 shards x 1 iteration of drop-flush on the fast path).

The project's own ``.venv`` is the runners' (a symlink in the job's checkout), so ``XDH_SETUP``
is skipped; everything else is the template's, variables set as a user's pipeline sets them,
with a package lock of the images (``XDH_LOCK``) committed in the project."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / ".venv/node/node_modules/.bin/gitlab-ci-local"
SEED = "20261206"
PIPELINE = f"""\
include:
  - local: ci/gitlab/nightly.yml
variables:
  XDH_ITERATIONS: "2"
  XDH_SEED: "{SEED}"
  XDH_SHARDS: "2"
  XDH_CAMPAIGNS: "1"
  XDH_TORTURE_ARGS: "--no-canary --cut-acks 15-40"
  XDH_SETUP: "true"
  XDH_LOCK: ci/packages.lock
xdh-clean:
  rules:
    - when: never
xdh-loss:
  parallel: 2
"""


def tool() -> Path:
    tool = TOOL if TOOL.exists() else Path(shutil.which("gitlab-ci-local") or TOOL)
    if not tool.exists():
        pytest.fail("gitlab-ci-local is not installed: run scripts/setup.sh (it installs it into .venv/node)")
    return tool


def project(tmp: Path) -> Path:
    """A checkout of this tree as a project that includes the template (tracked files, as CI clones them)."""
    proj = tmp / "project"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["rsync", "-a", "--from0", "--files-from=-", f"{ROOT}/", f"{proj}/"], input=files, check=True)
    (proj / ".venv").symlink_to(ROOT / ".venv")
    (proj / ".gitlab-ci.yml").write_text(PIPELINE)
    # the project's lock: the versions of this cache's images (every runner would build these)
    subprocess.run([str(ROOT / ".venv/bin/xdh"), "images", "lock", "-o", str(proj / "ci/packages.lock")], check=True)
    git = ["git", "-c", "user.name=xdh", "-c", "user.email=xdh@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=proj, check=True)
    subprocess.run([*git, "remote", "add", "origin", "git@gitlab.example.com:xdh/nightly.git"], cwd=proj, check=True)
    subprocess.run([*git, "add", "-A"], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "nightly"], cwd=proj, check=True)
    return proj


def engine(proj: Path, *jobs: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    argv = [str(tool()), "--shell-isolation", "--concurrency", "1", "--no-color", "--timestamps", *jobs]
    t0 = time.monotonic()
    out = subprocess.run(argv, cwd=proj, capture_output=True, text=True, timeout=timeout, check=False)
    print(f"gitlab-ci-local {' '.join(jobs) or '(pipeline)'}: exit {out.returncode} in "
          f"{time.monotonic() - t0:.0f} s\n{out.stdout[-3000:]}", flush=True)
    return out


def verdicts(out: str) -> dict[str, str]:
    """The engine's closing lines: job name -> PASS or FAIL (``PASS  [  41 s] xdh-loss: [1/2]``)."""
    return {m[2].strip(): m[1] for m in re.finditer(r"^ (PASS|FAIL)\s+\[[^]]*\]\s+(.+?)\s*$", out, re.M)}


def job_logs(proj: Path, job: str) -> str:
    """What the engine kept of a job's output (both streams), all its parallel instances."""
    return "".join(f.read_text() for f in sorted((proj / ".gitlab-ci-local/output").glob(f"{job}*.log")))




@dataclass
class Nightly:
    """The green pipeline, as the engine left it (read at once: a later run of a job overwrites it)."""

    project: Path
    result: subprocess.CompletedProcess[str]
    merged: dict[str, Any]          # the merge job's summary.json
    merged_junit: str
    shards: list[dict[str, Any]]    # each shard's own summary.json, shard 1 first


def run(tmp: Path) -> Nightly:
    proj = project(tmp)
    green = engine(proj)
    assert green.returncode == 0, green.stdout[-4000:] + green.stderr[-2000:]
    arts = proj / ".gitlab-ci-local/artifacts"
    merged = next(arts.glob("xdh-merge*/merged"))
    shards = sorted(arts.glob("xdh-loss*/runs/drop-flush-*/summary.json"), key=lambda p: p.parent.name)
    return Nightly(proj, green, json.loads((merged / "summary.json").read_text()),
                   (merged / "junit.xml").read_text(), [json.loads(p.read_text()) for p in shards])
