"""Exponential moving average of model weights."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from nnh.func.shards import local_shards

__all__ = ["ema_update", "init_ema", "ema_source"]


def ema_update(ema: TensorDict, params: Mapping[str, Any], decay: float | Tensor) -> TensorDict:
    """Update `ema` in place towards `params` and return it:

        ema <- decay * ema + (1 - decay) * params

    for every leaf, as a single `torch._foreach_lerp_` over all leaves (lerp with weight
    1 - decay is exactly the formula above). `params` is any mapping (a `TensorDict`, a dict)
    whose values, walked in order, match the leaves of `ema`, as `init_ema` and `ema_source`
    build them. `decay` is a float in [0, 1] (checked), or a 0-d tensor (not checked: that
    would read it on the host); then 1 - decay is taken in its dtype and cast to each leaf's,
    and decay = 1 leaves `ema` unchanged, which gates the update on the device. Runs under
    `torch.compile(fullgraph=True)`.
    """
    # Element-wise: sharded leaves (FSDP) are updated shard by shard.
    targets, sources = local_shards(_leaves(ema)), local_shards(_leaves(params))
    if len(targets) != len(sources):
        raise ValueError(f"ema_update: ema has {len(targets)} leaves but params has {len(sources)}; "
                         "build both from the same module (init_ema, ema_source).")
    with torch.no_grad():
        if isinstance(decay, Tensor):
            weight = 1 - decay
            # The list overload: the Scalar one would read a tensor weight on the host.
            torch._foreach_lerp_(targets, sources, [weight.to(t.dtype) for t in targets])
        else:
            if not 0.0 <= decay <= 1.0:
                raise ValueError(f"ema_update: decay={decay!r} must lie in [0, 1], e.g. 0.999.")
            torch._foreach_lerp_(targets, sources, 1.0 - decay)
    return ema


def _leaves(td: Mapping[str, Any]) -> list[Tensor]:
    # A plain walk: `values(include_nested=True, leaves_only=True)` costs ~60 us per call on a
    # 256-leaf state, more than the lerp itself on small models (benchmarks/ema.py).
    out: list[Tensor] = []
    for value in td.values():
        if isinstance(value, Tensor):
            out.append(value)
        else:
            out.extend(_leaves(value))
    return out


def ema_source(module: nn.Module) -> TensorDict:
    """The tensors an EMA tracks: every floating parameter and floating buffer of `module`.

    Floating buffers (BatchNorm running mean and variance) are averaged like the weights, so
    the averaged model carries statistics that match its averaged weights; integer buffers
    (`num_batches_tracked`) are not averaged and are taken from the live model when the EMA
    weights are swapped in. The leaves are the module's own tensors (no copies).
    """
    leaves = {n: p for n, p in module.named_parameters()}
    leaves.update({n: b for n, b in module.named_buffers() if b.is_floating_point()})
    return TensorDict(leaves, batch_size=[])


def init_ema(module: nn.Module) -> TensorDict:
    """A detached copy of `ema_source(module)`: the EMA state at step 0."""
    return ema_source(module).detach().clone()
