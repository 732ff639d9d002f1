"""Whole tensors from a checkpoint file placed into a sharded (FSDP) handler.

A file written by one process (or by DDP's rank 0) holds whole tensors. Loaded under FSDP,
every rank reads the same file and keeps its own shard of each tensor: `distribute_tensor`
with no source rank slices locally, so nothing is sent over the network. For unsharded
targets every function here returns its input unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nnh.func.shards import is_sharded

__all__ = ["shard_like", "shard_like_module", "shard_optimizer_state", "full_state_dict", "load_full_state_dict"]


def shard_like(value: Any, target: Any) -> Any:
    """`value` (a whole tensor) as a DTensor laid out as `target`, when `target` is sharded."""
    if not is_sharded(target) or not isinstance(value, torch.Tensor) or value.shape != target.shape:
        return value
    from torch.distributed.tensor import distribute_tensor

    value = value.to(device=target.device, dtype=target.dtype)
    return distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None)


def shard_like_module(module: nn.Module, weights: dict[str, Any]) -> dict[str, Any]:
    """A state dict of whole tensors, each sharded as `module`'s tensor of the same name."""
    own = module.state_dict()
    if not any(is_sharded(t) for t in own.values()):
        return weights
    return {k: shard_like(v, own[k]) if k in own else v for k, v in weights.items()}


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After `optimizer.load_state_dict` of whole tensors: shard each state tensor shaped as
    its sharded parameter (moments, momentum buffers), in place."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and is_sharded(p):
                for key, value in list(state.items()):
                    state[key] = shard_like(value, p)


def full_state_dict(module: nn.Module, everywhere: bool = True) -> dict[str, Any]:
    """`module.state_dict()` with whole tensors. A sharded (FSDP) module gathers them, a
    collective that every rank calls: on every rank (on the CPU) when `everywhere`, else on
    rank 0 only (the others get {}). An unsharded module's own state dict is returned."""
    own = module.state_dict()
    if not any(is_sharded(t) for t in own.values()):
        return own
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=False)
    if everywhere:
        return {k: v.full_tensor().cpu() if is_sharded(v) else v.cpu() for k, v in own.items()}
    return get_model_state_dict(module, options=options)


def load_full_state_dict(module: nn.Module, weights: dict[str, Any]) -> None:
    """`module.load_state_dict(weights)` for whole tensors, sharded as the module's."""
    module.load_state_dict(shard_like_module(module, weights))
