"""The flush ledger of one crash run: each layer's flush counters at the workload's start and
just before the cut, and the layer where flushes stopped going down (a drop), where a failed
flush came back up as a success (a mask), or where a flush was acknowledged without making the
data durable (a lie). Pure: the counters are read by ``stack.counters``; the attribution reads
only counters and each layer's own state, never the fault's name.

The layers, top down (what is counted, where):
  1 workload          durable ops acked (the ack stream)
  2 domU block layer  flush requests that reached blkfront: /sys/block/xvdb/stat (failed ones
                      count too); its write cache (write through: flushes end here, OK)
  3 blkfront / ring   phy: blkback's statistics/f_req (ring flushes received); qdisk: the device
                      model's fdatasync calls (a tracefs histogram in dom0), when countable
  4 backend           -> dom0's device: /sys/block/vdX/stat of the disk under test
  5 dom0 device       -> the outer QEMU: query-blockstats flush_operations / failed
  6 outer disk        flushes the write log recorded (volatile model); cache.no-flush per node
Counts are compared zero against non-zero, never for equality: the block layer merges flushes,
QEMU skips a flush with nothing written since the last (``../shared/notes/layer-counters.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Layer(StrEnum):
    WORKLOAD = "workload"
    FILESYSTEM = "domU filesystem"
    DOMU_BLOCK = "domU block layer"
    BLKFRONT = "blkfront"
    BACKEND = "backend"
    DOM0_DEVICE = "dom0 block device"
    OUTER_DISK = "outer disk"


class Kind(StrEnum):
    NONE = "none"        # the flush path held: every layer passed flushes on
    DROP = "drop"        # flushes reached the layer and none left it, no error anywhere
    MASK = "mask"        # a flush failed below and the layer reported success upward
    LIE = "lie"          # acknowledged, with the layer's own evidence of doing it missing
    UNKNOWN = "unknown"  # nothing to attribute (no durable op acked, or no counters)


WRITE_THROUGH = "write through"
DOMU_DUT = "xvdb"      # the disk under test in the domU, as its kernel names it


@dataclass(frozen=True)
class Sample:
    """Every layer's counters at one moment (cumulative since boot; ``None``: not countable here)."""

    acks: int = 0
    domu_flushes: int | None = 0          # xvdb: flush requests completed by blkfront (None: kernel < 5.5)
    domu_write_cache: str = ""            # "write back" / "write through"
    nobarrier: bool = False               # the workload's filesystem is mounted without barriers
    backend_flushes: int | None = None    # phy: f_req; qdisk: the device model's fdatasync calls
    backend_failed: int | None = None     # qdisk: fdatasync calls that returned an error
    dom0_flushes: int | None = 0          # dom0's device of the disk under test
    dom0_write_cache: str = ""
    outer_flushes: int = 0                # the outer QEMU's flush_operations of the disk under test
    outer_failed: int = 0
    outer_no_flush: bool = False          # a node of the disk under test has cache.no-flush

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sample:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Evidence:
    """What the layers said in their logs over the run (counted after it)."""

    blkfront_failed: int = 0        # domU: "empty flush op failed" (blkfront masked a failed flush)
    blkfront_disabled: bool = False  # domU (6.1): "barrier or flush: disabled" after a failure
    dom0_errors: int = 0            # dom0: I/O errors on its device of the disk under test
    log_flushes: int | None = None  # the write log's flush entries after the workload started (volatile)
    eatmydata: bool = False         # qdisk: the device model runs with libeatmydata (fdatasync a no-op)
    domu_errors: int = 0            # domU: I/O errors on the disk under test (a failed flush passed up)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Evidence:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Row:
    """One layer's line of the ledger: what it passed down over the run, what failed there since
    the stack came up (a fault may strike in mkfs, before the workload)."""

    layer: Layer
    count: int | None          # flushes (or durable ops) seen at this layer over the run
    failed: int = 0
    note: str = ""


@dataclass(frozen=True)
class Attribution:
    kind: Kind
    layer: Layer | None
    text: str                  # one line: "flush died in the domU block layer: 87 fsyncs, ..."

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Attribution:
        return cls(Kind(d["kind"]), Layer(d["layer"]) if d.get("layer") else None, d["text"])


@dataclass(frozen=True)
class Ledger:
    """flushes.json: the two samples, the evidence and the backend they were read on."""

    backend: str
    ring: str                       # what backend_flushes counts: "f_req", "fdatasync" or ""
    start: Sample
    end: Sample
    evidence: Evidence = field(default_factory=Evidence)
    sampled_seconds: float = 0.0    # the time the samples took (they run beside the workload)

    def delta(self, name: str) -> int | None:
        a, b = getattr(self.start, name), getattr(self.end, name)
        return None if a is None or b is None else b - a

    def rows(self) -> list[Row]:
        e, d = self.end, self.delta
        return [
            Row(Layer.WORKLOAD, d("acks"), note="durable ops acked"),
            Row(Layer.DOMU_BLOCK, d("domu_flushes"),
                note=f"flush requests to blkfront; write cache: {e.domu_write_cache or '?'}"
                     + ("; filesystem mounted nobarrier" if e.nobarrier else "")),
            Row(Layer.BLKFRONT, d("backend_flushes"), e.backend_failed or 0,
                note={"f_req": "ring flushes blkback received",
                      "fdatasync": "fdatasync calls of dom0's device model"}.get(self.ring, "not countable")
                     + (f"; 'empty flush op failed' x{self.evidence.blkfront_failed}"
                        if self.evidence.blkfront_failed else "")),
            Row(Layer.DOM0_DEVICE, d("dom0_flushes"), self.evidence.dom0_errors,
                note=f"flushes that reached dom0's device; write cache: {e.dom0_write_cache or '?'}"),
            Row(Layer.OUTER_DISK, d("outer_flushes"), e.outer_failed,
                note="flushes the outer QEMU received" + ("; cache.no-flush set" if e.outer_no_flush else "")
                     + ("" if self.evidence.log_flushes is None
                        else f"; {self.evidence.log_flushes} reached the write log")),
        ]

    def per_op(self) -> dict[str, float | None]:
        """Flushes per durable op at each layer (the mode's flush amplification)."""
        acks = self.delta("acks") or 0
        return {r.layer.value: (round(r.count / acks, 2) if acks and r.count is not None else None)
                for r in self.rows()[1:]}

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"rows": [asdict(r) for r in self.rows()], "attribution": asdict(attribute(self)),
                               "per_op": self.per_op()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ledger:
        return cls(d["backend"], d.get("ring", ""), Sample.from_json(d["start"]), Sample.from_json(d["end"]),
                   Evidence.from_json(d.get("evidence", {})), d.get("sampled_seconds", 0.0))


def _below_failed(g: Ledger) -> list[str]:
    """Where a flush failed below blkfront since the stack came up (a fault often strikes in mkfs,
    before the workload: the end sample's totals and the whole run's kernel logs, not deltas)."""
    out = []
    if g.end.outer_failed > 0:
        out.append(f"the outer disk failed {g.end.outer_failed}")
    if g.evidence.dom0_errors:
        out.append(f"dom0's device logged {g.evidence.dom0_errors} I/O error(s)")
    if (g.end.backend_failed or 0) > 0:
        out.append(f"the device model's fdatasync failed {g.end.backend_failed}")
    return out


def _masked(g: Ledger, acks: int) -> Attribution:
    """A failed flush turned into a success at blkfront, and what became of the flushes after it."""
    below = "; ".join(_below_failed(g)) or "a flush failed below"
    then = ""
    if g.evidence.blkfront_disabled or g.end.domu_write_cache == WRITE_THROUGH:
        then = ("; then flushing was switched off (write cache: write through): later flushes died in the "
                "domU block layer")
    elif (g.delta("domu_flushes") or 0) > max(g.delta("dom0_flushes") or 0, 0) + 1:
        then = (f"; then blkfront completed flushes without the ring: {g.delta('domu_flushes')} flush requests "
                f"in the domU, {g.delta('dom0_flushes')} reached dom0's device")
    return Attribution(Kind.MASK, Layer.BLKFRONT,
                       f"flush failed below and blkfront reported success: {below}; the guest saw {acks} durable "
                       f"ops succeed ('empty flush op failed' x{g.evidence.blkfront_failed}){then}")


def attribute(g: Ledger) -> Attribution:
    """The first layer where flushes asked for from above did not go on down (see the module doc)."""
    acks = g.delta("acks") or 0
    if acks <= 0:
        return Attribution(Kind.UNKNOWN, None, "no durable op was acked: nothing to attribute")
    if g.evidence.blkfront_failed or g.evidence.blkfront_disabled:
        return _masked(g, acks)
    below = _below_failed(g)
    if below:
        if g.evidence.domu_errors and g.end.domu_write_cache != WRITE_THROUGH:
            return Attribution(Kind.NONE, None, "flush path intact: a flush failed below and the error reached "
                               f"the guest ({'; '.join(below)}; the domU logged "
                               f"{g.evidence.domu_errors} I/O error(s) on {DOMU_DUT}); blkfront masked none")
        return _masked(g, acks)
    d, v, o = (g.delta(n) or 0 for n in ("domu_flushes", "dom0_flushes", "outer_flushes"))
    ring = g.delta("backend_flushes")
    if g.delta("domu_flushes") is not None and d == 0:
        if g.end.nobarrier:
            return Attribution(Kind.DROP, Layer.FILESYSTEM, f"flush died in the domU filesystem: {acks} durable "
                               "ops, no flush asked for (mounted nobarrier), 0 flush requests reached blkfront")
        return Attribution(Kind.DROP, Layer.DOMU_BLOCK, f"flush died in the domU block layer: {acks} durable ops, "
                           f"0 flush requests reached blkfront (write cache: {g.end.domu_write_cache or '?'})")
    if g.end.domu_write_cache == WRITE_THROUGH:      # switched during the run: flushes after it end there
        return Attribution(Kind.DROP, Layer.DOMU_BLOCK, f"flush died in the domU block layer: its write cache "
                           f"went to write through during the run ({d} flush requests reached blkfront before)")
    if ring == 0 and g.ring == "fdatasync" and d > 0 and v >= d:
        ring = None     # dom0's device got them all: the device model flushes another way (QEMU 10's
        #                 linux-aio IOCB_CMD_FDSYNC), which the fdatasync counter does not see
    if ring == 0:
        what = "blkback received no ring flush" if g.ring == "f_req" else "dom0's device model made no fdatasync"
        what += " (it runs under eatmydata)" if g.evidence.eatmydata else ""
        return Attribution(Kind.LIE if g.evidence.eatmydata else Kind.DROP,
                           Layer.BACKEND if g.ring == "fdatasync" else Layer.BLKFRONT,
                           f"flush died {'in the backend' if g.ring == 'fdatasync' else 'in blkfront'}: {d} "
                           f"flush requests in the domU, {what}")
    if g.end.dom0_write_cache == WRITE_THROUGH:
        when = "" if g.start.dom0_write_cache == WRITE_THROUGH else ", switched during the run"
        return Attribution(Kind.DROP, Layer.DOM0_DEVICE, f"flush died in dom0's block device: {d} flush requests "
                           f"in the domU{'' if ring is None else f', {ring} left the backend'}, {v} reached dom0's "
                           f"device driver (its write cache: write through{when})")
    if g.delta("dom0_flushes") is not None and v == 0:
        how = " (its device model runs under eatmydata)" if g.evidence.eatmydata else ""
        return Attribution(Kind.LIE if g.evidence.eatmydata else Kind.DROP, Layer.BACKEND,
                           f"flush died in the backend{how}: {d} flush requests crossed the ring, 0 reached "
                           "dom0's device")
    if g.delta("dom0_flushes") is not None and o == 0:
        return Attribution(Kind.DROP, Layer.DOM0_DEVICE, f"flush died below dom0's device: {v} flushes there, "
                           "the outer disk received none")
    if g.end.outer_no_flush or g.evidence.log_flushes == 0:
        seen = "" if g.evidence.log_flushes is None else f", {g.evidence.log_flushes} reached the write log"
        return Attribution(Kind.LIE, Layer.OUTER_DISK, f"flush acknowledged by the outer disk without effect: {o} "
                           f"flushes received{seen}" + (" (cache.no-flush)" if g.end.outer_no_flush else ""))
    return Attribution(Kind.NONE, None, "flush path intact: " + ", ".join(
        f"{k} {x}" for k, x in g.per_op().items() if x is not None) + " flushes per durable op")


# --- reading the layers' own formats (kernel files, QMP replies) -------------------------------
def stat_flushes(stat: str) -> int | None:
    """Flush requests completed, from a /sys/block/DEV/stat line (field 16 of 17; None before Linux 5.5)."""
    fields = stat.split()
    return int(fields[15]) if len(fields) > 15 else None


def mounted_nobarrier(mounts: str, mount_point: str) -> bool:
    """Whether /proc/mounts shows ``mount_point`` with barriers off."""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[1] == mount_point:
            return any(o in ("nobarrier", "barrier=0") for o in parts[3].split(","))
    return False


def blockstats(reply: list[dict[str, Any]], node: str) -> tuple[int, int]:
    """flush_operations and failed_flush_operations of ``node`` from query-blockstats."""
    for entry in reply:
        if entry.get("node-name") == node or entry.get("device") == node:
            st = entry.get("stats", {})
            return int(st.get("flush_operations", 0)), int(st.get("failed_flush_operations", 0))
    return 0, 0


def no_flush_nodes(reply: list[dict[str, Any]], prefix: str) -> bool:
    """Whether any node of the disk under test (node names ``prefix``*) has cache.no-flush."""
    return any(str(n.get("node-name", "")).startswith(prefix) and n.get("cache", {}).get("no-flush")
               for n in reply)


def evidence(kmsg_domu: str, kmsg_dom0: str, dom0_dev: str) -> Evidence:
    """What the kernel logs of the crash run say about flushes (blkfront's masking, dom0's errors)."""
    return Evidence(blkfront_failed=kmsg_domu.count("empty flush op failed"),
                    blkfront_disabled="barrier or flush: disabled" in kmsg_domu,
                    domu_errors=kmsg_domu.count(f"I/O error, dev {DOMU_DUT}"),
                    dom0_errors=sum(1 for line in kmsg_dom0.splitlines()
                                    if dom0_dev and "I/O error" in line and f"dev {dom0_dev}" in line))
