"""ci/gitlab/nightly.yml run by a CI engine's own semantics: gitlab-ci-local (shell executor, a
build directory per job, artifacts handed from the shards to the merge by the engine) runs the
template as a project includes it, on the real stack (``gitlab_nightly``, tests/integration/
nightly.py): 2 shards x 1 iteration of the positive control (drop-flush, ``--expect loss``) and the
merge job, green. Then the engine runs shard 2 again and it is killed (SIGTERM, as a job timeout
or a cancelled pipeline does), and the merge job, run again on the artifacts the engine kept,
goes red naming that shard."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.integration import nightly

pytestmark = pytest.mark.stack


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


def test_the_gitlab_template_runs_green_and_a_killed_shard_turns_it_red(gitlab_nightly):
    proj, green = gitlab_nightly.project, gitlab_nightly.result
    assert nightly.job_logs(proj, "xdh-loss").count(", the locked packages)") == 4     # 2 shards x 2 images
    assert nightly.verdicts(green.stdout) == {"xdh-loss: [1/2]": "PASS", "xdh-loss: [2/2]": "PASS",
                                              "xdh-merge": "PASS"}
    # both shards' single iteration lost acknowledged writes, as --expect loss requires
    summary = gitlab_nightly.merged
    assert summary["counts"]["loss"] == 2 and not summary.get("merge_problems"), summary["counts"]
    junit = gitlab_nightly.merged_junit
    assert junit.count("<testcase") == 2 and junit.count("<error") == 0 and junit.count("<failure") == 0

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_running, args=("runs/drop-flush-2", stop, killed), daemon=True)
    killer.start()
    try:
        shard = nightly.engine(proj, "xdh-loss: [2/2]")
    finally:
        stop.set()
        killer.join()
    assert killed, "the shard's xdh was never seen running"
    assert nightly.verdicts(shard.stdout) == {"xdh-loss: [2/2]": "FAIL"}, shard.stdout[-3000:]
    red = nightly.engine(proj, "xdh-merge")
    assert nightly.verdicts(red.stdout) == {"xdh-merge": "FAIL"} and red.returncode != 0, red.stdout[-3000:]
    bad = [ln for ln in nightly.job_logs(proj, "xdh-merge").splitlines() if ln.startswith("xdh: bad shard:")]
    assert len(bad) == 1 and "shard 2/2: ended early: interrupted by SIGTERM (exit 130)" in bad[0], bad
    junit = next(proj.glob(".gitlab-ci-local/artifacts/xdh-merge*/merged/junit.xml")).read_text()
    assert junit.count("<error") == 1 and "2/2" in junit
