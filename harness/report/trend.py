"""Night over night (``xdh report trend``): per night (a run or a merged run directory) its
iterations, losses, crash states and fsync p99 per configuration, and the components that
changed since the night before; a table and a plot. Pure: summaries in, records and text out."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

from ..jsonio import differences
from ..stats import percentile
from ..status import Status, expected
from .page import STYLE
from .records import CampaignSummary, IterationRecord
from .svg import PALETTE


@dataclass(frozen=True)
class Night:
    run: str
    started: str                        # UTC, as the summary recorded it ("" for an older summary)
    iterations: int
    losses: int
    unexpected: int                     # verdicts other than expected (a positive control's losses are expected)
    no_verdict: int
    crash_states: int
    exit_code: int
    p99_ms: dict[str, float] = field(default_factory=dict)     # configuration -> median of its iterations' p99
    changed: list[str] = field(default_factory=list)            # "dom0.xen-hypervisor-4.17-amd64 4.17.5 -> 4.17.6"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def configuration(it: IterationRecord) -> str:
    """What a CI's test history follows across nights (as the JUnit class name)."""
    return "/".join(x for x in (it.release, it.backend, it.disk_cache.value, it.fault, it.workload) if x)


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The component versions that differ, one line each."""
    def show(v: Any) -> str:
        return "(none)" if v is None else str(v)
    return [f"{k} {show(a)} -> {show(b)}" for k, a, b in differences(before, after)]


def nights(summaries: list[tuple[str, CampaignSummary]]) -> list[Night]:
    """One Night per summary, oldest first (by start time; the order given where it is unknown)."""
    order = sorted(enumerate(summaries), key=lambda e: (e[1][1].started_at or "", e[0]))
    out: list[Night] = []
    previous: dict[str, Any] | None = None
    for _, (run, s) in order:
        p99: dict[str, list[float]] = {}
        for it in s.iterations:
            if it.fsync_latency_us.get("p99"):
                p99.setdefault(configuration(it), []).append(it.fsync_latency_us["p99"] / 1000)
        c = s.counts()
        unexpected = sum(1 for it in s.iterations if it.status in (Status.PASS, Status.LOSS)
                         and it.status != expected(it.expect or s.expect))
        out.append(Night(run, s.started_at, len(s.iterations), c[Status.LOSS], unexpected,
                         c[Status.GUEST_DIED] + c[Status.ERROR], s.crash_states_total, int(s.exit_code),
                         {k: round(percentile(v, 0.5) or 0, 1) for k, v in sorted(p99.items())},
                         changes(previous, s.versions) if previous is not None else []))
        previous = s.versions
    return out


def markdown(rows: list[Night]) -> str:
    configs = sorted({k for n in rows for k in n.p99_ms})
    head = "| night | run | exit | iterations | losses | not as expected | no verdict | crash states | " + \
        " | ".join(f"p99 {c} (ms)" for c in configs) + " | changed since the night before |"
    lines = [head, "|" + " --- |" * (9 + len(configs))]
    for n in rows:
        lines.append(f"| {n.started or '-'} | {n.run} | {n.exit_code} | {n.iterations} | {n.losses} | "
                     f"{n.unexpected} | {n.no_verdict} | {n.crash_states} | "
                     + " | ".join(str(n.p99_ms.get(c, "-")) for c in configs)
                     + f" | {'; '.join(n.changed) or '-'} |")
    return "# xdh: night over night\n\n" + "\n".join(lines) + "\n"


def plot(rows: list[Night], w: int = 560, h: int = 180) -> str:
    """fsync p99 per configuration, one line each, across the nights (x: night, y: ms)."""
    configs = sorted({k for n in rows for k in n.p99_ms})
    top = max([v for n in rows for v in n.p99_ms.values()] or [0])
    if len(rows) < 2 or top <= 0:
        return '<p class="muted">fewer than two nights with latencies: no plot</p>'

    def xy(i: int, v: float) -> str:
        return f"{40 + i / (len(rows) - 1) * (w - 60):.1f},{h - 25 - v / top * (h - 40):.1f}"
    lines, legend = [], []
    for k, c in enumerate(configs):
        colour = PALETTE[k % len(PALETTE)]
        pts = " ".join(xy(i, n.p99_ms[c]) for i, n in enumerate(rows) if c in n.p99_ms)
        lines.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        legend.append(f'<rect x="40" y="{h + 16 * k + 4}" width="14" height="4" fill="{colour}"/>'
                      f'<text x="60" y="{h + 16 * k + 10}" font-size="11">{html.escape(c)}</text>')
    axes = (f'<text x="2" y="14" font-size="11">{top:.0f} ms</text><text x="2" y="{h - 25}" font-size="11">0</text>'
            f'<text x="40" y="{h - 8}" font-size="11">{html.escape(rows[0].started or rows[0].run)}</text>'
            f'<text x="{w - 20}" y="{h - 8}" font-size="11" text-anchor="end">'
            f'{html.escape(rows[-1].started or rows[-1].run)}</text>')
    return (f'<svg width="{w}" height="{h + 16 * len(configs) + 4}" role="img" aria-label="fsync p99 per night">'
            + "".join(lines) + axes + "".join(legend) + "</svg>")


def page(rows: list[Night]) -> str:
    """The trend's index.html: the plot, then the table."""
    configs = sorted({k for n in rows for k in n.p99_ms})
    head = "".join(f"<th>{html.escape(x)}</th>" for x in ["night", "run", "exit", "iterations", "losses",
                                                           "not as expected", "no verdict", "crash states",
                                                           *(f"p99 {c} (ms)" for c in configs), "changed"])
    def row(n: Night) -> str:
        cells = [n.started or "-", n.run, n.exit_code, n.iterations, n.losses, n.unexpected, n.no_verdict,
                 n.crash_states,
                 *(n.p99_ms.get(c, "-") for c in configs)]
        changed = "<br>".join(html.escape(x) for x in n.changed) or "-"
        return "<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + f"<td>{changed}</td></tr>"
    body = "".join(row(n) for n in rows)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>xdh: night over night</title>"
            f"<style>{STYLE}</style></head><body><h1>xdh: night over night</h1><h2>fsync p99 per configuration</h2>"
            f"{plot(rows)}<table><tr>{head}</tr>{body}</table></body></html>\n")
