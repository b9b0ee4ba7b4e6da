"""The write log of the volatile disk-cache model: dm-log-writes, parsed, applied and written.

The disk under test can be recorded by QEMU's ``blklogwrites`` filter, which writes the
dm-log-writes format (the one fstests' ``replay-log`` reads): every write with its data and
every flush, in completion order. A disk with a volatile write cache may lose, at a power
cut, any write it has not been told to flush. So one recorded run yields a crash state at
every flush, and subsets of the writes after each (``states.py`` plans them and says which
acks each must hold).

Why blklogwrites rather than nbdkit's ``cache`` filter: it is built into the QEMU we already
run (no extra process on the data path, no NBD socket), it records *which* writes a flush
covered, so one run yields many crash states instead of one, and its log is a standard
format other tools can replay. Its limits (QEMU 7.2, block/blklogwrites.c): no FUA flag (the
block layer emulates FUA with a flush, which is logged), and entries are written after the
data write completes, so a write completing while a flush is in progress may be logged
before that flush although the flush did not cover it: the model is then slightly kinder
than the worst real disk, never harsher.

Format (little-endian): sector 0 holds ``{u64 magic, u64 version, u64 nr_entries, u32
sectorsize}``; each entry starts on a new log sector with ``{u64 sector, u64 nr_sectors, u64
flags, u64 data_len}`` padded to the sector size, followed by ``nr_sectors`` sectors of data
(none for flushes and discards). ``sector``/``nr_sectors`` count log sectors. QEMU rewrites
the super block on every flush (and every 4096 entries), so entries past ``nr_entries`` may
exist at a cut: they are read too, up to the first empty slot.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LogError

MAGIC = 0x6A736677736872
VERSION = 1
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16
KNOWN_FLAGS = FLUSH | FUA | DISCARD | MARK | METADATA
SUPER = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")



@dataclass(frozen=True)
class Entry:
    index: int
    sector: int          # in log sectors
    nr_sectors: int
    flags: int
    data_offset: int     # byte offset of the data in the log file (0 if none)
    data_len: int        # bytes of data that follow (writes; mark labels)
    end: int = 0         # byte offset just past the entry in the log file: how far the log had to grow

    @property
    def is_flush(self) -> bool:
        return bool(self.flags & FLUSH)

    @property
    def is_write(self) -> bool:
        return not self.flags & (DISCARD | MARK) and self.nr_sectors > 0


@dataclass
class WriteLog:
    path: Path
    sectorsize: int
    nr_entries: int                      # as the super block says (may lag behind at a cut)
    entries: list[Entry] = field(default_factory=list)

    def flushes(self) -> list[int]:
        """Positions (in ``entries``) of the flush entries."""
        return [i for i, e in enumerate(self.entries) if e.is_flush or e.flags & FUA]

    def last_flush(self) -> int:
        """Position of the last flush entry, or -1 if none."""
        f = self.flushes()
        return f[-1] if f else -1

    def rows(self) -> list[list[int]]:
        """Every entry as ``[sector, nr_sectors, flags, data_offset, data_len]``: the table
        ``guests/xdh-replay`` applies (``verify.batch.LogView``)."""
        return [[e.sector, e.nr_sectors, e.flags, e.data_offset, e.data_len] for e in self.entries]


def parse(path: Path, sectorsize_hint: int = 512) -> WriteLog:
    """Read a dm-log-writes log. Raises LogError on a bad super block or a malformed entry.

    QEMU writes the super block only at the first flush (or after 4096 entries): a log of a
    run that never flushed has an all-zero super block. It is read with ``sectorsize_hint``
    (the ``log-sector-size`` the harness gave QEMU) and zero committed entries."""
    with open(path, "rb") as f:
        head = f.read(SUPER.size)
        if len(head) < SUPER.size:
            if not head.strip(b"\0"):
                return WriteLog(path, sectorsize_hint, 0)      # nothing logged yet
            raise LogError(f"{path}: too short for a write-log super block")
        magic, version, nr_entries, sectorsize = SUPER.unpack(head)
        if magic == version == nr_entries == sectorsize == 0:
            magic, version, sectorsize = MAGIC, VERSION, sectorsize_hint
        if magic != MAGIC:
            raise LogError(f"{path}: bad magic {magic:#x} (not a dm-log-writes / blklogwrites log)")
        if version != VERSION:
            raise LogError(f"{path}: unsupported log version {version}")
        if sectorsize < 512 or sectorsize & (sectorsize - 1):
            raise LogError(f"{path}: bad sector size {sectorsize}")
        size = path.stat().st_size
        log = WriteLog(path, sectorsize, nr_entries)
        pos = sectorsize
        while pos + ENTRY.size <= size:
            f.seek(pos)
            sector, nr, flags, data_len = ENTRY.unpack(f.read(ENTRY.size))
            if sector == nr == flags == data_len == 0:
                break                              # first empty slot: end of what reached the log
            if flags & ~KNOWN_FLAGS:
                if len(log.entries) >= nr_entries:
                    break                          # garbage past the committed entries: a torn tail
                raise LogError(f"{path}: entry {len(log.entries)} at byte {pos} has unknown flags {flags:#x}")
            dlen = _data_bytes(flags, nr, data_len, sectorsize)
            data_at = pos + sectorsize
            if data_at + dlen > size:
                if len(log.entries) >= nr_entries:
                    break                          # the data of an uncommitted entry did not make it
                raise LogError(f"{path}: entry {len(log.entries)} runs past the end of the log")
            end = data_at + -(-dlen // sectorsize) * sectorsize
            log.entries.append(Entry(len(log.entries), sector, nr, flags, data_at if dlen else 0, dlen, end))
            pos = end
        if len(log.entries) < nr_entries:
            raise LogError(f"{path}: super block promises {nr_entries} entries, found {len(log.entries)}")
        return log


def _data_bytes(flags: int, nr_sectors: int, data_len: int, sectorsize: int) -> int:
    """Bytes of data after an entry's header: none for a discard, the label of a mark, else
    the written sectors."""
    if flags & DISCARD:
        return 0
    if flags & MARK:
        return data_len
    return nr_sectors * sectorsize


def apply(log: WriteLog, image: Path, positions: list[int]) -> int:
    """Write the given entries (in log order) into a raw ``image``; returns bytes written.
    Discards write zeroes (a discarded range reads back as zeroes on this disk model)."""
    written = 0
    with open(log.path, "rb") as src, open(image, "r+b") as dst:
        for i in sorted(positions):
            e = log.entries[i]
            if e.flags & (FLUSH | MARK) and not e.nr_sectors:
                continue
            off = e.sector * log.sectorsize
            if e.flags & DISCARD:
                dst.seek(off)
                dst.write(bytes(e.nr_sectors * log.sectorsize))
                written += e.nr_sectors * log.sectorsize
                continue
            if not e.is_write:
                continue
            src.seek(e.data_offset)
            remaining = e.data_len
            dst.seek(off)
            while remaining:
                chunk = src.read(min(remaining, 1 << 20))
                if not chunk:
                    raise LogError(f"{log.path}: short data for entry {i}")
                dst.write(chunk)
                remaining -= len(chunk)
            written += e.data_len
    return written


def apply_pieces(log: WriteLog, image: Path, pieces: Sequence[tuple[int, int, int]]) -> int:
    """Write parts of entries into a raw ``image``: (entry position, first log sector in the
    entry, sectors), a torn write's units that reached the disk; returns bytes written."""
    ss, written = log.sectorsize, 0
    with open(log.path, "rb") as src, open(image, "r+b") as dst:
        for i, first, n in pieces:
            e = log.entries[i]
            if not e.is_write or first < 0 or first + n > e.nr_sectors:
                raise LogError(f"{log.path}: entry {i} has no sectors {first}..{first + n - 1} to apply")
            src.seek(e.data_offset + first * ss)
            data = src.read(n * ss)
            if len(data) != n * ss:
                raise LogError(f"{log.path}: short data for entry {i}")
            dst.seek((e.sector + first) * ss)
            dst.write(data)
            written += len(data)
    return written


def write_log(path: Path, sectorsize: int, ops: list[tuple[str, int, bytes]], nr_entries: int | None = None) -> None:
    """Write a dm-log-writes log from ``ops`` = [("write", sector, data) | ("flush", 0, b"") |
    ("discard", sector, nr_sectors as bytes length)]: for crafted tests and for tools."""
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % sectorsize)
    body = b""
    for kind, sector, data in ops:
        if kind == "write":
            body += pad(ENTRY.pack(sector, len(data) // sectorsize, 0, 0)) + pad(data)
        elif kind == "flush":
            body += pad(ENTRY.pack(0, 0, FLUSH, 0))
        elif kind == "discard":
            body += pad(ENTRY.pack(sector, len(data) // sectorsize, DISCARD, 0))
        else:
            raise ValueError(kind)
    n = len(ops) if nr_entries is None else nr_entries
    path.write_bytes(pad(SUPER.pack(MAGIC, VERSION, n, sectorsize)) + body)

