"""rmhmc_step: a constant metric reproduces hmc_step; the Riemannian kinetic energy; errors."""

import pytest
import torch

from nnh.func.integrators import generalised_leapfrog
from nnh.func.mcmc import ChainState, hmc_step, init_chain_state
from nnh.func.rmhmc import riemannian_kinetic_energy, rmhmc_step


def gaussian(x):
    """U = |x - 1|^2 / 2 with a stretched second coordinate (variance 4)."""
    scale = torch.tensor([1.0, 0.25], dtype=x.dtype)
    return 0.5 * ((x - 1.0) ** 2 * scale).sum(1)


def gaussian_eg(x):
    scale = torch.tensor([1.0, 0.25], dtype=x.dtype)
    return gaussian(x), (x - 1.0) * scale


def test_a_constant_metric_reproduces_hmc_with_that_mass():
    mass = torch.tensor([2.0, 0.5], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    hmc = init_chain_state(x, gaussian_eg)
    rm = init_chain_state(x, gaussian_eg)
    metric = lambda y: torch.diag(mass).expand(y.shape[0], 2, 2)  # noqa: E731
    for _ in range(5):
        noise, uniform = torch.randn(16, 2, generator=gen, dtype=torch.float64), torch.rand(16, generator=gen, dtype=torch.float64)
        hmc, info_h = hmc_step(hmc, gaussian_eg, 0.3, 6, mass, noise=noise, uniform=uniform)
        rm, info_r = rmhmc_step(rm, gaussian_eg, metric, 0.3, 6, noise=noise, uniform=uniform, n_iter=2)
        torch.testing.assert_close(rm.x, hmc.x)
        torch.testing.assert_close(rm.grad, hmc.grad)
        torch.testing.assert_close(info_r.accept_prob, info_h.accept_prob)


def test_kinetic_energy_with_a_full_metric():
    metric = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    kinetic, g_inv_p = riemannian_kinetic_energy(p, torch.linalg.cholesky(metric).unsqueeze(0))
    expected = 0.5 * p[0] @ torch.linalg.solve(metric, p[0]) + 0.5 * torch.logdet(metric)
    assert kinetic.item() == pytest.approx(expected.item())
    torch.testing.assert_close(g_inv_p[0], torch.linalg.solve(metric, p[0]))


def test_errors():
    state = ChainState(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"metric_fn must return \(B, D, D\) = \(3, 2, 2\)"):
        rmhmc_step(state, gaussian_eg, lambda y: torch.eye(2), 0.1, 2, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"x must be \(B, D\)"):
        rmhmc_step(ChainState(torch.zeros(3, 2, 2), torch.zeros(3), torch.zeros(3, 2, 2)), gaussian_eg,
                   lambda y: torch.eye(2), 0.1, 2, generator=torch.Generator())


def _assert_one_step_matches_autograd(metric, hamiltonian, velocity, momentum, seed):
    """One rmhmc_step (3 leapfrog steps, 20 fixed-point iterations) against
    `generalised_leapfrog` with forces from autograd through `hamiltonian`, from the same
    momentum `momentum(x, xi)`; u = 0, so every finite proposal is accepted."""
    def force(y, q):
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            return -torch.autograd.grad(hamiltonian(y, q).sum(), y)[0]

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    xi, u = torch.randn(8, 2, generator=gen, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    new, info = rmhmc_step(init_chain_state(x, gaussian_eg), gaussian_eg, metric, 0.2, 3, noise=xi, uniform=u, n_iter=20)
    p = momentum(x, xi)
    ref_x, ref_p = generalised_leapfrog(x, p, force, velocity, 0.2, 3, 20)
    torch.testing.assert_close(new.x, ref_x)
    expected = torch.exp((hamiltonian(x, p) - hamiltonian(ref_x, ref_p)).clamp(max=0))
    torch.testing.assert_close(info.accept_prob, expected)


def test_the_force_of_a_position_dependent_metric_matches_autograd_of_the_hamiltonian():
    # One generalised leapfrog step with many fixed-point iterations, against the same step taken
    # with forces from autograd through H = U + p^T G^-1 p / 2 + log|G| / 2 (G = diag(1 + x^2)).
    def hamiltonian(y, q):
        g = 1 + y * y
        return gaussian(y) + 0.5 * (q * q / g).sum(1) + 0.5 * torch.log(g).sum(1)

    _assert_one_step_matches_autograd(lambda y: torch.diag_embed(1 + y * y), hamiltonian,
                                      lambda y, q: q / (1 + y * y), lambda x, xi: xi * (1 + x * x).sqrt(), seed=3)


class Counted:
    """U = |x|^2 / 2 and G(x) = diag(1 + x^2), counting gradient and metric evaluations."""

    def __init__(self):
        self.gradients = self.metrics = self.metrics_with_graph = 0

    def energy_and_grad(self, x):
        self.gradients += 1
        return 0.5 * (x * x).sum(1), x.clone()

    def metric(self, y):
        self.metrics += 1
        self.metrics_with_graph += int(y.requires_grad)
        return torch.diag_embed(1 + y * y)


@pytest.mark.parametrize("n_leapfrog_steps, n_iter", [(None, None), (2, 3), (1, 8)])
def test_a_transition_costs_L_gradients_and_the_documented_metric_evaluations(n_leapfrog_steps, n_iter):
    # Defaults L = 10, n_iter = 8. Per leapfrog step: the force at the new position (one metric
    # with its graph, one gradient), and n_iter - 1 metrics for the implicit position update (its
    # first iteration is at the step's start, already known); plus the metric at the start.
    counted = Counted()
    state = init_chain_state(torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                             counted.energy_and_grad)
    counted.gradients = 0
    kwargs = {} if n_iter is None else {"n_iter": n_iter}
    args = () if n_leapfrog_steps is None else (n_leapfrog_steps,)
    rmhmc_step(state, counted.energy_and_grad, counted.metric, 0.1, *args, generator=torch.Generator(), **kwargs)
    L, k = n_leapfrog_steps or 10, n_iter or 8
    assert counted.gradients == L
    assert counted.metrics_with_graph == L + 1
    assert counted.metrics == L + 1 + L * (k - 1)


def test_tol_stops_the_fixed_point_early_only_with_check_every():
    # A constant metric makes H separable: the first iteration solves each implicit equation, so
    # the check after the second sees no change and stops; the position update then costs one
    # metric per step. Without check_every (default 0) tol is never read.
    counted = Counted()
    constant = lambda y: counted.metric(torch.zeros_like(y))  # noqa: E731
    state = init_chain_state(torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
                             counted.energy_and_grad)
    L = 3
    rmhmc_step(state, counted.energy_and_grad, constant, 0.1, L, generator=torch.Generator(), tol=1e-12)
    assert counted.metrics == L + 1 + L * 7
    counted.metrics = 0
    rmhmc_step(state, counted.energy_and_grad, constant, 0.1, L, generator=torch.Generator(), tol=1e-12,
               check_every=1)
    assert counted.metrics == L + 1 + L


def test_the_force_of_a_full_position_dependent_metric_matches_autograd_of_the_hamiltonian():
    # G(y) = I + y y^T couples the coordinates, so dG/dy has off-diagonal entries and the force
    # needs the full outer product w w^T. Reference: the generalised leapfrog with forces from
    # autograd through H = U + q^T G^-1 q / 2 + log|G| / 2.
    def metric(y):
        return torch.eye(2, dtype=y.dtype) + y.unsqueeze(-1) * y.unsqueeze(-2)

    def hamiltonian(y, q):
        g = metric(y)
        return gaussian(y) + 0.5 * (q * torch.linalg.solve(g, q)).sum(1) + 0.5 * torch.logdet(g)

    _assert_one_step_matches_autograd(
        metric, hamiltonian, lambda y, q: torch.linalg.solve(metric(y), q),
        lambda x, xi: (torch.linalg.cholesky(metric(x)) @ xi.unsqueeze(-1)).squeeze(-1), seed=5)


def test_a_constant_metric_built_from_parameters_reproduces_hmc_with_that_mass():
    # A learned, position-independent metric requires grad but does not depend on x.
    log_mass = torch.nn.Parameter(torch.tensor([0.5, -0.5], dtype=torch.float64))
    metric = lambda y: torch.diag(log_mass.exp()).expand(y.shape[0], 2, 2)  # noqa: E731
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    noise, uniform = torch.randn(6, 2, generator=gen, dtype=torch.float64), torch.rand(6, generator=gen, dtype=torch.float64)
    state = init_chain_state(x, gaussian_eg)
    hmc, info_h = hmc_step(state, gaussian_eg, 0.3, 4, log_mass.detach().exp(), noise=noise, uniform=uniform)
    rm, info_r = rmhmc_step(state, gaussian_eg, metric, 0.3, 4, noise=noise, uniform=uniform, n_iter=2)
    torch.testing.assert_close(rm.x, hmc.x)
    torch.testing.assert_close(info_r.accept_prob, info_h.accept_prob)
    assert log_mass.grad is None


def test_a_diverging_chain_is_rejected_alone():
    # U = |x|^2/2 + sqrt(1 - x_0): the gradient is NaN past x_0 = 1, where chain 1 is pushed.
    def eg(x):
        root = torch.sqrt(1.0 - x[:, 0])
        grad = x.clone()
        grad[:, 0] -= 0.5 / root
        return 0.5 * (x * x).sum(1) + root, grad

    x = torch.tensor([[0.0, 0.0], [0.9, 0.0], [-0.5, 0.3]], dtype=torch.float64)
    noise = torch.tensor([[0.0, 0.1], [5.0, 0.0], [0.0, -0.1]], dtype=torch.float64)
    state = init_chain_state(x, eg)
    new, info = rmhmc_step(state, eg, lambda y: torch.diag_embed(1 + y * y), 0.2, 2, noise=noise,
                           uniform=torch.zeros(3, dtype=torch.float64))
    assert info.finite.tolist() == [True, False, True] and info.accepted.tolist() == [True, False, True]
    assert info.accept_prob[1] == 0
    torch.testing.assert_close(new.x[1], x[1])
    assert not torch.equal(new.x[[0, 2]], x[[0, 2]])


@pytest.mark.parametrize("start", [-0.5, 0.0])
def test_a_chain_whose_metric_is_not_positive_definite_at_its_start_never_moves(start):
    # G = diag(y_0, 1): chain 1 starts at y_0 = -0.5 (G indefinite) or 0 (G singular); chains 0
    # and 2 stay where G is positive definite and move (u = 0).
    def metric(y):
        return torch.diag_embed(torch.stack([y[:, 0], torch.ones_like(y[:, 0])], 1))

    x = torch.tensor([[1.0, 0.0], [start, 0.0], [2.0, 1.0]], dtype=torch.float64)
    state = init_chain_state(x, gaussian_eg)
    new, info = rmhmc_step(state, gaussian_eg, metric, 0.1, 2, noise=torch.ones(3, 2, dtype=torch.float64),
                           uniform=torch.zeros(3, dtype=torch.float64))
    assert info.accepted.tolist() == [True, False, True] and info.finite.tolist() == [True, False, True]
    assert info.accept_prob[1] == 0
    torch.testing.assert_close(new.x[1], x[1])
    assert torch.isfinite(new.x).all() and torch.isfinite(new.energy).all()


@pytest.mark.parametrize("value", [0.0, -0.1, float("nan"), float("inf")])
def test_a_step_size_outside_its_bound_is_refused(value):
    state = init_chain_state(torch.zeros(3, 2), gaussian_eg)
    with pytest.raises(ValueError, match=rf"^rmhmc_step: step_size must be finite and > 0, got {value!r}\.$"):
        rmhmc_step(state, gaussian_eg, lambda y: torch.eye(2).expand(3, 2, 2), value, 2, generator=torch.Generator())


def test_refusals_name_the_step():
    state = init_chain_state(torch.zeros(4, 2), gaussian_eg)
    metric = lambda y: torch.eye(2).expand(y.shape[0], 2, 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"^rmhmc_step: n_leapfrog_steps must be >= 1, got 0\."):
        rmhmc_step(state, gaussian_eg, metric, 0.1, 0, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"^rmhmc_step: noise has shape \(4, 3\)"):
        rmhmc_step(state, gaussian_eg, metric, 0.1, 2, noise=torch.zeros(4, 3), uniform=torch.rand(4))
    with pytest.raises(ValueError, match=r"^rmhmc_step: uniform has shape \(3,\)"):
        rmhmc_step(state, gaussian_eg, metric, 0.1, 2, noise=torch.zeros(4, 2), uniform=torch.rand(3))
    with pytest.raises(ValueError, match=r"^rmhmc_step: pass uniform="):
        rmhmc_step(state, gaussian_eg, metric, 0.1, 2, noise=torch.zeros(4, 2))
    b1 = lambda x: (gaussian(x).unsqueeze(-1), gaussian_eg(x)[1])  # noqa: E731
    with pytest.raises(ValueError, match=r"^rmhmc_step: the model must return one energy per chain, shape \(4,\)"):
        rmhmc_step(state, b1, metric, 0.1, 2, generator=torch.Generator())


@pytest.mark.parametrize("n_iter", [0, -1, 2.0])
def test_fixed_point_iterations_below_one_are_refused(n_iter):
    # n_iter = 0 skipped both implicit solves: every position update returned x itself, and the
    # chains never moved, silently; a float failed inside range().
    state = init_chain_state(torch.zeros(4, 2), gaussian_eg)
    metric = lambda y: torch.eye(2).expand(y.shape[0], 2, 2)  # noqa: E731
    with pytest.raises(ValueError, match=rf"^rmhmc_step: n_iter={n_iter!r} must be an int >= 1"):
        rmhmc_step(state, gaussian_eg, metric, 0.1, 2, generator=torch.Generator(), n_iter=n_iter)
    x, p = torch.zeros(4, 2), torch.ones(4, 2)
    force, velocity = (lambda y, q: -y), (lambda y, q: q)
    with pytest.raises(ValueError, match=rf"^generalised_leapfrog: n_iter={n_iter!r} must be an int >= 1"):
        generalised_leapfrog(x, p, force, velocity, 0.1, 2, n_iter)
    with pytest.raises(ValueError, match=rf"^generalised_leapfrog: n_steps={n_iter!r} must be an int >= 1"):
        generalised_leapfrog(x, p, force, velocity, 0.1, n_iter)
