"""The detection matrix of a compare report: fault x mode (release, backend, disk cache), each
cell one of caught, missed, partly caught, clean, false alarm, impossible (not run, with why),
not run or error, linked to its run directory. 0 % and "never ran" look different."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..releases import DEFAULT_RELEASE

TITLE = "Detection matrix"
COLOURS = {"caught": "#1a7f37", "clean": "#1a7f37", "missed": "#cf222e", "false alarm": "#cf222e",
           "partly": "#bf8700", "error": "#9a6700", "impossible": "#afb8c1", "not run": "#eaeef2"}


def mode(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r.get("release", DEFAULT_RELEASE), r["backend"], r["disk_cache"])


def verdict(r: dict[str, Any]) -> tuple[str, str]:
    """(kind, text) of one cell."""
    if r.get("skip"):
        return "impossible", "n/a"
    its, loss = r.get("iterations", 0), r.get("loss_iterations", 0)
    if not its:
        return ("error", "error") if r.get("error") and r["error"] != "not run" else ("not run", "not run")
    ran = its - r.get("error_iterations", 0)
    if ran <= 0:
        return "error", f"error ({its})"
    if r["fault"] == "none":
        return ("false alarm", f"false alarm {loss}/{ran}") if loss else ("clean", f"clean {ran}/{ran}")
    if loss == ran:
        return "caught", f"caught {loss}/{ran}"
    return ("missed", f"missed 0/{ran}") if not loss else ("partly", f"caught {loss}/{ran}")


def grid(cells: list[dict[str, Any]]) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]],
                                               dict[tuple[tuple[str, str], tuple[str, str, str]], dict[str, Any]]]:
    modes = sorted({mode(r) for r in cells})
    rows = sorted({(r["fault"], r["workload"]) for r in cells}, key=lambda fw: (fw[0] != "none", fw))
    by = {((r["fault"], r["workload"]), mode(r)): r for r in cells}
    return modes, rows, by


def markdown(cells: list[dict[str, Any]]) -> list[str]:
    modes, rows, by = grid(cells)
    out = ["", TITLE + " (caught: every iteration lost acked writes; clean: none did; n/a: impossible "
           "combination; not run: never ran; the full table below says why):", "",
           "| fault / workload | " + " | ".join(f"{rel} {b} cache {c}" for rel, b, c in modes) + " |",
           "| --- |" + " --- |" * len(modes)]
    for fw in rows:
        cols = [verdict(by[(fw, m)])[1] if (fw, m) in by else "not run" for m in modes]
        out.append(f"| {fw[0]} / {fw[1]} | " + " | ".join(cols) + " |")
    return out


def html_table(cells: list[dict[str, Any]], base: Path) -> str:
    """The matrix as a coloured HTML table, each cell linked to its run's page."""
    modes, rows, by = grid(cells)
    head = "".join(f"<th>{html.escape(rel)}<br>{html.escape(b)}<br>cache {html.escape(c)}</th>" for rel, b, c in modes)
    body = []
    for fw in rows:
        tds = []
        for m in modes:
            r = by.get((fw, m)) or {}
            kind, text = verdict(r) if r else ("not run", "not run")
            why = html.escape(r.get("skip") or r.get("error") or r.get("sample_violation") or "")
            link = r.get("path")
            label = html.escape(text)
            if link and kind not in ("impossible", "not run"):
                href = Path(link) / "index.html"
                target = href.relative_to(base) if href.is_relative_to(base) else href.as_uri()
                label = f'<a href="{html.escape(str(target))}" style="color:inherit">{label}</a>'
            fg = "#fff" if kind in ("caught", "clean", "missed", "false alarm", "partly", "error") else "#1f2328"
            style = f"background:{COLOURS[kind]};color:{fg};text-align:center"
            tds.append(f'<td title="{why}" style="{style}">{label}</td>')
        body.append(f"<tr><th>{html.escape(fw[0])} / {html.escape(fw[1])}</th>{''.join(tds)}</tr>")
    legend = " ".join(f'<span style="background:{c};padding:1px 6px;margin-right:4px">{k}</span>'
                      for k, c in COLOURS.items())
    return (f"<h2>Detection matrix</h2><table><tr><th>fault / workload</th>{head}</tr>{''.join(body)}</table>"
            f"<p>{legend}</p>")
