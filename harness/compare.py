"""``xdh compare``: the backend comparison. Runs a matrix of backend mode x fault x workload x
disk-cache model on the fast path and writes ``report.md`` and a self-contained
``report.html`` (plots embedded).

Every cell is an ordinary torture campaign in ``cells/<cell>/`` (so ``xdh report merge`` and
``xdh reproduce`` work on it). Canaries are per (backend, disk-cache) pair, because whether a
lost flush can be seen depends on the stack and the disk model, not on the fault under test:
each cell shows its pair's canary, so a reader sees at once which cells could not have seen
a lost flush. Cells run even when their canary is not caught: what they (do not) find is the
point of the comparison.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import backends as backends_mod
from . import faults as faults_mod
from . import workloads as workloads_mod
from .errors import ConfigError, XdhError
from .images import ImageStore
from .verify import FastVerifier
from .stack import StackConfig
from .torture import (DISK_CACHES, Fastpath, Iteration, TortureConfig, canary_config, iteration_seed, load_acks,
                      run_campaign)


@dataclass
class CompareConfig:
    backends: tuple[str, ...] = ("qdisk", "phy")
    faults: tuple[str, ...] = ("none", "drop-flush")
    workloads: tuple[str, ...] = ("append",)
    disk_caches: tuple[str, ...] = ("none", "volatile")
    direct_faults: tuple[str, ...] = ("drop-flush", "disk-lies")   # the direct workload runs only here
    iterations: int = 3
    seed: int = 1
    cut_acks: tuple[int, int] = (20, 200)
    crash_subsets: int = 3
    flush_points: int = 2
    canary: bool = True
    stack: StackConfig = field(default_factory=StackConfig)

    def validate(self) -> None:
        for b in self.backends:
            backends_mod.get(b)
        for f in self.faults:
            faults_mod.get(f)
        for w in self.workloads:
            workloads_mod.get(w)
        for c in self.disk_caches:
            if c not in DISK_CACHES:
                raise ConfigError(f"unknown disk cache model {c!r}", hint="use none and/or volatile")
        if self.iterations < 1:
            raise ConfigError("--iterations must be at least 1")


@dataclass
class Cell:
    backend: str
    fault: str
    workload: str
    disk_cache: str
    skip: str = ""          # why this cell is not run (an impossible combination)

    @property
    def name(self) -> str:
        return f"{self.backend}__{self.fault}__{self.workload}__{self.disk_cache}"

    @property
    def group(self) -> str:
        return f"{self.backend}__{self.disk_cache}"


def plan_cells(cfg: CompareConfig) -> list[Cell]:
    out = []
    for b, f, w, c in itertools.product(cfg.backends, cfg.faults, cfg.workloads, cfg.disk_caches):
        if w == "direct" and f not in cfg.direct_faults:
            continue
        cell = Cell(b, f, w, c)
        try:
            torture_config(cfg, cell).validate()
        except ConfigError as exc:
            cell.skip = str(exc)
        out.append(cell)
    return out


def torture_config(cfg: CompareConfig, cell: Cell, canary: bool = False) -> TortureConfig:
    return TortureConfig(workload=cell.workload, fault=cell.fault, iterations=cfg.iterations, seed=cfg.seed,
                         cut_acks=cfg.cut_acks, canary=canary, disk_cache=cell.disk_cache,
                         crash_subsets=cfg.crash_subsets, flush_points=cfg.flush_points,
                         stack=dataclasses.replace(cfg.stack, backend=cell.backend))


# --- running ------------------------------------------------------------------------------
def _run_canary(cfg: CompareConfig, cell: Cell, run_dir: Path, progress, verifier) -> dict:
    """drop-flush on append for this (backend, disk-cache) pair; verified by a reboot too."""
    tc = canary_config(torture_config(cfg, cell))
    store = ImageStore()
    images = (store.require("dom0"), store.require("domu"))
    fast = None
    try:
        fast = Fastpath(tc, run_dir, store, images, progress, verifier=verifier)
        it = Iteration(tc, -1, iteration_seed(cfg.seed, -1), run_dir / "canary", progress, name="canary",
                       images=images, snapshot=fast.snapshot, verifier=fast.verifier)
        res = it.run()
    finally:
        if fast is not None:
            fast.stop()
    return dataclasses.asdict(res)


def run_compare(cfg: CompareConfig, run_dir: Path, progress, versions: dict) -> dict:
    cfg.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "compare-config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    cells = plan_cells(cfg)
    todo = [c for c in cells if not c.skip]
    progress(f"compare: {len(todo)} cells to run ({len(cells) - len(todo)} impossible, listed in the report), "
             f"{cfg.iterations} iterations each, seed {cfg.seed}; run directory {run_dir}")
    t0 = time.monotonic()
    store = ImageStore()
    # one verifier VM for the whole matrix (its boot would otherwise cost every cell ~30 s)
    verifier = FastVerifier(run_dir / "verifier", store.require("domu"), store, accel=cfg.stack.accel,
                            progress=progress, boot_timeout=cfg.stack.boot_timeout)
    try:
        verifier.start()
        _run_cells(cfg, todo, run_dir, progress, versions, verifier)
    finally:
        verifier.stop()
        for f in (run_dir / "verifier").glob("*.qcow2"):
            f.unlink()
    (run_dir / "compare-wall.json").write_text(json.dumps({"wall_seconds": round(time.monotonic() - t0, 1)}) + "\n")
    return write_report([run_dir], run_dir)


def _run_cells(cfg: CompareConfig, todo: list[Cell], run_dir: Path, progress, versions: dict, verifier) -> None:
    canaries: dict[str, dict] = {}
    unavailable: dict[str, str] = {}     # pairs whose stack cannot even start (e.g. qdisk-direct on Debian 12)
    for n, cell in enumerate(todo):
        cell_dir = run_dir / "cells" / cell.name
        if cfg.canary and cell.group not in canaries:
            progress(f"compare: canary for {cell.backend} with disk cache {cell.disk_cache}")
            try:
                canaries[cell.group] = _run_canary(cfg, cell, run_dir / "canaries" / cell.group, progress, verifier)
            except XdhError as exc:
                canaries[cell.group] = {"status": "error", "error": exc.oneline()}
                unavailable[cell.group] = exc.oneline()
            c = canaries[cell.group]
            (run_dir / "canaries" / cell.group).mkdir(parents=True, exist_ok=True)
            (run_dir / "canaries" / cell.group / "canary.json").write_text(json.dumps(c, indent=2) + "\n")
            progress(f"compare: canary {cell.group}: {'caught' if c['status'] == 'loss' else 'NOT caught'}")
        progress(f"compare: [{n + 1}/{len(todo)}] {cell.name}")
        verifier.ensure_running()
        if cell.group in unavailable:
            cell_dir.mkdir(parents=True, exist_ok=True)
            (cell_dir / "error.txt").write_text(f"stack unavailable: {unavailable[cell.group]}\n")
            continue
        try:
            run_campaign(torture_config(cfg, cell), cell_dir, progress, versions, verifier=verifier)
        except XdhError as exc:
            cell_dir.mkdir(parents=True, exist_ok=True)
            (cell_dir / "error.txt").write_text(exc.oneline() + "\n")
            progress(f"compare: {cell.name}: error: {exc.oneline()}")


# --- collecting and reporting ----------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def collect(run_dirs: list[Path]) -> dict:
    """Cells, canaries and wall time from one or more compare run directories (pieces)."""
    cells: dict[str, dict] = {}
    canaries: dict[str, dict] = {}
    wall = 0.0
    configs = []
    for rd in run_dirs:
        if not (rd / "compare-config.json").exists():
            raise ConfigError(f"{rd} is not an xdh compare run directory", hint="pass directories made by xdh compare")
        cc = json.loads((rd / "compare-config.json").read_text())
        configs.append(cc)
        w = rd / "compare-wall.json"
        wall += json.loads(w.read_text())["wall_seconds"] if w.exists() else 0.0
        for cj in sorted((rd / "canaries").glob("*/canary.json")):
            canaries[cj.parent.name] = json.loads(cj.read_text())
        cfg = CompareConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cc.items() if k != "stack"})
        for cell in plan_cells(cfg):
            d = rd / "cells" / cell.name
            row = {"backend": cell.backend, "fault": cell.fault, "workload": cell.workload,
                   "disk_cache": cell.disk_cache, "skip": cell.skip, "group": cell.group}
            if not cell.skip:
                row |= _cell_figures(d)
            if cell.name in cells and cells[cell.name].get("iterations") and not row.get("iterations"):
                continue     # an earlier piece ran this cell; this one did not
            cells[cell.name] = row
    for row in cells.values():
        c = canaries.get(row["group"])
        row["canary"] = None if c is None else c.get("status") == "loss"
    return {"cells": list(cells.values()), "canaries": canaries, "wall_seconds": round(wall, 1),
            "configs": configs}


def _cell_figures(d: Path) -> dict:
    s_path = d / "summary.json"
    if (d / "error.txt").exists() or not s_path.exists():
        err = (d / "error.txt").read_text().strip() if (d / "error.txt").exists() else "not run"
        return {"iterations": 0, "error": err}
    s = json.loads(s_path.read_text())
    its = s["iterations"]
    lat: list[float] = []
    rates = []
    for it in its:
        acks_file = d / "iterations" / it["name"] / "acks.jsonl"
        if acks_file.exists():
            lat += [a.latency_us for a in load_acks(acks_file) if a.latency_us]
        r = (it.get("fsync_latency_us") or {}).get("ops_per_s")
        if r:
            rates.append(r)
    errors = [it["error"] for it in its if it["status"] == "error"]
    return {
        "iterations": len(its),
        "loss_iterations": sum(1 for it in its if it["status"] == "loss"),
        "error_iterations": len(errors),
        "first_error": errors[0] if errors else "",
        "acked": sum(it["acked"] for it in its),
        "lost_acked": sum(it["lost_acked"] for it in its),
        "crash_states": sum(it.get("crash_states", 1) for it in its if it["status"] != "error"),
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
                 (r["backend"], r["fault"], r["workload"]) == (row["backend"], row["fault"], row["workload"])), None)
    if not row.get("iterations"):
        return ""
    b = backends_mod.get(row["backend"])
    where = ("the writes already sit in the outer disk's file (host page cache), which the cut does not lose"
             if row["fault"] == "disk-lies" or b.backendtype == "phy" else
             "nothing volatile is left between the dropped flush and the host")
    seen = " (the volatile model catches it)" if twin and twin.get("loss_iterations") else ""
    return f"missed without the model: {where}{seen}"


def _fmt(v, unit="") -> str:
    return "-" if v is None else (f"{v:.0f}{unit}" if isinstance(v, float) else f"{v}{unit}")


def markdown(data: dict, command: str = "") -> str:
    rows = sorted(data["cells"], key=lambda r: (r["backend"], r["disk_cache"], r["fault"], r["workload"]))
    out = ["# Backend comparison", ""]
    if command:
        out += ["Command:", "", f"    {command}", ""]
    out += [f"Total wall time: {data['wall_seconds'] / 60:.0f} min. Cells: {sum(1 for r in rows if not r['skip'])} run, "
            f"{sum(1 for r in rows if r['skip'])} impossible.", ""]
    for cache in ("none", "volatile"):
        cells = [r for r in rows if r["disk_cache"] == cache and r.get("iterations")]
        states = sum(r["crash_states"] for r in cells)
        busy = sum(r.get("busy_seconds", 0) for r in cells)
        its = sum(r["iterations"] for r in cells)
        if its:
            out.append(f"- disk cache {cache}: {its} iterations, {states} crash states verified "
                       f"({states / its:.1f} per iteration), {states * 3600 / busy:.0f} crash states per hour "
                       f"of iteration time" if busy else f"- disk cache {cache}: {its} iterations")
    out += ["",
            "| backend | disk cache | fault | workload | canary | iterations | with loss | acked lost | crash states "
            "| fsync/s | p50 us | p99 us | notes |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["skip"]:
            out.append(f"| {r['backend']} | {r['disk_cache']} | {r['fault']} | {r['workload']} | | | | | | | | | "
                       f"impossible: {r['skip']} |")
            continue
        canary = {True: "caught", False: "**NOT caught**", None: "-"}[r.get("canary")]
        notes = []
        if r.get("error_iterations"):
            notes.append(f"{r['error_iterations']} errors: {r.get('first_error', '')[:120]}")
        if r.get("error"):
            notes.append(f"error: {r['error'][:160]}")
        if r.get("canary") is False:
            notes.append("cannot see a lost flush in this configuration")
        m = miss_reason(r, rows)
        if m:
            notes.append(m)
        if r["fault"] != "none" and r.get("loss_iterations") and r.get("sample_violation"):
            notes.append("e.g. " + r["sample_violation"][:100])
        if r["fault"] == "none" and r.get("loss_iterations"):
            notes.append("**FALSE ALARM or real bug: loss with no fault**")
        out.append(f"| {r['backend']} | {r['disk_cache']} | {r['fault']} | {r['workload']} | {canary} | "
                   f"{r.get('iterations', 0)} | {r.get('loss_iterations', 0)} | {r.get('lost_acked', 0)} | "
                   f"{r.get('crash_states', 0)} | {_fmt(r.get('fsyncs_per_s'))} | {_fmt(r.get('p50_us'))} | "
                   f"{_fmt(r.get('p99_us'))} | {'; '.join(notes).replace('|', '/')} |")
    out += ["", "Canary: drop-flush on append, one per (backend, disk cache), verified by the fast verifier and "
            "a full reboot. Crash states: the cut, plus with the volatile model the state at the last flush, "
            "random subsets of the later writes and earlier flush points. fsync/s and latencies are measured in "
            "the guest (median of iterations; percentiles over every ack of the cell).", ""]
    return "\n".join(out)


def _plots() -> object | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except Exception:  # noqa: BLE001 - the report stays useful without plots
        return None


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def html_report(data: dict, md: str) -> str:
    plt = _plots()
    imgs = []
    rows = [r for r in data["cells"] if not r["skip"] and r.get("iterations")]
    if plt is not None and rows:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r in sorted(rows, key=lambda r: (r["backend"], r["disk_cache"])):
            if r["fault"] != "none" or r["workload"] != "append" or not r.get("latencies_us"):
                continue
            lat = sorted(r["latencies_us"])
            ax.step([x / 1000 for x in lat], [(i + 1) / len(lat) for i in range(len(lat))],
                    label=f"{r['backend']} / cache {r['disk_cache']}", where="post")
        ax.set_xscale("log")
        ax.set_xlabel("fsync latency in the guest (ms, log scale)")
        ax.set_ylabel("fraction of fsyncs")
        ax.set_title("fsync latency CDF per mode (append, no fault)")
        ax.legend(fontsize=8)
        imgs.append(("fsync latency CDF", _png(fig)))
        plt.close(fig)
        modes = sorted({(r["backend"], r["disk_cache"]) for r in rows})
        faults = sorted({r["fault"] for r in rows})
        fig, ax = plt.subplots(figsize=(9, 4.5))
        width = 0.8 / max(len(faults), 1)
        for k, f in enumerate(faults):
            vals = []
            for m in modes:
                cell = [r for r in rows if (r["backend"], r["disk_cache"]) == m and r["fault"] == f]
                its = sum(r["iterations"] for r in cell)
                vals.append(sum(r["loss_iterations"] for r in cell) / its if its else 0)
            ax.bar([i + k * width for i in range(len(modes))], vals, width, label=f)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(modes))])
        ax.set_xticklabels([f"{b}\ncache {c}" for b, c in modes], fontsize=8)
        ax.set_ylabel("fraction of iterations with loss")
        ax.set_title("loss per mode and fault")
        ax.legend(fontsize=8)
        imgs.append(("loss per mode and fault", _png(fig)))
        plt.close(fig)
    body = _md_table_to_html(md)
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
            cells = [html.escape(c.strip()).replace("**", "") for c in line.strip("|").split("|")]
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
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def write_report(run_dirs: list[Path], out_dir: Path, command: str = "") -> dict:
    data = collect(run_dirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown(data, command)
    (out_dir / "report.md").write_text(md + "\n")
    (out_dir / "report.html").write_text(html_report(data, md))
    slim = dict(data, cells=[{k: v for k, v in r.items() if k != "latencies_us"} for r in data["cells"]])
    (out_dir / "compare.json").write_text(json.dumps(slim, indent=2) + "\n")
    return slim
