"""The ``xdh`` subcommands: each turns parsed arguments into typed configs, calls one stage or
campaign, prints its result and returns an exit code. Errors are raised, and mapped to exit
codes in one place (``harness.cli.main``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .. import paths, releases
from ..campaign import bench, compare, reproduce
from ..campaign.campaign import run_campaign
from ..catalog import backends, faults, workloads
from ..components import Components
from ..config import Reset, StackConfig, TortureConfig, VerifyPath
from ..crash.ledger import attribute
from ..errors import ConfigError, ImageError
from ..images import IMAGE_NAMES, ImagePair, ImageStore, debs, devmodel, kernel, transfer
from ..images.lock import PackageLock
from ..releases import DEFAULT_RELEASE
from ..report import page, trend
from ..report import summary as summary_mod
from ..report.matrix import write_report
from ..report.records import CampaignSummary
from ..report.rundir import IterationDir, RunDir, dumps, ensure_dir
from ..stack import inputs
from ..stack.saved import clean_snapshots, drop_snapshots_of
from ..stack.xen import versions
from ..status import ExitCode, status_exit
from . import console, preview

Args = argparse.Namespace


progress = console.plain


def _new_run_dir(kind: str, given: str | None) -> Path:
    """The run directory (created now, so an unwritable one is a usage error before anything runs)."""
    path = Path(given).resolve() if given else paths.runs_dir() / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    return ensure_dir(path)


def prepared_run(kind: str, given: str | None, spec: Components, store: ImageStore) -> tuple[Path, ImagePair]:
    """The run directory and the images the run will pin; if the images are not there, the
    error comes before anything is left behind (an empty new directory is removed)."""
    run_dir = _new_run_dir(kind, given)
    try:
        if spec.domu_packages:   # your workload's packages: its domU image is built once, cached by digest
            store.build(("domu",), progress=progress, spec=spec)
        return run_dir, store.pair(spec)
    except ImageError:
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


# --- images ------------------------------------------------------------------------------
def _spec(args: Args) -> Components:
    return Components(args.release, debs.absolute(args.dom0_deb), debs.absolute(args.domu_deb),
                      workloads.load(args.workload).packages if args.workload else ())


def cmd_images_build(args: Args) -> int:
    store = ImageStore()
    names = tuple(args.only) if args.only else IMAGE_NAMES
    t0 = time.monotonic()
    spec = _spec(args)
    lock = PackageLock.read(Path(args.lock)) if args.lock else None
    before = {n: img.digest for n in names if (img := store.current(n, spec))}
    results = store.build(names, force=args.force, progress=progress, spec=spec, lock=lock, lock_path=args.lock or "")
    # rebuilt in place (the same digest, other bytes): a saved machine on the old bytes must go
    for d in drop_snapshots_of(store, {img.digest for img, built in results if built and img.name in before}):
        progress(f"removed the saved machine {d.name}: its image was rebuilt")
    print(f"{'image':6} {'digest':16} {'built':5} {'seconds':>7} {'size MiB':>8}  dir")
    for img, built in results:
        print(f"{img.name:6} {img.digest:16} {'yes' if built else 'no':5} {img.build_seconds:7.0f} "
              f"{img.size_bytes() / 2**20:8.0f}  {img.dir}")
    print(f"total {time.monotonic() - t0:.0f} s; hypervisor: {results[0][0].artifacts.get('xen', '-')}"
          if results and results[0][0].name == "dom0" else f"total {time.monotonic() - t0:.0f} s")
    return ExitCode.CLEAN


def cmd_images_lock(args: Args) -> int:
    lock = ImageStore().lock(_spec(args))
    out = Path(args.output)
    lock.write(out)
    print(f"{out}: {lock.release}, " + ", ".join(f"{n} {len(p)} packages" for n, p in sorted(lock.images.items())))
    return ExitCode.CLEAN


def cmd_images_export(args: Args) -> int:
    store = ImageStore()
    pair = store.pair(_spec(args))
    out = Path(args.output).resolve()
    bundle = transfer.export(store, list(pair), out, progress)
    for img in bundle.images:
        print(f"{img.name:6} {img.release:8} {img.digest}")
    print(f"{out} ({out.stat().st_blocks * 512 / 2**20:.0f} MiB on disk): it holds the SSH client key the images "
          "trust; keep it with them")
    return ExitCode.CLEAN


def cmd_images_import(args: Args) -> int:
    store = ImageStore()
    rows = transfer.import_(store, Path(args.bundle).resolve(), progress)
    for r in rows:
        print(f"{r.image.name:6} {r.image.release:8} {r.image.digest} {r.status}"
              f"{'' if r.current else ' (not what this checkout builds)'}")
    stale = [r.image for r in rows if not r.current]
    if stale:   # in the cache now, but no run here would use them: say so, not green
        raise ImageError(f"{stale[0].name} {stale[0].digest} is not the image this checkout builds for "
                         f"{stale[0].release} (another recipe, guest programs or your own .debs)",
                         hint="export from the same commit as this one, with the same --release and .debs")
    return ExitCode.CLEAN


def cmd_images_devmodel(args: Args) -> int:
    dm = devmodel.build(releases.get(args.release), progress, force=args.force)
    # and the dom0 image that carries it, so that --backend qdisk-direct is ready to boot
    (img, _), = ImageStore().build(("dom0",), progress=progress, spec=Components(args.release, (str(dm.deb),)))
    print(f"{dm.deb}\n  {dm.version}, from Debian's qemu {dm.source_version} with linux-aio; built in "
          f"{dm.build_seconds:.0f} s; dom0 image {img.digest}. `--backend qdisk-direct"
          f"{'' if args.release == DEFAULT_RELEASE else ' --release ' + args.release}` uses both.")
    return ExitCode.CLEAN


def cmd_images_list(args: Args) -> int:
    rows = ImageStore().rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return ExitCode.CLEAN
    if not rows:
        print("no images built; run `xdh images build`")
        return ExitCode.CLEAN
    print(f"{'image':6} {'release':8} {'digest':16} {'current':7} {'size MiB':>8} {'build s':>7}  built at"
          "              your .debs")
    for r in rows:
        state = "yes" if r["current"] else ("own" if r["debs"] else "stale")
        print(f"{r['name']:6} {r['release']:8} {r['digest']:16} {state:7} {r['size_mib']:8} "
              f"{r['build_seconds']:7.0f}  {r['built_at']}  {', '.join(r['debs']) or '-'}")
    return ExitCode.CLEAN


def cmd_images_clean(args: Args) -> int:
    store = ImageStore()
    removed = clean_snapshots(store, everything=args.all) + store.clean(everything=args.all)
    for d in removed:
        print(f"removed {d}")
    if not removed:
        print("nothing to remove")
    return ExitCode.CLEAN


# --- stack -------------------------------------------------------------------------------
def stack_config(args: Args) -> StackConfig:
    cfg = StackConfig(backend=args.backend, release=args.release, accel=args.accel, memory_mib=args.memory,
                      domu_mem_mib=args.domu_memory, boot_timeout=args.boot_timeout,
                      dom0_debs=debs.absolute(args.dom0_deb), domu_debs=debs.absolute(args.domu_deb),
                      domu_kernel=kernel.resolve(args.domu_kernel),
                      domu_initrd=kernel.resolve(args.domu_initrd))
    cfg = inputs.completed(cfg)
    inputs.check(cfg)
    return cfg


# --- campaigns ---------------------------------------------------------------------------
def _torture_config(args: Args) -> TortureConfig:
    cfg = TortureConfig(workload=args.workload, fault=args.fault, iterations=args.iterations, seed=args.seed,
                        cut=args.cut, cut_acks=args.cut_acks, cut_seconds=args.cut_seconds,
                        canary=not args.no_canary, shard=args.shard, keep_images=args.keep_images,
                        ledger=not args.no_ledger, sync=args.sync, journal=args.journal, reset=args.reset,
                        verify=args.verify,
                        disk_cache=args.disk_cache, crash_subsets=args.crash_subsets, flush_points=args.flush_points,
                        exhaustive_k=args.exhaustive_k, atomic_write=args.atomic_write,
                        states_budget=args.states_budget, resident_verify=not args.no_resident_verify,
                        jobs=args.jobs, expect=args.expect, time_budget=args.time_budget, stack=stack_config(args))
    cfg.validate()
    return cfg.resolved()


def _print_summary(summary: CampaignSummary, as_json: bool) -> None:
    if as_json:
        print(dumps(summary.to_json()))
    else:
        print(summary_mod.table(summary))
        print(f"run directory: {summary.run_dir} (summary.json, junit.xml)")


def cmd_torture(args: Args) -> int:
    cfg = _torture_config(args)
    if args.dry_run:        # the plan a run with these options makes, and nothing booted
        where = Path(args.run_dir).resolve() if args.run_dir else paths.runs_dir()
        return preview.print_plan(cfg, args.seed is not None, where, args.json)
    store = ImageStore()        # the command's one image cache, handed down
    run_dir, images = prepared_run("torture", args.run_dir, cfg.stack.components(), store)
    with console.live("torture") as say:
        result = run_campaign(cfg, run_dir, say, versions(images, cfg.stack), images=images, store=store)
    _print_summary(result.summary, args.json)
    return result.exit_code


def cmd_reproduce(args: Args) -> int:
    it = IterationDir(Path(args.iteration).resolve())
    other = args.release or args.dom0_deb or args.domu_deb or args.domu_kernel or args.domu_initrd or args.stock \
        or args.bisect
    if other and not args.rerun:
        raise ConfigError("--release, --dom0-deb, --domu-deb, --domu-kernel, --stock and --bisect apply to --rerun "
                          "only",
                          hint="add --rerun, or drop them")
    if args.reset and args.rerun:
        raise ConfigError("--reset applies to re-verification; --rerun runs the iteration as it was recorded",
                          hint="drop --reset")
    reset = Reset(args.reset) if args.reset else None
    if args.state and args.rerun:
        raise ConfigError("--state re-verifies one recorded crash state; --rerun runs the iteration again",
                          hint="use one of them")
    if args.state:
        mode = VerifyPath(args.verify or "both")
        paths = (VerifyPath.FAST, VerifyPath.REBOOT) if mode == VerifyPath.BOTH else (mode,)
        return _print_reverified(reproduce.reverify_state(it, args.state, paths, progress, ImageStore(), reset), it)
    if not args.rerun:
        mode = VerifyPath(args.verify or "reboot")
        paths = (VerifyPath.FAST, VerifyPath.REBOOT) if mode == VerifyPath.BOTH else (mode,)
        store = ImageStore()
        return _print_reverified([reproduce.reverify(it, p, progress, store, reset) for p in paths], it)
    stack = reproduce.other_stack(reproduce.load_plan(it).cfg.stack, args.release, debs.absolute(args.dom0_deb),
                                  debs.absolute(args.domu_deb), kernel.resolve(args.domu_kernel),
                                  kernel.resolve(args.domu_initrd), args.stock)
    return _rerun(it, stack)


def _rerun(it: IterationDir, stack: StackConfig) -> int:
    r = reproduce.rerun(it, progress, stack, ImageStore())
    print(f"{r.record.name} (seed {r.record.seed}, the same cut plan):")
    for what, st, rec in (("recorded", r.recorded_stack, r.recorded), ("rerun", r.stack, r.record)):
        text = "-" if rec is None else (f"{rec.status.upper():10} acked={rec.acked} lost={rec.lost_acked}"
                                        + (f": {rec.error}" if rec.error else "")
                                        + (f"; {rec.workload_error.line()}" if rec.workload_error else ""))
        print(f"  {what:8} {text}\n           on {reproduce.describe(st)}")
    if r.record.flush is not None:
        print(f"    flush ledger: {r.record.flush.text}")
    for v in r.record.violations:
        print(f"    {v.line()}")
    return status_exit(r.record.status)


def _print_reverified(results: list[reproduce.Reverified], it: IterationDir) -> int:
    ledger = it.read_ledger_or_none()
    if ledger is not None:
        print(f"flush ledger of the recorded crash run: {attribute(ledger).text}")
    ended = it.read_result().workload_error if it.result.exists() else None
    if ended is not None:
        print(f"in the recorded crash run, {ended.line()}")
    codes = []
    for r in results:
        v = r.verdict
        print(f"{r.name}: {'LOSS' if not v.ok else 'PASS'} acked={v.acked} lost={v.lost_acked}; "
              f"same verdict as recorded: {'yes' if r.same else 'NO'}")
        for x in v.violations[:10]:
            print(f"  {x.line()}")
        codes.append(ExitCode.DIFFERENT if not r.same else ExitCode.CLEAN if v.ok else ExitCode.LOSS)
    return max(codes)


def cmd_bench(args: Args) -> int:
    cfg = bench.BenchConfig(workload=args.workload, fault=args.fault, iterations=args.iterations, seed=args.seed,
                            cut_acks=args.cut_acks, modes=args.modes, jobs=args.jobs, stack=stack_config(args))
    cfg.validate()
    store = ImageStore()
    run_dir, images = prepared_run("bench", args.run_dir, cfg.stack.components(), store)
    with console.live("bench") as say:
        result = bench.run_bench(cfg, run_dir, say, versions(images, cfg.stack), store)
    if args.json:
        print(dumps(result))
    else:
        print(bench.table(result))
        print(f"run directory: {run_dir} (bench.json, bench.md, one campaign per mode)")
    statuses = [s for f in result["modes"].values() for s in f["statuses"]]
    worst = [status_exit(s) for s in statuses if s not in ("pass", "loss")]
    return max(worst) if worst else ExitCode.CLEAN


def cmd_compare(args: Args) -> int:
    command = "xdh " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else ""
    if args.report_from:
        out = ensure_dir(Path(args.run_dir).resolve() if args.run_dir else paths.runs_dir() / "compare-merged")
        data = write_report([Path(d).resolve() for d in args.report_from], out, command)
    else:
        # the matrix's own backends and releases (--backend/--release are their other spellings);
        # the base stack each cell is made from: the default backend on the first release
        first = (args.releases or (DEFAULT_RELEASE,))[0]
        base = argparse.Namespace(**vars(args), backend=backends.DEFAULT_BACKEND, release=first)
        cfg = compare.CompareConfig(backends=args.backends, faults=args.faults, workloads=args.workloads,
                                    disk_caches=args.disk_cache, direct_faults=args.direct_faults,
                                    iterations=args.iterations, seed=args.seed, cut_acks=args.cut_acks,
                                    crash_subsets=args.crash_subsets, flush_points=args.flush_points,
                                    canary=not args.no_canary, stack=stack_config(base), releases=args.releases)
        cfg.validate()
        store = ImageStore()
        out, _ = prepared_run("compare", args.run_dir, cfg.stack.components(), store)
        with console.live("compare") as say:
            data = compare.run_compare(cfg, out, say, command, store)
    print(RunDir(out).report_md())
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    return compare.compare_exit(data)


def cmd_report_merge(args: Args) -> int:
    out = Path(args.output).resolve() if args.output else paths.runs_dir() / "merged"
    runs = [Path(d).resolve() for d in args.runs]
    missing = [d for d in runs if not d.exists()]
    if missing:
        raise ConfigError(f"{missing[0]} does not exist", hint="pass torture run directories")
    for f in (d for d in runs if not d.is_dir()):
        print(f"skipped {f}: not a run directory", file=sys.stderr)
    dirs = [d for d in runs if d.is_dir()]
    if not dirs:
        raise ConfigError("no run directory to merge", hint="pass torture run directories (holding summary.json)")
    summary = summary_mod.merge(dirs, out, args.shards, allow_shortfall=args.allow_shortfall,
                                campaigns=args.campaigns)
    _print_summary(summary, args.json)
    for problem in summary.merge_problems:
        print(f"xdh: bad shard: {problem.line()}", file=sys.stderr)
    return summary.exit_code


def cmd_report_trend(args: Args) -> int:
    out = Path(args.output).resolve() if args.output else paths.runs_dir() / "trend"
    runs = [Path(d).resolve() for d in args.runs]
    rows = trend.nights([(d.name, RunDir(d).read_summary()) for d in runs if d.is_dir()])
    if not rows:
        raise ConfigError("no run directory to compare", hint="pass run directories (holding summary.json)")
    ensure_dir(out, "output directory", option="-o")
    md = trend.markdown(rows)
    RunDir(out).write_trend(md, trend.page(rows), {"nights": [n.to_json() for n in rows]})
    print(md + f"\n{out / 'index.html'}")
    return ExitCode.CLEAN


def cmd_report_index(args: Args) -> int:
    root = Path(args.dir).resolve() if args.dir else paths.runs_dir()
    runs = sorted(root.glob("*/summary.json"))
    if not runs:
        raise ConfigError(f"{root} holds no run directories",
                          hint="pass the directory your runs are in (--run-dir's parent)")
    for s in runs:      # each run's own page too, for runs written before pages existed
        if not (s.parent / "index.html").exists():
            summary_mod.write(RunDir(s.parent).read_summary(), s.parent)
    (root / "index.html").write_text(page.runs_index(root))
    print(f"{root / 'index.html'}: {len(runs)} runs")
    return ExitCode.CLEAN


def cmd_list(args: Args) -> int:
    print("workloads (oracle model):\n" + "\n".join(f"  {w.name:10} {w.summary} ({w.model})"
                                                    for w in workloads.WORKLOADS.values()))
    print("  your own: --workload PATH/workload.toml (models: " + ", ".join(workloads.MODELS)
          + "; docs/workloads.md, examples/; `xdh check` reads it)")
    print("faults:\n" + faults.FAULTS.describe(13))
    print("  your own: --fault PATH/fault.toml (steps in dom0 or the domU, outer disk options; docs/workloads.md)")
    print("backend modes:\n" + backends.BACKENDS.describe())
    return ExitCode.CLEAN


def cmd_backends(args: Args) -> int:
    for b in backends.BACKENDS.values():
        print(f"{b.name:13} {b.summary}")
    return ExitCode.CLEAN
