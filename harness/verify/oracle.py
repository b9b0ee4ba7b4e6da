"""Oracles: given the acks received before the cut and the verify report after reboot,
list every violation of durability, with evidence. Pure functions, no VM.

The rules (one op in flight at a time, so the op after the last ack is the only one that
may be torn):
  - every acked op is durable and intact;
  - no checksum may fail before the last acked record;
  - no hole before the last durable record;
  - replace leaves a complete version, the acked one or newer;
  - sqlite passes integrity_check and holds every acked transaction;
  - only data written after the last ack may be missing or torn.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog import workloads
from ..catalog.workloads import Ack, Workload
from ..errors import WorkloadError

LOSES_ALL = frozenset({"missing", "unmountable", "integrity"})    # every acked op is lost with it
LOSES = LOSES_ALL | {"lost", "corrupt", "stale"}                    # kinds that lose acked ops


@dataclass
class Violation:
    """One breach of durability, as stored (verdict.json, result.json, states.json) and read
    back: the ids it concerns are data (``ids``, ``ranges``), ``line()`` is for people only."""

    kind: str            # lost, corrupt, hole, stale, integrity, missing, unmountable, unexpected
    what: str            # which record/block/version/transactions
    found: str           # what verify found
    count: int = 1
    ack: dict[str, Any] | None = None   # the (last) ack concerned: id, time, seconds before the cut
    ids: list[str] = field(default_factory=list)      # acked ids concerned, listed ...
    ranges: list[tuple[int, int]] = field(default_factory=list)   # ... or as integer ranges (prefix ids)
    state: str = ""      # the volatile model's crash state it was found in ("" = the image at the cut)

    def line(self) -> str:
        if not self.kind:       # a record written before violations were structured: its text
            return self.what
        ack = ""
        if self.ack:
            dt = self.ack["before_cut_s"]
            when = f"{dt:.3f} s before the cut" if dt > 0 else "as the power was cut (drained from SSH after stop)"
            ack = f"; acked as {self.ack['id']} {when}"
        state = f"[{self.state}] " if self.state else ""
        return f"{state}{self.kind}: {self.what}: found {self.found}{ack}"

    def lost_ids(self, acked: list[str]) -> set[str]:
        """Which of the ``acked`` ids this violation says were lost or damaged."""
        if self.kind in LOSES_ALL:
            return set(acked)
        if self.kind not in LOSES:
            return set()
        out = set(self.ids)
        for a, b in self.ranges:
            out.update(str(i) for i in range(a, b + 1))
        return out & set(acked)

    def same_finding(self, other: Violation) -> bool:
        """The same kind, place and finding (the text of a mount error aside)."""
        return (self.kind, self.what, self.found) == (other.kind, other.what, other.found)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any] | str) -> Violation:
        if isinstance(d, str):          # schema 1 records kept violations as text
            return cls("", d, "")
        return cls(d["kind"], d["what"], d["found"], d.get("count", 1), d.get("ack"), list(d.get("ids", [])),
                   [(int(a), int(b)) for a, b in d.get("ranges", [])], d.get("state", ""))


@dataclass
class Verdict:
    workload: str
    acked: int
    violations: list[Violation] = field(default_factory=list)
    kernel_evidence: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def lost_acked(self) -> int:
        """Acked ops not found durable and intact."""
        return sum(v.count for v in self.violations if v.kind in LOSES)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["lost_acked"] = self.lost_acked
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Verdict:
        """verdict.json, as written by ``to_json``."""
        return cls(d["workload"], d["acked"], [Violation.from_json(v) for v in d.get("violations", [])],
                   list(d.get("kernel_evidence", [])))


def _ack_ev(ack: Ack | None, cut_t: float | None) -> dict[str, Any] | None:
    if ack is None:
        return None
    return {"id": ack.ident, "t": ack.t, "before_cut_s": round((cut_t - ack.t) if cut_t else 0.0, 3)}


def expand(rle: list[Any]) -> list[str]:
    """[[state, first, count], ...] -> [state per index]."""
    out: list[str] = []
    for state, first, count in rle:
        if len(out) < first:
            out += ["missing"] * (first - len(out))
        out += [state] * count
    return out


def _ranges(indices: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] + 1 == i:
            out[-1][1] = i
        else:
            out.append([i, i])
    return [(a, b) for a, b in out]


def _rng(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a}..{b}"


# --- per workload ----------------------------------------------------------------------
def check_append(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None) -> list[Violation]:
    by_id = {int(a.ident): a for a in acks}
    last_acked = max(by_id) if by_id else -1
    if not report.get("exists"):
        if last_acked < 0:
            return []
        return [Violation("missing", "append.dat", "no file", last_acked + 1, _ack_ev(by_id[last_acked], cut_t),
                          ranges=[(0, last_acked)])]
    states = expand(report.get("records", []))
    ok_idx = [i for i, s in enumerate(states) if s == "ok"]
    last_ok = max(ok_idx) if ok_idx else -1
    out: list[Violation] = []
    for kind, bad in (("lost", ("zero", "short", "missing")), ("corrupt", ("corrupt", "foreign", "misplaced"))):
        idx = [i for i in range(last_acked + 1) if (states[i] if i < len(states) else "missing") in bad]
        for a, b in _ranges(idx):
            found = sorted({states[i] if i < len(states) else "missing" for i in range(a, b + 1)})
            out.append(Violation(kind, f"acked records {_rng(a, b)}", "/".join(found), b - a + 1,
                                 _ack_ev(by_id.get(b), cut_t), ranges=[(a, b)]))
    holes = [i for i in range(last_acked + 1, last_ok) if states[i] != "ok"]
    for a, b in _ranges(holes):
        out.append(Violation("hole", f"records {_rng(a, b)} before durable record {last_ok}",
                             "/".join(sorted(set(states[a:b + 1]))), b - a + 1))
    return out


def check_replace(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None, *,
                  issued: int | None = None) -> list[Violation]:
    if not acks:
        return []
    last = max(acks, key=lambda a: int(a.ident))
    v_acked = int(last.ident)
    ev = _ack_ev(last, cut_t)
    ids = [last.ident]
    if not report.get("exists"):
        return [Violation("missing", "replace.dat", "no file", 1, ev, ids)]
    if report.get("state") != "ok":
        return [Violation("corrupt", f"replace.dat (acked version {v_acked})",
                          f"{report.get('state')} ({report.get('size')} bytes)", 1, ev, ids)]
    found = report.get("version")
    if found is None or found < v_acked:
        return [Violation("stale", f"replace.dat (acked version {v_acked})", f"version {found}", 1, ev, ids)]
    if found > (issued if issued is not None else v_acked + 1):
        return [Violation("unexpected", f"replace.dat (acked version {v_acked})",
                          f"version {found}, never written", 1, ev)]
    return []


def direct_block(seed: int, op: int, nblocks: int) -> int:
    """Same choice as guests/xdh-workload: which block op number ``op`` writes."""
    h = hashlib.sha256(f"{seed}:direct:{op}".encode()).digest()
    return int.from_bytes(h[:8], "little") % nblocks


def check_direct(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None, *,
                 seed: int = 0, issued: int | None = None, generic: bool = False) -> list[Violation]:
    """Model ``blocks``; built-in direct's schedule (which block op k writes) from the seed, or
    ``generic`` (a manifest workload's own schedule: any k blocks may be ahead)."""
    nblocks = 0 if generic else report.get("nblocks", 0)
    acked: dict[int, tuple[int, Ack]] = {}
    for a in acks:
        b, v = (int(x) for x in a.ident.split(":"))
        if v >= acked.get(b, (0, a))[0]:
            acked[b] = (v, a)
    # ops after the last required ack that may have reached the disk: each block's newest such
    # version, or a torn block (one op in flight at a cut; more in an earlier crash state)
    newer: dict[int, int] = {}
    for op in range(len(acks), issued if issued is not None else len(acks) + 1):
        if nblocks:
            b = direct_block(seed, op, nblocks)
            newer[b] = newer.get(b, acked.get(b, (0, None))[0]) + 1
    found = {int(b): (st, ver) for b, (st, ver) in report.get("blocks", {}).items()}
    # a manifest workload's blocks (no nblocks: the schedule is its own): any k blocks may hold
    # a newer version or be torn, k = the ops issued past the required acks
    k = (issued if issued is not None else len(acks) + 1) - len(acks)
    ahead = [b for b, (st, ver) in found.items() if st == "corrupt" or (st == "ok" and ver > acked.get(b, (0,))[0])]
    free = set(ahead) if generic and len(ahead) <= k else set()
    out: list[Violation] = []
    if report.get("error"):
        out.append(Violation("integrity", "the workload's own check", str(report["error"])[-300:],
                             max(len(acks), 1), _ack_ev(acks[-1] if acks else None, cut_t)))
    for b in sorted(set(acked) | set(found)):
        v_acked, ack = acked.get(b, (0, None))
        st, ver = found.get(b, ("zero", None))
        # what this block may hold: its last acked version (zeros if none) and, for the
        # block of the op in flight at the cut, also the next version or a torn block
        if (st == "ok" and ver == v_acked and v_acked > 0) or (st == "zero" and v_acked == 0) or b in free:
            continue
        if b in newer and ((st == "ok" and v_acked < ver <= newer[b]) or st == "corrupt"):
            continue
        ev = _ack_ev(ack, cut_t)
        what = f"block {b} version {v_acked}" if v_acked else f"block {b} (never acked)"
        ids = [ack.ident] if ack is not None else []
        if v_acked == 0:
            out.append(Violation("unexpected", what, f"{st} version {ver}" if st == "ok" else st, 1))
        elif st == "zero":
            out.append(Violation("lost", what, "zeros", 1, ev, ids))
        elif st != "ok":
            out.append(Violation("corrupt", what, st, 1, ev, ids))
        elif ver < v_acked:
            out.append(Violation("stale", what, f"version {ver}", 1, ev, ids))
        else:
            out.append(Violation("unexpected", what, f"version {ver}, never written", 1, ev))
    return out


def check_sqlite(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None,
                 what: tuple[str, str] = ("transactions", "PRAGMA integrity_check")) -> list[Violation]:
    noun, check = what
    by_id = {int(a.ident): a for a in acks}
    last_acked = max(by_id) if by_id else -1
    if not report.get("exists"):
        return [Violation("missing", "db.sqlite", "no file", last_acked + 1, _ack_ev(by_id.get(last_acked), cut_t))] \
            if last_acked >= 0 else []
    out: list[Violation] = []
    if str(report.get("error") or "").startswith("no such table"):
        # an earlier crash state, before the transaction that creates the table committed: an
        # empty database, not a corrupt one (acked rows are still required below)
        report = {**report, "error": None, "integrity": ["ok"], "ids": [], "bad": []}
    if report.get("error") or report.get("integrity") != ["ok"]:
        found = report.get("error") or "; ".join((report.get("integrity") or ["?"])[:3])
        out.append(Violation("integrity", check, found, max(last_acked + 1, 1),
                             _ack_ev(by_id.get(last_acked), cut_t)))
    present: set[int] = set()
    for a, b in report.get("ids", []):
        present.update(range(a, b + 1))
    missing = [i for i in range(last_acked + 1) if i not in present]
    for a, b in _ranges(missing):
        out.append(Violation("lost", f"acked {noun} {_rng(a, b)}", "absent", b - a + 1,
                             _ack_ev(by_id.get(b), cut_t), ranges=[(a, b)]))
    top = max(present) if present else -1
    holes = [i for i in range(last_acked + 1, top) if i not in present]
    for a, b in _ranges(holes):
        out.append(Violation("hole", f"{noun} {_rng(a, b)} before durable {noun.rstrip('s')} {top}", "absent",
                             b - a + 1))
    bad = [i for i in report.get("bad", []) if i <= last_acked]
    for a, b in _ranges(sorted(bad)):
        out.append(Violation("corrupt", f"acked {noun} {_rng(a, b)}", "bad checksum", b - a + 1,
                             _ack_ev(by_id.get(b), cut_t), ranges=[(a, b)]))
    return out


# --- the generic models (a manifest workload's verify report) ------------------------------
def present_ids(report: dict[str, Any], key: str = "present") -> list[str]:
    """``present``/``corrupt`` of a report: ids as strings, ``[lo, hi]`` integer ranges expanded."""
    out: list[str] = []
    for item in report.get(key) or []:
        if isinstance(item, list) and len(item) == 2 and all(isinstance(x, int) for x in item):
            out += [str(i) for i in range(item[0], item[1] + 1)]
        else:
            out.append(str(item))
    return out


def _listed(ids: list[str], limit: int = 8) -> str:
    return ", ".join(ids[:limit]) + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def check_set(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None) -> list[Violation]:
    """Model ``set``: every acked id is present and not corrupt; anything else may be there."""
    out: list[Violation] = []
    last = acks[-1] if acks else None
    if report.get("error"):
        out.append(Violation("integrity", "the workload's own check", str(report["error"])[-300:],
                             max(len(acks), 1), _ack_ev(last, cut_t)))
    present, corrupt = set(present_ids(report)), set(present_ids(report, "corrupt"))
    by_id = {a.ident: a for a in acks}
    for kind, ids in (("lost", [i for i in by_id if i not in present and i not in corrupt]),
                      ("corrupt", [i for i in by_id if i in corrupt])):
        if ids:
            out.append(Violation(kind, f"acked ids {_listed(ids)}", "absent" if kind == "lost" else "damaged",
                                 len(ids), _ack_ev(by_id[ids[-1]], cut_t), ids))
    return out


def check_prefix(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None,
                 form: str = "present") -> list[Violation]:
    """Model ``prefix`` (ids 0, 1, 2, ...): the built-in reports in their own ``form`` (append's
    records, sqlite's transaction ids), a manifest workload's as ``present``/``corrupt``/``error``."""
    if form == "append":
        return check_append(acks, report, cut_t)
    if form == "sqlite":
        return check_sqlite(acks, report, cut_t)
    ranges = [[int(i), int(i)] for i in present_ids(report) if i.isdigit()]
    return check_sqlite(acks, {"exists": True, "ids": ranges, "error": report.get("error"), "integrity": ["ok"],
                               "bad": [int(i) for i in present_ids(report, "corrupt") if i.isdigit()]}, cut_t,
                        what=("ops", "the workload's own check"))


def check_register(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None, *,
                   issued: int | None = None) -> list[Violation]:
    """Model ``register`` (ids are increasing versions): the last acked version or a later one
    that was written. Built-in replace reports ``version``; a manifest workload ``value``."""
    if "value" in report:
        value = report["value"]
        report = {"exists": value is not None, "state": "ok" if not report.get("error") else report["error"],
                  "version": value, "size": "?"}
    return check_replace(acks, report, cut_t, issued=issued)


ID_FORMS = {"prefix": (re.compile(r"^\d+$"), "0, 1, 2, ..."), "register": (re.compile(r"^\d+$"), "versions 1, 2, ..."),
            "blocks": (re.compile(r"^\d+:\d+$"), "KEY:VERSION, both integers")}


def check_contract(w: Workload, acks: list[Ack], report: dict[str, Any]) -> None:
    """A manifest workload's acks and report in its model's form, else a WorkloadError (a broken
    workload is the harness's finding about the workload, never a verdict on the stack)."""
    form = ID_FORMS.get(w.model)
    bad = [a.ident for a in acks if form and not form[0].match(a.ident)]
    if bad:
        raise WorkloadError(f"workload {w.name} (model {w.model}) acked id {bad[0]!r}",
                            hint=f"{w.model} ids are {form[1] if form else ''}")
    value = report.get("value")
    if w.model == "register" and value is not None and not isinstance(value, int):
        raise WorkloadError(f"workload {w.name}: verify reported value {value!r}", hint="register values are integers")
    for key in ("present", "corrupt"):
        if not isinstance(report.get(key, []), list):
            raise WorkloadError(f"workload {w.name}: verify's {key} is not a list", hint="see docs/workloads.md")


# The oracle models by name, the one place ``judge`` dispatches through (a manifest chooses its
# model from catalog.workloads.MODELS: the same names). Each takes (workload, the acks that must
# hold, verify's report, cut time, seed, ops issued).
Model = Callable[[Workload, list[Ack], dict[str, Any], float | None, int, int | None], list[Violation]]
MODELS: dict[str, Model] = {
    "set": lambda w, acks, rep, cut_t, seed, issued: check_set(acks, rep, cut_t),
    "prefix": lambda w, acks, rep, cut_t, seed, issued: check_prefix(acks, rep, cut_t,
                                                                      form="present" if w.source else w.name),
    "register": lambda w, acks, rep, cut_t, seed, issued: check_register(acks, rep, cut_t, issued=issued),
    "blocks": lambda w, acks, rep, cut_t, seed, issued: check_direct(acks, rep, cut_t, seed=seed, issued=issued,
                                                                      generic=bool(w.source)),
}


def judge(workload: str | Workload, acks: list[Ack], report: dict[str, Any], cut_t: float | None = None,
          seed: int = 0, kernel_lines: list[str] | None = None, issued: int | None = None) -> Verdict:
    """Apply the workload's oracle model; an unmountable filesystem loses every acked op.
    ``acks`` must hold; ``issued``: how many ops may have reached the disk (default: the acked
    ones and the one in flight). An earlier crash state requires fewer acks than were issued."""
    w = workload if isinstance(workload, Workload) else workloads.get(workload)
    if w.source:
        check_contract(w, acks, report)
    if report.get("mount_error"):
        violations = [Violation("unmountable", "filesystem on xvdb", report["mount_error"], max(len(acks), 1),
                                _ack_ev(acks[-1] if acks else None, cut_t))]
    else:
        violations = MODELS[w.model](w, acks, report, cut_t, seed, issued)
    return Verdict(w.name, len(acks), violations, kernel_lines or [])
