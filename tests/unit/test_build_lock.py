"""Two xdh processes sharing an image cache (pytest-xdist workers, CI jobs) build an image once:
the second waits, saying for whom, and takes the first one's image; ``images clean`` leaves a
build under way alone. A fake builder stands in for mmdebstrap: no VM, no root."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness.images import ImageStore, build, store
from harness.images.build import build_lock, try_lock

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheUnitTestsOnly xdh-harness"


def _cache(root: Path) -> ImageStore:
    s = ImageStore(root)
    s.keys_dir.mkdir(parents=True)
    s.client_key.write_text("private\n")
    s.client_key.with_suffix(".pub").write_text(KEY + "\n")
    return s


FAKE_BUILDER = '''
def fake_build_image(recipe, digest, pub, images_dir, progress, pins=None, lock_path=""):
    """What build_image does to the cache: a work directory renamed into place, once the test
    says go (a file ``go`` in the cache: by then the other xdh is waiting for this one)."""
    import json, os, shutil, time
    from pathlib import Path
    from harness.images.built import BuiltImage
    with open(images_dir.parent / "builds.log", "a") as log:
        log.write(f"{os.getpid()} {recipe.name}\\n")
    work = images_dir / f".build-{recipe.name}-{digest}"
    shutil.rmtree(work, ignore_errors=True)     # what the real builder does to a leftover
    work.mkdir(parents=True)
    deadline = time.monotonic() + 20
    while not (images_dir.parent / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    final = images_dir / f"{recipe.name}-{digest}"
    img = BuiltImage(name=recipe.name, digest=digest, dir=final, host_key="ssh-ed25519 HOST",
                     artifacts={}, packages={}, build_seconds=1.0, built_at="now", root_device="/dev/xvda")
    (work / "manifest.json").write_text(json.dumps(img.to_json() | {"dir": None}))
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    return img
'''


def _fake_builder():
    scope: dict = {}
    exec(FAKE_BUILDER, scope)    # the same fake in this process and in the child processes
    return scope["fake_build_image"]


def _wait_for(what, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Lines:
    """A child's stdout, line by line as it comes (read by a thread)."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.lines: list[str] = []
        assert proc.stdout is not None
        out = proc.stdout
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(out.readline, "")), daemon=True)
        self.thread.start()

    def text(self) -> str:
        self.thread.join(30)
        return "".join(self.lines)


def test_two_processes_build_an_image_once(tmp_path: Path):
    """The xdist case: two workers find the image missing at once; one builds, the other waits
    for it (naming the builder's pid) and uses its image."""
    cache = _cache(tmp_path / "cache")
    script = tmp_path / "worker.py"
    script.write_text(FAKE_BUILDER + textwrap.dedent(f"""
        from pathlib import Path
        from harness.images import ImageStore, store
        store.build_image = fake_build_image
        [(img, built)] = ImageStore(Path({str(cache.root)!r})).build(("domu",), progress=lambda m: print(m, flush=True))
        print("RESULT", img.dir, built, flush=True)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers, outs = [], []
    for n in range(2):
        workers.append(subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env))
        outs.append(Lines(workers[-1]))
        if n == 0:     # the first is building
            _wait_for((cache.root / "builds.log").exists)
    _wait_for(lambda: any(ln.startswith("waiting for another xdh") for ln in outs[1].lines))
    (cache.root / "go").touch()
    for w in workers:
        w.wait(30)
    texts = [o.text() for o in outs]
    assert [w.returncode for w in workers] == [0, 0], texts
    builds = (cache.root / "builds.log").read_text().split()
    assert builds == [str(workers[0].pid), "domu"], "built once, by the first"
    results = [next(ln for ln in t.splitlines() if ln.startswith("RESULT")).split() for t in texts]
    assert results[0][1] == results[1][1] and [r[2] for r in results] == ["True", "False"]
    digest = Path(results[0][1]).name.removeprefix("domu-")
    assert f"waiting for another xdh building image domu {digest} (pid {workers[0].pid})" in texts[1]
    assert f"domu: built by another xdh ({digest})" in texts[1]
    assert [p.name for p in cache.images_dir.iterdir() if p.is_dir()] == [Path(results[0][1]).name]


def test_threads_share_one_build_and_force_after_a_wait_takes_the_new_image(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    cache = _cache(tmp_path / "cache")
    monkeypatch.setattr(store, "build_image", _fake_builder())
    said: list[str] = []
    results: list[tuple[object, bool]] = []

    def one() -> None:
        results.extend(ImageStore(cache.root).build(("dom0",), force=True, progress=said.append))

    threads = [threading.Thread(target=one) for _ in range(2)]
    threads[0].start()
    _wait_for((cache.root / "builds.log").exists)
    threads[1].start()
    _wait_for(lambda: any(m.startswith("waiting for another xdh") for m in said))
    (cache.root / "go").touch()
    for t in threads:
        t.join(timeout=20)
    assert sorted(built for _, built in results) == [False, True]
    assert len((cache.root / "builds.log").read_text().splitlines()) == 1
    assert any(m.startswith("waiting for another xdh building image dom0 ") and m.endswith(f"(pid {os.getpid()})")
               for m in said)
    # alone, --force rebuilds as before
    [(_, built)] = ImageStore(cache.root).build(("dom0",), force=True, progress=said.append)
    assert built and len((cache.root / "builds.log").read_text().splitlines()) == 2


def test_clean_leaves_a_build_under_way_alone(tmp_path: Path):
    cache = _cache(tmp_path / "cache")
    work = cache.images_dir / ".build-domu-0123456789abcdef"
    stale = cache.images_dir / "domu-fedcba9876543210"
    for d in (work, stale):
        d.mkdir(parents=True)
    with build_lock(cache.lock_for("domu", "0123456789abcdef"), "image domu", print):
        assert cache.clean() == [stale]
        assert work.is_dir()
    assert cache.clean() == [work]
    assert sorted(p.name for p in cache.images_dir.iterdir()) == []     # its lock file gone too


def test_a_lock_file_removed_by_its_holder_is_made_again(tmp_path: Path):
    """A waiter that opened the lock file before its holder removed it (``clean``) must not think
    it holds the lock: it takes the new file's lock, which others see taken."""
    path = tmp_path / ".domu-x.lock"
    said: list[str] = []
    holding, order = threading.Event(), []

    def waiter() -> None:
        with build_lock(path, "image domu x", said.append):
            order.append("waiter")
            holding.set()
            time.sleep(0.3)

    with build_lock(path, "image domu x", print):
        assert path.read_text() == f"{os.getpid()}\n"
        t = threading.Thread(target=waiter)
        t.start()
        deadline = time.monotonic() + 5
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)
        assert said == [f"waiting for another xdh building image domu x (pid {os.getpid()})"]
        path.unlink()
        order.append("holder")
    assert holding.wait(5)
    with try_lock(path) as free:
        assert not free and path.exists()     # the waiter holds the new file
    t.join(5)
    with try_lock(path) as free:
        assert free
    assert order == ["holder", "waiter"]


def test_the_client_key_is_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made: list[list[str]] = []

    def keygen(argv: list[str], **_: object) -> None:
        made.append(argv)
        time.sleep(0.2)
        key = Path(argv[argv.index("-f") + 1])
        key.write_text("private\n")
        key.with_suffix(".pub").write_text(KEY + "\n")

    monkeypatch.setattr(store.subprocess, "run", keygen)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(ImageStore(tmp_path).client_pubkey(create=True,
                                                                                           progress=print)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got == [KEY] * 3 and len(made) == 1


def test_lock_holder_is_blank_for_an_empty_or_missing_file(tmp_path: Path):
    assert build.lock_holder(tmp_path / "none.lock") == ""
    (tmp_path / "empty.lock").write_text("")
    assert build.lock_holder(tmp_path / "empty.lock") == ""
    (tmp_path / "pid.lock").write_text("123\n")
    assert build.lock_holder(tmp_path / "pid.lock") == " (pid 123)"
