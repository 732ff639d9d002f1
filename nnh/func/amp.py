"""Dynamic loss scaling for float16 training, as pure functions of the scaler state."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor

__all__ = ["unscale_grads", "update_scale"]


@torch.no_grad()
def unscale_grads(grads: list[Tensor], scale: Tensor) -> Tensor:
    """Divide `grads` by `scale` in place and return `found_inf`, a float32 tensor of shape
    (1,) that is 1 when any gradient holds an inf or NaN."""
    found_inf = torch.zeros(1, dtype=torch.float32, device=scale.device)
    if grads:
        inv_scale = scale.double().reciprocal().float().reshape(1)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
    return found_inf


@torch.no_grad()
def update_scale(
    scaler: TensorDict,
    found_inf: Tensor,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    growth_interval: int = 2000,
) -> TensorDict:
    """Update the scaler state in place: scale *= backoff_factor after an overflow; after
    `growth_interval` clean steps in a row, scale *= growth_factor."""
    scale, tracker = scaler["scale"], scaler["growth_tracker"]
    # The fused kernel wants 1-element views of the 0-d state tensors.
    torch._amp_update_scale_(
        scale.view(1), tracker.view(1), found_inf, growth_factor, backoff_factor, growth_interval
    )
    return scaler
