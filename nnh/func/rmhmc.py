r"""Riemannian-manifold Hamiltonian Monte Carlo (Girolami and Calderhead, 2011), one pure step.

The target is :math:`\exp(-U(x))` on x (B, D); a metric :math:`G(x)` (B, D, D), symmetric positive
definite, sets the local geometry through the Hamiltonian

.. math:: H(x, p) = U(x) + \tfrac12 p^\top G(x)^{-1} p + \tfrac12 \log\lvert G(x)\rvert,

whose marginal in x is the target for any G. The dynamics are not separable, so trajectories use
`nnh.func.generalised_leapfrog` (implicit, symmetric, volume-preserving: a valid Metropolis
proposal), with

.. math:: \dot x = \partial H/\partial p = G(x)^{-1} p, \qquad
    \dot p = -\partial H/\partial x \text{ (by autograd through } U \text{ and } G\text{)}.

For a constant metric G = M the step is `nnh.func.hmc_step` with mass matrix M. A metric that
follows the target's local scale (the Fisher metric of a hierarchical model, say) lets one step
size serve regions of very different curvature, where HMC must take the smallest.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nnh.func.integrators import generalised_leapfrog
from nnh.func.mcmc import ChainState, StepInfo, _check_energy_shape, _check_scale, _given_noise, _given_uniform
from nnh.func.mcmc import metropolis_accept

__all__ = ["metric_cholesky", "riemannian_kinetic_energy", "rmhmc_step"]

EnergyFn = Callable[[Tensor], Tensor]
MetricFn = Callable[[Tensor], Tensor]


def riemannian_kinetic_energy(p: Tensor, chol: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`K = \tfrac12 p^\top G^{-1} p + \tfrac12\log\lvert G\rvert` and :math:`G^{-1} p`, from
    the Cholesky factor ``chol`` (B, D, D) of G and p (B, D). Returns ``(K (B,), G^{-1} p (B, D))``."""
    g_inv_p = torch.cholesky_solve(p.unsqueeze(-1), chol).squeeze(-1)
    half_logdet = torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (p * g_inv_p).sum(-1) + half_logdet, g_inv_p


def metric_cholesky(metric_fn: MetricFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """The Cholesky factor of ``metric_fn(x)`` (B, D, D) and a (B,) bool: whether it exists (G
    positive definite there). No exception and no host sync: a chain that leaves the metric's
    domain along a trajectory gets a meaningless factor and is rejected."""
    metric = metric_fn(x)
    if metric.shape != (*x.shape, x.shape[-1]):
        raise ValueError(
            f"rmhmc_step: metric_fn must return (B, D, D) = {(*x.shape, x.shape[-1])} for x of shape "
            f"{tuple(x.shape)}, got {tuple(metric.shape)}."
        )
    chol, info = torch.linalg.cholesky_ex(metric)
    return chol, info == 0


def rmhmc_step(
    state: ChainState,
    energy_fn: EnergyFn,
    metric_fn: MetricFn,
    step_size: float,
    n_leapfrog_steps: int = 10,
    *,
    noise: Tensor | None = None,
    uniform: Tensor | None = None,
    generator: torch.Generator | None = None,
    n_iter: int = 8,
    tol: float | None = None,
    check_every: int = 0,
) -> tuple[ChainState, StepInfo]:
    r"""One RMHMC transition: :math:`p = L\xi` with :math:`G(x) = LL^\top` (so
    :math:`p \sim \mathcal N(0, G(x))`), L = ``n_leapfrog_steps`` generalised leapfrog steps, and a
    per-chain Metropolis test on :math:`H(x, p) - H(x', p')`.

    Args:
        state: `ChainState` with x (B, D) and energy U(x) (B,); its ``grad`` is not used (the
            force comes from autograd through ``energy_fn`` and ``metric_fn``) and is returned
            as zeros. G must be positive definite at x: a chain where it is not never moves.
        energy_fn: differentiable U, (B, D) -> (B,). metric_fn: differentiable G, (B, D) -> (B, D, D).
        step_size: epsilon > 0. n_leapfrog_steps: L >= 1.
        noise: standard normal (B, D); uniform: U(0, 1) (B,); or ``generator``.
        n_iter, tol, check_every: the fixed-point solver of `generalised_leapfrog`.
    Cost: L (n_iter + 1) force evaluations (a backward pass through U and G each) and
    L (n_iter + 1) + 2 Cholesky factorisations per transition.
    Returns:
        ``(new_state, StepInfo)``; a proposal with a non-finite position, energy or Hamiltonian
        is rejected.
    """
    if n_leapfrog_steps < 1:
        raise ValueError(f"rmhmc_step: n_leapfrog_steps must be >= 1, got {n_leapfrog_steps}.")
    _check_scale("rmhmc_step", "step_size", step_size)
    x = state.x
    if x.ndim != 2:
        raise ValueError(f"rmhmc_step: x must be (B, D) (the metric is (B, D, D)), got shape {tuple(x.shape)}.")
    xi = _given_noise(x, noise, generator, "rmhmc_step")
    u = _given_uniform(x, uniform, generator, "rmhmc_step")

    def force(y: Tensor, p: Tensor) -> Tensor:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            kinetic, _ = riemannian_kinetic_energy(p.detach(), metric_cholesky(metric_fn, y)[0])
            (grad,) = torch.autograd.grad((energy_fn(y) + kinetic).sum(), y)
        return -grad

    def velocity(y: Tensor, p: Tensor) -> Tensor:
        return riemannian_kinetic_energy(p, metric_cholesky(metric_fn, y)[0])[1]

    with torch.no_grad():
        chol, start_ok = metric_cholesky(metric_fn, x)
        p = (chol @ xi.unsqueeze(-1)).squeeze(-1)
        kinetic, _ = riemannian_kinetic_energy(p, chol)
        x_new, p_new = generalised_leapfrog(x, p, force, velocity, step_size, n_leapfrog_steps, n_iter,
                                            tol=tol, check_every=check_every)
        energy_new = energy_fn(x_new)
        _check_energy_shape("rmhmc_step", energy_new, x.shape[0])
        # A non-finite trajectory end has no Cholesky factor: test it on a safe stand-in.
        finite = torch.isfinite(x_new).all(-1) & torch.isfinite(p_new).all(-1)
        safe_x = torch.where(finite.unsqueeze(-1), x_new, x)
        safe_p = torch.where(finite.unsqueeze(-1), p_new, p)
        chol_new, end_ok = metric_cholesky(metric_fn, safe_x)
        kinetic_new, _ = riemannian_kinetic_energy(safe_p, chol_new)
        log_alpha = (state.energy + kinetic) - (energy_new + kinetic_new)
        # NaN is rejected by metropolis_accept: a non-finite end, or a metric not positive definite.
        log_alpha = torch.where(finite & start_ok & end_ok, log_alpha, float("nan"))
        zeros = torch.zeros_like(x)
        return metropolis_accept(ChainState(x, state.energy, zeros), ChainState(x_new, energy_new, zeros), log_alpha, u)
