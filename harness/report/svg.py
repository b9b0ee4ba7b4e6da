"""Inline SVG plots for the self-contained pages (the run page, the compare report): no script,
no image files, no plotting library."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..stats import percentile

PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#bc4c00", "#656d76")


@dataclass(frozen=True)
class Series:
    label: str
    latencies_us: Sequence[int]


def latency_cdf(latencies_us: Sequence[int], w: int = 520, h: int = 160) -> str:
    """The fsync (ack) latency CDF of every iteration, log-scaled time axis (the run page)."""
    return latency_cdfs([Series("", latencies_us)], w, h)


def _figures(lat: list[int]) -> str:
    p50, p99 = percentile(lat, 0.5) or 0, percentile(lat, 0.99) or 0
    return f"p50 {p50 / 1000:.2f} ms, p99 {p99 / 1000:.2f} ms, {len(lat)} acks"


def latency_cdfs(series: Sequence[Series], w: int = 520, h: int = 160) -> str:
    """Latency CDFs on one log-scaled time axis. One series: its figures above the plot; more:
    a legend line per series below it (its colour, label and figures)."""
    data = [(s.label, sorted(v for v in s.latencies_us if v > 0)) for s in series]
    data = [(label, lat) for label, lat in data if len(lat) >= 2]
    if not data:
        return '<p class="muted">no latencies recorded</p>'
    first, last = min(lat[0] for _, lat in data), max(lat[-1] for _, lat in data)
    lo, hi = math.log10(first), math.log10(last) + 1e-9

    def polyline(lat: list[int], colour: str) -> str:
        def xy(i: int, v: int) -> str:
            x, y = 40 + (math.log10(v) - lo) / (hi - lo) * (w - 60), h - 25 - i / (len(lat) - 1) * (h - 40)
            return f"{x:.1f},{y:.1f}"
        step = max(1, len(lat) // 400)
        pts = " ".join(xy(i, v) for i, v in [*list(enumerate(lat))[::step], (len(lat) - 1, lat[-1])])
        return f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>'

    lines = "".join(polyline(lat, PALETTE[k % len(PALETTE)]) for k, (_, lat) in enumerate(data))
    axes = (f'<text x="40" y="{h - 8}" font-size="11">{first / 1000:.2f} ms</text>'
            f'<text x="{w - 20}" y="{h - 8}" font-size="11" text-anchor="end">{last / 1000:.1f} ms</text>'
            f'<text x="2" y="14" font-size="11">1.0</text><text x="2" y="{h - 25}" font-size="11">0</text>')
    if len(data) == 1 and not data[0][0]:
        legend, height = f'<text x="{w // 2}" y="14" font-size="11">{_figures(data[0][1])}</text>', h
    else:
        legend = "".join(
            f'<rect x="40" y="{h + 16 * k + 4}" width="14" height="4" fill="{PALETTE[k % len(PALETTE)]}"/>'
            f'<text x="60" y="{h + 16 * k + 10}" font-size="11">{html.escape(label)}: {_figures(lat)}</text>'
            for k, (label, lat) in enumerate(data))
        height = h + 16 * len(data) + 4
    return (f'<svg width="{w}" height="{height}" role="img" aria-label="latency CDF">'
            + lines + axes + legend + "</svg>")
