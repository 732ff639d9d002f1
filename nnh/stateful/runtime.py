"""Where a handler runs: its device, its rank in the world, and the collectives it agrees through.

In one process the handler is rank 0 of a world of 1 and every collective is the identity.
Under torch.distributed (`nnh.stateful.launch` builds the runtime) every decision that changes
the loop's control flow (skip, stop, save) is agreed here, so that all ranks take it at the
same point. Code that must behave differently on other ranks asks the runtime, never
`torch.distributed` directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from nnh.utils import distributed as du

__all__ = ["Runtime", "FlagExchange"]


@dataclass(frozen=True)
class Runtime:
    """The device, `rank`, `world_size` and `local_rank` of this process; `strategy` is None
    in one process, else "ddp" or "fsdp"; `group` is the gloo group of the host-side
    agreements."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str | None = None
    group: Any = None

    @property
    def distributed(self) -> bool:
        return self.strategy is not None

    @property
    def is_main(self) -> bool:
        """Whether this process logs, shows bars, writes files and samples (rank 0)."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether the parameters are sharded (FSDP): every forward is then a collective, which
        all ranks must run together."""
        return self.strategy == "fsdp"

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true on every rank when it is true on any (one all-reduce for all)."""
        if not self.distributed:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([float(bool(f)) for f in flags], dtype=torch.float32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return tuple(bool(v) for v in t.tolist())

    def any(self, flag: bool) -> bool:
        """True when `flag` is true on any rank (the same answer on every rank)."""
        return self.agree(flag)[0]

    def sum(self, values: list[float]) -> list[float]:
        """The element-wise sum of `values` over the ranks, in float64 (one all-reduce)."""
        if not self.distributed or not values:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.group)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` in rank order on rank 0 (tensors moved to the CPU); None elsewhere."""
        return du.gather_object(obj, 0, self.group) if self.distributed else [obj]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        return du.broadcast_object(obj, 0, self.group) if self.distributed else obj

    def broadcast_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite `tensors` (on this process's device) with rank 0's, in place."""
        if self.distributed:
            for t in tensors:
                dist.broadcast(t, src=0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(self.group)

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """`fn()` on rank 0 (its result there, None elsewhere); the other ranks wait for it, and
        when it raises every rank raises (see `nnh.utils.distributed.share_outcome`)."""
        if not self.distributed:
            return fn()
        return du.share_outcome(fn, 0, self.group)

    def main_result(self, fn: Callable[[], Any]) -> Any:
        """`fn()`'s result on rank 0, None elsewhere. Rank 0 runs it alone, except when the
        parameters are sharded: every forward is then a collective, so every rank runs it."""
        if self.sharded:
            out = fn()
            return out if self.is_main else None
        return fn() if self.is_main else None

    def flag_exchange(self) -> "FlagExchange":
        return FlagExchange(self)


class FlagExchange:
    """Flags (stop, preempt) agreed at closed accumulation windows without waiting for the network.

    In one process `exchange` returns the flags it is given. Under torch.distributed the flags
    are exchanged at every `every`-th closed window: an all-reduce (MAX) of this rank's flags
    is started without waiting and read at the next exchange, when it has long completed, so
    every rank sees the same agreed flags at the same window (other windows return all False).
    With the flags goes each rank's time since its previous exchange; from the slowest rank's,
    every rank computes the same next `every`, about `PERIOD_S` of training: exchanging then
    costs a fraction of a percent however short the windows are, and a flag raised on any rank
    takes effect on all within about two periods. `PERIOD_S = 0` exchanges at every window.
    """

    PERIOD_S = 0.2
    MAX_EVERY = 10_000

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.every = 1
        self._since = 0  # windows since the last exchange
        self._posted_at = time.monotonic()
        self._pending: tuple[Any, torch.Tensor, int] | None = None

    def exchange(self, *flags: bool, post: bool = True) -> tuple[bool, ...]:
        """The agreed flags at this closed window; `post=False` (the epoch's last window, which
        `drain` follows) exchanges nothing."""
        if not self.runtime.distributed:
            return tuple(bool(f) for f in flags)
        self._since += 1
        if not post or self._since < self.every:
            return (False,) * len(flags)
        agreed = self.drain(len(flags))
        now = time.monotonic()
        t = torch.tensor([float(bool(f)) for f in flags] + [now - self._posted_at], dtype=torch.float64)
        work = dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.runtime.group, async_op=True)
        self._pending, self._since, self._posted_at = (work, t, self._since), 0, now
        return agreed

    def drain(self, n: int) -> tuple[bool, ...]:
        """The agreed flags of the exchange in flight (all False when none is); every rank calls
        it at the same point (the end of the epoch's batches)."""
        if self._pending is None:
            return (False,) * n
        work, t, windows = self._pending
        self._pending = None
        work.wait()
        values = t.tolist()
        per_window = values[n] / windows
        self.every = max(1, min(self.MAX_EVERY, int(self.PERIOD_S / per_window))) if per_window > 0 else 1
        return tuple(bool(v) for v in values[:n])
