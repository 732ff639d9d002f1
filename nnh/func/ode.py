r"""Fixed-step explicit ODE steps over a state that is a tuple of tensors.

For :math:`\dot y = F(t, y)` with ``fn(t, y) -> F`` (a tuple shaped like ``y``), one step from
t to t + dt (dt may be negative, to integrate backwards):

- Euler (order 1, 1 evaluation): :math:`y' = y + h\,k_1`, :math:`k_1 = F(t, y)`.
- Heun (order 2, 2 evaluations): :math:`k_2 = F(t + h, y + h k_1)`, :math:`y' = y + \tfrac h2 (k_1 + k_2)`.
- RK4 (order 4, 4 evaluations): the classical Runge-Kutta tableau,
  :math:`y' = y + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4)`.

A tuple state lets one step carry several quantities at once, e.g. a sample and its
accumulated log-density change (`nnh.func.likelihood`). ``t`` is a float, a 0-d or a (B,)
tensor and is passed to ``fn`` as ``t``, ``t + dt/2`` or ``t + dt``.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

__all__ = ["euler_step", "heun_step", "rk4_step", "ODE_STEPS"]

State = tuple[Tensor, ...]
VectorField = Callable[[Tensor, State], State]


def _axpy(y: State, h: float | Tensor, k: State) -> State:
    return tuple(a + h * b for a, b in zip(y, k))


def euler_step(fn: VectorField, t: Tensor, y: State, dt: float | Tensor) -> State:
    """One Euler step of dy/dt = fn(t, y) from t to t + dt."""
    return _axpy(y, dt, fn(t, y))


def heun_step(fn: VectorField, t: Tensor, y: State, dt: float | Tensor) -> State:
    """One Heun (explicit trapezoidal) step of dy/dt = fn(t, y) from t to t + dt."""
    k1 = fn(t, y)
    k2 = fn(t + dt, _axpy(y, dt, k1))
    return tuple(a + (0.5 * dt) * (b + c) for a, b, c in zip(y, k1, k2))


def rk4_step(fn: VectorField, t: Tensor, y: State, dt: float | Tensor) -> State:
    """One classical fourth-order Runge-Kutta step of dy/dt = fn(t, y) from t to t + dt."""
    half = 0.5 * dt
    k1 = fn(t, y)
    k2 = fn(t + half, _axpy(y, half, k1))
    k3 = fn(t + half, _axpy(y, half, k2))
    k4 = fn(t + dt, _axpy(y, dt, k3))
    return tuple(a + (dt / 6) * (b + 2 * c + 2 * d + e) for a, b, c, d, e in zip(y, k1, k2, k3, k4))


# By lower-case name, as `method=` arguments spell them (case-insensitively).
ODE_STEPS: dict[str, Callable[[VectorField, Tensor, State, float | Tensor], State]] = {
    "euler": euler_step,
    "heun": heun_step,
    "rk4": rk4_step,
}
