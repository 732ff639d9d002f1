import math

import pytest
import torch
from torch import nn

from nnh.func import (VESDE, VPSDE, euler_maruyama_step, langevin_corrector_step, model_score,
                      probability_flow_drift, probability_flow_step)


def linear_score(t, x):
    return -2.0 * x + t[:, None]


def test_euler_maruyama_step_by_hand():
    sde, dt = VPSDE(), 0.01
    t = torch.tensor([0.5, 0.25])
    x, noise = torch.randn(2, 3), torch.randn(2, 3)
    x_next, x_mean = euler_maruyama_step(sde, linear_score, t, x, dt, noise)
    beta = (0.1 + 19.9 * t)[:, None]
    # reverse drift f - g^2 s with f = -beta x / 2, g^2 = beta; a step of -dt
    expected_mean = x - dt * (-0.5 * beta * x - beta * linear_score(t, x))
    torch.testing.assert_close(x_mean, expected_mean)
    torch.testing.assert_close(x_next, expected_mean + beta.sqrt() * math.sqrt(dt) * noise)


def test_langevin_corrector_step_uses_batch_mean_norms():
    t = torch.tensor([0.5, 0.5])
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # score -2x: norms 10 and 2, mean 6
    noise = torch.tensor([[1.0, 0.0], [0.0, -3.0]])  # norms 1 and 3, mean 2
    x_next, x_mean = langevin_corrector_step(lambda s, y: -2.0 * y, t, x, snr=0.3, noise=noise, alpha=0.5)
    eps = 2 * 0.5 * (0.3 * 2 / 6) ** 2
    torch.testing.assert_close(x_mean, x - 2 * eps * x)
    torch.testing.assert_close(x_next, x_mean + math.sqrt(2 * eps) * noise)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=repr)
def test_probability_flow_drift_and_heun_step_by_hand(sde):
    t, dt = torch.tensor([0.7, 0.4]), 0.05
    x = torch.randn(2, 3)
    g2 = sde.diffusion(t, x) ** 2
    v = sde.drift(t, x) - 0.5 * g2 * linear_score(t, x)
    torch.testing.assert_close(probability_flow_drift(sde, linear_score, t, x), v)
    x_pred = x - dt * v
    v2 = probability_flow_drift(sde, linear_score, t - dt, x_pred)
    torch.testing.assert_close(probability_flow_step(sde, linear_score, t, x, dt), x - 0.5 * dt * (v + v2))
    torch.testing.assert_close(probability_flow_step(sde, linear_score, t, x, dt, "euler"), x - dt * v)
    with pytest.raises(ValueError, match="method='rk2' must be 'heun' or 'euler'"):
        probability_flow_step(sde, linear_score, t, x, dt, "rk2")


class TinyScoreNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2))

    def forward(self, t, x):
        return self.net(torch.cat([x, t[:, None]], -1))


def test_euler_maruyama_step_compiles_fullgraph():
    torch.manual_seed(0)
    sde, net = VPSDE(), TinyScoreNet()

    def step(t, x, noise):
        return euler_maruyama_step(sde, lambda s, y: model_score(net, sde, s, y), t, x, 0.01, noise)

    compiled = torch.compile(step, fullgraph=True)
    t, x, noise = torch.full((8,), 0.6), torch.randn(8, 2), torch.randn(8, 2)
    with torch.no_grad():
        for a, b in zip(compiled(t, x, noise), step(t, x, noise)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_langevin_corrector_step_by_hand_with_default_alpha_and_a_time_dependent_score():
    # B = 3 samples of D = 2 (B != D, so per-sample norms differ from per-dimension ones); the score
    # -2x + t depends on t; alpha defaults to 1.
    t = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]], dtype=torch.float64)
    noise = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)  # norms 5, 1, 1: mean 7/3
    score = -2.0 * x + t[:, None]
    grad_norm = sum(math.hypot(*row) for row in score.tolist()) / 3
    eps = 2 * (0.16 * (7 / 3) / grad_norm) ** 2
    x_next, x_mean = langevin_corrector_step(linear_score, t, x, snr=0.16, noise=noise)
    torch.testing.assert_close(x_mean, x + eps * score, rtol=1e-12, atol=0)
    torch.testing.assert_close(x_next, x + eps * score + math.sqrt(2 * eps) * noise, rtol=1e-12, atol=0)


@pytest.mark.parametrize("call,match", [
    # dt < 0 gave a complex state (sqrt of a negative float); (4, 1) noise broadcast.
    (lambda sde, x: euler_maruyama_step(sde, lambda t, y: -y, torch.full((4,), 0.5), x, -0.1, torch.randn_like(x)),
     r"^euler_maruyama_step: dt must be finite and > 0, got -0.1"),
    (lambda sde, x: euler_maruyama_step(sde, lambda t, y: -y, torch.full((4,), 0.5), x, 0.1, torch.randn(4, 1)),
     r"^euler_maruyama_step: noise of shape \(4, 1\) does not fit x of shape \(4, 2\)"),
    # snr = 0 left x where it was; snr < 0 stepped as |snr|.
    (lambda sde, x: langevin_corrector_step(lambda t, y: -y, torch.full((4,), 0.5), x, 0.0, torch.randn_like(x)),
     r"^langevin_corrector_step: snr must be finite and > 0, got 0.0"),
    (lambda sde, x: langevin_corrector_step(lambda t, y: -y, torch.full((4,), 0.5), x, 0.16, torch.randn(4, 1)),
     r"^langevin_corrector_step: noise of shape \(4, 1\) does not fit x of shape \(4, 2\)"),
])
def test_reverse_steps_name_a_bad_step_snr_or_noise(call, match):
    with pytest.raises(ValueError, match=match):
        call(VPSDE(), torch.randn(4, 2))
