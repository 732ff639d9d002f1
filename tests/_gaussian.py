"""Gaussian data N(mu, diag(std^2)) for the score-based tests: every marginal p_t is Gaussian,
so the exact score, the exact log-density and the exact moments of a discretised sampler are
known in closed form."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

import nnh
from nnh import NNHandler

SDES = {"vp": nnh.VPSDE, "ve": nnh.VESDE, "subvp": nnh.SubVPSDE}


class ExactGaussianScore(nn.Module):
    """Returns sigma(t) times the exact score of p_t for data N(mu, diag(std^2)) under `sde`:

        p_t = N(m(t) mu, m(t)^2 std^2 + sigma(t)^2),  score = -(x - m(t) mu) / (m(t)^2 std^2 + sigma(t)^2)
    """

    def __init__(self, sde: str = "vp", mu: Sequence[float] = (0.0, 0.0), std: Sequence[float] = (0.5, 0.5)) -> None:
        super().__init__()
        self.sde = SDES[sde]()
        self.register_buffer("mu", torch.tensor(mu, dtype=torch.float32))
        self.register_buffer("var", torch.tensor(std, dtype=torch.float32) ** 2)

    def marginal_var(self, t: Tensor) -> Tensor:
        m, sig = self.sde.mean_coeff(t)[:, None], self.sde.sigma(t)[:, None]
        return m * m * self.var + sig * sig

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        m, sig = self.sde.mean_coeff(t)[:, None], self.sde.sigma(t)[:, None]
        return -sig * (x - m * self.mu) / self.marginal_var(t)


def exact_handler(sde: str = "vp", mu: Sequence[float] = (0.0, 0.0), std: Sequence[float] = (0.5, 0.5)) -> NNHandler:
    h = NNHandler(ExactGaussianScore, sde=sde, mu=list(mu), std=list(std))
    h.set_sde(SDES[sde])
    return h


def log_density(sde: nnh.VPSDE, t: float, x: Tensor, mu: Sequence[float], std: Sequence[float]) -> Tensor:
    """log p_t(x), (B,), for data N(mu, diag(std^2)), in float64."""
    tt = torch.tensor(t, dtype=torch.float64)
    m, sig = sde.mean_coeff(tt), sde.sigma(tt)
    mu_t = m * torch.tensor(mu, dtype=torch.float64)
    sd_t = (m * m * torch.tensor(std, dtype=torch.float64) ** 2 + sig * sig).sqrt()
    return torch.distributions.Normal(mu_t, sd_t).log_prob(x.double()).sum(-1)


def euler_maruyama_moments(sde: nnh.VPSDE, mu: float, var: float, steps: int) -> tuple[float, float]:
    """The exact mean and variance (one dimension, float64) of what `NNHandler.sample` returns
    with `steps` Euler-Maruyama steps and the exact score: every step is affine in x plus
    Gaussian noise, x' = c x + d + g sqrt(dt) xi, so mean' = c mean + d and var' = c^2 var +
    g^2 dt (no noise after the last step). Written from the SDE's coefficients alone."""
    T, eps = sde.T, sde.epsilon
    times = torch.linspace(T, eps, steps + 1, dtype=torch.float64)
    dt = (T - eps) / steps
    one = torch.ones(1, 1, dtype=torch.float64)
    mean, variance = 0.0, sde.prior((1,)).stddev.item() ** 2
    for i in range(steps):
        t = times[i:i + 1]
        m, sig = sde.mean_coeff(t).item(), sde.sigma(t).item()
        v = m * m * var + sig * sig
        f, g2 = sde.drift(t, one).item(), sde.diffusion(t, one).item() ** 2  # the drift is f(t) x
        c = 1 - dt * f - dt * g2 / v  # x - dt (f x - g^2 score)
        mean = c * mean + dt * g2 * m * mu / v
        variance = c * c * variance + (g2 * dt if i < steps - 1 else 0.0)
    return mean, variance


def probability_flow_moments(sde: nnh.VPSDE, mu: float, var: float, steps: int) -> tuple[float, float]:
    """The exact mean and variance (one dimension, float64) of what `NNHandler.sample(...,
    method="probability_flow")` returns with the exact score: the Heun steps of a linear ODE
    (the last by Euler) make an affine map x_T -> a x_T + b, found by running `nnh.func.probability_flow_step`
    (tested on its own) from x_T = 0 and 1; then mean = b and var = a^2 var_prior."""
    def score(t: Tensor, x: Tensor) -> Tensor:
        m, sig = sde.mean_coeff(t)[:, None], sde.sigma(t)[:, None]
        return -(x - m * mu) / (m * m * var + sig * sig)

    times = torch.linspace(sde.T, sde.epsilon, steps + 1, dtype=torch.float64)
    dt = (sde.T - sde.epsilon) / steps
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    for i in range(steps):  # Heun steps, the last by Euler, as the handler takes them
        x = nnh.func.probability_flow_step(sde, score, times[i].expand(2), x, dt, "euler" if i == steps - 1 else "heun")
    a, b = (x[1] - x[0]).item(), x[0].item()
    return b, a * a * sde.prior((1,)).stddev.item() ** 2
