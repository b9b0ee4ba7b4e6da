"""``xdh compare``: the backend comparison. Runs a matrix of backend mode x fault x workload x
disk-cache model on the fast path and writes ``report.md`` and a self-contained
``report.html`` (plots embedded).

Every cell is an ordinary torture campaign in ``cells/<cell>/`` (so ``xdh report merge`` and
``xdh reproduce`` work on it). Canaries are per (backend, disk-cache) pair, because whether a
lost flush can be seen depends on the stack and the disk model, not on the fault under test:
each cell shows its pair's canary, so a reader sees at once which cells could not have seen
a lost flush. Cells run even when their canary is not caught: what they (do not) find is the
point of the comparison.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import releases as releases_mod
from ..catalog import backends as backends_mod
from ..catalog import faults as faults_mod
from ..catalog import workloads as workloads_mod
from ..config import DiskCache, StackConfig, TortureConfig, choices
from ..errors import ConfigError, DiskFull, ImageError, InfraError, XdhError
from ..images import ImageStore
from ..progress import Progress
from ..releases import DEFAULT_RELEASE
from ..report.compare_data import CompareReport
from ..report.matrix import write_report
from ..report.rundir import RunDir
from ..stack import inputs
from ..stack.xen import versions
from ..status import ExitCode
from ..verify.fast import FastVerifier
from ..vm.machine import Machines
from .campaign import run_campaign, run_canary
from .iteration import classify
from .kit import Kit


@dataclass(frozen=True)
class CompareConfig:
    backends: tuple[str, ...] = ("qdisk", "phy")
    faults: tuple[str, ...] = ("none", "drop-flush")
    workloads: tuple[str, ...] = ("append",)
    disk_caches: tuple[str, ...] = ("auto",)   # auto: each backend mode's own (catalog.backends.Backend.disk_cache)
    direct_faults: tuple[str, ...] = ("drop-flush", "disk-lies")   # the direct workload runs only here
    releases: tuple[str, ...] = (DEFAULT_RELEASE,)   # Debian releases: a dimension like the others
    iterations: int = 3
    seed: int = 1
    cut_acks: tuple[int, int] = (20, 200)
    crash_subsets: int = 3
    flush_points: int = -1
    canary: bool = True
    stack: StackConfig = field(default_factory=StackConfig)

    def validate(self) -> None:
        for what, names in (("backend", self.backends), ("fault", self.faults), ("workload", self.workloads),
                            ("release", self.releases)):
            if not names:
                raise ConfigError(f"no {what} given", hint=f"pass at least one with --{what}s")
        for b in self.backends:
            backends_mod.get(b)
        for f in self.faults:
            faults_mod.get(f)
        for w in self.workloads:
            workloads_mod.get(w)
        for r in self.releases:
            releases_mod.get(r)
        for c in self.disk_caches:
            if c not in choices(DiskCache):
                raise ConfigError(f"unknown disk cache model {c!r}", hint="use auto, none and/or volatile")
        if self.iterations < 1:
            raise ConfigError(f"--iterations {self.iterations}: must be at least 1", hint="use --iterations N, N >= 1")


@dataclass
class Cell:
    backend: str
    fault: str
    workload: str
    disk_cache: str
    release: str = DEFAULT_RELEASE
    skip: str = ""          # why this cell is not run (an impossible combination, a missing part)
    auto: bool = False      # its disk-cache model is the backend's own (--disk-cache auto)

    @property
    def name(self) -> str:
        return f"{self.release}__{self.backend}__{self.fault}__{self.workload}__{self.disk_cache}"

    @property
    def group(self) -> str:
        return f"{self.release}__{self.backend}__{self.disk_cache}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"name": self.name, "group": self.group}


def plan_cells(cfg: CompareConfig) -> list[Cell]:
    out = []
    for r, b, f, w, asked in itertools.product(cfg.releases, cfg.backends, cfg.faults, cfg.workloads,
                                               cfg.disk_caches):
        if w == "direct" and f not in cfg.direct_faults:
            continue
        c = backends_mod.get(b).disk_cache if asked == DiskCache.AUTO else asked   # a cell says which model ran
        if asked == DiskCache.AUTO and c in cfg.disk_caches:
            continue            # asked for explicitly as well: one cell
        cell = Cell(b, f, w, c, r, auto=asked == DiskCache.AUTO)
        try:
            inputs.check_torture(torture_config(cfg, cell))
        except (ConfigError, ImageError) as exc:   # impossible, or a part to build first (the hint says how)
            cell.skip = exc.oneline()
        out.append(cell)
    return out


def torture_config(cfg: CompareConfig, cell: Cell, canary: bool = False) -> TortureConfig:
    """The cell's campaign; a direct-io-safe backend gets its release's aio device model in dom0."""
    stack = inputs.completed(dataclasses.replace(cfg.stack, backend=cell.backend, release=cell.release))
    return TortureConfig(workload=cell.workload, fault=cell.fault, iterations=cfg.iterations, seed=cfg.seed,
                         cut_acks=cfg.cut_acks, canary=canary,
                         disk_cache=DiskCache.AUTO if cell.auto else DiskCache(cell.disk_cache),
                         crash_subsets=cfg.crash_subsets, flush_points=cfg.flush_points,
                         stack=stack)


# --- running ------------------------------------------------------------------------------
def _run_canary(cfg: CompareConfig, cell: Cell, run: RunDir, progress: Progress,
                verifier: FastVerifier) -> dict[str, Any]:
    """drop-flush on append for this (backend, disk-cache) pair; verified by a reboot too."""
    tc = dataclasses.replace(torture_config(cfg, cell), canary=True).resolved()
    store = verifier.store
    with Kit(tc, run.verifier, store, store.pair(tc.stack.components()), progress, verifier) as kit:
        return run_canary(tc, kit, run, progress).to_json()


def run_compare(cfg: CompareConfig, run_dir: Path, progress: Progress, command: str = "",
                store: ImageStore | None = None) -> CompareReport:
    """Run the matrix into ``run_dir`` and write its report; the report is written on every way
    out (an interrupt included), from the cells that ran. ``store``: the image cache (the
    command's; default: the environment's)."""
    cfg.validate()
    run = RunDir(run_dir).create()
    cells = plan_cells(cfg)
    run.write_compare_config(asdict(cfg), [c.to_json() for c in cells])
    todo = [c for c in cells if not c.skip]
    progress(f"compare: {len(todo)} cells to run ({len(cells) - len(todo)} not run: impossible, or a part to "
             "build first; listed in the report), "
             f"{cfg.iterations} iterations each, seed {cfg.seed}; run directory {run_dir}")
    t0 = time.monotonic()
    store = store or ImageStore()
    # one verifier VM for the whole matrix (its boot would otherwise cost every cell ~30 s)
    verifier = FastVerifier(run.verifier, store.require("domu", cfg.stack.components()), store,
                            accel=cfg.stack.accel, progress=progress, boot_timeout=cfg.stack.boot_timeout,
                            machines=Machines())    # every cell's kit counts its machines with it
    try:
        verifier.start()
        _run_cells(cfg, todo, run, progress, verifier)
    finally:
        verifier.stop()
        run.write_compare_wall(time.monotonic() - t0)
        data = write_report([run_dir], run_dir, command)
    return data


def _run_cells(cfg: CompareConfig, todo: list[Cell], run: RunDir, progress: Progress,
               verifier: FastVerifier) -> None:
    canaries: dict[str, dict[str, Any]] = {}
    unavailable: dict[str, str] = {}     # pairs whose stack cannot even start (e.g. qdisk-direct on Debian 12)
    for n, cell in enumerate(todo):
        if cfg.canary and cell.group not in canaries:
            progress(f"compare: canary for {cell.backend} with disk cache {cell.disk_cache}")
            try:
                canaries[cell.group] = _run_canary(cfg, cell, RunDir(run.canary_group(cell.group)), progress,
                                                   verifier)
            except DiskFull:            # every later cell would fail the same way: the matrix stops
                raise
            except XdhError as exc:     # an interrupt is not an XdhError: it stops the matrix
                failed = classify(exc)
                canaries[cell.group] = {"status": failed.status.value, "error": failed.error}
                unavailable[cell.group] = exc.oneline()
            c = canaries[cell.group]
            run.write_canary(cell.group, c)
            progress(f"compare: canary {cell.group}: {'caught' if c['status'] == 'loss' else 'NOT caught'}")
        progress(f"compare: [{n + 1}/{len(todo)}] {cell.name}")
        verifier.ensure_running()
        if cell.group in unavailable:
            run.write_cell_error(cell.name, f"stack unavailable: {unavailable[cell.group]}")
            continue
        try:
            tc = torture_config(cfg, cell)
            images = verifier.store.pair(tc.stack.components())    # the cell records what its column runs
            run_campaign(tc, run.cell(cell.name).path, progress, versions(images, tc.stack), verifier=verifier,
                         images=images, store=verifier.store)
        except DiskFull:
            raise
        except XdhError as exc:     # an InfraError here: the cell's stack (its snapshot) did not come up
            text = f"stack unavailable: {exc.oneline()}" if isinstance(exc, InfraError) else exc.oneline()
            run.write_cell_error(cell.name, text)
            progress(f"compare: {cell.name}: error: {text}")


def compare_exit(data: CompareReport) -> ExitCode:
    """0 when every cell that could run reached verdicts (losses are the matrix's content, not a
    failure); otherwise the code of the worst cell: a harness error, else an infrastructure failure."""
    rows = [r for r in data.cells if not r.skip]
    if not rows:
        return ExitCode.ERROR
    bad = [r for r in rows if r.error or r.error_iterations]
    if not bad:
        return ExitCode.CLEAN
    return ExitCode.INFRA if all(r.infra_only for r in bad) else ExitCode.ERROR
