"""Statistical correctness of the samplers, with tolerances from the Monte Carlo error.

How the tolerances are set. Each test runs many independent chains from a spread-out start and
keeps only the final state of each, so the n kept points are independent draws from the
chain's law at that step. Burn-in is long enough (stated per test) that this law equals the
stationary one to far below the Monte Carlo error. Then an estimate of a mean has standard
error sigma / sqrt(n) with sigma its standard deviation, and we accept |estimate - truth| <
K sigma / sqrt(n) with K = 5 (K = 4 for the double well, where the 1.5% bound is also asserted):
a false alarm for one comparison has probability < 6e-7 (< 7e-5), and the seeds are fixed.
For a Gaussian target the sample covariance entry C_ij has variance
(S_ii S_jj + S_ij^2) / n, which sets its bound the same way.
"""

import math

import numpy as np
import pytest
import torch

from nnh import MALA, DoubleWellModel, GaussianModel, HamiltonianMonteCarlo, HarmonicModel, LangevinDynamics


K = 5.0


def assert_gaussian_moments(samples, mean, cov):
    n = samples.shape[0]
    samples = samples.double()
    est_mean = samples.mean(0)
    est_cov = torch.cov(samples.T)
    se_mean = (torch.diagonal(cov) / n).sqrt()
    assert ((est_mean - mean).abs() < K * se_mean).all(), (est_mean, mean, K * se_mean)
    d = torch.diagonal(cov)
    se_cov = ((d[:, None] * d[None, :] + cov**2) / n).sqrt()
    assert ((est_cov - cov).abs() < K * se_cov).all(), (est_cov, cov, K * se_cov)


MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[2.0, 1.2], [1.2, 1.0]], dtype=torch.float64)  # eigenvalues 2.8 and 0.2


def ula_stationary_cov(cov, h):
    """x' = x - h P (x - mu) + sqrt(2h) xi has stationary covariance (P (I - h P / 2))^-1."""
    precision = torch.linalg.inv(cov)
    return torch.linalg.inv(precision @ (torch.eye(len(cov), dtype=cov.dtype) - 0.5 * h * precision))


# sampler factory, n_steps. Burn-in: the slowest direction of the anisotropic target has
# precision 1/2.8; ULA/MALA with h contract it by (1 - h/2.8) per step (h=0.05: 1500 steps,
# e^-27; h=0.25: 400 steps, e^-36); HMC with epsilon L = 2 decorrelates in a few transitions.
SAMPLERS = {
    "langevin": (lambda m: LangevinDynamics(m, step_size=0.05, dtype=torch.float64), 1500),
    "mala": (lambda m: MALA(m, step_size=0.25, dtype=torch.float64), 400),
    "hmc": (lambda m: HamiltonianMonteCarlo(m, step_size=0.2, n_leapfrog_steps=10, dtype=torch.float64), 150),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("target", ["standard", "anisotropic"])
def test_gaussian_mean_and_covariance(name, target):
    mean, cov = (torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)) if target == "standard" else (MEAN, COV)
    model = GaussianModel(mean, cov)
    make, n_steps = SAMPLERS[name]
    gen = torch.Generator().manual_seed(11)
    x0 = 3.0 * torch.randn(8000, 2, generator=gen, dtype=torch.float64) + 2.0  # far from the target
    samples = make(model).sample(x=x0, n_steps=n_steps, generator=gen)
    if name == "langevin":
        # ULA is biased by O(h); its exact stationary law for a Gaussian is N(mu, C_h).
        cov = ula_stationary_cov(cov, 0.05)
    assert_gaussian_moments(samples, mean, cov)


def test_double_well_quadrature_constants():
    # The constants below belong to U(x) = h sum_i (x_i^2 - b^2)^2 with h = 2, b = 1
    # (DoubleWellModel's convention); the density factorises, so one 1-D quadrature suffices.
    x = np.linspace(-4.0, 4.0, 400001)
    energy = DoubleWellModel(2.0, 1.0)(torch.from_numpy(x).unsqueeze(1)).numpy()
    w = np.exp(-energy)
    w /= w.sum()
    assert abs((np.abs(x) * w).sum() - 0.86809) < 1e-5
    assert abs((x * x * w).sum() - 0.85214) < 1e-5
    # Standard deviations of |x_i| and x_i^2, which set the Monte Carlo bounds below.
    assert abs(math.sqrt((x * x * w).sum() - 0.86809**2) - 0.3139) < 1e-3
    assert abs(math.sqrt((x**4 * w).sum() - 0.85214**2) - 0.5010) < 1e-3


@pytest.mark.parametrize("name", ["mala", "hmc"])
def test_double_well_moments(name):
    model = DoubleWellModel(barrier_height=2.0, b=1.0)
    gen = torch.Generator().manual_seed(5)
    # Start near the mass: MALA and HMC chains started deep in the quartic tails can stay stuck
    # there (their proposals overshoot and are rejected). Within a well the curvature is 16,
    # so 300 MALA steps of h = 0.02 (or 60 HMC transitions) are many relaxation times; which
    # well a chain sits in does not matter, |x| and x^2 being symmetric.
    x0 = 0.7 * torch.randn(50_000, 2, generator=gen)
    if name == "mala":
        samples = MALA(model, step_size=0.02).sample(x=x0, n_steps=300, generator=gen)
    else:
        samples = HamiltonianMonteCarlo(model, step_size=0.05, n_leapfrog_steps=8).sample(x=x0, n_steps=60, generator=gen)
    values = samples.double().reshape(-1)  # the two coordinates are independent: n = 100,000
    n = values.numel()
    for estimate, truth, sd in ((values.abs().mean(), 0.86809, 0.3139), ((values**2).mean(), 0.85214, 0.5010)):
        bound = 4.0 * sd / math.sqrt(n)
        assert bound < 0.015 * truth  # the Monte Carlo bound is tighter than the 1.5% requirement
        assert abs(estimate.item() - truth) < bound, (name, estimate.item(), truth, bound)


def test_ula_step_size_bias_and_mala_removes_it():
    # On N(0, 1), x' = (1 - h) x + sqrt(2h) xi has stationary variance 2h / (1 - (1-h)^2) = 1 / (1 - h/2).
    h, n = 0.5, 40_000
    model = HarmonicModel()
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    ula = LangevinDynamics(model, step_size=h, dtype=torch.float64).sample(x=x0, n_steps=60, generator=gen)
    mala = MALA(model, step_size=h, dtype=torch.float64).sample(x=x0, n_steps=60, generator=gen)
    ula_var, mala_var = ula.var().item(), mala.var().item()
    biased = 1.0 / (1.0 - h / 2)
    # Var of a Gaussian sample variance: 2 v^2 / (n - 1).
    assert abs(ula_var - biased) < K * biased * math.sqrt(2 / n)
    assert abs(mala_var - 1.0) < K * math.sqrt(2 / n)
    assert ula_var - 1.0 > 10 * math.sqrt(2 / n)  # the bias is far outside the noise


def sample_variance_bound(v, n):
    """K standard errors of the sample variance of n Gaussian draws of variance v: Var = 2 v^2 / (n - 1)."""
    return K * v * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("mass", [4.0, torch.tensor([4.0, 0.25], dtype=torch.float64)])
def test_hmc_with_a_mass_samples_the_target_variance(mass):
    # The mass changes the dynamics, not the target: on N(0, I) the variance stays 1 for any M.
    # Drawing p ~ N(0, I) instead of N(0, M) with M = 4 would give a variance of about 0.26.
    # A coordinate of mass m turns by the angle epsilon L / sqrt(m) per transition, so x'
    # correlates with x by cos(epsilon L / sqrt(m)): epsilon L = 2.4 gives 0.36 for m = 4 and
    # 0.09 for m = 1/4 (a multiple of pi would freeze it), and 40 transitions from a start of
    # variance 4 forget it (0.36^40 ~ 1e-18).
    n = 20_000
    gen = torch.Generator().manual_seed(7)
    x0 = 2.0 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    sampler = HamiltonianMonteCarlo(HarmonicModel(), 0.12, n_leapfrog_steps=20, mass=mass, dtype=torch.float64)
    samples = sampler.sample(x=x0, n_steps=40, generator=gen)
    torch.testing.assert_close(samples.mean(0), torch.zeros(2, dtype=torch.float64), atol=K / math.sqrt(n), rtol=0)
    var = samples.var(0)
    assert ((var - 1.0).abs() < sample_variance_bound(1.0, n)).all(), var


def test_mala_noise_scale_samples_exp_minus_u_over_s_squared():
    # With s = 2, MALA targets exp(-U / 4): N(0, 4) for U = x^2 / 2 (T = s, not s^2, gives ~1.83).
    # The proposal contracts by 1 - h = 0.5 per step, so 60 steps forget the start.
    s, n = 2.0, 40_000
    gen = torch.Generator().manual_seed(9)
    x0 = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    samples = MALA(HarmonicModel(), step_size=0.5, noise_scale=s, dtype=torch.float64).sample(
        x=x0, n_steps=60, generator=gen)
    assert abs(samples.mean().item()) < K * s / math.sqrt(n)
    assert abs(samples.var().item() - s * s) < sample_variance_bound(s * s, n), samples.var().item()


@pytest.mark.parametrize("integrator, decay, variance", [
    # x' = a x + sqrt(2h) xi has stationary variance 2h / (1 - a^2). With h = 0.2:
    # Euler-Maruyama with decay 1 on U = x^2/2: a = 1 - 2h, variance 1 / (2 (1 - h)) = 0.625;
    # Heun without decay: a = 1 - h + h^2/2 = 0.82, variance 0.4 / (1 - 0.82^2) = 1.2210.
    ("euler_maruyama", 1.0, 0.625),
    ("heun", 0.0, 0.4 / (1 - 0.82**2)),
])
def test_langevin_integrators_and_decay_reach_their_stationary_variance(integrator, decay, variance):
    n = 40_000
    gen = torch.Generator().manual_seed(13)
    x0 = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    sampler = LangevinDynamics(HarmonicModel(), 0.2, 1.0, decay, dtype=torch.float64, integrator=integrator)
    samples = sampler.sample(x=x0, n_steps=60, generator=gen)  # contraction 0.82^60 ~ 7e-6
    assert abs(samples.mean().item()) < K * math.sqrt(variance / n)
    assert abs(samples.var().item() - variance) < sample_variance_bound(variance, n), samples.var().item()


def test_langevin_clamp_keeps_every_state_in_the_box():
    sampler = LangevinDynamics(HarmonicModel(), 0.5, 2.0, clamp=(-0.3, 0.2))
    traj = sampler.sample(x=torch.randn(500, 2), n_steps=20, return_trajectory=True)
    assert traj.min() >= -0.3 and traj.max() <= 0.2
    assert (traj == -0.3).any() and (traj == 0.2).any()  # the noise pushes chains onto both walls
