"""The compare report's flush-path table: per mode (release, backend, disk cache), what a flush
costs on its way down (flushes per durable op at each layer, from the flush ledger of the clean
``append`` cell, and its fsync latency) and, for each fault, the layer the ledger blamed. The
table a person chooses a backend mode with: the detection matrix says *that* a mode catches a
fault, this says *where* the flush died and what durability costs in it."""

from __future__ import annotations

from dataclasses import dataclass

from ..crash.ledger import Layer
from .compare_data import CellRow

LAYERS = (Layer.DOMU_BLOCK, Layer.BLKFRONT, Layer.DOM0_DEVICE, Layer.OUTER_DISK)
TITLE = "Flush path per mode"
EXPLAINED = ("flushes per durable op reaching each layer (append without a fault, median over iterations; "
             "blkfront: what crossed the ring, counted by the backend), fsync latency in the guest, and for each "
             "fault the layer the flush ledger named (its counters, not the fault's name; '-': no ledger)")


@dataclass(frozen=True)
class FlushPathRow:
    release: str
    backend: str
    disk_cache: str
    per_op: tuple[float | None, ...]       # at each of LAYERS
    p50_us: int | None
    p99_us: int | None
    blamed: tuple[str, ...]                # per fault of the table, in its order

    @property
    def mode(self) -> tuple[str, str, str]:
        return (self.release, self.backend, self.disk_cache)


@dataclass(frozen=True)
class FlushPathTable:
    faults: tuple[str, ...]
    rows: tuple[FlushPathRow, ...]

    @property
    def header(self) -> tuple[str, ...]:
        return ("release", "backend", "disk cache", *(f"{layer.value} /op" for layer in LAYERS),
                "p50 us", "p99 us", *(f"{f}: died in" for f in self.faults))

    @staticmethod
    def cells(row: FlushPathRow) -> tuple[str, ...]:
        return (row.release, row.backend, row.disk_cache, *("-" if x is None else f"{x:g}" for x in row.per_op),
                "-" if row.p50_us is None else str(row.p50_us), "-" if row.p99_us is None else str(row.p99_us),
                *(b or "-" for b in row.blamed))

    @classmethod
    def of(cls, cells: list[CellRow]) -> FlushPathTable:
        """The table of the cells that ran (append is the reference workload; a mode without a
        clean append cell shows '-' for its figures)."""
        ran = [c for c in cells if c.iterations and not c.skip]
        faults = tuple(sorted({c.fault for c in ran if c.fault != "none"}))
        rows = []
        for mode in sorted({c.mode for c in ran}):
            mine = [c for c in ran if c.mode == mode]
            clean = next((c for c in mine if c.fault == "none" and c.workload == "append"), None)
            per_op = tuple((clean.flush_per_op.get(layer.value) if clean else None) for layer in LAYERS)
            blamed = tuple(_blamed([c for c in mine if c.fault == f]) for f in faults)
            rows.append(FlushPathRow(*mode, per_op, clean.p50_us if clean else None,
                                     clean.p99_us if clean else None, blamed))
        return cls(faults, tuple(rows))


def _blamed(cells: list[CellRow]) -> str:
    """The cells' blamed layers (one per workload; several when the workloads disagree)."""
    return " / ".join(sorted({c.flush_blamed for c in cells if c.flush_blamed}))
