"""torch.distributed helpers for any training code, with or without `NNHandler`.

Outside a process group every function answers as rank 0 of a world of one and every
collective is the identity, so code written with them runs unchanged in one process. Before
the group exists, `get_rank`, `get_local_rank` and `get_world_size` read the launcher's
variables (torchrun's `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, or Slurm's `SLURM_PROCID`,
`SLURM_LOCALID`, `SLURM_NTASKS`), so a script can ask before it initialises anything.

Every collective here must be called by every rank of `group`, in the same order.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, TypeVar

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "get_rank", "get_local_rank", "get_world_size", "barrier", "on_rank",
           "all_reduce_weighted_mean", "gather_object", "broadcast_object", "share_outcome"]

F = TypeVar("F", bound=Callable[..., Any])


def is_distributed() -> bool:
    """Whether this process belongs to an initialised `torch.distributed` process group."""
    return dist.is_available() and dist.is_initialized()


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def get_rank(group: Any = None) -> int:
    """This process's rank in `group` (default: the whole world); before any group exists,
    `RANK` or `SLURM_PROCID`; 0 without either."""
    if is_distributed():
        return dist.get_rank(group)
    value = _env_int("RANK", "SLURM_PROCID")
    return 0 if value is None else value


def get_local_rank() -> int:
    """This process's rank on its machine (`LOCAL_RANK`, else `SLURM_LOCALID`, else 0): the
    index of the GPU it uses."""
    value = _env_int("LOCAL_RANK", "SLURM_LOCALID")
    return 0 if value is None else value


def get_world_size(group: Any = None) -> int:
    """The number of processes in `group` (default: the whole world); before any group
    exists, `WORLD_SIZE` or `SLURM_NTASKS`; 1 without either."""
    if is_distributed():
        return dist.get_world_size(group)
    value = _env_int("WORLD_SIZE", "SLURM_NTASKS")
    return 1 if value is None else value


def _collective_device(group: Any) -> torch.device:
    # NCCL reduces CUDA tensors only; gloo (and the rest) CPU tensors.
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier(group: Any = None) -> None:
    """Wait until every rank of `group` has called `barrier` (nothing outside a group)."""
    if not is_distributed():
        return
    if dist.get_backend(group) == "nccl":
        dist.barrier(group, device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier(group)


def broadcast_object(obj: Any, src: int = 0, group: Any = None) -> Any:
    """`obj` of rank `src`, on every rank (pickled: keep it small)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group,
                               device=_collective_device(group) if dist.get_backend(group) == "nccl" else None)
    return box[0]


def share_outcome(fn: Callable[[], Any], rank: int = 0, group: Any = None) -> Any:
    """Run `fn()` on `rank` only and tell every rank how it went: its result on `rank`, None
    elsewhere. When `fn` raises, `rank` re-raises it and every other rank raises a
    RuntimeError naming it, at once, instead of waiting for a collective that never comes.
    Acts as a barrier."""
    if not is_distributed():
        return fn()
    result, error = None, None
    if get_rank(group) == rank:
        try:
            result = fn()
        except BaseException as exc:  # shared first, then re-raised below
            error = exc
    message = broadcast_object(None if error is None else f"{type(error).__name__}: {error}", src=rank, group=group)
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank {rank} failed, so this rank stops too: {message}")
    return result


def on_rank(rank: int = 0, barrier: bool = True) -> Callable[[F], F]:
    """Decorator: run the function on `rank` only; other ranks skip it and get None.

    With `barrier=True` every rank waits until `rank` has finished (e.g. a file is written
    before anyone reads it), and an exception on `rank` is raised on every rank (there as a
    RuntimeError naming it) instead of leaving the others waiting. The decorated function
    must then be called on every rank. Outside a process group it simply runs.

        @on_rank(0)
        def write_summary(path): ...
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        raise ValueError(f"on_rank: rank={rank!r} must be an int >= 0, e.g. on_rank(0).")

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if barrier:
                return share_outcome(lambda: fn(*args, **kwargs), rank)
            return fn(*args, **kwargs) if get_rank() == rank else None

        return wrapper  # type: ignore[return-value]

    return decorate


def all_reduce_weighted_mean(values: Mapping[str, float | torch.Tensor], weight: float | int,
                             group: Any = None) -> dict[str, float]:
    """The mean of each value over the ranks of `group`, weighted by each rank's `weight`
    (its sample count): ``sum_r weight_r * value_r / sum_r weight_r``, for every key at once
    in one all-reduce. Every rank passes the same keys and gets the same result. A total
    weight of 0 gives NaN."""
    keys = list(values)
    local = [float(values[k]) * float(weight) for k in keys] + [float(weight)]
    if is_distributed():
        totals = torch.tensor(local, dtype=torch.float64, device=_collective_device(group))
        dist.all_reduce(totals, group=group)
        local = totals.tolist()
    total_weight = local[-1]
    return {k: (v / total_weight if total_weight else float("nan")) for k, v in zip(keys, local)}


def gather_object(obj: Any, dst: int = 0, group: Any = None) -> list[Any] | None:
    """Every rank's `obj` (pickled), as a list in rank order on rank `dst`; None on the
    other ranks. Tensors are moved to the CPU first (a pickled CUDA tensor would land on
    `dst`'s GPU of the same index)."""
    if not is_distributed():
        return [obj]
    obj = torch.utils._pytree.tree_map(lambda t: t.detach().cpu() if isinstance(t, torch.Tensor) else t, obj)
    gathered: list[Any] | None = [None] * dist.get_world_size(group) if get_rank(group) == dst else None
    if dist.get_backend(group) == "nccl":
        # NCCL has no gather of objects; all-gather and keep only dst's copy.
        everyone: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(everyone, obj, group=group)
        return everyone if get_rank(group) == dst else None
    dist.gather_object(obj, gathered, dst=dst, group=group)
    return gathered
