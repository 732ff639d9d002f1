r"""`HamiltonianMonteCarlo`: leapfrog proposals with a per-chain Metropolis test."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from nnh.func.mcmc import ChainState, StepInfo, hmc_step, standard_normal_like, uniform_per_chain
from nnh.stateful.mcmc._sample_args import count as _count
from nnh.stateful.mcmc.base import BaseSampler, ScheduledValue
from nnh.stateful.mcmc.integrators import BaseSymplecticIntegrator, resolve_integrator

__all__ = ["HamiltonianMonteCarlo"]


class HamiltonianMonteCarlo(BaseSampler):
    r"""Hamiltonian Monte Carlo for exp(-U), one `nnh.func.hmc_step` per transition.

    Each transition draws :math:`p \sim \mathcal N(0, M)`, runs L leapfrog steps of size
    epsilon on :math:`H = U(x) + \tfrac12 p^\top M^{-1} p` and accepts per chain with
    probability :math:`\min(1, e^{H - H'})`. The gradient at the end of a transition is the
    first of the next, so a run of T transitions costs T L + 1 gradient evaluations.

    Args:
        model: energy U. step_size: epsilon > 0 (a number or a scheduler); a schedule reaching 0
            or below raises ValueError at that step (see `BaseSampler`).
        n_leapfrog_steps: L >= 1.
        mass: None (identity), a positive float or int, or a positive tensor broadcastable to
            the event shape (a diagonal mass matrix).
        dtype, device: see `BaseSampler`.
        integrator: None or ``"leapfrog"`` (the default, `nnh.func.leapfrog`), or a separable
            symplectic integrator instance.
        dim, n_steps: keyword-only; see `BaseSampler`.
    """

    has_acceptance = True

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        step_size: ScheduledValue = 1e-3,
        n_leapfrog_steps: int = 10,
        mass: float | int | Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        integrator: str | BaseSymplecticIntegrator | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int = 100,
    ) -> None:
        super().__init__(model, dtype, device, dim=dim, n_steps=n_steps)
        owner = type(self).__name__
        self.register_scheduler("step_size", step_size)
        self.n_leapfrog_steps = _count(owner, "n_leapfrog_steps", n_leapfrog_steps)
        if mass is None:
            mass = 1.0
        if isinstance(mass, Tensor):
            if not mass.is_floating_point():
                mass = mass.to(torch.get_default_dtype())
            if mass.numel() == 0 or not bool(torch.isfinite(mass).all()) or not bool((mass > 0).all()):
                raise ValueError(f"{owner}: mass must be finite and > 0 everywhere, got {mass}.")
        elif isinstance(mass, (int, float)) and not isinstance(mass, bool):
            if not (math.isfinite(mass) and mass > 0):
                raise ValueError(f"{owner}: mass must be finite and > 0, got {mass!r}.")
            mass = float(mass)
        else:
            raise TypeError(f"{owner}: mass must be None, a number or a tensor, got {type(mass).__name__}.")
        self.mass: float | Tensor = mass
        self._mass: float | Tensor = mass
        self.integrator = resolve_integrator(integrator, default="leapfrog", family=BaseSymplecticIntegrator, owner=owner)
        if not self.integrator.separable:
            raise TypeError(
                f"{owner}: integrator {type(self.integrator).__name__} is for non-separable Hamiltonians; "
                "HMC needs a separable one (leapfrog). Use RiemannianManifoldHMC for a position-dependent metric."
            )

    def _prepare(self, x: Tensor) -> None:
        if isinstance(self.mass, Tensor):
            event = tuple(x.shape[1:])
            try:
                fits = torch.broadcast_shapes(self.mass.shape, event) == event
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"{type(self).__name__}: mass of shape {tuple(self.mass.shape)} does not broadcast to the event "
                    f"shape {event}; give one mass per coordinate (shape {event}) or a float."
                )
            self._mass = self.mass.to(device=x.device, dtype=x.dtype)

    def _transition(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        return hmc_step(
            state,
            self._energy_and_grad,
            self.get_scheduled_value("step_size"),
            self.n_leapfrog_steps,
            self._mass,
            noise=standard_normal_like(state.x, generator),
            uniform=uniform_per_chain(state.x, generator),
            trajectory=self.integrator.trajectory,
        )
