"""The compare report: a typed value (``Report``) built from the collected cells (``compare_data``),
rendered twice from that one value: ``report.md`` and a self-contained ``report.html`` (the
coloured detection matrix, the latency CDF as inline SVG; no script, nothing fetched)."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..catalog import backends as backends_mod
from . import flushpath
from .compare_data import CellRow, CompareReport, collect
from .detection import COLOURS, EXPLAINED, LIGHT, TITLE, DetectionMatrix, Verdict
from .flushpath import FlushPathTable
from .rundir import RunDir
from .svg import Series, latency_cdfs

COLUMNS = ("release", "backend", "disk cache", "fault", "workload", "canary", "iterations", "with loss",
           "acked lost", "crash states", "fsync/s", "p50 us", "p99 us", "notes")
COMPONENTS = "Components (read from each cell's config.json):"
LATENCY = "fsync latency CDF per mode (append, no fault)"
FOOTNOTE = ("Canary: drop-flush on append, one per (backend, disk cache), verified by the fast verifier and "
            "a full reboot. Crash states: the cut, plus with the volatile model every flush state of the write log "
            "(or --flush-points of them) and subsets of each epoch's writes, deduplicated; the count is of "
            "distinct states verified. fsync/s and latencies are measured in "
            "the guest (median of iterations; percentiles over every ack of the cell).")


@dataclass(frozen=True)
class Text:
    """A piece of the report's prose; strong: a warning a reader must not miss (bold)."""

    text: str
    strong: bool = False


Column = tuple[Text, ...]       # one cell of a table: its parts, said one after the other ("; ")


@dataclass(frozen=True)
class CacheTotal:
    """The iterations and crash states of every cell with one disk-cache model."""

    cache: str
    iterations: int
    crash_states: int
    busy_seconds: float

    def __str__(self) -> str:
        if not self.busy_seconds:
            return f"disk cache {self.cache}: {self.iterations} iterations"
        return (f"disk cache {self.cache}: {self.iterations} iterations, {self.crash_states} crash states verified "
                f"({self.crash_states / self.iterations:.1f} per iteration), "
                f"{self.crash_states * 3600 / self.busy_seconds:.0f} crash states per hour of iteration time")


@dataclass(frozen=True)
class Components:
    """What some columns ran (``compare_data.components``), and which columns."""

    columns: tuple[str, ...]
    text: str

    def __str__(self) -> str:
        return f"{', '.join(self.columns)}: {self.text}"


@dataclass(frozen=True)
class TableRow:
    """A line of the full table: the cell, its canary, what a reader should know about it."""

    cell: CellRow
    canary: Text
    notes: Column

    def columns(self) -> tuple[Column, ...]:
        r = self.cell
        ident = tuple((Text(x),) for x in (r.release, r.backend, r.disk_cache, r.fault, r.workload))
        if r.skip:
            return (*ident, *[()] * 8, self.notes)
        figures = (r.iterations, r.loss_iterations, r.lost_acked, r.crash_states,
                   _fmt(r.fsyncs_per_s), _fmt(r.p50_us), _fmt(r.p99_us))
        return (*ident, (self.canary,), *((Text(str(x)),) for x in figures), self.notes)


@dataclass(frozen=True)
class Report:
    """Everything the report shows, in its order."""

    command: str
    wall_seconds: float
    cells_run: int
    cells_not_run: int
    caches: tuple[CacheTotal, ...]
    components: tuple[Components, ...]
    matrix: DetectionMatrix
    rows: tuple[TableRow, ...]
    latencies: tuple[Series, ...]      # append without a fault, per mode
    flush_path: FlushPathTable

    @property
    def headline(self) -> str:
        return (f"Total wall time: {self.wall_seconds / 60:.0f} min. Cells: {self.cells_run} run, "
                f"{self.cells_not_run} not run (impossible, or a part to build first).")


def _fmt(v: float | None) -> str:
    return "-" if v is None else (f"{v:.0f}" if isinstance(v, float) else f"{v}")


# --- building --------------------------------------------------------------------------------
def build(data: CompareReport, command: str = "") -> Report:
    rows = sorted(data.cells, key=lambda r: r.sort_key)
    caches = []
    for cache in ("none", "volatile"):
        ran = [r for r in rows if r.disk_cache == cache and r.iterations]
        if ran:
            caches.append(CacheTotal(cache, sum(r.iterations for r in ran), sum(r.crash_states for r in ran),
                                     sum(r.busy_seconds for r in ran)))
    seen: dict[str, list[str]] = {}
    for r in rows:
        if r.components:
            seen.setdefault(r.components, []).append(f"{r.release} {r.backend}")
    latencies = tuple(Series(f"{r.release} {r.backend} / cache {r.disk_cache}", r.latencies_us) for r in rows
                      if r.fault == "none" and r.workload == "append" and r.iterations and r.latencies_us)
    return Report(command, data.wall_seconds, sum(1 for r in rows if not r.skip), sum(1 for r in rows if r.skip),
                  tuple(caches), tuple(Components(tuple(sorted(set(w))), text) for text, w in seen.items()),
                  DetectionMatrix.of(rows), _table(rows), latencies, FlushPathTable.of(rows))


def _table(rows: list[CellRow]) -> tuple[TableRow, ...]:
    first: dict[str, str] = {}     # a message repeated by many cells is said once

    def said(text: str, where: str) -> str:
        if text in first:
            return f"the same as {first[text]}"
        first[text] = where
        return text
    canaries = {True: Text("caught"), False: Text("NOT caught", strong=True), None: Text("-")}
    return tuple(TableRow(r, canaries[r.canary], _notes(r, rows, said)) for r in rows)


def _notes(r: CellRow, rows: list[CellRow], said: Callable[[str, str], str]) -> Column:
    if r.skip:
        return (Text(f"not run: {r.skip}"),)
    where = f"{r.release} {r.backend} {r.disk_cache} {r.fault}"
    notes = []
    if r.error_iterations:
        notes.append(Text(f"{r.error_iterations} errors: {said(r.first_error[:300], where)}"))
    if r.error:
        notes.append(Text(f"error: {said(r.error[:300], where)}"))
    if r.canary is False:
        notes.append(Text("cannot see a lost flush in this configuration"))
    if m := miss_reason(r, rows):
        notes.append(Text(m))
    if r.fault != "none" and r.loss_iterations and r.sample_violation:
        notes.append(Text("e.g. " + r.sample_violation[:100]))
    if r.fault == "none" and r.loss_iterations:
        notes.append(Text("FALSE ALARM or real bug: loss with no fault", strong=True))
    return tuple(notes)


def miss_reason(row: CellRow, rows: list[CellRow]) -> str:
    """Why a lying cell without the model did not see the loss its volatile twin saw."""
    if row.disk_cache != "none" or row.fault == "none" or row.loss_iterations or not row.iterations:
        return ""
    twin = next((r for r in rows if r.disk_cache == "volatile" and
                 (r.release, r.backend, r.fault, r.workload) == (row.release, row.backend, row.fault, row.workload)),
                None)
    where = ("the writes already sit in the outer disk's file (host page cache), which the cut does not lose"
             if row.fault == "disk-lies" or backends_mod.get(row.backend).backendtype == "phy" else
             "nothing volatile is left between the dropped flush and the host")
    seen = " (the volatile model catches it)" if twin and twin.loss_iterations else ""
    return f"missed without the model: {where}{seen}"


# --- report.md -------------------------------------------------------------------------------
def _md(col: Column) -> str:
    return "; ".join(f"**{p.text}**" if p.strong else p.text for p in col).replace("|", "/")


def _md_row(cols: Iterable[str]) -> list[str]:
    return ["| " + " | ".join(cols) + " |"]


def markdown(rep: Report) -> str:
    m = rep.matrix
    out = ["# Backend comparison", ""]
    if rep.command:
        out += ["Command:", "", f"    {rep.command}", ""]
    out += [rep.headline, ""]
    out += [f"- {c}" for c in rep.caches]
    if rep.components:
        out += ["", COMPONENTS, "", *(f"- {c}" for c in rep.components)]
    out += ["", f"{TITLE} ({EXPLAINED}):", ""]
    out += _md_row(["fault / workload", *(f"{rel} {b} cache {c}" for rel, b, c in m.modes)])
    out += ["|" + " --- |" * (len(m.modes) + 1)]
    for (fault, workload), verdicts in m.rows:
        out += _md_row([f"{fault} / {workload}", *(v.text for v in verdicts)])
    fp = rep.flush_path
    if fp.rows:
        out += ["", f"{flushpath.TITLE} ({flushpath.EXPLAINED}):", "", *_md_row(fp.header),
                "|" + " --- |" * len(fp.header), *(line for r in fp.rows for line in _md_row(fp.cells(r)))]
    out += ["", *_md_row(COLUMNS), "|" + " --- |" * len(COLUMNS)]
    for row in rep.rows:
        out += _md_row(_md(col) for col in row.columns())
    out += ["", FOOTNOTE, ""]
    return "\n".join(out)


# --- report.html -----------------------------------------------------------------------------
STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}.muted{color:#656d76}")


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _html(col: Column) -> str:
    return "; ".join(f"<b>{esc(p.text)}</b>" if p.strong else esc(p.text) for p in col)


def _ul(items: Iterable[object]) -> str:
    return "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in items) + "</ul>"


def _verdict_td(v: Verdict, base: Path) -> str:
    label = esc(v.text)
    if v.path:
        href = Path(v.path) / "index.html"
        target = href.relative_to(base) if href.is_relative_to(base) else href.as_uri()
        label = f'<a href="{esc(target)}" style="color:inherit">{label}</a>'
    fg = "#1f2328" if v.kind in LIGHT else "#fff"
    return f'<td title="{esc(v.why)}" style="background:{COLOURS[v.kind]};color:{fg};text-align:center">{label}</td>'


def _matrix_html(m: DetectionMatrix, base: Path) -> list[str]:
    head = "".join(f"<th>{esc(rel)}<br>{esc(b)}<br>cache {esc(c)}</th>" for rel, b, c in m.modes)
    legend = " ".join(f'<span style="background:{c};padding:1px 6px;margin-right:4px">{esc(k)}</span>'
                      for k, c in COLOURS.items())
    return [f"<h2>{esc(TITLE)}</h2>", f"<p>{esc(EXPLAINED)}</p>", f"<table><tr><th>fault / workload</th>{head}</tr>",
            *(f"<tr><th>{esc(f)} / {esc(w)}</th>{''.join(_verdict_td(v, base) for v in vs)}</tr>"
              for (f, w), vs in m.rows),
            "</table>", f"<p>{legend}</p>"]


def html_page(rep: Report, base: Path) -> str:
    """report.html; links to the cells' pages are relative to ``base``, where it is written."""
    body = ["<h1>Backend comparison</h1>"]
    if rep.command:
        body.append(f"<p>Command:</p><pre>{esc(rep.command)}</pre>")
    body += [f"<p>{esc(rep.headline)}</p>", _ul(rep.caches) if rep.caches else ""]
    if rep.components:
        body += [f"<p>{esc(COMPONENTS)}</p>", _ul(rep.components)]
    body += _matrix_html(rep.matrix, base)
    fp = rep.flush_path
    if fp.rows:
        body += [f"<h2>{esc(flushpath.TITLE)}</h2>", f"<p>{esc(flushpath.EXPLAINED)}</p>",
                 "<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in fp.header) + "</tr>",
                 *("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in fp.cells(r)) + "</tr>" for r in fp.rows),
                 "</table>"]
    body += ["<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in COLUMNS) + "</tr>",
             *("<tr>" + "".join(f"<td>{_html(col)}</td>" for col in row.columns()) + "</tr>" for row in rep.rows),
             "</table>", f"<p>{esc(FOOTNOTE)}</p>", f"<h2>{esc(LATENCY)}</h2>",
             latency_cdfs(rep.latencies, 640, 220)]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>xdh backend comparison</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def write_report(run_dirs: list[Path], out_dir: Path, command: str = "") -> CompareReport:
    """Collect the pieces' cells and write report.md, report.html and compare.json to ``out_dir``."""
    data = collect(run_dirs)
    rep = build(data, command)
    RunDir(out_dir).write_report(markdown(rep), html_page(rep, out_dir), data.to_json())
    return data

