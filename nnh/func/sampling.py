r"""Reverse-time steps of a score-based model: Euler-Maruyama, the Langevin corrector, and the
probability-flow ODE.

For a forward SDE :math:`dx = f\,dt + g\,dw` with score :math:`s = \nabla_x \log p_t`, the
reverse-time SDE (Anderson 1982) and the probability-flow ODE (Song et al. 2021) share the
marginals p_t:

.. math::
    dx = [f(t, x) - g(t)^2 s(t, x)]\,dt + g(t)\,d\bar w \quad (t \text{ decreasing}), \qquad
    \frac{dx}{dt} = f(t, x) - \tfrac12 g(t)^2 s(t, x).

``score_fn(t, x)`` is any score (a model's, `nnh.func.model_score`, plus guidance terms);
``sde`` has ``drift(t, x)`` and ``diffusion(t, x)`` (`nnh.func.sde`). Noise comes in as tensors:
every function here is pure, and runs under ``torch.compile(fullgraph=True)`` when
``score_fn`` does.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from nnh.func.mcmc import _check_scale
from nnh.func.ode import ODE_STEPS

__all__ = ["euler_maruyama_step", "langevin_corrector_step", "probability_flow_drift", "probability_flow_step"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _check_noise(who: str, noise: Tensor, x: Tensor) -> None:
    if noise.shape != x.shape:
        raise ValueError(f"{who}: noise of shape {tuple(noise.shape)} does not fit x of shape {tuple(x.shape)}; pass "
                         "standard normal noise shaped like x, e.g. torch.randn_like(x).")


def euler_maruyama_step(sde: Any, score_fn: ScoreFn, t: Tensor, x: Tensor, dt: float | Tensor,
                        noise: Tensor) -> tuple[Tensor, Tensor]:
    r"""One Euler-Maruyama step of the reverse-time SDE, from t down to t - dt (dt > 0):

    .. math::
        \bar x = x - [f(t, x) - g(t)^2 s(t, x)]\,\Delta t, \qquad
        x' = \bar x + g(t) \sqrt{\Delta t}\,\xi

    Args:
        t: (B,) (or a float / 0-d tensor when ``sde`` and ``score_fn`` accept one).
        x: (B, *event_shape). noise: standard normal shaped like x.
    Returns: ``(x_next, x_mean)``; a sampler returns x_mean, the noise-free update, after its
    last step.
    """
    # Python numbers and shapes only: no host sync, nothing for torch.compile to break on. A
    # negative dt made sqrt(dt) complex; noise of another shape broadcast into a wrong step.
    _check_scale("euler_maruyama_step", "dt", dt)
    _check_noise("euler_maruyama_step", noise, x)
    g = sde.diffusion(t, x)
    drift = sde.drift(t, x) - g * g * score_fn(t, x)
    x_mean = x - drift * dt
    return x_mean + g * (dt ** 0.5) * noise, x_mean


def langevin_corrector_step(score_fn: ScoreFn, t: Tensor, x: Tensor, snr: float, noise: Tensor,
                            alpha: float | Tensor = 1.0) -> tuple[Tensor, Tensor]:
    r"""One Langevin MCMC step towards p_t at fixed t (the corrector of predictor-corrector
    sampling, Song et al. 2021, Algorithms 4 and 5):

    .. math::
        \epsilon = 2\alpha \left(r \frac{\overline{\|\xi\|}}{\overline{\|s(t, x)\|}}\right)^2, \qquad
        \bar x = x + \epsilon\, s(t, x), \qquad x' = \bar x + \sqrt{2\epsilon}\,\xi

    with r the signal-to-noise ratio `snr` and the norms per sample, averaged over the batch
    (:math:`\overline{\|\cdot\|}`): a per-sample ratio would give a sample near a mode, where
    the score vanishes, an unbounded step. For N(m, v I) marginals the step is 2 r^2 v, and
    such Langevin steps settle at variance v / (1 - r^2): predictor-corrector samples of
    Gaussian data come out that much wider (2.2 to 2.8 % at r = 0.16, measured with one
    corrector step per predictor step; tests/stateful/test_score_based_correctness.py).

    Args:
        t: (B,). x: (B, *event_shape). noise: standard normal shaped like x.
        snr: r > 0 (e.g. 0.16). alpha: 1, or 1 - beta_i for a discretised VP SDE.
    Returns: ``(x_next, x_mean)``.
    """
    _check_scale("langevin_corrector_step", "snr", snr)  # snr = 0 stood still; < 0 stepped as |snr|
    _check_noise("langevin_corrector_step", noise, x)
    score = score_fn(t, x)
    grad_norm = torch.linalg.vector_norm(score.reshape(score.shape[0], -1), dim=-1).mean()
    noise_norm = torch.linalg.vector_norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
    step = 2 * alpha * (snr * noise_norm / grad_norm) ** 2
    x_mean = x + step * score
    return x_mean + torch.sqrt(2 * step) * noise, x_mean


def probability_flow_drift(sde: Any, score_fn: ScoreFn, t: Tensor, x: Tensor) -> Tensor:
    r"""The velocity of the probability-flow ODE, :math:`f(t, x) - \tfrac12 g(t)^2 s(t, x)`,
    shaped like x."""
    g = sde.diffusion(t, x)
    return sde.drift(t, x) - 0.5 * g * g * score_fn(t, x)


def probability_flow_step(sde: Any, score_fn: ScoreFn, t: Tensor, x: Tensor, dt: float | Tensor,
                          method: str = "heun") -> Tensor:
    """One step of the probability-flow ODE from t down to t - dt (dt > 0), by Heun (two score
    evaluations, at t and t - dt) or Euler (one, at t): the deterministic sampler's step.

    `NNHandler.sample` takes its last step by Euler, so that the network is never evaluated
    at t = epsilon, where it is divided by the smallest sigma(t) and its error is largest (a
    Heun step there collapsed the variance of a briefly trained model's samples by half)."""
    step = ODE_STEPS.get(method)
    if step is None:
        raise ValueError(f"probability_flow_step: method={method!r} must be 'heun' or 'euler'.")
    (x_next,) = step(lambda s, y: (probability_flow_drift(sde, score_fn, s, y[0]),), t, (x,), -dt)
    return x_next
