r"""Deterministic energy minimisation with the samplers' call shape: gradient descent and
Nesterov's accelerated gradient, each one pure step over (B, *event_shape) states.

Both move every chain downhill on U and converge to a local minimum (for a small enough step);
they sample nothing, but give the low-energy states that start or complete MCMC runs.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

__all__ = ["gradient_descent_step", "nesterov_step"]


def gradient_descent_step(x: Tensor, grad: Tensor, step_size: float) -> Tensor:
    r""":math:`x' = x - \eta \nabla U(x)`, with ``grad`` = :math:`\nabla U(x)` and
    :math:`\eta` = step_size."""
    return x - step_size * grad


def nesterov_step(
    x: Tensor, velocity: Tensor, gradient: Callable[[Tensor], Tensor], step_size: float, momentum: float
) -> tuple[Tensor, Tensor, Tensor]:
    r"""One step of Nesterov's accelerated gradient, the gradient taken at the look-ahead point:

    .. math:: v' = \mu v - \eta \nabla U(x + \mu v), \qquad x' = x + v'

    with :math:`\eta` = step_size, :math:`\mu` = momentum in [0, 1) (mu = 0 is gradient
    descent). One evaluation of ``gradient``. Returns ``(x', v', grad)``, grad the gradient at
    the look-ahead point.
    """
    grad = gradient(x + momentum * velocity)
    velocity = momentum * velocity - step_size * grad
    return x + velocity, velocity, grad
