"""The run directory: the only place that knows its file names, and the only writer of its
JSON files (each with ``"schema"``, see ``jsonio``). ``report merge``, ``compare --report-from``
and ``reproduce`` read through it.

    RUN/                           (torture; one per compare cell under cells/<cell>/)
      config.json                  the campaign config, its seed, versions
      summary.json summary.txt junit.xml
      verifier/                    the fast verifier VM's logs
      canary/  iterations/iter-NNNN/
        iteration.json             index, seed, name, cut plan, config
        acks.jsonl workload-output.log kmsg-domu-a.log kmsg-dom0-a.log
        boot-a/                    the crash run's stack: serial.log, qemu.log, qemu.argv, stack.json, domu.cfg
        cut.json                   cut time, acks at the cut
        dut.img | dut.qcow2        the crash image (kept when the iteration did not pass)
        dut-writes.log             volatile model: the outer disk's write log
        verify-fast/ boot-b/       one directory per verification path: verify.json, verdict.json, logs
        verify.json verdict.json   the first path's, as the iteration's own
        states/<state>/ states.json   volatile model: each crash state verified
        result.json                the IterationRecord
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog.workloads import Ack
from ..crash.files import CrashPaths, load_acks
from ..crash.ledger import Ledger
from ..errors import ConfigError
from ..jsonio import read_json, write_json
from ..verify.oracle import Verdict
from .records import CampaignSummary, CutRecord, IterationRecord, StateRecord


def ensure_dir(path: Path, what: str = "run directory", option: str = "--run-dir") -> Path:
    """Create ``path``; an unwritable place is a ConfigError naming the option, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".xdh-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write the {what} {path}: {exc.strerror or exc}",
                          hint=f"pass {option} with a writable directory") from None
    return path


@dataclass(frozen=True)
class IterationDir:
    path: Path

    # --- names ------------------------------------------------------------------------
    @property
    def meta(self) -> Path:
        return self.path / "iteration.json"

    @property
    def acks(self) -> Path:
        return self.path / "acks.jsonl"

    @property
    def cut(self) -> Path:
        return self.path / "cut.json"

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def verdict(self) -> Path:
        return self.path / "verdict.json"

    @property
    def flushes(self) -> Path:
        return self.path / "flushes.json"

    @property
    def write_log(self) -> Path:
        return self.path / "dut-writes.log"

    @property
    def states(self) -> Path:
        return self.path / "states"

    def state(self, name: str) -> Path:
        return self.states / name

    def verify_dir(self, path: str) -> Path:
        """Where one verification path writes: verify-fast/ or boot-b/ (the reboot)."""
        return self.path / ("verify-fast" if path == "fast" else "boot-b")

    def crash_paths(self, dut_name: str) -> CrashPaths:
        return CrashPaths(boot=self.path / "boot-a", dut=self.path / dut_name, acks=self.acks,
                          output=self.path / "workload-output.log", kmsg_domu=self.path / "kmsg-domu-a.log",
                          kmsg_dom0=self.path / "kmsg-dom0-a.log", write_log=self.write_log)

    def crash_image(self) -> Path | None:
        """The kept crash image, if any."""
        return next((p for p in (self.path / "dut.qcow2", self.path / "dut.img") if p.exists()), None)

    def kernel_logs(self) -> list[Path]:
        """The crash run's kernel logs (their lines are evidence for every verification)."""
        return [self.path / "kmsg-domu-a.log", self.path / "kmsg-dom0-a.log"]

    def throwaway_overlays(self) -> list[Path]:
        return list(self.path.glob("boot-*/*.qcow2"))

    # --- writing ----------------------------------------------------------------------
    def write_meta(self, index: int, seed: int, name: str, cut: dict[str, Any], config: dict[str, Any]) -> None:
        ensure_dir(self.path, "iteration directory")
        write_json(self.meta, {"index": index, "seed": seed, "name": name, "cut": cut, "config": config})

    def write_cut(self, cut: CutRecord) -> None:
        write_json(self.cut, cut.to_json())

    def write_verification(self, out_dir: Path, report: dict[str, Any], verdict: Verdict,
                           own: bool = False) -> None:
        """verify.json and verdict.json of one verification (``own``: also the iteration's)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for d in (out_dir, self.path) if own else (out_dir,):
            write_json(d / "verify.json", report)
            write_json(d / "verdict.json", verdict.to_json())

    def write_states(self, log: dict[str, Any], states: list[StateRecord], kernel_evidence: list[str]) -> None:
        """states.json: the counts, every state judged (with its recipe) and, if any failed, the
        kernel lines that explain it."""
        self.states.mkdir(parents=True, exist_ok=True)
        write_json(self.states / "states.json", {"log": log, "states": [st.to_json() for st in states],
                                                 "kernel_evidence": kernel_evidence})

    def write_ledger(self, ledger: Ledger) -> None:
        write_json(self.flushes, ledger.to_json())

    def read_ledger(self) -> Ledger | None:
        """flushes.json (None if the crash run kept no ledger)."""
        return Ledger.from_json(read_json(self.flushes)) if self.flushes.exists() else None

    def read_ledger_or_none(self) -> Ledger | None:
        try:
            return self.read_ledger()
        except (ConfigError, KeyError, TypeError, ValueError):
            return None

    def write_result(self, record: IterationRecord) -> None:
        write_json(self.result, record.to_json())

    # --- reading ----------------------------------------------------------------------
    def read_states(self) -> tuple[dict[str, Any], list[StateRecord]]:
        """states/states.json: the counts and every state judged (nothing if the iteration had
        no volatile crash states)."""
        f = self.states / "states.json"
        data = read_json(f) if f.exists() else {}
        return data.get("log", {}), [StateRecord.from_json(st) for st in data.get("states", [])]

    def read_meta(self) -> dict[str, Any]:
        if not self.meta.exists():
            raise ConfigError(f"{self.path} is not an iteration directory (no iteration.json)",
                              hint="pass RUN/iterations/iter-NNNN")
        return read_json(self.meta)

    def read_acks(self) -> list[Ack]:
        return load_acks(self.acks) if self.acks.exists() else []

    def read_cut(self) -> CutRecord:
        return CutRecord.from_json(read_json(self.cut))

    def read_verdict(self) -> Verdict:
        return Verdict.from_json(read_json(self.verdict))

    def read_verdict_or_none(self) -> Verdict | None:
        """The verdict, if the iteration reached one (and it is readable)."""
        try:
            return self.read_verdict() if self.verdict.exists() else None
        except (ConfigError, KeyError, TypeError):
            return None

    def read_cut_or_none(self) -> CutRecord | None:
        try:
            return self.read_cut() if self.cut.exists() else None
        except (ConfigError, KeyError, TypeError):
            return None

    def read_acks_or_none(self) -> list[Ack]:
        """The acks, or none if the file is damaged (a page is still made)."""
        try:
            return self.read_acks()
        except (OSError, ValueError, KeyError):
            return []

    def read_result(self) -> IterationRecord:
        return IterationRecord.from_json(read_json(self.result))


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def verifier(self) -> Path:
        return self.path / "verifier"

    @property
    def canary(self) -> IterationDir:
        return IterationDir(self.path / "canary")

    def iteration(self, index: int) -> IterationDir:
        return IterationDir(self.path / "iterations" / f"iter-{index:04d}")

    def iteration_named(self, name: str) -> IterationDir:
        return self.canary if name == "canary" else IterationDir(self.path / "iterations" / name)

    def create(self) -> RunDir:
        ensure_dir(self.path)
        return self

    def write_config(self, config: dict[str, Any], seed: int | None, versions: dict[str, Any]) -> None:
        """A campaign's start: its config; the results of an earlier run in the same directory
        go (a killed rerun must not leave last night's summary for the merge to find)."""
        for old in (self.summary, self.path / "junit.xml"):
            old.unlink(missing_ok=True)
        write_json(self.config, {"config": config, "seed": seed, "versions": versions})

    def keep_own_files(self, files: dict[str, list[str]]) -> None:
        """Your own workload's and fault's manifests and program, as they were: ``own/workload/``,
        ``own/fault/``."""
        for kind, paths in files.items():
            for f in (Path(p) for p in paths if p):
                (self.path / "own" / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, self.path / "own" / kind / f.name)

    def read_versions(self) -> dict[str, Any]:
        """The component versions a campaign recorded in config.json ({} if it has none)."""
        try:
            return dict(read_json(self.config).get("versions") or {})
        except ConfigError:
            return {}

    def write_summary(self, summary: CampaignSummary, text: str, junit: str, page: str = "") -> None:
        write_json(self.summary, summary.to_json())
        (self.path / "junit.xml").write_text(junit)
        (self.path / "summary.txt").write_text(text + "\n")
        if page:
            (self.path / "index.html").write_text(page)

    def read_summary(self) -> CampaignSummary:
        if not self.summary.exists():
            raise ConfigError(f"{self.path} has no summary.json", hint="pass run directories written by `xdh torture`")
        try:
            return CampaignSummary.from_json(read_json(self.summary))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.summary} is not a summary this xdh can read ({type(exc).__name__}: {exc})",
                              hint="use the xdh that wrote it") from None

    # --- compare -------------------------------------------------------------------------
    @property
    def compare_config(self) -> Path:
        return self.path / "compare-config.json"

    def cell(self, name: str) -> RunDir:
        return RunDir(self.path / "cells" / name)

    def canary_group(self, group: str) -> Path:
        return self.path / "canaries" / group

    def write_compare_config(self, config: dict[str, Any], cells: list[dict[str, Any]]) -> None:
        write_json(self.compare_config, config)
        write_json(self.path / "cells.json", {"cells": cells})

    def write_compare_wall(self, seconds: float) -> None:
        write_json(self.path / "compare-wall.json", {"wall_seconds": round(seconds, 1)})

    def write_canary(self, group: str, record: dict[str, Any]) -> None:
        d = self.canary_group(group)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "canary.json", record)

    def write_cell_error(self, name: str, text: str) -> None:
        d = self.cell(name).path
        d.mkdir(parents=True, exist_ok=True)
        (d / "error.txt").write_text(text + "\n")

    def cell_error(self) -> str | None:
        p = self.path / "error.txt"
        return p.read_text().strip() if p.exists() else None

    def read_compare(self) -> tuple[dict[str, Any], list[dict[str, Any]] | None, float, dict[str, dict[str, Any]]]:
        """compare-config.json, cells.json (None if an older xdh wrote it), wall seconds, canaries."""
        if not self.compare_config.exists():
            raise ConfigError(f"{self.path} is not an xdh compare run directory",
                              hint="pass directories made by xdh compare")
        cfg = read_json(self.compare_config)
        cells_file = self.path / "cells.json"
        cells = read_json(cells_file)["cells"] if cells_file.exists() else None
        wall_file = self.path / "compare-wall.json"
        wall = read_json(wall_file)["wall_seconds"] if wall_file.exists() else 0.0
        canaries = {p.parent.name: read_json(p) for p in sorted((self.path / "canaries").glob("*/canary.json"))}
        return cfg, cells, wall, canaries

    def write_trend(self, md: str, html: str, data: dict[str, Any]) -> None:
        """``xdh report trend``'s output: trend.md, trend.json and its page, index.html."""
        (self.path / "trend.md").write_text(md)
        write_json(self.path / "trend.json", data)
        (self.path / "index.html").write_text(html)

    def write_report(self, md: str, html: str, data: dict[str, Any]) -> None:
        ensure_dir(self.path)
        (self.path / "report.md").write_text(md + "\n")
        (self.path / "report.html").write_text(html)
        write_json(self.path / "compare.json", data)

    def report_md(self) -> str:
        return (self.path / "report.md").read_text()

    # --- bench ---------------------------------------------------------------------------
    def mode(self, mode: str) -> RunDir:
        return RunDir(self.path / mode)

    def write_bench(self, result: dict[str, Any], table: str) -> None:
        write_json(self.path / "bench.json", result)
        (self.path / "bench.md").write_text("```\n" + table + "\n```\n")


def dumps(data: dict[str, Any]) -> str:
    """JSON for stdout (``--json``)."""
    return json.dumps(data, indent=2, default=str)
