"""The data of a compare report, read from one or more compare run directories (pieces): one
typed row per cell (what it is, what its campaign measured, its canary). ``compare.json`` is
this, serialized; the report (``matrix``) is rendered from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..crash.ledger import Attribution, Kind, attribute
from ..errors import ConfigError
from ..releases import DEFAULT_RELEASE
from ..stats import percentile
from ..status import Status
from .records import IterationRecord
from .rundir import RunDir


@dataclass
class CellRow:
    """One cell of the matrix: release x backend x fault x workload x disk cache."""

    release: str
    backend: str
    fault: str
    workload: str
    disk_cache: str
    group: str                  # its canary's (release, backend, disk cache)
    path: str                   # its run directory
    skip: str = ""              # why it was not run: impossible, or a part to build first
    canary: bool | None = None  # its group's canary lost the dropped flush (None: no canary ran)
    error: str = ""             # why it has no figures: its error.txt, or "not run"
    infra_only: bool = False    # every error was the infrastructure's (exit code 5, not 6)
    components: str = ""        # what its column ran (``components``)
    iterations: int = 0
    loss_iterations: int = 0
    error_iterations: int = 0
    first_error: str = ""
    acked: int = 0
    lost_acked: int = 0
    crash_states: int = 0       # distinct crash states verified, over the iterations with a verdict
    busy_seconds: float = 0.0
    fsyncs_per_s: float | None = None   # median of the iterations'
    p50_us: int | None = None           # percentiles over every ack of the cell
    p99_us: int | None = None
    wall_seconds: float | None = None
    sample_violation: str = ""
    flush_per_op: dict[str, float | None] = field(default_factory=dict)  # median over iterations, per layer
    flush_blamed: str = ""      # the layer the ledger named most often ("intact": none), "" without a ledger
    latencies_us: list[int] = field(default_factory=list, repr=False)   # every ack's; not in compare.json

    @property
    def mode(self) -> tuple[str, str, str]:
        return (self.release, self.backend, self.disk_cache)

    @property
    def sort_key(self) -> tuple[str, str, str, str, str]:
        return (self.release, self.backend, self.disk_cache, self.fault, self.workload)

    def to_json(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "latencies_us"}


@dataclass
class CompareReport:
    """Every cell of the pieces (a cell a later piece did not run keeps its earlier figures),
    their canaries (canary.json by group, as written) and the pieces' wall time and configs."""

    cells: list[CellRow]
    canaries: dict[str, Mapping[str, object]]
    wall_seconds: float
    configs: list[Mapping[str, object]]

    def to_json(self) -> dict[str, object]:
        return {"cells": [c.to_json() for c in self.cells], "canaries": self.canaries,
                "wall_seconds": self.wall_seconds, "configs": self.configs}


def components(v: Mapping[str, Any]) -> str:
    """One line naming what a column ran: Xen, both kernels, dom0's device model, your own .debs."""
    if not v:
        return ""
    dom0 = v.get("dom0", {})
    xen = next((x for k, x in dom0.items() if k.startswith("xen-hypervisor-")), "?")
    own = [f"{d['package']} {d['version']}" for g in ("dom0", "domu") for d in v.get("own_debs", {}).get(g, [])]
    return (f"Xen {xen}; dom0 {str(v.get('dom0_kernel', '?')).removeprefix('vmlinuz-')}, domU "
            f"{str(v.get('domu_kernel') or v.get('domu', {}).get('linux-image-amd64', '?')).removeprefix('vmlinuz-')}; "
            f"qemu-system-xen {dom0.get('qemu-system-xen', '?')}; outer QEMU "
            f"{str(v.get('host_qemu', '?')).removeprefix('QEMU emulator version ')}"
            + (f"; your .debs: {', '.join(own)}" if own else ""))


def _planned(rd: RunDir, listed: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, CellRow]]:
    """(name, row) of the cells a compare run planned (cells.json: never its directory names)."""
    if listed is None:
        raise ConfigError(f"{rd.path} has no cells.json: an xdh from before it wrote this compare run",
                          hint="run xdh compare again with this xdh")
    return [(c["name"], CellRow(c.get("release", DEFAULT_RELEASE), c["backend"], c["fault"], c["workload"],
                                c["disk_cache"], c["group"], str(rd.cell(c["name"]).path), c["skip"]))
            for c in listed]


def collect(run_dirs: list[Path]) -> CompareReport:
    """Cells, canaries and wall time from one or more compare run directories (pieces)."""
    cells: dict[str, CellRow] = {}
    canaries: dict[str, Mapping[str, object]] = {}
    wall = 0.0
    configs: list[Mapping[str, object]] = []
    for path in run_dirs:
        rd = RunDir(path)
        cc, listed, w, cans = rd.read_compare()
        configs.append(cc)
        wall += w
        canaries.update(cans)
        for name, planned in _planned(rd, listed):
            row = planned if planned.skip else _measured(planned, rd.cell(name))
            if name in cells and cells[name].iterations and not row.iterations:
                continue     # an earlier piece ran this cell; this one did not
            cells[name] = row
    for row in cells.values():
        c = canaries.get(row.group)
        row.canary = None if c is None else c.get("status") == "loss"
    return CompareReport(list(cells.values()), canaries, round(wall, 1), configs)


def _measured(row: CellRow, cell: RunDir) -> CellRow:
    """The row with what the cell's campaign measured (summary.json, every iteration's acks), or
    why it has nothing (error.txt; a stack that could not start is the infrastructure's)."""
    row = dataclasses.replace(row, components=components(cell.read_versions()))
    err = cell.cell_error()
    if err is not None or not cell.summary.exists():
        return dataclasses.replace(row, error=err or "not run",
                                   infra_only=bool(err and err.startswith("stack unavailable")))
    s = cell.read_summary()
    its = s.iterations
    lat: list[int] = []
    rates = []
    for it in its:
        lat += [a.latency_us for a in cell.iteration_named(it.name).read_acks() if a.latency_us]
        if r := it.fsync_latency_us.get("ops_per_s"):
            rates.append(r)
    errors = [it for it in its if it.status in (Status.ERROR, Status.GUEST_DIED)]
    median_rate = percentile(rates, 0.5)
    return dataclasses.replace(
        row,
        iterations=len(its),
        loss_iterations=sum(1 for it in its if it.status == Status.LOSS),
        error_iterations=len(errors),
        infra_only=all(it.status == Status.GUEST_DIED for it in errors),
        first_error=errors[0].error if errors else "",
        acked=s.acked_total,
        lost_acked=s.lost_acked_total,
        crash_states=s.crash_states_total,
        busy_seconds=round(sum(it.total_seconds for it in its), 1),
        fsyncs_per_s=None if median_rate is None else round(median_rate, 1),
        p50_us=percentile(lat, 0.5),
        p99_us=percentile(lat, 0.99),
        latencies_us=lat,
        wall_seconds=s.wall_seconds,
        sample_violation=next((v.line() for it in its for v in it.violations), ""),
        flush_per_op=_median_per_op([it.flush_per_op for it in its if it.flush_per_op]),
        flush_blamed=_blamed([b for it in its if (b := _attribution(cell, it)) is not None]),
    )


def _attribution(cell: RunDir, it: IterationRecord) -> Attribution | None:
    """Where the flush died, from the iteration's ledger (flushes.json) by today's rules, so a
    report made later reads older runs as the current code would; else what the run recorded."""
    ledger = cell.iteration_named(it.name).read_ledger_or_none()
    return attribute(ledger) if ledger is not None else it.flush


def _median_per_op(per_ops: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Each layer's median flushes per durable op over the iterations that measured it."""
    out: dict[str, float | None] = {}
    for layer in per_ops[0] if per_ops else {}:
        got = [x for p in per_ops if (x := p.get(layer)) is not None]
        m = percentile(got, 0.5)
        out[layer] = None if m is None else round(m, 2)
    return out


def _blamed(flushes: list[Attribution]) -> str:
    """The layer the ledger named most often over the iterations ("intact" when it named none)."""
    named = [f.layer.value if f.layer else ("intact" if f.kind == Kind.NONE else "") for f in flushes]
    named = [n for n in named if n]
    return max(sorted(set(named)), key=named.count) if named else ""
