"""The train state: one `TensorDict` holding everything `nnh.func.train_step` updates::

    params      the module's parameters (the module's own tensors, not copies)
    buffers     the module's buffers (likewise)
    optim       the optimizer's per-parameter state (the optimizer's own tensors)
    ema         EMA copies of the floating params and buffers          (when enabled)
    scaler      {scale, growth_tracker} of the fp16 loss scaler         (when enabled)
    step          int64 scalar: optimizer updates applied
    acc_samples   float32 scalar: samples in the open accumulation window
    acc_nonfinite bool scalar: a micro-batch of the open window had a non-finite loss
                  (kept by `skip_nonfinite=True`; a state without it reads as False)
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from nnh.func.ema import init_ema
from nnh.func.optim import init_optimizer_state

__all__ = ["init_train_state", "optimizer_state_view"]


def init_train_state(
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    ema: bool = False,
    grad_scaler: bool = False,
    init_scale: float = 2.0**16,
) -> TensorDict:
    """Build the train state of `module` and `optimizer` (see the module docstring).

    `optimizer` must have been built over `module`'s parameters; SGD, Adam and AdamW get
    their state tensors created here (see `nnh.func.optim.init_optimizer_state`).
    `ema=True` adds EMA weights equal to the current ones; `grad_scaler=True` adds the fp16
    loss-scaler state, starting at `init_scale`.
    """
    device = next(iter(module.parameters()), torch.empty(0)).device
    state = TensorDict(
        {
            "params": TensorDict(dict(module.named_parameters()), batch_size=[]),
            "buffers": TensorDict(dict(module.named_buffers()), batch_size=[]),
            "step": torch.zeros((), dtype=torch.int64, device=device),
            "acc_samples": torch.zeros((), dtype=torch.float32, device=device),
            "acc_nonfinite": torch.zeros((), dtype=torch.bool, device=device),
        },
        batch_size=[],
    )
    if optimizer is not None:
        owned = {id(p) for p in module.parameters()}
        foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in owned]
        if foreign:
            raise ValueError(
                f"init_train_state: the optimizer holds {len(foreign)} tensor(s) that are not "
                "parameters of `module`; build the optimizer from module.parameters()."
            )
        init_optimizer_state(optimizer)
        state["optim"] = optimizer_state_view(module, optimizer)
    if ema:
        state["ema"] = init_ema(module)
    if grad_scaler:
        state["scaler"] = TensorDict(
            {
                "scale": torch.full((), init_scale, dtype=torch.float32, device=device),
                "growth_tracker": torch.zeros((), dtype=torch.int32, device=device),
            },
            batch_size=[],
        )
    return state


def optimizer_state_view(module: nn.Module, optimizer: torch.optim.Optimizer) -> TensorDict:
    """The optimizer's per-parameter state tensors, keyed by parameter name (no copies)."""
    view = {}
    for name, p in module.named_parameters():
        entries = {k: v for k, v in optimizer.state.get(p, {}).items() if isinstance(v, Tensor)}
        if entries:
            view[name] = TensorDict(entries, batch_size=[])
    return TensorDict(view, batch_size=[])
