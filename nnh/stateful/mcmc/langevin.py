r"""`LangevinDynamics`: the unadjusted Langevin algorithm, x' = x - h (grad U(x) + decay x) + s sqrt(2h) xi."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from nnh.func.mcmc import ChainState, StepInfo, _check_clamp, langevin_proposal, standard_normal_like
from nnh.stateful.mcmc.base import BaseSampler, ScheduledValue
from nnh.stateful.mcmc.integrators import (
    BaseSDERungeKuttaIntegrator,
    EulerMaruyamaIntegrator,
    resolve_integrator,
)

__all__ = ["LangevinDynamics"]


class LangevinDynamics(BaseSampler):
    r"""Unadjusted Langevin dynamics (no Metropolis test), one integrator step per sampler step:

    .. math:: x_{k+1} = \mathrm{clamp}\big(x_k - h_k (\nabla U(x_k) + \lambda x_k) + s_k \sqrt{2 h_k}\,\xi_k\big)

    with the default Euler-Maruyama integrator (`nnh.func.langevin_step`). With s = 1, lambda = 0
    and small h it samples approximately exp(-U), with an O(h) bias; `MALA` is the exact
    version. s != 1 samples exp(-U / s^2). A chain whose proposal or gradient there is not finite
    keeps its state and is counted (``n_nonfinite``).

    Args:
        model: energy U, (B, *event_shape) -> (B,).
        step_size: h > 0, a number or a scheduler. noise_scale: s >= 0, a number or a scheduler.
            A schedule leaving these bounds raises ValueError at that step (see `BaseSampler`).
        decay: lambda >= 0, a weight decay toward 0 added to the drift (targets
            exp(-(U + lambda |x|^2 / 2) / s^2)).
        clamp: None or (min, max): the state is clamped to that box after every step (the
            usual guard of image-space energy models, e.g. (-1, 1)).
        dtype, device: see `BaseSampler`.
        integrator: None or ``"euler_maruyama"`` (the default), ``"heun"`` (second-order drift,
            two gradients per step), or an SDE integrator instance (`nnh.HeunIntegrator()`...).
        dim, n_steps: keyword-only; see `BaseSampler`.
    """

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        step_size: ScheduledValue = 1e-3,
        noise_scale: ScheduledValue = 1.0,
        decay: float = 0.0,
        clamp: tuple[float, float] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        integrator: str | BaseSDERungeKuttaIntegrator | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int = 100,
    ) -> None:
        super().__init__(model, dtype, device, dim=dim, n_steps=n_steps)
        owner = type(self).__name__
        self.register_scheduler("step_size", step_size)
        self.register_scheduler("noise_scale", noise_scale, positive=False)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < math.inf:
            raise ValueError(f"{owner}: decay must be a finite number >= 0, got {decay!r}.")
        _check_clamp(owner, clamp)
        self.decay = float(decay)
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))
        self.integrator = resolve_integrator(integrator, default="euler_maruyama", family=BaseSDERungeKuttaIntegrator,
                                             owner=owner)
        # The CPU fast path below is the Euler-Maruyama step itself.
        self._fast_path = type(self.integrator) is EulerMaruyamaIntegrator

    def _transition(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo | None]:
        h = self.schedulers["step_size"].current_value
        s = self.schedulers["noise_scale"].current_value
        noise = standard_normal_like(state.x, generator)
        if not (self._fast_path and state.x.is_cpu):
            # Per-chain rejection with torch.where: no host sync on an accelerator.
            return self.integrator.chain_step(self._with_energy(state), self._energy_and_grad, h, s, noise=noise,
                                              decay=self.decay, clamp=self.clamp)
        # CPU fast path: the same maths as langevin_step (tests check equality), with one
        # finiteness test for the whole batch (BaseSampler._keep_finite) and U evaluated only
        # where it is reported (diagnostics).
        x_new = langevin_proposal(state.x, state.grad, h, s, noise, self.decay)
        if self.clamp is not None:
            x_new.clamp_(*self.clamp)
        return self._keep_finite(state, x_new, self._gradient(x_new))

    def _with_energy(self, state: ChainState) -> ChainState:
        if state.energy is None:
            return ChainState(state.x, self._energy_and_grad(state.x)[0], state.grad)
        return state

    def _energy_for_diagnostics(self, state: ChainState) -> Tensor:
        return self._with_energy(state).energy

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={type(self.model).__name__}, step_size={self.get_scheduled_value('step_size')}, "
                f"noise_scale={self.get_scheduled_value('noise_scale')}, integrator={type(self.integrator).__name__})")
