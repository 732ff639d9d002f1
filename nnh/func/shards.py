"""Tensors sharded over processes (DTensors, as FSDP2's `fully_shard` makes them) in the train step.

The optimizer updates, the EMA and the gradient scaling are element-wise, so each process
applies them to its local shards alone: exactly what one process would compute on the whole
tensor, and without DTensor's per-op dispatch. Two quantities need every shard: the global
gradient norm (clipping) and whether any gradient is non-finite (the skip). `sum_over_shards`
adds such per-process values over the processes that hold the other shards: the one
collective of `nnh.func`, on the process groups of the mesh the DTensors already live on.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["is_sharded", "local_shards", "sum_over_shards"]

try:
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor
except ImportError:  # a torch build without torch.distributed
    DTensor = None  # type: ignore[assignment,misc]


def is_sharded(t: Any) -> bool:
    """Whether `t` is a DTensor sharded along at least one mesh dimension."""
    return DTensor is not None and isinstance(t, DTensor) and any(p.is_shard() for p in t.placements)


def local_shards(tensors: list[Tensor]) -> list[Tensor]:
    """Each tensor's local shard (a DTensor's `to_local()`, which shares its storage, so in-place
    updates of the shard update the DTensor); any other tensor itself."""
    if DTensor is None:
        return tensors
    return [t.to_local() if isinstance(t, DTensor) else t for t in tensors]


def sum_over_shards(values: Tensor, like: Any) -> Tensor:
    """`values` (computed from this process's shards) summed over the mesh dimensions along
    which `like` is sharded, when `like` is a sharded DTensor; `values` itself otherwise.

    Replicated mesh dimensions (HSDP) hold the same shards, so they are not summed over. One
    all-reduce per sharded mesh dimension (a plain one: DTensor's own `full_tensor` costs
    about a millisecond more per step on a CPU, benchmarks/ddp.py)."""
    if not is_sharded(like):
        return values
    values = values.clone()
    mesh = like.device_mesh
    for dim, placement in enumerate(like.placements):
        if placement.is_shard():
            dist.all_reduce(values, group=mesh.get_group(dim))
    return values
