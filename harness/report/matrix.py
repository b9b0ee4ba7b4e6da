"""The compare report: cells, canaries and figures collected from compare run directories,
rendered as report.md and a self-contained report.html (plots embedded when matplotlib is there)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from types import ModuleType
from typing import Any

from ..catalog import backends as backends_mod
from ..releases import DEFAULT_RELEASE
from . import detection
from .rundir import RunDir


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _cells_of(rd: RunDir, listed: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The cells a compare run planned (cells.json); for an older run, the cells it ran."""
    if listed is not None:
        return listed
    out = []
    for d in sorted((rd.path / "cells").glob("*__*__*__*")):
        parts = d.name.split("__")
        r, b, f, w, c = parts if len(parts) == 5 else [DEFAULT_RELEASE, *parts]   # before releases: bookworm
        out.append({"name": d.name, "release": r, "backend": b, "fault": f, "workload": w, "disk_cache": c,
                    "skip": "", "group": f"{b}__{c}" if len(parts) == 4 else f"{r}__{b}__{c}"})
    return out


def components(v: dict[str, Any]) -> str:
    """One line naming what a column ran: Xen, both kernels, dom0's device model, your own .debs."""
    if not v:
        return ""
    dom0 = v.get("dom0", {})
    xen = next((x for k, x in dom0.items() if k.startswith("xen-hypervisor-")), "?")
    own = [f"{d['package']} {d['version']}" for g in ("dom0", "domu") for d in v.get("own_debs", {}).get(g, [])]
    return (f"Xen {xen}; dom0 {str(v.get('dom0_kernel', '?')).removeprefix('vmlinuz-')}, domU "
            f"{str(v.get('domu_kernel') or v.get('domu', {}).get('linux-image-amd64', '?')).removeprefix('vmlinuz-')}; "
            f"qemu-system-xen {dom0.get('qemu-system-xen', '?')}; outer QEMU "
            f"{str(v.get('host_qemu', '?')).removeprefix('QEMU emulator version ')}"
            + (f"; your .debs: {', '.join(own)}" if own else ""))


def collect(run_dirs: list[Path]) -> dict[str, Any]:
    """Cells, canaries and wall time from one or more compare run directories (pieces)."""
    cells: dict[str, dict[str, Any]] = {}
    canaries: dict[str, dict[str, Any]] = {}
    wall = 0.0
    configs = []
    for path in run_dirs:
        rd = RunDir(path)
        cc, listed, w, cans = rd.read_compare()
        configs.append(cc)
        wall += w
        canaries.update(cans)
        for cell in _cells_of(rd, listed):
            row = {k: cell[k] for k in ("backend", "fault", "workload", "disk_cache", "skip", "group")}
            row["release"] = cell.get("release", DEFAULT_RELEASE)
            row["path"] = str(rd.cell(cell["name"]).path)
            if not cell["skip"]:
                row |= _cell_figures(rd.cell(cell["name"]))
                row["components"] = components(rd.cell(cell["name"]).read_versions())
            name = cell["name"]
            if name in cells and cells[name].get("iterations") and not row.get("iterations"):
                continue     # an earlier piece ran this cell; this one did not
            cells[name] = row
    for row in cells.values():
        c = canaries.get(row["group"])
        row["canary"] = None if c is None else c.get("status") == "loss"
    return {"cells": list(cells.values()), "canaries": canaries, "wall_seconds": round(wall, 1),
            "configs": configs}


def _cell_figures(cell: RunDir) -> dict[str, Any]:
    err = cell.cell_error()
    if err is not None or not cell.summary.exists():
        return {"iterations": 0, "error": err or "not run",
                "infra_only": bool(err and err.startswith("stack unavailable"))}
    s = cell.read_summary()
    its = s["iterations"]
    lat: list[float] = []
    rates = []
    for it in its:
        lat += [a.latency_us for a in cell.iteration_named(it["name"]).read_acks() if a.latency_us]
        r = (it.get("fsync_latency_us") or {}).get("ops_per_s")
        if r:
            rates.append(r)
    errors = [it["error"] for it in its if it["status"] in ("error", "guest-died")]
    return {
        "iterations": len(its),
        "loss_iterations": sum(1 for it in its if it["status"] == "loss"),
        "error_iterations": len(errors),
        "infra_only": all(it["status"] == "guest-died" for it in its if it["status"] in ("error", "guest-died")),
        "first_error": errors[0] if errors else "",
        "acked": sum(it["acked"] for it in its),
        "lost_acked": sum(it["lost_acked"] for it in its),
        "crash_states": sum(it.get("crash_states", 1) for it in its if it["status"] in ("pass", "loss")),
        "busy_seconds": round(sum(it.get("seconds", {}).get("total", 0) for it in its), 1),
        "fsyncs_per_s": round(sorted(rates)[len(rates) // 2], 1) if rates else None,
        "p50_us": _percentile(lat, 0.5),
        "p99_us": _percentile(lat, 0.99),
        "latencies_us": lat,
        "wall_seconds": s.get("wall_seconds"),
        "sample_violation": next((v for it in its for v in it["violations"]), ""),
    }


def miss_reason(row: dict, rows: list[dict]) -> str:
    """Why a lying cell without the model did not see the loss its volatile twin saw."""
    if row["disk_cache"] != "none" or row["fault"] == "none" or row.get("loss_iterations"):
        return ""
    twin = next((r for r in rows if r["disk_cache"] == "volatile" and
                 (r.get("release"), r["backend"], r["fault"], r["workload"])
                 == (row.get("release"), row["backend"], row["fault"], row["workload"])), None)
    if not row.get("iterations"):
        return ""
    b = backends_mod.get(row["backend"])
    where = ("the writes already sit in the outer disk's file (host page cache), which the cut does not lose"
             if row["fault"] == "disk-lies" or b.backendtype == "phy" else
             "nothing volatile is left between the dropped flush and the host")
    seen = " (the volatile model catches it)" if twin and twin.get("loss_iterations") else ""
    return f"missed without the model: {where}{seen}"


def _fmt(v: object, unit: str = "") -> str:
    return "-" if v is None else (f"{v:.0f}{unit}" if isinstance(v, float) else f"{v}{unit}")


def markdown(data: dict, command: str = "") -> str:
    rows = sorted(data["cells"], key=lambda r: (r.get("release", DEFAULT_RELEASE), r["backend"], r["disk_cache"],
                                                r["fault"], r["workload"]))
    out = ["# Backend comparison", ""]
    if command:
        out += ["Command:", "", f"    {command}", ""]
    out += [f"Total wall time: {data['wall_seconds'] / 60:.0f} min. "
            f"Cells: {sum(1 for r in rows if not r['skip'])} run, {sum(1 for r in rows if r['skip'])} not run "
            "(impossible, or a part to build first).", ""]
    for cache in ("none", "volatile"):
        cells = [r for r in rows if r["disk_cache"] == cache and r.get("iterations")]
        states = sum(r["crash_states"] for r in cells)
        busy = sum(r.get("busy_seconds", 0) for r in cells)
        its = sum(r["iterations"] for r in cells)
        if its:
            out.append(f"- disk cache {cache}: {its} iterations, {states} crash states verified "
                       f"({states / its:.1f} per iteration), {states * 3600 / busy:.0f} crash states per hour "
                       f"of iteration time" if busy else f"- disk cache {cache}: {its} iterations")
    out += _components_section(rows)
    out += detection.markdown(rows)
    out += ["",
            "| release | backend | disk cache | fault | workload | canary | iterations | with loss | acked lost "
            "| crash states | fsync/s | p50 us | p99 us | notes |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    first: dict[str, str] = {}     # a message repeated by many cells is said once

    def said(text: str, where: str) -> str:
        return f"the same as {first[text]}" if text in first else first.setdefault(text, where) and text
    for r in rows:
        rel = r.get("release", DEFAULT_RELEASE)
        where = f"{rel} {r['backend']} {r['disk_cache']} {r['fault']}"
        if r["skip"]:
            out.append(f"| {rel} | {r['backend']} | {r['disk_cache']} | {r['fault']} | {r['workload']} "
                       f"| | | | | | | | | not run: {r['skip'].replace('|', '/')} |")
            continue
        canary = {True: "caught", False: "**NOT caught**", None: "-"}[r.get("canary")]
        notes = []
        if r.get("error_iterations"):
            notes.append(f"{r['error_iterations']} errors: {said(r.get('first_error', '')[:300], where)}")
        if r.get("error"):
            notes.append(f"error: {said(r['error'][:300], where)}")
        if r.get("canary") is False:
            notes.append("cannot see a lost flush in this configuration")
        m = miss_reason(r, rows)
        if m:
            notes.append(m)
        if r["fault"] != "none" and r.get("loss_iterations") and r.get("sample_violation"):
            notes.append("e.g. " + r["sample_violation"][:100])
        if r["fault"] == "none" and r.get("loss_iterations"):
            notes.append("**FALSE ALARM or real bug: loss with no fault**")
        out.append(f"| {rel} | {r['backend']} | {r['disk_cache']} | {r['fault']} | {r['workload']} | {canary} | "
                   f"{r.get('iterations', 0)} | {r.get('loss_iterations', 0)} | {r.get('lost_acked', 0)} | "
                   f"{r.get('crash_states', 0)} | {_fmt(r.get('fsyncs_per_s'))} | {_fmt(r.get('p50_us'))} | "
                   f"{_fmt(r.get('p99_us'))} | {'; '.join(notes).replace('|', '/')} |")
    out += ["", "Canary: drop-flush on append, one per (backend, disk cache), verified by the fast verifier and "
            "a full reboot. Crash states: the cut, plus with the volatile model every flush state of the write log "
            "(or --flush-points of them) and subsets of each epoch's writes, deduplicated; the count is of "
            "distinct states verified. fsync/s and latencies are measured in "
            "the guest (median of iterations; percentiles over every ack of the cell).", ""]
    return "\n".join(out)


def _components_section(rows: list[dict]) -> list[str]:
    """What each release column ran, as recorded by its cells (a backend with its own device model,
    qdisk-direct, is listed apart)."""
    seen: dict[str, list[str]] = {}
    for r in rows:
        if r.get("components"):
            seen.setdefault(r["components"], []).append(f"{r.get('release', DEFAULT_RELEASE)} {r['backend']}")
    if not seen:
        return []
    out = ["", "Components (read from each cell's config.json):", ""]
    for text, where in seen.items():
        cols = sorted(set(where))
        out.append(f"- {', '.join(cols)}: {text}")
    return out


def _plots() -> ModuleType | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except Exception:  # noqa: BLE001 - the report stays useful without plots
        return None


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def html_report(data: dict, md: str, base: Path) -> str:
    plt = _plots()
    imgs = []
    rows = [r for r in data["cells"] if not r["skip"] and r.get("iterations")]
    if plt is not None and rows:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r in sorted(rows, key=lambda r: (r.get("release", ""), r["backend"], r["disk_cache"])):
            if r["fault"] != "none" or r["workload"] != "append" or not r.get("latencies_us"):
                continue
            lat = sorted(r["latencies_us"])
            ax.step([x / 1000 for x in lat], [(i + 1) / len(lat) for i in range(len(lat))],
                    label=f"{r.get('release', '')} {r['backend']} / cache {r['disk_cache']}", where="post")
        ax.set_xscale("log")
        ax.set_xlabel("fsync latency in the guest (ms, log scale)")
        ax.set_ylabel("fraction of fsyncs")
        ax.set_title("fsync latency CDF per mode (append, no fault)")
        ax.legend(fontsize=8)
        imgs.append(("fsync latency CDF", _png(fig)))
        plt.close(fig)
    lines = md.splitlines()     # the matrix is drawn coloured above: not again as a plain table
    start = next((i for i, x in enumerate(lines) if x.startswith(detection.TITLE)), len(lines))
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("| release")), len(lines))
    body = detection.html_table(data["cells"], base) + _md_table_to_html("\n".join(lines[:start] + lines[end:]))
    figs = "".join(f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'>"
                   for t, b in imgs) or "<p>(matplotlib not available: no plots)</p>"
    return ("<!doctype html><html><head><meta charset='utf-8'><title>xdh backend comparison</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}</style></head><body>"
            + body + figs + "</body></html>\n")


def _md_table_to_html(md: str) -> str:
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("| ---"):
            continue
        if line.startswith("|"):
            cells = [_bold(html.escape(c.strip())) for c in line.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("    "):
            out.append(f"<pre>{html.escape(line.strip())}</pre>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{_bold(html.escape(line[2:]))}</li></ul>")
        elif line.strip():
            out.append(f"<p>{_bold(html.escape(line))}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def _bold(text: str) -> str:
    """Markdown's **bold** (the report's warnings) as <b>."""
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def write_report(run_dirs: list[Path], out_dir: Path, command: str = "") -> dict[str, Any]:
    data = collect(run_dirs)
    md = markdown(data, command)
    slim = dict(data, cells=[{k: v for k, v in r.items() if k != "latencies_us"} for r in data["cells"]])
    RunDir(out_dir).write_report(md, html_report(data, md, out_dir), slim)
    return slim
