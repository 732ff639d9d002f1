"""RiemannianManifoldHMC: its target on Neal's funnel, ESS per gradient against HMC at equal
gradient cost, the constant-metric case, and its argument errors."""

import math

import pytest
import torch

import nnh
from nnh import GaussianModel, HamiltonianMonteCarlo, RiemannianManifoldHMC
from nnh.func import effective_sample_size

N = 4  # the funnel's x dimensions; v is coordinate 0


class Funnel(nnh.BaseModel):
    """Neal's funnel: v ~ N(0, 3^2), x_i | v ~ N(0, e^v), i = 1..4."""

    def forward(self, z):
        v, x = z[:, 0], z[:, 1:]
        return v * v / 18 + 0.5 * (x * x).sum(1) * torch.exp(-v) + 0.5 * N * v


def fisher_metric(z):
    """The expected Fisher information of the funnel: diag(1/9 + N/2, e^-v, ..., e^-v)."""
    v = z[:, 0]
    diagonal = torch.cat([torch.full_like(v, 1 / 9 + N / 2)[:, None], torch.exp(-v)[:, None].expand(-1, N)], 1)
    return torch.diag_embed(diagonal)


def test_rmhmc_samples_the_funnel_and_beats_hmc_in_ess_per_gradient():
    # Chains start at exact draws, so every state is a draw of the target and ESS compares the
    # mixing. Gradient cost per transition: HMC L = 10 gradients of U; RMHMC L = 3 gradients of U
    # and L (solver_max_iter + 1) = 15 vector-Jacobian products of the metric, counted here as
    # 18 gradients. Measured over 4 seeds the ratio of ESS of v per gradient so counted was 2.7
    # to 5.1; the test asks for 2.
    gen = torch.Generator().manual_seed(0)
    chains, transitions = 100, 150
    v0 = 3 * torch.randn(chains, generator=gen, dtype=torch.float64)
    z0 = torch.cat([v0[:, None], torch.randn(chains, N, generator=gen, dtype=torch.float64) * torch.exp(v0 / 2)[:, None]], 1)
    ess_per_gradient = {}
    for name, sampler, gradients in (
        ("hmc", HamiltonianMonteCarlo(Funnel(), 0.2, 10, dtype=torch.float64), 10),
        ("rmhmc", RiemannianManifoldHMC(Funnel(), fisher_metric, 0.8, 3, solver_max_iter=4, dtype=torch.float64), 18),
    ):
        traj = sampler.sample(z0, n_steps=transitions, return_trajectory=True, generator=gen)
        v = traj[:, :, 0]
        ess = effective_sample_size(v.unsqueeze(-1)).item()
        ess_per_gradient[name] = ess / (transitions * gradients)
        if name == "rmhmc":
            # v ~ N(0, 9): the mean within 4 standard errors (3 / sqrt(ESS)); the variance within
            # 4 of its standard errors (9 sqrt(2 / ESS)).
            assert abs(v.mean().item()) < 4 * 3 / math.sqrt(ess), (v.mean().item(), ess)
            assert abs(v.var().item() - 9.0) < 4 * 9 * math.sqrt(2 / ess), (v.var().item(), ess)
    assert ess_per_gradient["rmhmc"] > 2 * ess_per_gradient["hmc"], ess_per_gradient


def test_constant_metric_class_equals_hmc_with_that_mass():
    mass = torch.tensor([2.0, 0.5], dtype=torch.float64)
    model = GaussianModel(torch.zeros(2, dtype=torch.float64), torch.tensor([[1.0, 0.3], [0.3, 2.0]], dtype=torch.float64))
    x0 = torch.randn(20, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hmc = HamiltonianMonteCarlo(model, 0.3, 5, mass, torch.float64).sample(
        x0, n_steps=8, generator=torch.Generator().manual_seed(2))
    rm = RiemannianManifoldHMC(model, lambda z: torch.diag(mass).expand(z.shape[0], 2, 2), 0.3, 5, dtype=torch.float64,
                               integrator=nnh.GeneralisedLeapfrogIntegrator(solver_max_iter=1)).sample(
        x0, n_steps=8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(rm, hmc)


def test_errors():
    model = GaussianModel(torch.zeros(2), torch.eye(2))
    metric = lambda z: torch.eye(2).expand(z.shape[0], 2, 2)  # noqa: E731
    with pytest.raises(ValueError, match="got integrator=... and \\['solver_max_iter'\\]"):
        RiemannianManifoldHMC(model, metric, 0.1, 3, solver_max_iter=2, integrator="generalised_leapfrog")
    with pytest.raises(TypeError, match="needs a GeneralisedLeapfrogIntegrator integrator, got LeapfrogIntegrator"):
        RiemannianManifoldHMC(model, metric, 0.1, 3, integrator="leapfrog")
    with pytest.raises(TypeError, match="metric_fn must be a callable"):
        RiemannianManifoldHMC(model, None, 0.1)
    with pytest.raises(ValueError, match="not symmetric positive definite at 4 of the 4 starting states"):
        RiemannianManifoldHMC(model, lambda z: -metric(z), 0.1, 3).sample(torch.zeros(4, 2), n_steps=1)
    _, diag = RiemannianManifoldHMC(model, metric, 0.1, 3).sample(dim=2, n_samples=4, n_steps=2, return_diagnostics=True)
    assert set(diag) == {"mean", "var", "energy", "acceptance_rate"}
