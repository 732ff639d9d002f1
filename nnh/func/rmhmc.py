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

from nnh.func.energy_grad import EnergyAndGrad
from nnh.func.integrators import _check_counts, generalised_leapfrog
from nnh.func.mcmc import ChainState, StepInfo, _check_energy_shape, _check_scale, _given_noise, _given_uniform
from nnh.func.mcmc import metropolis_accept

__all__ = ["metric_cholesky", "riemannian_kinetic_energy", "rmhmc_step"]

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


class _Geometry:
    """What the dynamics need at one position y, computed once per position (the fixed-point
    iteration for the momentum evaluates the force many times at the same y): G(y) with its
    autograd graph, its Cholesky factor and inverse, and grad U(y)."""

    def __init__(self, y: Tensor, energy_and_grad: EnergyAndGrad, metric_fn: MetricFn, with_force: bool,
                 known: tuple[Tensor, Tensor] | None = None) -> None:
        self.y = y
        with torch.enable_grad():
            self.leaf = y.detach().requires_grad_(with_force)
            self.metric = metric_fn(self.leaf)
        chol, self.ok = metric_cholesky(lambda _: self.metric.detach(), y)
        # Where G is not positive definite, the factor of I: such chains are rejected through
        # `ok`, and the leftover of the factorisation can have a zero pivot (G singular, as
        # diag(y^2) at y = 0), on which cholesky_inverse raises.
        eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device)
        self.chol = torch.where(self.ok[:, None, None], chol, eye)
        if with_force:
            self.inverse = torch.cholesky_inverse(self.chol)
            self.energy, self.grad = known if known is not None else energy_and_grad(y)

    def velocity(self, p: Tensor) -> Tensor:
        return torch.cholesky_solve(p.unsqueeze(-1), self.chol).squeeze(-1)

    def force(self, p: Tensor) -> Tensor:
        # dH/dy_i = dU/dy_i + <dG/dy_i, (G^-1 - w w^T) / 2>, w = G^-1 p: one vector-Jacobian
        # product of the metric, no backward pass through U or the Cholesky factorisation.
        w = self.velocity(p)
        cotangent = 0.5 * (self.inverse - w.unsqueeze(-1) * w.unsqueeze(-2))
        metric_term = None
        if self.metric.requires_grad:
            (metric_term,) = torch.autograd.grad(self.metric, self.leaf, grad_outputs=cotangent, retain_graph=True,
                                                 allow_unused=True)
        return -self.grad if metric_term is None else -(self.grad + metric_term)


def rmhmc_step(
    state: ChainState,
    energy_and_grad: EnergyAndGrad,
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

    The force needs :math:`\nabla U` and :math:`\partial G/\partial x`:

    .. math:: \frac{\partial H}{\partial x_i} = \frac{\partial U}{\partial x_i}
        + \Big\langle \frac{\partial G}{\partial x_i},\ \tfrac12 \big(G^{-1} - w w^\top\big)\Big\rangle,
        \qquad w = G^{-1} p,

    one vector-Jacobian product of ``metric_fn``. Everything that depends only on the position
    (G with its graph, its factor and inverse, :math:`\nabla U`) is computed once per position.

    Args:
        state: `ChainState` with x (B, D), U(x) and grad U(x) (`init_chain_state`). G must be
            positive definite at x: a chain where it is not never moves.
        energy_and_grad: ``x -> (U (B,), grad U (B, D))``, as for `hmc_step`.
        metric_fn: G, (B, D) -> (B, D, D), differentiable in x (a constant metric need not be).
        step_size: epsilon > 0. n_leapfrog_steps: L >= 1.
        noise: standard normal (B, D); uniform: U(0, 1) (B,); or ``generator``.
        n_iter, tol, check_every: the fixed-point solver of `generalised_leapfrog`.
    Cost per transition: L evaluations of ``energy_and_grad`` (like HMC), L + 1 evaluations of
    the metric with its graph and L (n_iter + 1) vector-Jacobian products through it, and
    L (n_iter - 1) more metric evaluations and Cholesky factorisations for the implicit position
    update.
    Returns:
        ``(new_state, StepInfo)``; a proposal with a non-finite position, energy or Hamiltonian
        is rejected.
    """
    if n_leapfrog_steps < 1:
        raise ValueError(f"rmhmc_step: n_leapfrog_steps must be >= 1, got {n_leapfrog_steps}.")
    _check_counts("rmhmc_step", n_iter=n_iter)
    _check_scale("rmhmc_step", "step_size", step_size)
    x = state.x
    if x.ndim != 2:
        raise ValueError(f"rmhmc_step: x must be (B, D) (the metric is (B, D, D)), got shape {tuple(x.shape)}.")
    xi = _given_noise(x, noise, generator, "rmhmc_step")
    u = _given_uniform(x, uniform, generator, "rmhmc_step")

    cache: list[_Geometry] = []

    def geometry(y: Tensor, with_force: bool) -> _Geometry:
        if cache and cache[0].y is y and (hasattr(cache[0], "grad") or not with_force):
            return cache[0]
        g = _Geometry(y, energy_and_grad, metric_fn, with_force)
        if with_force:  # positions the force is taken at recur (the p iteration, the next step)
            cache[:] = [g]
        return g

    with torch.no_grad():
        start = _Geometry(x, energy_and_grad, metric_fn, True, known=(state.energy, state.grad))
        cache.append(start)
        p = (start.chol @ xi.unsqueeze(-1)).squeeze(-1)
        kinetic, _ = riemannian_kinetic_energy(p, start.chol)
        x_new, p_new = generalised_leapfrog(
            x, p, lambda y, q: geometry(y, True).force(q), lambda y, q: geometry(y, False).velocity(q),
            step_size, n_leapfrog_steps, n_iter, tol=tol, check_every=check_every)
        end = geometry(x_new, True)
        _check_energy_shape("rmhmc_step", end.energy, x.shape[0])
        # A non-finite end has no meaningful factor: such chains are rejected through NaN.
        finite = torch.isfinite(x_new).all(-1) & torch.isfinite(p_new).all(-1)
        kinetic_new, _ = riemannian_kinetic_energy(torch.where(finite.unsqueeze(-1), p_new, p), end.chol)
        log_alpha = (state.energy + kinetic) - (end.energy + kinetic_new)
        # NaN is rejected by metropolis_accept: a non-finite end, or a metric not positive definite.
        log_alpha = torch.where(finite & start.ok & end.ok, log_alpha, float("nan"))
        return metropolis_accept(state, ChainState(x_new, end.energy, end.grad), log_alpha, u)
