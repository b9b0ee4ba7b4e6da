"""What a campaign decides before anything runs: per-iteration seeds, shards and cut points.
All of it derives from the campaign seed, so every shard and every rerun agrees."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from ..config import CutMode, TortureConfig

PER_IMAGE_FLUSH_POINTS = 2    # flush states one image at a time (reboot, qcow2 layout) verify by default


def iteration_seed(campaign_seed: int, index: int) -> int:
    """Deterministic per-iteration seed, the same on every shard."""
    h = hashlib.sha256(f"xdh:{campaign_seed}:{index}".encode()).digest()
    return int.from_bytes(h[:7], "little")


def shard_indices(iterations: int, shard: tuple[int, int]) -> list[int]:
    i, n = shard
    return [k for k in range(iterations) if k % n == i - 1]


@dataclass(frozen=True)
class CutPlan:
    mode: CutMode
    after_acks: int | None = None
    after_seconds: float | None = None

    @classmethod
    def draw(cls, cfg: TortureConfig, seed: int) -> CutPlan:
        rng = random.Random(seed)
        if cfg.cut == CutMode.ACKS:
            return cls(CutMode.ACKS, after_acks=rng.randint(*cfg.cut_acks))
        return cls(CutMode.TIME, after_seconds=round(rng.uniform(*cfg.cut_seconds), 3))

    def describe(self) -> str:
        return f"{self.after_acks} acks" if self.mode == CutMode.ACKS else f"{self.after_seconds:.2f} s"

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "after_acks": self.after_acks, "after_seconds": self.after_seconds}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CutPlan:
        return cls(CutMode(d["mode"]), d.get("after_acks"), d.get("after_seconds"))


@dataclass(frozen=True)
class IterationPlan:
    """One crash iteration, fully decided: its config, index, seed, name and cut point."""

    cfg: TortureConfig
    index: int
    seed: int
    name: str
    cut: CutPlan

    @classmethod
    def make(cls, cfg: TortureConfig, index: int, name: str | None = None) -> IterationPlan:
        if cfg.seed is None:
            raise ValueError("the campaign seed must be resolved before planning (TortureConfig.resolved)")
        seed = iteration_seed(cfg.seed, index)
        return cls(cfg, index, seed, name or f"iter-{index:04d}", CutPlan.draw(cfg, seed))
