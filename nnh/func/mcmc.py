r"""Pure MCMC transitions for energy-based models: unadjusted Langevin, MALA and HMC.

Every step targets a density :math:`\pi(x) \propto \exp(-U(x) / T)` given through a function
``energy_and_grad(x) -> (U(x), \nabla U(x))`` with shapes ``(B,)`` and ``(B, *event_shape)``:
one row per chain, any event shape.

State. A chain batch is a `ChainState(x, energy, grad)` NamedTuple: the position and the energy
and gradient *at that position*. Carrying them means a transition never evaluates the model at
a point it has seen, which is what makes HMC cost L gradient evaluations per transition in a
chain (L + 1 for the first, whose starting gradient comes from `init_chain_state`). A NamedTuple
rather than a TensorDict because it is free to build on every step (0.2 us against 2 us) and
`torch.compile` traces it as a plain tuple.

Randomness is explicit: each step takes ready standard-normal ``noise`` (and ``uniform`` for
the Metropolis test), or a ``torch.Generator`` to draw them from. There is no hidden use of the
global RNG here; `standard_normal_like` and `uniform_per_chain` make the draws the steps make,
and draw from the global RNG only when passed ``generator=None``, as the classes in
`nnh.stateful.mcmc` do on the caller's behalf.

Divergence. A proposal whose position, energy or gradient is not finite is rejected per chain:
the chain keeps its state and `StepInfo.finite` is False for it. Nothing non-finite is ever
carried forward from a finite state.

Every step runs under ``torch.compile(fullgraph=True)`` when ``energy_and_grad`` does (an
analytic gradient, or `func_energy_and_grad`; `torch.autograd.grad` breaks the graph).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from nnh.func._mcmc_diagnostics import effective_sample_size
from nnh.func._event import event_sum
from nnh.func._noise import _given_noise, _given_uniform, standard_normal_like, uniform_per_chain
from nnh.func.energy_grad import EnergyAndGrad, autograd_energy_and_grad, energy_and_grad_fn, func_energy_and_grad
from nnh.func.integrators import heun_update, kinetic_energy, leapfrog

__all__ = [
    "ChainState",
    "EnergyAndGrad",
    "StepInfo",
    "autograd_energy_and_grad",
    "effective_sample_size",
    "energy_and_grad_fn",
    "event_sum",
    "func_energy_and_grad",
    "heun_langevin_step",
    "hmc_step",
    "init_chain_state",
    "kinetic_energy",
    "langevin_proposal",
    "langevin_step",
    "leapfrog",
    "mala_step",
    "metropolis_accept",
    "reject_nonfinite",
    "select_chains",
    "standard_normal_like",
    "uniform_per_chain",
]


_LOG2_E = 1.0 / math.log(2.0)


class ChainState(NamedTuple):
    """A batch of chains: ``x`` (B, *event_shape), ``energy`` U(x) (B,), ``grad`` dU/dx like x."""

    x: Tensor
    energy: Tensor
    grad: Tensor


class StepInfo(NamedTuple):
    """Per-chain diagnostics of one transition, each of shape (B,).

    ``energy``: U at the returned state. ``accept_prob``: the Metropolis–Hastings probability
    min(1, alpha) (1 for finite Langevin proposals, 0 for non-finite ones). ``accepted``: bool,
    whether the chain moved. ``finite``: bool, whether the proposal was finite.
    """

    energy: Tensor
    accept_prob: Tensor
    accepted: Tensor
    finite: Tensor


def _check_energy_shape(who: str, energy: Tensor, n_chains: int) -> None:
    # A shape test, free of host syncs; a (B, 1) energy would otherwise broadcast against (B,)
    # masks and fail deep inside select_chains, or silently give (B, B) energies.
    if energy.shape != (n_chains,):
        raise ValueError(
            f"{who}: the model must return one energy per chain, shape ({n_chains},), "
            f"got {tuple(energy.shape)}; e.g. end forward with .squeeze(-1) or .sum over event dims."
        )


def _check_scale(who: str, name: str, value: float, positive: bool = True) -> None:
    # Python numbers only: testing a tensor here would be a host sync (and a graph break).
    if isinstance(value, (int, float)) and not (0.0 < value < math.inf if positive else 0.0 <= value < math.inf):
        raise ValueError(f"{who}: {name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}.")


def init_chain_state(x: Tensor, energy_and_grad: EnergyAndGrad) -> ChainState:
    """`ChainState` at ``x`` (B, *event_shape): one energy-and-gradient evaluation."""
    energy, grad = energy_and_grad(x)
    return ChainState(x, energy, grad)


# ----------------------------------------------------------------------------------------------
# Small helpers shared by the steps
# ----------------------------------------------------------------------------------------------


def select_chains(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per chain, ``a[i]`` where ``mask[i]`` else ``b[i]``. mask: (B,) bool; a, b: (B, *event)."""
    if a.ndim == 1:
        return torch.where(mask, a, b)
    n = a[0].numel()
    # torch.where over flat inputs with a materialised mask: on CPU a (B, 1) broadcast mask
    # costs 80 us on (10000, 2) against 22 us this way.
    full_mask = mask.unsqueeze(1).expand(-1, n).reshape(-1)
    return torch.where(full_mask, a.reshape(-1), b.reshape(-1)).view(a.shape)


def _finite_chains(state: ChainState, check_energy: bool = True) -> Tensor:
    """(B,) bool: position and gradient (and energy, if ``check_energy``) of each chain finite."""
    # One event sum instead of three isfinite calls: x - x + g - g is 0 where x and g are finite
    # and NaN where either is not. Summing x + g itself would overflow for finite values (a
    # float16 state of 4096 coordinates at 10) and reject a finite chain.
    total = event_sum(state.x.sub(state.x).add_(state.grad).sub_(state.grad))
    return torch.isfinite(state.energy + total if check_energy else total)


def reject_nonfinite(old: ChainState, new: ChainState, *, check_energy: bool = True) -> tuple[ChainState, StepInfo]:
    """Accept ``new`` per chain where it is finite, keep ``old`` elsewhere. With
    ``check_energy=False`` only the position and gradient must be finite."""
    finite = _finite_chains(new, check_energy)
    state = ChainState(
        select_chains(finite, new.x, old.x),
        torch.where(finite, new.energy, old.energy),
        select_chains(finite, new.grad, old.grad),
    )
    return state, StepInfo(state.energy, finite.to(new.energy.dtype), finite, finite)


def metropolis_accept(
    old: ChainState, new: ChainState, log_alpha: Tensor, uniform: Tensor
) -> tuple[ChainState, StepInfo]:
    r"""The Metropolis–Hastings test, per chain: accept where :math:`u < \min(1, \alpha)`.

    A chain whose ``log_alpha`` is NaN, or whose proposal is not finite, is rejected.
    ``accept_prob`` is :math:`\min(1, \alpha)`, 0 for those chains.
    """
    finite = _finite_chains(new) & ~torch.isnan(log_alpha)
    # exp(a) as exp2(a log2 e), and u < min(1, alpha) rather than log u < log alpha: on CPU,
    # torch.exp and torch.log open a thread-pool region even for 1,000 numbers, which waits
    # ~12 ms for a busy core on a loaded machine; exp2 does not (benchmarks/mcmc.py).
    accept_prob = torch.where(finite, torch.exp2(log_alpha.clamp(max=0.0) * _LOG2_E), 0.0)
    accepted = uniform < accept_prob
    state = ChainState(
        select_chains(accepted, new.x, old.x),
        torch.where(accepted, new.energy, old.energy),
        select_chains(accepted, new.grad, old.grad),
    )
    return state, StepInfo(state.energy, accept_prob, accepted, finite)


# ----------------------------------------------------------------------------------------------
# Langevin and MALA
# ----------------------------------------------------------------------------------------------


def langevin_proposal(
    x: Tensor, grad: Tensor, step_size: float, noise_scale: float, noise: Tensor, decay: float = 0.0
) -> Tensor:
    r""":math:`x' = x - h (\nabla U(x) + \lambda x) + s \sqrt{2h}\,\xi` with h = step_size,
    s = noise_scale, xi = noise and :math:`\lambda` = decay (a weight decay toward 0)."""
    out = torch.add(x, grad, alpha=-step_size)
    if decay:
        out.add_(x, alpha=-step_size * decay)
    return out.add_(noise, alpha=noise_scale * math.sqrt(2.0 * step_size))


def _check_clamp(who: str, clamp: tuple[float, float] | None) -> None:
    if clamp is not None and not (len(clamp) == 2 and clamp[0] < clamp[1]):
        raise ValueError(f"{who}: clamp must be a (min, max) pair with min < max, got {clamp!r}.")


def _clamped(x: Tensor, clamp: tuple[float, float] | None) -> Tensor:
    return x if clamp is None else x.clamp_(clamp[0], clamp[1])


def langevin_step(
    state: ChainState,
    energy_and_grad: EnergyAndGrad,
    step_size: float,
    noise_scale: float = 1.0,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    decay: float = 0.0,
    clamp: tuple[float, float] | None = None,
) -> tuple[ChainState, StepInfo]:
    r"""One unadjusted Langevin (ULA) transition, without a Metropolis test: an Euler-Maruyama
    step of :math:`dx = -(\nabla U + \lambda x)\,dt + s\sqrt2\,dW`,

    .. math:: x' = \mathrm{clamp}\big(x - h (\nabla U(x) + \lambda x) + s \sqrt{2h}\,\xi\big), \qquad \xi \sim \mathcal N(0, I)

    As h -> 0 the chain targets :math:`\exp(-(U + \lambda|x|^2/2)/s^2)`; a finite h biases it
    by O(h): on U = x^2/2 with s = 1, lambda = 0 the stationary variance is 1 / (1 - h/2).
    `mala_step` removes the bias. The dynamics use only the gradient, so a chain keeps its state
    (``accepted`` False) when its proposal or the gradient there is not finite; the energy is
    evaluated and reported (it may be infinite outside the support) but does not decide the move.

    Args:
        state: `ChainState` with x (B, *event_shape).
        energy_and_grad: ``x -> (U(x) (B,), grad (B, *event_shape))``.
        step_size: h > 0. noise_scale: s >= 0 (s = 0 is gradient descent); other values,
            h = 0 included, raise ValueError.
        noise: standard normal, shaped like x; or ``generator`` to draw it.
        decay: lambda >= 0, a weight decay pulling the state toward 0.
        clamp: None or (min, max): the state is clamped to the box after the step.
    Returns:
        ``(new_state, StepInfo)``; ``accept_prob`` is 1 for finite proposals, 0 otherwise.
    """
    return _langevin_move("langevin_step", state, energy_and_grad, step_size, noise_scale, noise, generator, clamp,
                          lambda x, grad, xi: langevin_proposal(x, grad, step_size, noise_scale, xi, decay))


def heun_langevin_step(
    state: ChainState,
    energy_and_grad: EnergyAndGrad,
    step_size: float,
    noise_scale: float = 1.0,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    decay: float = 0.0,
    clamp: tuple[float, float] | None = None,
) -> tuple[ChainState, StepInfo]:
    r"""One Langevin transition with Heun's drift (`nnh.func.heun_update`) and additive noise:

    .. math:: f(x) = -\nabla U(x) - \lambda x, \quad \tilde x = x + h f(x), \quad
        x' = \mathrm{clamp}\big(x + \tfrac h2 [f(x) + f(\tilde x)] + s\sqrt{2h}\,\xi\big)

    Two gradient evaluations per step (one at the predictor, one at x'). The drift is second
    order, the noise Euler-Maruyama order: on U = x^2/2 (lambda = 0, s = 1) the stationary
    variance is :math:`2h / (1 - a^2)` with :math:`a = 1 - h + h^2/2`, against
    :math:`1/(1 - h/2)` for `langevin_step`. Arguments, non-finite handling and the returned
    `StepInfo` as in `langevin_step`.
    """
    def drift(y: Tensor, grad: Tensor) -> Tensor:
        return -grad - decay * y if decay else -grad

    def move(x: Tensor, grad: Tensor, xi: Tensor) -> Tensor:
        x_det = heun_update(x, lambda y, t: drift(y, energy_and_grad(y)[1]), step_size, None, drift_x=drift(x, grad))
        return x_det.add_(xi, alpha=noise_scale * math.sqrt(2.0 * step_size))

    return _langevin_move("heun_langevin_step", state, energy_and_grad, step_size, noise_scale, noise, generator, clamp,
                          move)


def _langevin_move(
    who: str,
    state: ChainState,
    energy_and_grad: EnergyAndGrad,
    step_size: float,
    noise_scale: float,
    noise: Tensor | None,
    generator: torch.Generator | None,
    clamp: tuple[float, float] | None,
    move: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> tuple[ChainState, StepInfo]:
    # The checks and the bookkeeping of the unadjusted Langevin steps; `move(x, grad, xi)` is the scheme.
    _check_scale(who, "step_size", step_size)
    _check_scale(who, "noise_scale", noise_scale, positive=False)
    _check_clamp(who, clamp)
    xi = _given_noise(state.x, noise, generator, who)
    x_new = _clamped(move(state.x, state.grad, xi), clamp)
    energy, grad = energy_and_grad(x_new)
    _check_energy_shape(who, energy, x_new.shape[0])
    return reject_nonfinite(state, ChainState(x_new, energy, grad), check_energy=False)


def mala_step(
    state: ChainState,
    energy_and_grad: EnergyAndGrad,
    step_size: float,
    noise_scale: float = 1.0,
    *,
    noise: Tensor | None = None,
    uniform: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[ChainState, StepInfo]:
    r"""One Metropolis-adjusted Langevin (MALA) transition, exact for :math:`\exp(-U/T)`, T = s^2.

    Proposal: the Langevin step :math:`y = x - h \nabla U(x) + s\sqrt{2h}\,\xi`, so
    :math:`q(y \mid x) = \mathcal N(y;\, x - h \nabla U(x),\, 2hT\,I)`. Per chain,

    .. math:: \log\alpha = -\frac{U(y) - U(x)}{T} + \log q(x \mid y) - \log q(y \mid x),
        \qquad \log q(a \mid b) = -\frac{\lVert a - b + h \nabla U(b)\rVert^2}{4hT}

    and the chain moves to y when :math:`\log u < \log\alpha`. With the default s = 1 the
    target is exp(-U); a larger s samples a hotter law, as the unadjusted chain does.

    Args:
        noise: standard normal shaped like x; uniform: U(0, 1) of shape (B,); or ``generator``.
        step_size: h > 0; noise_scale: s > 0. Zero, negative or non-finite values raise
            ValueError: the proposal density divides by h s^2.
    Returns:
        ``(new_state, StepInfo)``.
    """
    _check_scale("mala_step", "step_size", step_size)
    _check_scale("mala_step", "noise_scale", noise_scale)
    x, energy_x, grad_x = state
    xi = _given_noise(x, noise, generator, "mala_step")
    u = _given_uniform(x, uniform, generator, "mala_step")
    temperature = noise_scale * noise_scale
    y = langevin_proposal(x, grad_x, step_size, noise_scale, xi)
    energy_y, grad_y = energy_and_grad(y)
    _check_energy_shape("mala_step", energy_y, y.shape[0])
    # log q(y|x) = -|s sqrt(2h) xi|^2 / (4hT) = -|xi|^2 / 2 exactly.
    log_q_forward = -0.5 * event_sum(xi * xi)
    back = (x - y).add_(grad_y, alpha=step_size)
    log_q_backward = event_sum(back * back) * (-1.0 / (4.0 * step_size * temperature))
    log_alpha = (energy_x - energy_y) / temperature + log_q_backward - log_q_forward
    return metropolis_accept(state, ChainState(y, energy_y, grad_y), log_alpha, u)


# ----------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo
# ----------------------------------------------------------------------------------------------


def hmc_step(
    state: ChainState,
    energy_and_grad: EnergyAndGrad,
    step_size: float,
    n_leapfrog_steps: int = 10,
    mass: float | Tensor = 1.0,
    *,
    noise: Tensor | None = None,
    uniform: Tensor | None = None,
    generator: torch.Generator | None = None,
    trajectory: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]] = leapfrog,
) -> tuple[ChainState, StepInfo]:
    r"""One Hamiltonian Monte Carlo transition targeting :math:`\exp(-U)`.

    Draws :math:`p = \sqrt{M}\,\xi`, runs `leapfrog` for L = ``n_leapfrog_steps`` steps to
    :math:`(x', p')`, and accepts per chain when :math:`\log u < H(x, p) - H(x', p')`.
    The gradient at x comes from ``state``, so a transition costs L evaluations of
    ``energy_and_grad`` (L + 1 with `init_chain_state` for the first); a rejected chain keeps
    its stored energy and gradient.

    Args:
        state: `ChainState`, x (B, *event_shape).
        step_size: epsilon > 0 (zero, negative or non-finite values raise ValueError).
        n_leapfrog_steps: L >= 1.
        mass: float or tensor broadcastable to the event shape (diagonal M), > 0.
        noise: standard normal shaped like x (the momentum before scaling by sqrt(M));
            uniform: U(0, 1), shape (B,); or ``generator``.
        trajectory: the volume-preserving, reversible integrator, called as `leapfrog` is
            (the default): ``(x, p, grad, energy_and_grad, step_size, L, mass) -> (x', p', U', grad')``.
    Returns:
        ``(new_state, StepInfo)``.
    """
    if n_leapfrog_steps < 1:
        raise ValueError(f"hmc_step: n_leapfrog_steps must be >= 1, got {n_leapfrog_steps}.")
    _check_scale("hmc_step", "step_size", step_size)
    x = state.x
    xi = _given_noise(x, noise, generator, "hmc_step")
    u = _given_uniform(x, uniform, generator, "hmc_step")
    p = xi * mass.sqrt() if isinstance(mass, Tensor) else xi * math.sqrt(mass)
    x_new, p_new, energy_new, grad_new = trajectory(x, p, state.grad, energy_and_grad, step_size, n_leapfrog_steps, mass)
    _check_energy_shape("hmc_step", energy_new, x_new.shape[0])
    log_alpha = (state.energy + kinetic_energy(p, mass)) - (energy_new + kinetic_energy(p_new, mass))
    return metropolis_accept(state, ChainState(x_new, energy_new, grad_new), log_alpha, u)
