"""Exponential moving average of model weights."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

__all__ = ["ema_update", "init_ema", "ema_source"]


def ema_update(ema: TensorDict, params: TensorDict, decay: float) -> TensorDict:
    """Update `ema` in place towards `params` and return it:

        ema <- decay * ema + (1 - decay) * params

    for every leaf, as a single `torch._foreach_lerp_` over all leaves (lerp with weight
    1 - decay is exactly the formula above). `ema` and `params` must hold the same keys in
    the same order, as `init_ema` and `ema_source` build them. Runs under
    `torch.compile(fullgraph=True)`.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema_update: decay={decay!r} must lie in [0, 1], e.g. 0.999.")
    targets, sources = _leaves(ema), _leaves(params)
    with torch.no_grad():
        torch._foreach_lerp_(targets, sources, 1.0 - decay)
    return ema


def _leaves(td: TensorDict) -> list[torch.Tensor]:
    # A plain walk: `values(include_nested=True, leaves_only=True)` costs ~60 us per call on a
    # 256-leaf state, more than the lerp itself on small models (benchmarks/ema.py).
    out: list[torch.Tensor] = []
    for value in td.values():
        if isinstance(value, torch.Tensor):
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
