"""The pure integrators: orders of accuracy on ODEs with closed-form solutions, the noise term,
the leapfrog schemes (exactness on separable Hamiltonians, reversibility, energy error)."""

import math

import pytest
import torch

from nnh.func.integrators import euler_maruyama_update, generalised_leapfrog, heun_update, leapfrog, rk4_update


def decay(x, t):
    """dx/dt = -x t: x(t) = x(0) exp(-t^2 / 2)."""
    return -x * t.unsqueeze(1)


def integrate(update, n):
    x = torch.ones(1, 1, dtype=torch.float64)
    h = 1.0 / n
    for i in range(n):
        t = torch.full((1,), i * h, dtype=torch.float64)
        x = update(x, h, t)
    return (x.item() - math.exp(-0.5)) / math.exp(-0.5)


@pytest.mark.parametrize(
    "update, order",
    [
        (lambda x, h, t: euler_maruyama_update(x, decay(x, t), h), 1),
        (lambda x, h, t: heun_update(x, decay, h, t), 2),
        (lambda x, h, t: rk4_update(x, decay, h, t), 4),
    ],
)
def test_global_error_order(update, order):
    # Halving h divides the global error at t = 1 by 2^order (within 10%).
    e1, e2 = integrate(update, 20), integrate(update, 40)
    assert abs(math.log2(abs(e1 / e2)) - order) < 0.15, (e1, e2)


def test_heun_reuses_a_known_drift():
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.zeros(5, dtype=torch.float64)
    calls = []

    def counted(y, s):
        calls.append(1)
        return -y

    out = heun_update(x, counted, 0.1, t, drift_x=-x)
    assert len(calls) == 1
    torch.testing.assert_close(out, x * (1 - 0.1 + 0.005))  # a = 1 - h + h^2/2 for dx/dt = -x


def test_euler_maruyama_noise_term():
    x, f, xi = torch.zeros(4, 2), torch.ones(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(euler_maruyama_update(x, f, 0.5, 0.3, xi), 0.5 * f + 0.3 * math.sqrt(1.0) * xi)
    torch.testing.assert_close(euler_maruyama_update(x, f, 0.5, 0.0, xi), 0.5 * f)


def quadratic(x):
    return 0.5 * (x * x).sum(1), x.clone()


def test_leapfrog_is_exact_in_phase_for_a_harmonic_oscillator():
    # For H = (x^2 + p^2)/2 one leapfrog step is a linear map whose rotation angle theta obeys
    # cos(theta) = 1 - eps^2 / 2, and H is conserved to O(eps^2).
    eps, n = 0.1, 30
    x, p = torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[0.0]], dtype=torch.float64)
    x1, p1, _, _ = leapfrog(x, p, x.clone(), quadratic, eps, n)
    theta = math.acos(1 - eps * eps / 2)
    assert x1.item() == pytest.approx(math.cos(n * theta), abs=1e-12)
    assert 0.5 * (x1**2 + p1**2).item() == pytest.approx(0.5, abs=eps**2)


def test_generalised_leapfrog_reduces_to_leapfrog_on_a_separable_hamiltonian():
    gen = torch.Generator().manual_seed(0)
    x, p = torch.randn(6, 3, generator=gen, dtype=torch.float64), torch.randn(6, 3, generator=gen, dtype=torch.float64)
    mass = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    ref_x, ref_p, _, _ = leapfrog(x, p, x.clone(), quadratic, 0.2, 7, mass)
    out_x, out_p = generalised_leapfrog(x, p, lambda y, q: -y, lambda y, q: q / mass, 0.2, 7, n_iter=1)
    torch.testing.assert_close(out_x, ref_x)
    torch.testing.assert_close(out_p, ref_p)


def metric_fields():
    """H = x^2/2 + p^2 / (2 g(x)) + log g(x) / 2 with g = 1 + x^2 (a 1-D position-dependent mass)."""
    def force(x, p):
        g = 1 + x * x
        return -(x - p * p * x / (g * g) + x / g)

    def velocity(x, p):
        return p / (1 + x * x)

    def hamiltonian(x, p):
        g = 1 + x * x
        return (0.5 * x * x + 0.5 * p * p / g + 0.5 * torch.log(g)).sum(1)

    return force, velocity, hamiltonian


def test_generalised_leapfrog_is_reversible_and_nearly_conserves_a_nonseparable_hamiltonian():
    force, velocity, hamiltonian = metric_fields()
    gen = torch.Generator().manual_seed(1)
    x, p = torch.randn(50, 1, generator=gen, dtype=torch.float64), torch.randn(50, 1, generator=gen, dtype=torch.float64)
    x1, p1 = generalised_leapfrog(x, p, force, velocity, 0.05, 40, n_iter=30)
    back_x, back_p = generalised_leapfrog(x1, -p1, force, velocity, 0.05, 40, n_iter=30)
    torch.testing.assert_close(back_x, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(-back_p, p, atol=1e-9, rtol=0)
    assert (hamiltonian(x1, p1) - hamiltonian(x, p)).abs().max() < 5e-3  # O(eps^2) energy error
    # Early stopping by tolerance gives the converged result.
    x2, p2 = generalised_leapfrog(x, p, force, velocity, 0.05, 40, n_iter=30, tol=1e-13, check_every=1)
    torch.testing.assert_close(x2, x1, atol=1e-11, rtol=0)


@pytest.mark.parametrize("h, s", [(0.125, 0.3), (0.02, 1.0), (0.5, 2.0)])
def test_euler_maruyama_noise_is_scaled_by_s_sqrt_2h(h, s):
    gen = torch.Generator().manual_seed(2)
    x, f, xi = (torch.randn(4, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    want = x + h * f + s * math.sqrt(2 * h) * xi
    torch.testing.assert_close(euler_maruyama_update(x, f, h, s, xi), want)
    torch.testing.assert_close(euler_maruyama_update(x, f, torch.tensor(h, dtype=torch.float64), torch.tensor(s, dtype=torch.float64), xi), want)


def test_euler_maruyama_without_a_noise_scale_or_noise_is_euler():
    x, f, xi = torch.ones(3, 2), torch.full((3, 2), 2.0), torch.randn(3, 2)
    torch.testing.assert_close(euler_maruyama_update(x, f, 0.25, noise=xi), x + 0.25 * f)  # s defaults to 0
    torch.testing.assert_close(euler_maruyama_update(x, f, 0.25, 0.7), x + 0.25 * f)  # no noise given


class CountedFields:
    """force and velocity of a Hamiltonian that count their evaluations."""

    def __init__(self, force, velocity):
        self.n_force = self.n_velocity = 0
        self._force, self._velocity = force, velocity

    def force(self, x, p):
        self.n_force += 1
        return self._force(x, p)

    def velocity(self, x, p):
        self.n_velocity += 1
        return self._velocity(x, p)


@pytest.mark.parametrize("n_iter, options", [
    (None, {}),  # the default n_iter is 8
    (3, {}),
    (3, {"tol": 1e9}),  # a tolerance without check_every > 0 is never checked
    (3, {"check_every": 1}),  # check_every without a tolerance checks nothing
])
def test_generalised_leapfrog_costs_n_iter_plus_one_evaluations_of_each_field_per_step(n_iter, options):
    force, velocity, _ = metric_fields()
    fields = CountedFields(force, velocity)
    x, p = torch.full((2, 1), 0.5, dtype=torch.float64), torch.full((2, 1), 0.3, dtype=torch.float64)
    args = () if n_iter is None else (n_iter,)
    generalised_leapfrog(x, p, fields.force, fields.velocity, 0.1, 2, *args, **options)
    per_step = (8 if n_iter is None else n_iter) + 1
    assert (fields.n_force, fields.n_velocity) == (2 * per_step, 2 * per_step)


def test_generalised_leapfrog_one_iteration_is_one_picard_step_of_each_implicit_equation():
    # n_iter = 1 on a non-separable H, written out by hand:
    # p_half = p + h/2 F(x, p); x' = x + h/2 [V(x, p_half) + V(x + h/2 V(x, p_half), p_half)]; p' = p_half + h/2 F(x', p_half)
    force, velocity, _ = metric_fields()
    x, p, h = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[-1.2]], dtype=torch.float64), 0.3
    p_half = p + h / 2 * force(x, p)
    base = x + h / 2 * velocity(x, p_half)
    x1 = base + h / 2 * velocity(x, p_half)
    p1 = p_half + h / 2 * force(x1, p_half)
    out_x, out_p = generalised_leapfrog(x, p, force, velocity, h, 1, n_iter=1)
    torch.testing.assert_close(out_x, x1, rtol=0, atol=1e-15)
    torch.testing.assert_close(out_p, p1, rtol=0, atol=1e-15)


@pytest.mark.parametrize("check_every, per_step", [(1, 3), (2, 3), (3, 4)])
def test_generalised_leapfrog_stops_at_the_first_check_after_an_iteration_changes_less_than_tol(check_every, per_step):
    # Separable H = x^2/2 + p^2/2: each implicit equation is solved by its first iteration, so
    # the second changes nothing. A check at iteration k >= 2 stops there: k evaluations in the
    # solve of p_half, and k of x' (plus the one for the base), and one force at the end.
    fields = CountedFields(lambda y, q: -y, lambda y, q: q)
    x, p = torch.tensor([[1.0], [-0.4]], dtype=torch.float64), torch.tensor([[0.2], [0.9]], dtype=torch.float64)
    generalised_leapfrog(x, p, fields.force, fields.velocity, 0.1, 3, n_iter=10, tol=1e-12, check_every=check_every)
    assert (fields.n_force, fields.n_velocity) == (3 * per_step, 3 * per_step)


def test_generalised_leapfrog_tolerance_is_strict():
    # H = x^2/2 + p^2/2 from x = 1, p = 0 with eps = 1: the first iteration of each equation
    # changes its unknown by exactly 0.5 (p_half = -0.5, then x' = 0.5), which is not below
    # tol = 0.5, so a second iteration runs in each.
    fields = CountedFields(lambda y, q: -y, lambda y, q: q)
    x, p = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    out_x, out_p = generalised_leapfrog(x, p, fields.force, fields.velocity, 1.0, 1, n_iter=10, tol=0.5, check_every=1)
    assert (fields.n_force, fields.n_velocity) == (3, 3)
    assert (out_x.item(), out_p.item()) == (0.5, -0.75)
