r"""`RiemannianManifoldHMC`: HMC with a position-dependent metric (`nnh.func.rmhmc_step`)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nnh.func.mcmc import ChainState, StepInfo, standard_normal_like, uniform_per_chain
from nnh.func.rmhmc import metric_cholesky, rmhmc_step
from nnh.stateful.mcmc._sample_args import count as _count
from nnh.stateful.mcmc.base import BaseSampler, ScheduledValue
from nnh.stateful.mcmc.integrators import BaseSymplecticIntegrator, GeneralisedLeapfrogIntegrator, resolve_integrator

__all__ = ["RiemannianManifoldHMC"]


class RiemannianManifoldHMC(BaseSampler):
    r"""Riemannian-manifold HMC for exp(-U) on states (B, D), one `nnh.func.rmhmc_step` per
    transition: momentum :math:`p \sim \mathcal N(0, G(x))`, L generalised leapfrog steps of
    :math:`H = U + \tfrac12 p^\top G^{-1} p + \tfrac12\log|G|`, a per-chain Metropolis test.
    A transition costs L gradients of U, as HMC's does, plus the metric's evaluations and
    vector-Jacobian products (see `nnh.func.rmhmc_step`).

    With a constant metric G = M it is `HamiltonianMonteCarlo` with mass M (up to rounding).
    A metric that tracks the target's local scale (the Fisher metric of a hierarchical model, for
    instance) samples funnels and other targets of varying curvature with one step size.

    Args:
        model: energy U, (B, D) -> (B,); its gradient as for the other samplers (analytic for
            an `nnh.BaseModel` that has one, autograd otherwise).
        metric_fn: ``x -> G(x)`` of shape (B, D, D), symmetric positive definite, differentiable.
        step_size: epsilon > 0 (a number or a scheduler). n_leapfrog_steps: L >= 1.
        solver_max_iter, solver_tol, solver_check_every: the fixed-point solver of the implicit
            steps (defaults 8, 1e-6, 0; see `GeneralisedLeapfrogIntegrator`). Give either these
            or ``integrator``, not both.
        dtype, device: see `BaseSampler`.
        integrator: None, ``"generalised_leapfrog"`` or a `GeneralisedLeapfrogIntegrator`.
        dim, n_steps: keyword-only; see `BaseSampler`.
    """

    has_acceptance = True

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        metric_fn: Callable[[Tensor], Tensor],
        step_size: ScheduledValue = 1e-3,
        n_leapfrog_steps: int = 10,
        solver_max_iter: int | None = None,
        solver_tol: float | None = None,
        solver_check_every: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        integrator: str | BaseSymplecticIntegrator | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int = 100,
    ) -> None:
        super().__init__(model, dtype, device, dim=dim, n_steps=n_steps)
        owner = type(self).__name__
        if not callable(metric_fn):
            raise TypeError(f"{owner}: metric_fn must be a callable x (B, D) -> G(x) (B, D, D), got {metric_fn!r}.")
        self.metric_fn = metric_fn
        self.register_scheduler("step_size", step_size)
        self.n_leapfrog_steps = _count(owner, "n_leapfrog_steps", n_leapfrog_steps)
        solver = {k: v for k, v in (("solver_max_iter", solver_max_iter), ("solver_tol", solver_tol),
                                    ("solver_check_every", solver_check_every)) if v is not None}
        if solver and integrator is not None:
            raise ValueError(f"{owner}: got integrator=... and {sorted(solver)}; set the solver on the integrator "
                             "(GeneralisedLeapfrogIntegrator(solver_max_iter=...)) or pass the solver arguments alone.")
        if solver:
            integrator = GeneralisedLeapfrogIntegrator(**solver)
        self.integrator = resolve_integrator(integrator, default="generalised_leapfrog",
                                             family=GeneralisedLeapfrogIntegrator, owner=owner)

    def _init_state(self, x: Tensor) -> ChainState:
        owner = type(self).__name__
        if x.ndim != 2:
            raise ValueError(f"{owner}.sample: states must be (B, D) (the metric is (B, D, D)), got {tuple(x.shape)}.")
        _, ok = metric_cholesky(self.metric_fn, x)
        if not bool(ok.all()):  # once per call
            raise ValueError(f"{owner}.sample: metric_fn(x) is not symmetric positive definite at "
                             f"{int((~ok).sum())} of the {x.shape[0]} starting states.")
        return super()._init_state(x)

    def _transition(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        solver = self.integrator
        return rmhmc_step(
            state,
            self._energy_and_grad,
            self.metric_fn,
            self.get_scheduled_value("step_size"),
            self.n_leapfrog_steps,
            noise=standard_normal_like(state.x, generator),
            uniform=uniform_per_chain(state.x, generator),
            n_iter=solver.solver_max_iter,
            tol=solver.solver_tol if solver.solver_check_every else None,
            check_every=solver.solver_check_every,
        )
