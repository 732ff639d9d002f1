"""Where a handler runs: its device, its rank in the world and the collective helpers.

One process today: rank 0 of a world of 1, every collective an identity. Code that must
behave differently on other ranks asks the runtime, never `torch.distributed` directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Runtime"]


@dataclass(frozen=True)
class Runtime:
    """The device, `rank` and `world_size` of this process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process logs, shows bars, writes files and samples (rank 0)."""
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True when `flag` is true on any rank (the same answer on every rank)."""
        return bool(flag)
