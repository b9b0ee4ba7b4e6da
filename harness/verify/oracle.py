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
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog.workloads import Ack


@dataclass
class Violation:
    kind: str            # lost, corrupt, hole, stale, integrity, missing, unmountable, unexpected
    what: str            # which record/block/version/transactions
    found: str           # what verify found
    count: int = 1
    ack: dict[str, Any] | None = None   # the (last) ack concerned: id, time, seconds before the cut

    def line(self) -> str:
        ack = ""
        if self.ack:
            dt = self.ack["before_cut_s"]
            when = f"{dt:.3f} s before the cut" if dt > 0 else "as the power was cut (drained from SSH after stop)"
            ack = f"; acked as {self.ack['id']} {when}"
        return f"{self.kind}: {self.what}: found {self.found}{ack}"


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
        return sum(v.count for v in self.violations if v.kind in ("lost", "corrupt", "stale", "missing",
                                                                    "unmountable", "integrity"))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["lost_acked"] = self.lost_acked
        return d


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
        return [Violation("missing", "append.dat", "no file", last_acked + 1, _ack_ev(by_id[last_acked], cut_t))]
    states = expand(report.get("records", []))
    ok_idx = [i for i, s in enumerate(states) if s == "ok"]
    last_ok = max(ok_idx) if ok_idx else -1
    out: list[Violation] = []
    for kind, bad in (("lost", ("zero", "short", "missing")), ("corrupt", ("corrupt", "foreign", "misplaced"))):
        idx = [i for i in range(last_acked + 1) if (states[i] if i < len(states) else "missing") in bad]
        for a, b in _ranges(idx):
            found = sorted({states[i] if i < len(states) else "missing" for i in range(a, b + 1)})
            out.append(Violation(kind, f"acked records {_rng(a, b)}", "/".join(found), b - a + 1,
                                 _ack_ev(by_id.get(b), cut_t)))
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
    if not report.get("exists"):
        return [Violation("missing", "replace.dat", "no file", 1, ev)]
    if report.get("state") != "ok":
        return [Violation("corrupt", f"replace.dat (acked version {v_acked})",
                          f"{report.get('state')} ({report.get('size')} bytes)", 1, ev)]
    found = report.get("version")
    if found is None or found < v_acked:
        return [Violation("stale", f"replace.dat (acked version {v_acked})", f"version {found}", 1, ev)]
    if found > (issued if issued is not None else v_acked + 1):
        return [Violation("unexpected", f"replace.dat (acked version {v_acked})",
                          f"version {found}, never written", 1, ev)]
    return []


def direct_block(seed: int, op: int, nblocks: int) -> int:
    """Same choice as guests/xdh-workload: which block op number ``op`` writes."""
    h = hashlib.sha256(f"{seed}:direct:{op}".encode()).digest()
    return int.from_bytes(h[:8], "little") % nblocks


def check_direct(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None, *,
                 seed: int = 0, issued: int | None = None) -> list[Violation]:
    nblocks = report.get("nblocks", 0)
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
    out: list[Violation] = []
    for b in sorted(set(acked) | set(found)):
        v_acked, ack = acked.get(b, (0, None))
        st, ver = found.get(b, ("zero", None))
        # what this block may hold: its last acked version (zeros if none) and, for the
        # block of the op in flight at the cut, also the next version or a torn block
        if (st == "ok" and ver == v_acked and v_acked > 0) or (st == "zero" and v_acked == 0):
            continue
        if b in newer and ((st == "ok" and v_acked < ver <= newer[b]) or st == "corrupt"):
            continue
        ev = _ack_ev(ack, cut_t)
        what = f"block {b} version {v_acked}" if v_acked else f"block {b} (never acked)"
        if v_acked == 0:
            out.append(Violation("unexpected", what, f"{st} version {ver}" if st == "ok" else st, 1))
        elif st == "zero":
            out.append(Violation("lost", what, "zeros", 1, ev))
        elif st != "ok":
            out.append(Violation("corrupt", what, st, 1, ev))
        elif ver < v_acked:
            out.append(Violation("stale", what, f"version {ver}", 1, ev))
        else:
            out.append(Violation("unexpected", what, f"version {ver}, never written", 1, ev))
    return out


def check_sqlite(acks: list[Ack], report: dict[str, Any], cut_t: float | None = None) -> list[Violation]:
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
        out.append(Violation("integrity", "PRAGMA integrity_check", found, max(last_acked + 1, 1),
                             _ack_ev(by_id.get(last_acked), cut_t)))
    present: set[int] = set()
    for a, b in report.get("ids", []):
        present.update(range(a, b + 1))
    missing = [i for i in range(last_acked + 1) if i not in present]
    for a, b in _ranges(missing):
        out.append(Violation("lost", f"acked transactions {_rng(a, b)}", "absent", b - a + 1,
                             _ack_ev(by_id.get(b), cut_t)))
    top = max(present) if present else -1
    holes = [i for i in range(last_acked + 1, top) if i not in present]
    for a, b in _ranges(holes):
        out.append(Violation("hole", f"transactions {_rng(a, b)} before durable transaction {top}", "absent",
                             b - a + 1))
    bad = [i for i in report.get("bad", []) if i <= last_acked]
    for a, b in _ranges(sorted(bad)):
        out.append(Violation("corrupt", f"acked transactions {_rng(a, b)}", "bad checksum", b - a + 1,
                             _ack_ev(by_id.get(b), cut_t)))
    return out


CHECKS = {"append": check_append, "replace": check_replace, "direct": check_direct, "sqlite": check_sqlite}


def judge(workload: str, acks: list[Ack], report: dict[str, Any], cut_t: float | None = None, seed: int = 0,
          kernel_lines: list[str] | None = None, issued: int | None = None) -> Verdict:
    """Apply the workload's oracle; an unmountable filesystem loses every acked op. ``acks``
    must hold; ``issued``: how many ops may have reached the disk (default: the acked ones and
    the one in flight). An earlier crash state requires fewer acks than were issued."""
    if report.get("mount_error"):
        violations = [Violation("unmountable", "filesystem on xvdb", report["mount_error"], max(len(acks), 1),
                                _ack_ev(acks[-1] if acks else None, cut_t))]
    elif workload == "direct":
        violations = check_direct(acks, report, cut_t, seed=seed, issued=issued)
    elif workload == "replace":
        violations = check_replace(acks, report, cut_t, issued=issued)
    else:
        violations = CHECKS[workload](acks, report, cut_t)
    return Verdict(workload, len(acks), violations, kernel_lines or [])
