"""The page people open: a self-contained ``index.html`` per run directory (config and versions,
the verdict, per iteration the acks against the cut and what survived, the fsync latency CDF,
each violation with its kernel evidence, links to every log), and an index of runs. Plain
HTML with inline SVG: no script, no network, one file to upload as a CI artifact."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..status import Status

MARK = "<!-- xdh runs index -->"
EXITS = {0: "clean", 1: "loss", 2: "usage", 3: "canary not caught", 4: "differs", 5: "infrastructure",
         6: "harness error", 130: "interrupted"}
COLOURS = {"pass": "#1a7f37", "loss": "#cf222e", "guest-died": "#9a6700", "error": "#9a6700"}
STYLE = """body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px;color:#1f2328}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}.v{color:#fff;font-weight:bold;padding:2px 6px;border-radius:4px}
code,pre{font:12px ui-monospace,monospace}pre{background:#f6f8fa;padding:8px;overflow-x:auto}
details{margin:.6em 0}summary{cursor:pointer}.muted{color:#656d76}"""


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def badge(status: str) -> str:
    return f'<span class="v" style="background:{COLOURS.get(status, "#656d76")}">{esc(status.upper())}</span>'


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _acks(it_dir: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in (it_dir / "acks.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def lost_ids(violations: list[dict[str, Any]], ids: list[str]) -> set[str]:
    """The acked ids a verdict names as lost or damaged (all of them for a missing file, an
    unmountable file system, an integrity failure)."""
    out: set[str] = set()
    for v in violations:
        if v.get("kind") in ("missing", "unmountable", "integrity"):
            return set(ids)
        if v.get("kind") in ("lost", "corrupt", "stale"):
            text = str(v.get("what", ""))
            for a, b in re.findall(r"(\d+)\.\.(\d+)", text):
                out.update(str(i) for i in range(int(a), int(b) + 1))
            out.update(t for t in re.findall(r"[\w:=-]+", text) if t in ids)
    return out


def timeline(acks: list[dict[str, Any]], cut_t: float | None, lost: set[str], w: int = 520, h: int = 120) -> str:
    """Acks over time, the cut at the right edge; red: acked and then lost."""
    if not acks or not cut_t:
        return '<p class="muted">no acks recorded</p>'
    t0 = min(a["t"] for a in acks)
    span = max(cut_t - t0, 1e-3)
    n = len(acks)
    pts = []
    for i, a in enumerate(acks):
        x = 30 + (a["t"] - t0) / span * (w - 40)
        y = h - 20 - i / max(n - 1, 1) * (h - 30)
        colour = "#cf222e" if str(a["id"]) in lost else "#1a7f37"
        pts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" fill="{colour}"/>')
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="acks against the cut">'
            f'<line x1="{w - 10}" y1="5" x2="{w - 10}" y2="{h - 15}" stroke="#000" stroke-dasharray="4"/>'
            f'<text x="{w - 14}" y="14" text-anchor="end" font-size="11">cut</text>'
            f'<text x="30" y="{h - 3}" font-size="11">{span:.1f} s before the cut</text>'
            f'<text x="2" y="12" font-size="11">{n}</text><text x="2" y="{h - 20}" font-size="11">1</text>'
            + "".join(pts) + "</svg>")


def latency_cdf(latencies_us: list[int], w: int = 520, h: int = 160) -> str:
    """The fsync (ack) latency CDF of every iteration, log-scaled time axis."""
    lat = sorted(v for v in latencies_us if v > 0)
    if len(lat) < 2:
        return '<p class="muted">no latencies recorded</p>'
    lo, hi = math.log10(lat[0]), math.log10(lat[-1]) + 1e-9

    def xy(i: int, v: int) -> str:
        return f"{40 + (math.log10(v) - lo) / (hi - lo) * (w - 60):.1f},{h - 25 - i / (len(lat) - 1) * (h - 40):.1f}"
    step = max(1, len(lat) // 400)
    pts = " ".join(xy(i, v) for i, v in [*list(enumerate(lat))[::step], (len(lat) - 1, lat[-1])])
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="latency CDF">'
            f'<polyline points="{pts}" fill="none" stroke="#0969da" stroke-width="1.5"/>'
            f'<text x="40" y="{h - 8}" font-size="11">{lat[0] / 1000:.2f} ms</text>'
            f'<text x="{w - 20}" y="{h - 8}" font-size="11" text-anchor="end">{lat[-1] / 1000:.1f} ms</text>'
            f'<text x="2" y="14" font-size="11">1.0</text><text x="2" y="{h - 25}" font-size="11">0</text>'
            f'<text x="{w // 2}" y="14" font-size="11">p50 {p50 / 1000:.2f} ms, p99 {p99 / 1000:.2f} ms, '
            f'{len(lat)} acks</text></svg>')


def _iteration(run_dir: Path, it: dict[str, Any], base: Path) -> tuple[str, list[int]]:
    d = Path(it.get("run_dir") or run_dir) / ("canary" if it["name"] == "canary" else f"iterations/{it['name']}")
    acks = _acks(d)
    verdict = _read_json(d / "verdict.json") or {}
    cut = _read_json(d / "cut.json") or {}
    ids = [str(a["id"]) for a in acks]
    lost = lost_ids(verdict.get("violations", []), ids)
    rel = Path(*([".."] * len(base.relative_to(run_dir).parts))) if base != run_dir else Path()
    logs = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix in (".log", ".json", ".jsonl", ".argv"))
    links = " ".join(f'<a href="{esc(_href(p, run_dir, rel))}">{esc(p.relative_to(d))}</a>' for p in logs[:40])
    evidence = verdict.get("kernel_evidence", [])
    body = [f'<details{" open" if it["status"] != Status.PASS.value else ""}><summary>{badge(it["status"])} '
            f'<b>{esc(it["name"])}</b> seed {esc(it["seed"])}: {it["acked"]} acked, {it["lost_acked"]} lost'
            f'{", " + str(it.get("crash_states", 1)) + " crash states" if it.get("crash_states", 1) > 1 else ""}'
            f' ({it["seconds"].get("total", 0):.0f} s)</summary>',
            timeline(acks, cut.get("cut_t"), lost),
            f'<p class="muted">green: acked and found intact; red: acked and lost or damaged ({len(lost)})'
            + (f"; fault applied: {esc(it['fault_applied'])}" if it.get("fault_applied") else "") + "</p>"]
    if it.get("error"):
        body.append(f"<pre>{esc(it['error'])}</pre>")
    if it["violations"]:
        body.append("<p>violations:</p><pre>" + esc("\n".join(it["violations"])) + "</pre>")
    if evidence:
        body.append("<p>kernel evidence:</p><pre>" + esc("\n".join(evidence)) + "</pre>")
    body.append(f'<p>logs: {links or "none"}</p><p class="muted">reproduce: <code>xdh reproduce {esc(d)}</code>'
                "</p></details>")
    return "\n".join(body), [int(a.get("latency_us", 0)) for a in acks]


def _href(p: Path, run_dir: Path, rel: Path) -> str:
    """A relative link ("./" first: a name is never read as a scheme), URL-quoted."""
    try:
        return "./" + quote(str(rel / p.relative_to(run_dir)))
    except ValueError:
        return p.as_uri()


def run_page(summary: dict[str, Any], run_dir: Path) -> str:
    """The run's index.html, from its summary and the files beside it."""
    its = ([summary["canary"]] if summary.get("canary") else []) + list(summary["iterations"])
    parts, latencies = [], []
    for it in its:
        text, lat = _iteration(run_dir, it, run_dir)
        parts.append(text)
        latencies += lat if it["name"] != "canary" else []
    c = summary["counts"]
    cfg = summary.get("config", {})
    versions = summary.get("versions") or {}
    code = summary["exit_code"]
    verdict = (f"as expected (--expect {summary['expect']})" if summary.get("expect") else "clean") if code == 0 \
        else f"{EXITS.get(code, 'exit')} (exit code {code})"
    if summary.get("ended_by"):
        verdict += f"; ended by: {summary['ended_by']}"
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
                   for k, v in [("workload", cfg.get("workload")), ("fault", cfg.get("fault")),
                                ("backend", cfg.get("stack", {}).get("backend")),
                                ("release", cfg.get("stack", {}).get("release")),
                                ("disk cache", cfg.get("disk_cache")), ("expect", summary.get("expect")),
                                ("seed", summary["seed"]), *sorted(versions.items())] if v not in (None, ""))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>xdh run {esc(run_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>xdh run {esc(run_dir.name)}</h1>"
            f"<p><b>{esc(verdict)}</b>: {c.get('pass', 0)} pass, {c.get('loss', 0)} loss, "
            f"{c.get('guest-died', 0)} guest died, {c.get('error', 0)} error; {summary['acked_total']} acked, "
            f"{summary['lost_acked_total']} acked writes lost; {summary['wall_seconds']:.0f} s</p>"
            f"<table>{rows}</table><h2>fsync latency</h2>{latency_cdf(latencies)}"
            f"<h2>iterations</h2>{''.join(parts)}"
            f'<p class="muted">files: <a href="summary.json">summary.json</a> <a href="junit.xml">junit.xml</a> '
            f'<a href="summary.txt">summary.txt</a> <a href="config.json">config.json</a></p></body></html>\n')


def runs_index(root: Path) -> str:
    """An index of the run directories below ``root``, newest first."""
    rows = []
    for s_path in sorted(root.glob("*/summary.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        s = _read_json(s_path) or {}
        if "counts" not in s:
            continue
        cfg = s.get("config", {})
        c = s["counts"]
        code = int(s.get("exit_code", -1))
        status = "pass" if code == 0 else "loss" if code == 1 else "error"
        rows.append(f"<tr><td>{badge(status)} {esc(EXITS.get(code, code))}</td>"
                    f"<td><a href=\"./{esc(quote(s_path.parent.name))}/index.html\">"
                    f"{esc(s_path.parent.name)}</a></td><td>{esc(cfg.get('workload', ''))}</td>"
                    f"<td>{esc(cfg.get('fault', ''))}</td><td>{esc(cfg.get('stack', {}).get('backend', ''))}</td>"
                    f"<td>{c.get('pass', 0)} / {c.get('loss', 0)} / {c.get('guest-died', 0) + c.get('error', 0)}</td>"
                    f"<td>{esc(s.get('seed'))}</td></tr>")
    return (f"<!doctype html>{MARK}<html><head><meta charset=utf-8><title>xdh runs</title><style>{STYLE}</style></head>"
            f"<body><h1>xdh runs in {esc(root)}</h1><table><tr><th>exit</th><th>run</th><th>workload</th>"
            f"<th>fault</th><th>backend</th><th>pass / loss / no verdict</th><th>seed</th></tr>{''.join(rows)}"
            "</table></body></html>\n")
