r"""`GradientDescentSampler` and `NesterovSampler`: energy minimisation with the sampler call shape."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nnh.func.descent import gradient_descent_step, nesterov_step
from nnh.func.mcmc import ChainState, StepInfo, select_chains
from nnh.stateful.mcmc.base import BaseSampler, ScheduledValue

__all__ = ["GradientDescentSampler", "NesterovSampler"]


class _Descent(BaseSampler):
    """Shared shell: deterministic, ``energy`` the one diagnostic, the energy evaluated only
    where it is reported. A chain whose next state or gradient is not finite keeps its state."""

    diagnostic_keys = ("energy",)

    def _energy_for_diagnostics(self, state: ChainState) -> Tensor:
        return self._energy_and_grad(state.x)[0]


class GradientDescentSampler(_Descent):
    r"""Gradient descent, :math:`x_{k+1} = x_k - \eta_k \nabla U(x_k)`
    (`nnh.func.gradient_descent_step`), one gradient per step.

    Args:
        model: energy U. step_size: eta > 0, a number or a scheduler.
        dtype, device, and keyword-only dim, n_steps: see `BaseSampler`. ``sample`` returns the
            final states (or the trajectory); its diagnostics hold ``energy`` only, and a
            ``generator`` draws only the starting state.
    """

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        step_size: ScheduledValue = 1e-3,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int = 100,
    ) -> None:
        super().__init__(model, dtype, device, dim=dim, n_steps=n_steps)
        self.register_scheduler("step_size", step_size)

    def _transition(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo | None]:
        x_new = gradient_descent_step(state.x, state.grad, self.schedulers["step_size"].current_value)
        return self._keep_finite(state, x_new, self._gradient(x_new))


class NesterovSampler(_Descent):
    r"""Nesterov's accelerated gradient (`nnh.func.nesterov_step`), one gradient per step:

    .. math:: v_{k+1} = \mu v_k - \eta_k \nabla U(x_k + \mu v_k), \qquad x_{k+1} = x_k + v_{k+1}

    The velocity starts at 0 in every `sample` call; a chain whose step is not finite keeps its
    state and restarts with zero velocity.

    Args:
        model: energy U. step_size: eta > 0, a number or a scheduler. momentum: mu in [0, 1).
        dtype, device, and keyword-only dim, n_steps: see `BaseSampler`.
    """

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        step_size: ScheduledValue = 1e-3,
        momentum: float = 0.9,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int = 100,
    ) -> None:
        super().__init__(model, dtype, device, dim=dim, n_steps=n_steps)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1), got {momentum!r}.")
        self.momentum = float(momentum)
        self.register_scheduler("step_size", step_size)
        self._velocity: Tensor | None = None

    def _prepare(self, x: Tensor) -> None:
        self._velocity = torch.zeros_like(x)

    def _transition(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo | None]:
        h = self.schedulers["step_size"].current_value
        x_new, velocity, grad = nesterov_step(state.x, self._velocity, self._gradient, h, self.momentum)
        new_state, info = self._keep_finite(state, x_new, grad)
        self._velocity = velocity if info is None else select_chains(info.finite, velocity, torch.zeros_like(velocity))
        return new_state, info
