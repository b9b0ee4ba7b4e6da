"""ci/gitlab/nightly.yml run by a CI engine's own semantics: gitlab-ci-local (shell executor, a
build directory per job, artifacts handed from the shards to the merge by the engine) runs the
template as a project includes it, on the real stack: 2 shards x 1 iteration of the positive
control (drop-flush, ``--expect loss``) and the merge job, green. Then the engine runs shard 2
again and it is killed (SIGTERM, as a job timeout or a cancelled pipeline does), and the merge
job, run again on the artifacts the engine kept, goes red naming that shard.

The project's own ``.venv`` is the runners' (a symlink in the job's checkout), so ``XDH_SETUP``
is skipped; everything else is the template's, variables set as a user's pipeline sets them,
with a package lock of the images (``XDH_LOCK``) committed in the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

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


def _tool() -> Path:
    tool = TOOL if TOOL.exists() else Path(shutil.which("gitlab-ci-local") or TOOL)
    if not tool.exists():
        pytest.fail("gitlab-ci-local is not installed: run scripts/setup.sh (it installs it into .venv/node)")
    return tool


def _project(tmp: Path) -> Path:
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


def _engine(proj: Path, *jobs: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    argv = [str(_tool()), "--shell-isolation", "--concurrency", "1", "--no-color", "--timestamps", *jobs]
    t0 = time.monotonic()
    out = subprocess.run(argv, cwd=proj, capture_output=True, text=True, timeout=timeout, check=False)
    print(f"gitlab-ci-local {' '.join(jobs) or '(pipeline)'}: exit {out.returncode} in "
          f"{time.monotonic() - t0:.0f} s\n{out.stdout[-3000:]}", flush=True)
    return out


def _verdicts(out: str) -> dict[str, str]:
    """The engine's closing lines: job name -> PASS or FAIL (``PASS  [  41 s] xdh-loss: [1/2]``)."""
    return {m[2].strip(): m[1] for m in re.finditer(r"^ (PASS|FAIL)\s+\[[^]]*\]\s+(.+?)\s*$", out, re.M)}


def _job_logs(proj: Path, job: str) -> str:
    """What the engine kept of a job's output (both streams), all its parallel instances."""
    return "".join(f.read_text() for f in sorted((proj / ".gitlab-ci-local/output").glob(f"{job}*.log")))


def _kill_when_running(marker: str, stop: threading.Event, killed: list[int]) -> None:
    """SIGTERM the xdh process whose argv holds ``marker``, once it has begun its campaign (written
    its run directory's config.json: the job's directory may still hold the green run's)."""
    since = time.time()
    while not stop.is_set():
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                begun = b"torture" in argv and marker.encode() in argv and \
                    (Path(os.readlink(f"/proc/{pid}/cwd")) / marker / "config.json").stat().st_mtime > since
            except OSError:
                continue
            if begun:
                os.kill(int(pid), signal.SIGTERM)
                killed.append(int(pid))
                return
        time.sleep(0.5)


def test_the_gitlab_template_runs_green_and_a_killed_shard_turns_it_red(images, tmp_path):
    proj = _project(tmp_path)
    green = _engine(proj)
    assert green.returncode == 0, green.stdout[-4000:] + green.stderr[-2000:]
    assert _job_logs(proj, "xdh-loss").count(", the locked packages)") == 4     # 2 shards x 2 images, --lock
    assert _verdicts(green.stdout) == {"xdh-loss: [1/2]": "PASS", "xdh-loss: [2/2]": "PASS", "xdh-merge": "PASS"}
    merged = proj / ".gitlab-ci-local/artifacts"
    summary = json.loads(next(merged.glob("xdh-merge*/merged/summary.json")).read_text())
    # both shards' single iteration lost acknowledged writes, as --expect loss requires
    assert summary["counts"]["loss"] == 2 and not summary.get("merge_problems"), summary["counts"]
    junit = next(merged.glob("xdh-merge*/merged/junit.xml")).read_text()
    assert junit.count("<testcase") == 2 and junit.count("<error") == 0

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_running, args=("runs/drop-flush-2", stop, killed), daemon=True)
    killer.start()
    try:
        shard = _engine(proj, "xdh-loss: [2/2]")
    finally:
        stop.set()
        killer.join()
    assert killed, "the shard's xdh was never seen running"
    assert _verdicts(shard.stdout) == {"xdh-loss: [2/2]": "FAIL"}, shard.stdout[-3000:]
    red = _engine(proj, "xdh-merge")
    assert _verdicts(red.stdout) == {"xdh-merge": "FAIL"} and red.returncode != 0, red.stdout[-3000:]
    bad = [ln for ln in _job_logs(proj, "xdh-merge").splitlines() if ln.startswith("xdh: bad shard:")]
    assert len(bad) == 1 and "shard 2/2: ended early: interrupted by SIGTERM (exit 130)" in bad[0], bad
    junit = next(merged.glob("xdh-merge*/merged/junit.xml")).read_text()
    assert junit.count("<error") == 1 and "2/2" in junit
