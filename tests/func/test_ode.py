"""The explicit Runge-Kutta steps: orders of accuracy, tensor and tuple states, a known k1, t None,
float and tensor step sizes, and the samplers' drift_fn(x, t) spellings as the same steps."""

import math

import pytest
import torch

from nnh.func import ODE_STEPS, euler_maruyama_update, euler_step, heun_step, heun_update, rk4_step, rk4_update


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_ode_steps_converge_at_their_order(method, order):
    # dy/dt = -t y on [0, 1], y(0) = 1: y(1) = exp(-1/2). Halving the step divides the error by 2^order.
    step = ODE_STEPS[method]
    errors = []
    for n in (20, 40):
        y, dt = (torch.ones(1, dtype=torch.float64),), 1.0 / n
        for i in range(n):
            y = step(lambda t, s: (-t * s[0],), torch.tensor(i * dt, dtype=torch.float64), y, dt)
        errors.append(abs(y[0].item() - math.exp(-0.5)))
    assert errors[0] / errors[1] == pytest.approx(2 ** order, rel=0.1)


def field(t, y):
    """d(x, q)/dt = (-x t, |x|^2 per sample): a (B, D) part and a (B,) part that integrates the first."""
    x, _ = y
    return -x * t[:, None], (x * x).sum(1)


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_a_tensor_state_steps_as_the_one_element_tuple_and_parts_step_together(method):
    step = ODE_STEPS[method]
    x, t = torch.randn(5, 3, dtype=torch.float64), torch.full((5,), 0.3, dtype=torch.float64)
    (alone,) = step(lambda s, y: (field(s, (y[0], None))[0],), t, (x,), 0.1)
    assert torch.equal(step(lambda s, y: field(s, (y, None))[0], t, x, 0.1), alone)
    x1, q1 = step(field, t, (x, torch.zeros(5, dtype=torch.float64)), 0.1)
    assert torch.equal(x1, alone) and q1.shape == (5,)
    # x(t) = x e^{-(t^2 - t0^2)/2}, so q gains |x|^2 times the integral of e^{-(s^2 - t0^2)} over the step.
    integral = math.sqrt(math.pi) / 2 * math.exp(0.09) * (math.erf(0.4) - math.erf(0.3))
    order = {"euler": 1, "heun": 2, "rk4": 4}[method]
    torch.testing.assert_close(q1, (x * x).sum(1) * integral, rtol=3 * 0.1 ** order, atol=0)


def test_heun_reuses_a_known_k1_and_t_none_is_passed_on():
    x, seen = torch.randn(4, 2, dtype=torch.float64), []

    def fn(t, y):
        seen.append(t)
        return -y

    out = heun_step(fn, None, x, 0.1, k1=-x)
    assert seen == [None]  # one evaluation, at the predictor, with t left as None
    torch.testing.assert_close(out, x * (1 - 0.1 + 0.005))  # 1 - h + h^2/2 for dy/dt = -y
    assert rk4_step(fn, None, x, 0.1) is not None and seen[1:] == [None] * 4


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_float_and_tensor_step_sizes_agree_and_a_negative_step_goes_back(method):
    # A float h fuses x + h k into one kernel, a tensor h does not: the two round alike to 1e-12.
    step = ODE_STEPS[method]
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.full((6,), 0.5, dtype=torch.float64)
    fn = lambda s, y: -y * s[:, None]  # noqa: E731
    forward = step(fn, t, x, 0.01)
    torch.testing.assert_close(step(fn, t, x, torch.tensor(0.01, dtype=torch.float64)), forward, rtol=1e-12, atol=1e-14)
    back = step(fn, t + 0.01, forward, -0.01)
    order = {"euler": 1, "heun": 2, "rk4": 4}[method]
    assert (back - x).abs().max().item() < 10 * 0.01 ** (order + 1)


def test_the_samplers_spellings_are_the_same_steps():
    x, t = torch.randn(8, 2), torch.full((8,), 0.2)
    drift = lambda y, s: torch.sin(y) * s[:, None]  # noqa: E731  drift_fn(x, t), the samplers' order
    fn = lambda s, y: drift(y, s)  # noqa: E731
    assert torch.equal(heun_update(x, drift, 0.05, t), heun_step(fn, t, x, 0.05))
    assert torch.equal(heun_update(x, drift, 0.05, t, drift_x=drift(x, t)), heun_step(fn, t, x, 0.05))
    assert torch.equal(rk4_update(x, drift, 0.05, t), rk4_step(fn, t, x, 0.05))
    assert torch.equal(euler_maruyama_update(x, drift(x, t), 0.05), euler_step(fn, t, x, 0.05))


def test_a_tensor_step_size_may_be_per_sample_and_carries_gradients():
    # Euler on dy/dt = -y^2: y' = y - h y^2, so dy'/dh = -y^2 (a step size learnt or differentiated).
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]], dtype=torch.float64)
    fn = lambda s, y: -y * y  # noqa: E731
    h = torch.tensor([[0.1], [0.2], [0.3]], dtype=torch.float64)  # one step size per sample
    torch.testing.assert_close(euler_step(fn, None, x, h), x - h * x * x, rtol=1e-15, atol=0)
    dt = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(euler_step(fn, None, x, dt).sum(), dt)
    torch.testing.assert_close(grad, -(x * x).sum(), rtol=1e-15, atol=0)
