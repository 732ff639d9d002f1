import math

import pytest
import torch

from nnh.func import bits_per_dim, hutchinson_probes, likelihood_ode_step


@pytest.mark.parametrize("method", ["Euler", "Heun", "RK4"])
def test_likelihood_step_carries_the_divergence(method):
    # dx/dt = -c x per dimension (c differs by dimension): the divergence is -sum(c), constant, and
    # with Rademacher probes on a diagonal Jacobian the estimate is exact.
    c = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    state, dt = (x0, torch.zeros(4, dtype=torch.float64)), 0.01
    noise = hutchinson_probes(x0, 2)
    for i in range(100):
        state = likelihood_ode_step(lambda t, x: -c * x, torch.full((4,), i * dt, dtype=torch.float64), state, dt,
                                    noise, method)
    # Each method multiplies x by its stability polynomial of z = -c dt per step: the Taylor
    # series of exp(z) to its order.
    z = -c * dt
    order = {"Euler": 1, "Heun": 2, "RK4": 4}[method]
    factor = sum(z ** k / math.factorial(k) for k in range(order + 1))
    torch.testing.assert_close(state[0], x0 * factor ** 100, rtol=1e-12, atol=0)
    torch.testing.assert_close(state[1], torch.full((4,), -3.5, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_likelihood_step_refuses_an_unknown_method():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="method='midpoint' must be 'Euler', 'Heun' or 'RK4'"):
        likelihood_ode_step(lambda t, y: y, torch.zeros(1), (x, torch.zeros(1)), 0.1, x[None], "midpoint")


def test_bits_per_dim():
    # Standard normal in D = 3 dimensions at x = 0: log p = -1.5 log(2 pi).
    logp = torch.tensor([-1.5 * math.log(2 * math.pi)])
    assert bits_per_dim(logp, 3).item() == pytest.approx(0.5 * math.log2(2 * math.pi))
    # A bin of 1/256 in the model's units adds log2(256) = 8 bits; 2/256 (data in [-1, 1)) adds 7.
    assert (bits_per_dim(logp, 3, 1 / 256) - bits_per_dim(logp, 3)).item() == pytest.approx(8.0)
    assert (bits_per_dim(logp, 3, 2 / 256) - bits_per_dim(logp, 3)).item() == pytest.approx(7.0)
    with pytest.raises(ValueError, match="n_dims=0 must be an int >= 1"):
        bits_per_dim(logp, 0)
    with pytest.raises(ValueError, match="bin_width=0 must be > 0"):
        bits_per_dim(logp, 3, 0)
