"""The shards of a night, checked before they are merged: a night whose jobs were killed, timed
out, ran nothing or ran different software must never merge green.

Runs are grouped into campaigns by what a nightly matrix varies (workload, fault, expectation,
backend, release, disk cache): a merge of controls holds several campaigns, each of one or more
shards. Within a campaign the shards must be complete (``I/N`` for every I, each once), share
the seed, the config (apart from the shard) and the component versions. Pure: summaries in,
problems out (``summary.merge`` writes them into the merged summary and JUnit file).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..jsonio import differences, without_paths
from ..status import ExitCode, Status
from .records import CampaignSummary, MergeProblem


@dataclass(frozen=True)
class Shard:
    """One run directory given to the merge: its summary, or None when it has none (its campaign
    never finished: killed, or its job timed out), and the config it recorded at its start."""

    run_dir: str
    summary: CampaignSummary | None
    config: dict[str, Any]
    seed: Any = None
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def started(self) -> bool:
        """It left a record: a summary, or at least the config its campaign started with."""
        return self.summary is not None or bool(self.config)

    @property
    def campaign_config(self) -> dict[str, Any]:
        """The config every shard of its campaign shares: all but the shard and the seed."""
        return {k: v for k, v in self.config.items() if k not in ("shard", "seed")}

    @property
    def index(self) -> tuple[int, int]:
        i, n = self.config.get("shard") or (1, 1)
        return int(i), int(n)

    @property
    def campaign(self) -> str:
        c, stack = self.config, self.config.get("stack") or {}
        return (f"{c.get('workload', '?')}/{c.get('fault', '?')} on {stack.get('backend', '?')}/"
                f"{stack.get('release', '?')} cache={c.get('disk_cache', '?')}"
                + (f" expect={c['expect']}" if c.get("expect") else ""))

    @property
    def label(self) -> str:
        i, n = self.index
        return f"{self.campaign} shard {i}/{n}"


def _problem(shard: Shard, text: str) -> MergeProblem:
    return MergeProblem(shard.run_dir, shard.label, text)


def _own(shard: Shard, allow_shortfall: bool) -> list[MergeProblem]:
    """What is wrong with one shard on its own."""
    s = shard.summary
    if not shard.started:
        return [_problem(shard, "no config.json and no summary.json: its campaign never started")]
    if s is None:
        return [_problem(shard, "no summary.json: its campaign never finished (killed, or its job timed out)")]
    if s.ended_by:
        return [_problem(shard, f"ended early: {s.ended_by} (exit {int(s.exit_code)})")]
    if not s.iterations:
        return [_problem(shard, f"ran no iteration (exit {int(s.exit_code)})")]
    if s.shortfall and not allow_shortfall:
        return [_problem(shard, f"stopped early: {s.shortfall}")]
    no_verdict = {Status.GUEST_DIED, Status.ERROR}
    if s.exit_code in (ExitCode.INFRA, ExitCode.ERROR) and not any(i.status in no_verdict for i in s.all):
        return [_problem(shard, f"failed outside its iterations (exit {int(s.exit_code)})")]
    return []


def _show(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def comparable(versions: dict[str, Any]) -> dict[str, Any]:
    """The versions that must match across runners: without the image digests (each cache's own:
    they include its SSH client key) and without file paths (your .debs and kernel, by hash)."""
    return without_paths({k: v for k, v in versions.items() if k != "images"})


def _config_key(shard: Shard) -> str:
    return json.dumps(shard.campaign_config, sort_keys=True, default=str)


def _missing(campaign: list[Shard], expected: int | None) -> list[int]:
    n = expected or max(s.index[1] for s in campaign)
    return sorted(set(range(1, n + 1)) - {s.index[0] for s in campaign})


def _within(campaign: list[Shard], expected: int | None, covered: set[int]) -> list[MergeProblem]:
    """What is wrong with one campaign's shards together (``covered``: shard indices given with
    another config, reported as such instead of missing)."""
    out: list[MergeProblem] = []
    first = campaign[0]
    counts = {s.index[1] for s in campaign} | ({expected} if expected else set())
    n = expected or max(counts)
    out += [_problem(s, f"is shard {s.index[0]}/{s.index[1]}, but the night has {n} shards") for s in campaign
            if s.index[1] != n]
    seen: dict[int, Shard] = {}
    for s in campaign:
        i = s.index[0]
        if i in seen:
            out.append(_problem(s, f"duplicates shard {i}/{n} (also {seen[i].run_dir})"))
        seen[i] = s
    for i in _missing(campaign, expected):
        if i not in covered:
            out.append(MergeProblem("", f"{first.campaign} shard {i}/{n}", "missing: no run directory of it was given"))
    mine = comparable(first.versions)
    for s in campaign[1:]:
        if s.seed != first.seed:
            out.append(_problem(s, f"campaign seed {s.seed}, but {first.label} has {first.seed}"))
        for key, a, b in differences(mine, comparable(s.versions))[:3]:
            out.append(_problem(s, f"runs {key} {_show(b)}, but {first.label} runs {_show(a)}"))
    return out


def _differs(strays: list[Shard], reference: Shard) -> list[MergeProblem]:
    """Shards whose config differs from their campaign's (one line each: the first key)."""
    out = []
    for s in strays:
        key, a, b = differences(reference.campaign_config, s.campaign_config)[0]
        out.append(_problem(s, f"config {key} = {_show(b)}, but {reference.label} has {_show(a)}"))
    return out


def check(shards: list[Shard], expected: int | None = None, allow_shortfall: bool = False,
          campaigns: int | None = None) -> list[MergeProblem]:
    """Every problem of these shards, one line each: each run's own, then each sharded
    campaign's (``expected``: the night's shard count, ``--shards``; ``campaigns``: how many
    campaigns the night has, ``--campaigns``).

    A campaign is the shards of one config (apart from shard and seed). Where shards of one
    label (workload, fault, backend, release, disk cache, expectation) split into configs, the
    largest is the campaign and an incomplete rest are its shards with a differing config; two
    complete ones are two campaigns (a night whose matrix varies, e.g., --sync)."""
    started = [s for s in shards if s.started]
    problems = [p for s in shards for p in _own(s, allow_shortfall)]
    by_label: dict[str, dict[str, list[Shard]]] = defaultdict(lambda: defaultdict(list))
    for s in started:
        by_label[s.campaign][_config_key(s)].append(s)
    found = 0
    for groups in by_label.values():
        ordered = sorted(groups.values(), key=len, reverse=True)
        reference, complete = ordered[0], [g for g in ordered[1:] if not _missing(g, expected)]
        strays = [s for g in ordered[1:] if _missing(g, expected) for s in g]
        for g in [reference, *complete]:
            found += 1
            # unsharded runs of one config (several seeds, several nights) are not shards of anything
            if expected or any(s.index[1] > 1 for s in g):
                covered = {s.index[0] for s in strays} if g is reference else set()
                problems += _within(g, expected, covered)
        problems += _differs(strays, reference[0])
    if campaigns and found < campaigns:
        problems.append(MergeProblem("", "the night", f"{found} campaign(s) of {campaigns}: a whole campaign has no "
                                                      "run directory (all its shards lost)"))
    return problems
