r"""Fixed-step explicit Runge-Kutta steps: nnh's one implementation of Euler, Heun and RK4.

For :math:`\dot y = F(t, y)` with ``fn(t, y) -> F`` shaped like the state ``y`` (a tensor, or
a tuple of tensors stepped together), one step from t to t + h (h = dt may be negative, to
integrate backwards):

- Euler (order 1, 1 evaluation): :math:`y' = y + h\,k_1`, :math:`k_1 = F(t, y)`.
- Heun (order 2, 2 evaluations, or 1 when k1 is known):
  :math:`k_2 = F(t + h, y + h k_1)`, :math:`y' = y + \tfrac h2 (k_1 + k_2)`.
- RK4 (order 4, 4 evaluations): the classical tableau, :math:`k_2 = F(t + \tfrac h2, y + \tfrac h2 k_1)`,
  :math:`k_3 = F(t + \tfrac h2, y + \tfrac h2 k_2)`, :math:`k_4 = F(t + h, y + h k_3)`,
  :math:`y' = y + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4)`.

A tuple state lets one step carry several quantities at once, e.g. a sample and its
accumulated log-density change (`nnh.func.likelihood`). ``t`` is a float, a 0-d or a (B,)
tensor, or None for an autonomous field, and is passed to ``fn`` as ``t``, ``t + dt/2`` or
``t + dt`` (None stays None).

The samplers spell the drift ``drift_fn(x, t)`` with x (B, *event_shape): `nnh.func.heun_update`
and `nnh.func.rk4_update` run these steps with the tensor x as the state, and
`nnh.func.euler_maruyama_update` is the Euler step, given the drift's value, plus noise.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["euler_step", "heun_step", "rk4_step", "ODE_STEPS"]

# A tensor, or a tuple of tensors stepped together; fn(t, y) returns the same structure.
State = Tensor | tuple[Tensor, ...]
VectorField = Callable[[Tensor | float | None, State], State]


def axpy(x: Tensor, a: float | Tensor, y: Tensor) -> Tensor:
    """x + a y, a new tensor. One kernel when a is a Python number (the samplers pass float
    step sizes; benchmarks/mcmc_parity.py's flow ODEs gain from it), two when a is a tensor."""
    return torch.add(x, y, alpha=a) if isinstance(a, (int, float)) else x + a * y


def _map(f: Callable[..., Tensor], y: State, *ks: State) -> State:
    # f applied to a tensor state, or part by part to a tuple state: a bare tensor costs no
    # tuple packing (the Langevin-Heun step calls this twice per step).
    if isinstance(y, Tensor):
        return f(y, *ks)
    return tuple([f(*parts) for parts in zip(y, *ks)])


def _later(t: Tensor | float | None, dt: float | Tensor) -> Tensor | float | None:
    return None if t is None else t + dt


def euler_step(fn: VectorField, t: Tensor | float | None, y: State, dt: float | Tensor) -> State:
    """One Euler step of dy/dt = fn(t, y) from t to t + dt."""
    return _map(lambda a, k: axpy(a, dt, k), y, fn(t, y))


def heun_step(fn: VectorField, t: Tensor | float | None, y: State, dt: float | Tensor,
              k1: State | None = None) -> State:
    """One Heun (explicit trapezoidal) step of dy/dt = fn(t, y) from t to t + dt; ``k1`` =
    fn(t, y) when it is already known (one evaluation instead of two)."""
    k1 = fn(t, y) if k1 is None else k1
    k2 = fn(_later(t, dt), _map(lambda a, k: axpy(a, dt, k), y, k1))
    return _map(lambda a, b, c: axpy(a, 0.5 * dt, b + c), y, k1, k2)


def rk4_step(fn: VectorField, t: Tensor | float | None, y: State, dt: float | Tensor) -> State:
    """One classical fourth-order Runge-Kutta step of dy/dt = fn(t, y) from t to t + dt."""
    half = 0.5 * dt
    t_half = _later(t, half)

    def shifted(h: float | Tensor, k: State) -> State:
        return _map(lambda a, b: axpy(a, h, b), y, k)

    k1 = fn(t, y)
    k2 = fn(t_half, shifted(half, k1))
    k3 = fn(t_half, shifted(half, k2))
    k4 = fn(_later(t, dt), shifted(dt, k3))
    # k1 + 2 k2 + 2 k3 + k4 built in place on one new tensor: one allocation, not five.
    return _map(lambda a, b1, b2, b3, b4: axpy(a, dt / 6.0, b2.add(b3).mul_(2.0).add_(b1).add_(b4)),
                y, k1, k2, k3, k4)


# By lower-case name, as `method=` arguments spell them (case-insensitively).
ODE_STEPS: dict[str, Callable[[VectorField, Tensor, State, float | Tensor], State]] = {
    "euler": euler_step,
    "heun": heun_step,
    "rk4": rk4_step,
}
