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
    with pytest.raises(ValueError, match="bin_width=0 must be a finite number > 0"):
        bits_per_dim(logp, 3, 0)


@pytest.mark.parametrize("method", ["euler", "heun", "rk4", None])
def test_likelihood_step_passes_the_time_to_the_drift(method):
    # dx/dt = -t c x: divergence -t sum(c), linear in t. Over n steps of dt from 0, delta is its
    # left Riemann sum for Euler, -sum(c) dt^2 n (n - 1) / 2, and the exact integral
    # -sum(c) (n dt)^2 / 2 for Heun (the trapezoid rule) and RK4 (Simpson's rule). method=None: the
    # default, Heun. x follows x0 exp(-c t^2 / 2) to the method's order.
    c = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    n, dt = 50, 0.02
    state = (x0, torch.zeros(4, dtype=torch.float64))
    noise = hutchinson_probes(x0, 2)
    kwargs = {} if method is None else {"method": method}
    for i in range(n):
        t = torch.full((4,), i * dt, dtype=torch.float64)
        state = likelihood_ode_step(lambda s, x: -s[:, None] * c * x, t, state, dt, noise, **kwargs)
    delta = -3.5 * dt**2 * n * (n - 1) / 2 if method == "euler" else -3.5 * (n * dt) ** 2 / 2
    torch.testing.assert_close(state[1], torch.full((4,), delta, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    tol = {"euler": 2e-2, "heun": 5e-4, None: 5e-4, "rk4": 5e-8}[method]  # 3 to 7 times the errors at this step
    torch.testing.assert_close(state[0], x0 * torch.exp(-c * (n * dt) ** 2 / 2), rtol=tol, atol=tol)


def test_likelihood_step_refuses_a_method_that_is_not_a_string():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="method=2 must be 'Euler', 'Heun' or 'RK4'"):
        likelihood_ode_step(lambda t, y: y, torch.zeros(1), (x, torch.zeros(1)), 0.1, x[None], 2)


def test_bits_per_dim_takes_one_dimension_and_refuses_non_ints():
    # D = 1: -log p / ln 2 bits.
    logp = torch.tensor([-2.0], dtype=torch.float64)
    assert bits_per_dim(logp, 1).item() == pytest.approx(2.0 / math.log(2.0), rel=1e-12)
    for bad in (True, 3.0):
        with pytest.raises(ValueError, match=f"n_dims={bad!r} must be an int >= 1"):
            bits_per_dim(logp, bad)


@pytest.mark.parametrize("width", [math.inf, "a", True, torch.ones(2)], ids=["inf", "str", "bool", "2-tensor"])
def test_bits_per_dim_names_a_bin_width_that_is_not_a_finite_positive_number(width):
    # inf gave -inf bits silently; a str failed on '>' without naming the argument.
    with pytest.raises(ValueError, match=r"^bits_per_dim: bin_width=.* must be a finite number > 0"):
        bits_per_dim(torch.zeros(3), 2, width)
    assert bits_per_dim(torch.zeros(3), 2, torch.tensor(0.5)).tolist() == [1.0, 1.0, 1.0]  # a 0-d tensor still works
