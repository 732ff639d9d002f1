"""rmhmc_step: a constant metric reproduces hmc_step; the Riemannian kinetic energy; errors."""

import pytest
import torch

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


def test_the_force_of_a_position_dependent_metric_matches_autograd_of_the_hamiltonian():
    # One generalised leapfrog step with many fixed-point iterations, against the same step taken
    # with forces from autograd through H = U + p^T G^-1 p / 2 + log|G| / 2 (G = diag(1 + x^2)).
    from nnh.func.integrators import generalised_leapfrog

    def metric(y):
        return torch.diag_embed(1 + y * y)

    def hamiltonian(y, q):
        g = 1 + y * y
        return gaussian(y) + 0.5 * (q * q / g).sum(1) + 0.5 * torch.log(g).sum(1)

    def force(y, q):
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            return -torch.autograd.grad(hamiltonian(y, q).sum(), y)[0]

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    xi, u = torch.randn(8, 2, generator=gen, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    new, info = rmhmc_step(init_chain_state(x, gaussian_eg), gaussian_eg, metric, 0.2, 3, noise=xi, uniform=u, n_iter=20)
    p = xi * (1 + x * x).sqrt()
    ref_x, ref_p = generalised_leapfrog(x, p, force, lambda y, q: q / (1 + y * y), 0.2, 3, 20)
    torch.testing.assert_close(new.x, ref_x)  # u = 0: every finite proposal is accepted
    expected = torch.exp((hamiltonian(x, p) - hamiltonian(ref_x, ref_p)).clamp(max=0))
    torch.testing.assert_close(info.accept_prob, expected)
