r"""Pure integrators of ODEs, SDEs and Hamiltonian dynamics: one home for the updates the
samplers share.

Stochastic and ordinary differential equations, :math:`dx = f(x, t)\,dt + \sqrt{2D}\,dW`, with a
drift function ``drift_fn(x, t) -> f`` (x (B, *event_shape), t (B,)) and a diffusion
:math:`D = s^2` given by the noise scale s:

- `euler_maruyama_update`: :math:`x + h f(x, t) + s\sqrt{2h}\,\xi`;
- `heun_update`: the second-order predictor-corrector for the drift (Heun's method);
- `rk4_update`: the classical fourth-order Runge-Kutta step for the drift.

The drift schemes are those of `nnh.func.ode` (`heun_step`, `rk4_step`, with ``fn(t, y)``),
run on the state x: these are their spellings with the drift's argument order.

For an SDE the noise is added after the drift update at Euler-Maruyama order (strong order
1/2 whatever the drift scheme). Hamiltonian dynamics, :math:`H(x, p)`:

- `leapfrog`: the Stormer-Verlet scheme for a separable :math:`H = U(x) + \tfrac12 p^\top M^{-1} p`;
- `generalised_leapfrog`: the implicit, symmetric and volume-preserving scheme for a
  non-separable H (Riemannian-manifold HMC), with fixed-point iterations.

Randomness is explicit (ready ``noise``); nothing here draws from an RNG.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nnh.func._event import event_sum
from nnh.func.energy_grad import EnergyAndGrad
from nnh.func.ode import axpy, heun_step, rk4_step

__all__ = [
    "Drift",
    "HamiltonField",
    "euler_maruyama_update",
    "generalised_leapfrog",
    "heun_update",
    "kinetic_energy",
    "leapfrog",
    "rk4_update",
]

# drift_fn(x (B, *event), t (B,)) -> dx/dt, shaped like x.
Drift = Callable[[Tensor, Tensor], Tensor]
# field(x, p) -> a tensor shaped like x: the force -dH/dx or the velocity dH/dp.
HamiltonField = Callable[[Tensor, Tensor], Tensor]


def euler_maruyama_update(
    x: Tensor, drift: Tensor, step_size: float | Tensor, noise_scale: float | Tensor = 0.0, noise: Tensor | None = None
) -> Tensor:
    r""":math:`x' = x + h f + s\sqrt{2h}\,\xi`: one Euler-Maruyama step of
    :math:`dx = f\,dt + s\sqrt2\,dW` given the drift value ``drift`` = f(x, t) (shaped like x),
    h = step_size, s = noise_scale and standard-normal ``noise`` (ignored when s is 0; with
    s = 0 or no noise this is Euler's method, `nnh.func.euler_step`)."""
    out = axpy(x, step_size, drift)
    if noise is None or (isinstance(noise_scale, (int, float)) and noise_scale == 0.0):
        return out
    # ** 0.5 serves Python floats and tensors alike (a float h stays a float: no device tensor).
    return out + (noise_scale * (2.0 * step_size) ** 0.5) * noise


def heun_update(
    x: Tensor, drift_fn: Drift, step_size: float | Tensor, t: Tensor | None = None, drift_x: Tensor | None = None
) -> Tensor:
    r"""Heun's method for :math:`\dot x = f(x, t)` (`nnh.func.heun_step` on the state x):

    .. math:: \tilde x = x + h f(x, t), \qquad x' = x + \tfrac h2 \big[f(x, t) + f(\tilde x, t + h)\big]

    Two drift evaluations, or one when ``drift_x`` = f(x, t) is known. Second order. ``t``
    (B,) may be None for an autonomous drift (it is then passed on as None)."""
    return heun_step(lambda s, y: drift_fn(y, s), t, x, step_size, drift_x)


def rk4_update(x: Tensor, drift_fn: Drift, step_size: float | Tensor, t: Tensor | None = None) -> Tensor:
    r"""The classical Runge-Kutta step for :math:`\dot x = f(x, t)` (`nnh.func.rk4_step` on the
    state x), fourth order, four drift evaluations:
    :math:`x' = x + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4)` with :math:`k_1 = f(x, t)`,
    :math:`k_2 = f(x + \tfrac h2 k_1, t + \tfrac h2)`, :math:`k_3 = f(x + \tfrac h2 k_2, t + \tfrac h2)`,
    :math:`k_4 = f(x + h k_3, t + h)`."""
    return rk4_step(lambda s, y: drift_fn(y, s), t, x, step_size)


def kinetic_energy(p: Tensor, mass: float | Tensor = 1.0) -> Tensor:
    r""":math:`K(p) = \tfrac12 \sum_i p_i^2 / m_i`, (B, *event) -> (B,); ``mass`` a float or a
    tensor broadcastable to the event shape (a diagonal mass matrix)."""
    if isinstance(mass, Tensor):
        return 0.5 * event_sum(p * p / mass)
    return event_sum(p * p) * (0.5 / mass)


def leapfrog(
    x: Tensor,
    p: Tensor,
    grad: Tensor,
    energy_and_grad: EnergyAndGrad,
    step_size: float,
    n_steps: int,
    mass: float | Tensor = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""``n_steps`` leapfrog steps of :math:`H(x, p) = U(x) + K(p)` from ``(x, p)``, with
    ``grad`` = dU/dx at x already known. Exactly ``n_steps`` evaluations of ``energy_and_grad``:

    .. math:: p \leftarrow p - \tfrac{\epsilon}{2}\nabla U(x);\quad
        \big[x \leftarrow x + \epsilon M^{-1} p;\; p \leftarrow p - \epsilon \nabla U(x)\big]
        \times L \text{ (the last momentum update is a half step)}

    Returns ``(x, p, energy, grad)`` at the end point.
    """
    eps = step_size
    p = torch.add(p, grad, alpha=-0.5 * eps)
    energy = grad.new_empty(0)
    for i in range(n_steps):
        if isinstance(mass, Tensor):
            x = x + (eps / mass) * p
        else:
            x = torch.add(x, p, alpha=eps / mass)
        energy, grad = energy_and_grad(x)
        p = p.add(grad, alpha=-(eps if i < n_steps - 1 else 0.5 * eps))
    return x, p, energy, grad


def _check_counts(who: str, **counts: object) -> None:
    # Python ints only (no tensor, no sync): 0 iterations left x where it was, and 0 steps
    # returned the start, both silently; a float failed inside range().
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name}={value!r} must be an int >= 1.")


def _fixed_point(update: Callable[[Tensor], Tensor], start: Tensor, n_iter: int, tol: float | None,
                 check_every: int) -> Tensor:
    # Picard iteration y <- update(y). By default a fixed count, with no host sync; with a
    # tolerance, the RMS change is read every `check_every` iterations (one sync each).
    y = start
    for i in range(1, n_iter + 1):
        y_next = update(y)
        if tol is not None and check_every > 0 and i % check_every == 0:
            if (y_next - y).square().mean().sqrt().item() < tol:
                return y_next
        y = y_next
    return y


def generalised_leapfrog(
    x: Tensor,
    p: Tensor,
    force: HamiltonField,
    velocity: HamiltonField,
    step_size: float,
    n_steps: int,
    n_iter: int = 8,
    *,
    tol: float | None = None,
    check_every: int = 0,
) -> tuple[Tensor, Tensor]:
    r"""``n_steps`` generalised leapfrog steps of a non-separable :math:`H(x, p)`, with
    ``force(x, p)`` = :math:`-\partial H / \partial x` and ``velocity(x, p)`` =
    :math:`\partial H / \partial p`:

    .. math::
        p_{1/2} &= p + \tfrac{\epsilon}{2}\,F(x, p_{1/2}) \\
        x' &= x + \tfrac{\epsilon}{2}\big[V(x, p_{1/2}) + V(x', p_{1/2})\big] \\
        p' &= p_{1/2} + \tfrac{\epsilon}{2}\,F(x', p_{1/2})

    The two implicit equations are solved by ``n_iter`` fixed-point iterations each, started at
    p and x (with ``tol`` and ``check_every`` > 0, stopped early once the RMS change of an
    iteration falls below ``tol``, checked every ``check_every`` iterations: a host sync each). The scheme is symmetric and volume-preserving, so it serves as a Metropolis
    proposal; for a separable H (F independent of p, V independent of x) one iteration solves
    both equations and the scheme is `leapfrog`. Cost per step: ``n_iter + 1`` force and
    ``n_iter + 1`` velocity evaluations. Returns ``(x, p)`` at the end point.
    """
    _check_counts("generalised_leapfrog", n_steps=n_steps, n_iter=n_iter)
    half = 0.5 * step_size
    for _ in range(n_steps):
        p_half = _fixed_point(lambda q, x=x, p=p: p + half * force(x, q), p, n_iter, tol, check_every)
        base = x + half * velocity(x, p_half)
        x = _fixed_point(lambda y, base=base, p_half=p_half: base + half * velocity(y, p_half), x, n_iter, tol,
                         check_every)
        p = p_half + half * force(x, p_half)
    return x, p
