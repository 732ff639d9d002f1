r"""`MALA`: the Metropolis-adjusted Langevin algorithm."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nnh.func.mcmc import ChainState, StepInfo, mala_step, standard_normal_like, uniform_per_chain
from nnh.stateful.mcmc.base import BaseSampler, ScheduledValue

__all__ = ["MALA"]


class MALA(BaseSampler):
    r"""Metropolis-adjusted Langevin, one `nnh.func.mala_step` per step.

    ``step_size`` means what it means for `LangevinDynamics`: the proposal is the Langevin step
    :math:`y = x - h\nabla U(x) + s\sqrt{2h}\,\xi`, then a per-chain Metropolis–Hastings test
    makes the chain exact for exp(-U / s^2) (exp(-U) with the default s = 1). Non-finite
    proposals are rejected and counted (``n_nonfinite``).

    Args:
        model: energy U. step_size: h > 0; noise_scale: s > 0 (numbers or schedulers); a
            schedule reaching 0 or below raises ValueError at that step (see `BaseSampler`).
        dtype, device, and keyword-only dim, n_steps: see `BaseSampler`.
    """

    has_acceptance = True

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        step_size: ScheduledValue = 1e-3,
        noise_scale: ScheduledValue = 1.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int = 100,
    ) -> None:
        super().__init__(model, dtype, device, dim=dim, n_steps=n_steps)
        self.register_scheduler("step_size", step_size)
        self.register_scheduler("noise_scale", noise_scale)

    def _transition(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        return mala_step(
            state,
            self._energy_and_grad,
            self.get_scheduled_value("step_size"),
            self.get_scheduled_value("noise_scale"),
            noise=standard_normal_like(state.x, generator),
            uniform=uniform_per_chain(state.x, generator),
        )
