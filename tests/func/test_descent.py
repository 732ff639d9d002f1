"""Gradient descent and Nesterov steps against their closed-form recursions."""

import torch

from nnh.func.descent import gradient_descent_step, nesterov_step


def test_gradient_descent_on_a_quadratic_is_a_geometric_contraction():
    x = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    for _ in range(10):
        x = gradient_descent_step(x, 3.0 * x, 0.1)  # U = 3|x|^2/2
    torch.testing.assert_close(x, torch.tensor([[2.0, -1.0]], dtype=torch.float64) * 0.7**10)


def test_nesterov_matches_its_scalar_recursion_and_takes_the_lookahead_gradient():
    k, eta, mu = 2.0, 0.05, 0.8
    x, v = torch.tensor([[1.5]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    xs, vs = 1.5, 0.0
    seen = []
    for _ in range(25):
        x, v, g = nesterov_step(x, v, lambda y: seen.append(y.clone()) or k * y, eta, mu)
        vs = mu * vs - eta * k * (xs + mu * vs)
        xs = xs + vs
        torch.testing.assert_close(g, seen[-1] * k)
    assert abs(x.item() - xs) < 1e-12 and abs(v.item() - vs) < 1e-12
    assert len(seen) == 25
