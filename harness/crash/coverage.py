"""How much of the volatile model's crash-state space a plan covered (``crash.states`` builds
it; the iteration's record keeps it): a value with no machine behind it, so reading a run
directory needs nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..jsonio import known_fields


@dataclass(frozen=True)
class Coverage:
    """How much of the crash-state space a plan covered: per epoch (the writes between two
    flushes) the subsets of its writes it generated, out of the 2**n - 2 non-empty proper ones."""

    epochs: int = 0                 # epochs from the workload's start on
    choice_epochs: int = 0          # of them with 2 or more writes (a subset to choose)
    exhaustive_epochs: int = 0      # ... whose every subset was generated
    mean_fraction: float = 1.0      # mean over the choice epochs of the fraction of subsets generated
    min_fraction: float = 1.0
    largest_epoch: int = 0          # writes in the largest epoch
    subsets: int = 0                # subset states generated
    torn: int = 0                   # torn-write states generated
    tearable: int = 0               # writes that span more than one atomic unit
    skipped: int = 0                # distinct states left unverified by --states-budget

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Coverage:
        return cls(**known_fields(cls, d))
