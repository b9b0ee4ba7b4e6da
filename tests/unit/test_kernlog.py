"""Kernel-log evidence: the lines that show what the block path did, from 6.1 and 6.12 guests."""

from __future__ import annotations

from harness.vm.kernlog import evidence

# Linux 6.1 prints both lines when an empty flush fails; 6.11+ (commit dd9300e9) only the first.
LINUX_6_1 = ["[  5.1] blkfront: xvdb: empty flush op failed", "[  5.1] blkfront: xvdb: barrier or flush: disabled;"]
LINUX_6_12 = ["[  5.1] blkfront: xvdc: empty flush op failed", "[  5.2] blkfront: xvdc: barrier op failed"]


def test_failed_flush_is_evidence_with_and_without_the_disabled_line(tmp_path):
    a, b = tmp_path / "kmsg-domu-a.log", tmp_path / "kmsg-other.log"
    a.write_text("\n".join([*LINUX_6_1, "[  6.0] random: crng init done"]) + "\n")
    b.write_text("\n".join([*LINUX_6_12, "# stream ended: closed"]) + "\n")
    lines = evidence([a, b])
    assert lines == [f"kmsg-domu-a: {x}" for x in LINUX_6_1] + [f"kmsg-other: {x}" for x in LINUX_6_12]


def test_evidence_is_bounded_and_skips_missing_logs(tmp_path):
    log = tmp_path / "kmsg.log"
    log.write_text("".join(f"[{i}] EXT4-fs error (device xvdb): bad block {i}\n" for i in range(100)))
    lines = evidence([tmp_path / "absent.log", log], limit=5)
    assert len(lines) == 5 and lines[-1].endswith("bad block 99")
