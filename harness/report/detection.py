"""The detection matrix of a compare report: fault x mode (release, backend, disk cache), each
cell one of caught, missed, partly caught, clean, false alarm, impossible (not run, with why),
not run or error, linked to its run directory. 0 % and "never ran" look different."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .compare_data import CellRow

TITLE = "Detection matrix"
EXPLAINED = ("caught: every iteration lost acked writes; clean: none did; n/a: impossible combination; "
             "not run: never ran; the full table below says why")


class Kind(StrEnum):
    CAUGHT = "caught"
    CLEAN = "clean"
    MISSED = "missed"
    FALSE_ALARM = "false alarm"
    PARTLY = "partly"
    ERROR = "error"
    IMPOSSIBLE = "impossible"
    NOT_RUN = "not run"


COLOURS = {Kind.CAUGHT: "#1a7f37", Kind.CLEAN: "#1a7f37", Kind.MISSED: "#cf222e", Kind.FALSE_ALARM: "#cf222e",
           Kind.PARTLY: "#bf8700", Kind.ERROR: "#9a6700", Kind.IMPOSSIBLE: "#afb8c1", Kind.NOT_RUN: "#eaeef2"}
LIGHT = (Kind.IMPOSSIBLE, Kind.NOT_RUN)      # drawn with dark text, and not linked: nothing ran


@dataclass(frozen=True)
class Verdict:
    """One cell of the matrix: its kind, its text ("caught 3/3"), why (the skip reason, the error
    or a sample violation) and its run directory ("" when nothing ran there)."""

    kind: Kind
    text: str
    why: str = ""
    path: str = ""


NEVER_RAN = Verdict(Kind.NOT_RUN, "not run")


def verdict(r: CellRow) -> Verdict:
    why = r.skip or r.error or r.sample_violation
    kind, text = _kind(r)
    return Verdict(kind, text, why, "" if kind in LIGHT else r.path)


def _kind(r: CellRow) -> tuple[Kind, str]:
    if r.skip:
        return Kind.IMPOSSIBLE, "n/a"
    its, loss = r.iterations, r.loss_iterations
    if not its:
        return (Kind.ERROR, "error") if r.error and r.error != "not run" else (Kind.NOT_RUN, "not run")
    ran = its - r.error_iterations
    if ran <= 0:
        return Kind.ERROR, f"error ({its})"
    if r.fault == "none":
        return (Kind.FALSE_ALARM, f"false alarm {loss}/{ran}") if loss else (Kind.CLEAN, f"clean {ran}/{ran}")
    if loss == ran:
        return Kind.CAUGHT, f"caught {loss}/{ran}"
    return (Kind.MISSED, f"missed 0/{ran}") if not loss else (Kind.PARTLY, f"caught {loss}/{ran}")


@dataclass(frozen=True)
class DetectionMatrix:
    """Columns: modes (release, backend, disk cache); rows: (fault, workload), no fault first."""

    modes: tuple[tuple[str, str, str], ...]
    rows: tuple[tuple[tuple[str, str], tuple[Verdict, ...]], ...]

    @classmethod
    def of(cls, cells: list[CellRow]) -> DetectionMatrix:
        modes = tuple(sorted({r.mode for r in cells}))
        rows = sorted({(r.fault, r.workload) for r in cells}, key=lambda fw: (fw[0] != "none", fw))
        by = {((r.fault, r.workload), r.mode): r for r in cells}
        return cls(modes, tuple((fw, tuple(verdict(by[(fw, m)]) if (fw, m) in by else NEVER_RAN for m in modes))
                                for fw in rows))
