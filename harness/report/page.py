"""The page people open: a self-contained ``index.html`` per run directory (config and versions,
the verdict, per iteration the acks against the cut and what survived, the fsync latency CDF,
each violation with its kernel evidence, links to every log), and an index of runs. Plain
HTML with inline SVG: no script, no network, one file to upload as a CI artifact."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from ..catalog.workloads import Ack
from ..crash.ledger import Layer, Ledger, attribute
from ..errors import ConfigError
from ..status import ExitCode, Status
from ..verify.oracle import Violation
from .records import CampaignSummary, IterationRecord
from .rundir import RunDir
from .svg import latency_cdf

MARK = "<!-- xdh runs index -->"
EXITS = {ExitCode.CLEAN: "clean", ExitCode.LOSS: "loss", ExitCode.USAGE: "usage",
         ExitCode.CANARY: "canary not caught", ExitCode.DIFFERENT: "differs", ExitCode.INFRA: "infrastructure",
         ExitCode.ERROR: "harness error", ExitCode.INTERRUPTED: "interrupted"}
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


def lost_ids(violations: list[Violation], acks: list[Ack]) -> set[str]:
    """The acked ids the violations name as lost or damaged."""
    ids = [a.ident for a in acks]
    return set().union(*(v.lost_ids(ids) for v in violations)) if violations else set()


def timeline(acks: list[Ack], cut_t: float | None, lost: set[str], w: int = 520, h: int = 120) -> str:
    """Acks over time, the cut at the right edge; red: acked and then lost."""
    if not acks or not cut_t:
        return '<p class="muted">no acks recorded</p>'
    t0 = min(a.t for a in acks)
    span = max(cut_t - t0, 1e-3)
    n = len(acks)
    pts = []
    for i, a in enumerate(acks):
        x = 30 + (a.t - t0) / span * (w - 40)
        y = h - 20 - i / max(n - 1, 1) * (h - 30)
        colour = "#cf222e" if a.ident in lost else "#1a7f37"
        pts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" fill="{colour}"/>')
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="acks against the cut">'
            f'<line x1="{w - 10}" y1="5" x2="{w - 10}" y2="{h - 15}" stroke="#000" stroke-dasharray="4"/>'
            f'<text x="{w - 14}" y="14" text-anchor="end" font-size="11">cut</text>'
            f'<text x="30" y="{h - 3}" font-size="11">{span:.1f} s before the cut</text>'
            f'<text x="2" y="12" font-size="11">{n}</text><text x="2" y="{h - 20}" font-size="11">1</text>'
            + "".join(pts) + "</svg>")


def _iteration(it: IterationRecord, run_dir: Path) -> tuple[str, list[int]]:
    d = RunDir(Path(it.run_dir) if it.run_dir else run_dir).iteration_named(it.name)
    acks = d.read_acks_or_none()
    verdict = d.read_verdict_or_none()
    cut = d.read_cut_or_none()
    lost = lost_ids(verdict.violations if verdict else [], acks)
    logs = sorted(p for p in d.path.rglob("*") if p.is_file() and p.suffix in (".log", ".json", ".jsonl", ".argv"))
    links = " ".join(f'<a href="{esc(_href(p, run_dir))}">{esc(p.relative_to(d.path))}</a>' for p in logs[:40])
    evidence = verdict.kernel_evidence if verdict else []
    states = f", {it.crash_states} crash states" if it.crash_states > 1 else ""
    body = [f'<details{" open" if it.status != Status.PASS else ""}><summary>{badge(it.status)} '
            f'<b>{esc(it.name)}</b> seed {esc(it.seed)}: {it.acked} acked, {it.lost_acked} lost{states}'
            f' ({it.total_seconds:.0f} s)</summary>',
            timeline(acks, cut.cut_t if cut else None, lost),
            f'<p class="muted">green: acked and found intact; red: acked and lost or damaged ({len(lost)})'
            + (f"; fault applied: {esc(it.fault_applied)}" if it.fault_applied else "") + "</p>"]
    if it.error:
        body.append(f"<pre>{esc(it.error)}</pre>")
    if it.workload_error is not None:
        body.append(f'<p class="workload-error">{esc(it.workload_error.line())}</p>')
    if it.violations:
        body.append("<p>violations:</p><pre>" + esc("\n".join(v.line() for v in it.violations)) + "</pre>")
    ledger = d.read_ledger_or_none()
    if ledger is not None:
        body.append(ledger_table(ledger))
    if evidence:
        body.append("<p>kernel evidence:</p><pre>" + esc("\n".join(evidence)) + "</pre>")
    body.append(f'<p>logs: {links or "none"}</p><p class="muted">reproduce: <code>xdh reproduce {esc(d.path)}</code>'
                "</p></details>")
    return "\n".join(body), [a.latency_us for a in acks]


def ledger_table(ledger: Ledger) -> str:
    """The flush ledger: each layer top down with what it passed on, the layer the flush died in
    marked (a layer diagram as a table: one row a layer)."""
    died = attribute(ledger)
    rows = []
    for r in ledger.rows():
        guilty = died.layer is not None and (r.layer == died.layer or (
            died.layer == Layer.FILESYSTEM and r.layer == Layer.DOMU_BLOCK))
        style = ' style="background:#ffebe9"' if guilty else ""
        mark = f' <span class="v" style="background:#cf222e">{esc(died.kind.value)}</span>' if guilty else ""
        rows.append(f"<tr{style}><th>{esc(r.layer.value)}{mark}</th>"
                    f"<td>{'-' if r.count is None else r.count}</td><td>{r.failed or ''}</td>"
                    f"<td class=muted>{esc(r.note)}</td></tr>")
    return (f"<p>flush ledger: <b>{esc(died.text)}</b></p><table><tr><th>layer (top down)</th><th>flushes</th>"
            f"<th>failed</th><th></th></tr>{''.join(rows)}</table>")


def _href(p: Path, run_dir: Path) -> str:
    """A relative link ("./" first: a name is never read as a scheme), URL-quoted."""
    try:
        return "./" + quote(str(p.relative_to(run_dir)))
    except ValueError:
        return p.as_uri()


def _verdict_line(summary: CampaignSummary) -> str:
    code = summary.exit_code
    verdict = (f"as expected (--expect {summary.expect})" if summary.expect else "clean") if code == ExitCode.CLEAN \
        else f"{EXITS.get(code, 'exit')} (exit code {int(code)})"
    return verdict + (f"; ended by: {summary.ended_by}" if summary.ended_by else "") \
        + (f"; stopped early: {summary.shortfall}" if summary.shortfall else "")


def _bad_shards(summary: CampaignSummary) -> str:
    """A merge's bad shards, one line each, above everything else on its page."""
    if not summary.merge_problems:
        return ""
    items = "".join(f"<li>{esc(p.line())}</li>" for p in summary.merge_problems)
    return f"<h2>bad shards: this night is not green</h2><ul>{items}</ul>"


def _config_rows(summary: CampaignSummary) -> str:
    cfg = summary.config
    stack = cfg.get("stack", {})
    rows = [("workload", cfg.get("workload")), ("fault", cfg.get("fault")), ("backend", stack.get("backend")),
            ("release", stack.get("release")), ("disk cache", summary.disk_cache or cfg.get("disk_cache")),
            ("expect", summary.expect), ("seed", summary.seed)]
    rows += [(k, ", ".join(f"{n} {x}" for n, x in v.items()) if isinstance(v, dict) else v)
             for k, v in sorted(summary.versions.items())]
    return "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows if v not in (None, ""))


def run_page(summary: CampaignSummary, run_dir: Path) -> str:
    """The run's index.html, from its summary and the files beside it."""
    parts, latencies = [], []
    for it in summary.all:
        text, lat = _iteration(it, run_dir)
        parts.append(text)
        latencies += lat if not it.canary else []
    c = summary.counts()
    return (f"<!doctype html><html><head><meta charset=utf-8><title>xdh run {esc(run_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>xdh run {esc(run_dir.name)}</h1>"
            f"<p><b>{esc(_verdict_line(summary))}</b>: {c[Status.PASS]} pass, {c[Status.LOSS]} loss, "
            f"{c[Status.GUEST_DIED]} guest died, {c[Status.ERROR]} error; {summary.acked_total} acked, "
            f"{summary.lost_acked_total} acked writes lost; {summary.wall_seconds:.0f} s</p>{_bad_shards(summary)}"
            f"<table>{_config_rows(summary)}</table><h2>fsync latency</h2>{latency_cdf(latencies)}"
            f"<h2>iterations</h2>{''.join(parts)}"
            f'<p class="muted">files: <a href="summary.json">summary.json</a> <a href="junit.xml">junit.xml</a> '
            f'<a href="summary.txt">summary.txt</a> <a href="config.json">config.json</a></p></body></html>\n')


def runs_index(root: Path) -> str:
    """An index of the run directories below ``root``, newest first."""
    rows = []
    for s_path in sorted(root.glob("*/summary.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            s = RunDir(s_path.parent).read_summary()
        except ConfigError:
            continue        # not a summary this xdh reads: not listed
        cfg = s.config
        c = s.counts()
        code = s.exit_code
        status = "pass" if code == ExitCode.CLEAN else "loss" if code == ExitCode.LOSS else "error"
        rows.append(f"<tr><td>{badge(status)} {esc(EXITS.get(code, code))}</td>"
                    f"<td><a href=\"./{esc(quote(s_path.parent.name))}/index.html\">"
                    f"{esc(s_path.parent.name)}</a></td><td>{esc(cfg.get('workload', ''))}</td>"
                    f"<td>{esc(cfg.get('fault', ''))}</td><td>{esc(cfg.get('stack', {}).get('backend', ''))}</td>"
                    f"<td>{c[Status.PASS]} / {c[Status.LOSS]} / {c[Status.GUEST_DIED] + c[Status.ERROR]}</td>"
                    f"<td>{esc(s.seed)}</td></tr>")
    return (f"<!doctype html>{MARK}<html><head><meta charset=utf-8><title>xdh runs</title><style>{STYLE}</style></head>"
            f"<body><h1>xdh runs in {esc(root)}</h1><table><tr><th>exit</th><th>run</th><th>workload</th>"
            f"<th>fault</th><th>backend</th><th>pass / loss / no verdict</th><th>seed</th></tr>{''.join(rows)}"
            "</table></body></html>\n")
