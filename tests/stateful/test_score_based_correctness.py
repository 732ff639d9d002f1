"""Analytic checks of score-based sampling and likelihoods (CPU, seconds each).

Gaussian data N(mu, diag(std^2)) with the exact score (tests/_gaussian.py). A sampler's output
moments differ from the data's by Monte Carlo error and a deterministic bias; the bias is
computed exactly (the sampler is affine in the state for Gaussian data) and bounded in each
test, and the sample moments must then fall within 4 standard errors of the exact expectation:

    se(mean_i) = sd_i / sqrt(N),   se(var_i) = var_i sqrt(2 / N)   (Gaussian output)
"""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

import nnh
from nnh import NNHandler
from nnh._demo import ScoreMLP
from tests._gaussian import (euler_maruyama_moments, exact_handler, log_density,
                             probability_flow_moments)

N = 20_000
MU, STD = (1.0, -0.5), (0.5, 0.8)


def assert_moments(x, expected_mean, expected_var, truth_mean, truth_var, bias_bound):
    """Sample moments of x (N, D) within 4 se of the exact expectation, which lies within
    `bias_bound` of the data's moments; off-diagonal covariance within 4 se of 0."""
    for i in range(x.shape[1]):
        assert abs(expected_mean[i] - truth_mean[i]) <= bias_bound[0]
        assert abs(expected_var[i] - truth_var[i]) <= bias_bound[1]
        assert abs(x[:, i].mean().item() - expected_mean[i]) <= 4 * math.sqrt(expected_var[i] / len(x))
        assert abs(x[:, i].var().item() - expected_var[i]) <= 4 * expected_var[i] * math.sqrt(2 / len(x))
    cov = torch.cov(x.T.double())
    assert abs(cov[0, 1].item()) <= 4 * math.sqrt(truth_var[0] * truth_var[1] / len(x))


@pytest.mark.parametrize("sde", ["vp", "ve"])
def test_euler_maruyama_recovers_gaussian_data(sde):
    # Discretisation bias at 500 steps (exact, euler_maruyama_moments): VP 1.2e-3 |mu| on the
    # mean and 4e-4 on the variance; VE below 1e-4 and 1.3e-4. Bound stated: 2e-3 for both.
    h = exact_handler(sde, MU, STD)
    torch.manual_seed(0)
    x = h.sample((N, 2), 500, bar=False)
    moments = [euler_maruyama_moments(h.sde, m, s * s, 500) for m, s in zip(MU, STD)]
    assert_moments(x, [m for m, _ in moments], [v for _, v in moments], MU, [s * s for s in STD], (2e-3, 2e-3))


@pytest.mark.parametrize("sde,steps,bound", [("vp", 100, (4e-3, 1e-3)), ("ve", 200, (1.2e-2, 3e-3))])
def test_probability_flow_sampler_recovers_gaussian_data(sde, steps, bound):
    # Deterministic, so the prior's mismatch with p_T is not washed out: the mean is pulled
    # towards 0 by the factor std m(T) / sigma(T) (VP: 0.0033 std/0.5; VE: std / sigma_max = 0.01 at
    # std 0.5, 0.016 at 0.8), and the steps (Heun, the last Euler) add -6e-4 (VP, 100) and
    # +1.7e-3 (VE, 200) to the variance. Exact values from probability_flow_moments; bounds
    # stated per SDE.
    h = exact_handler(sde, MU, STD)
    torch.manual_seed(1)
    x = h.sample((N, 2), steps, method="probability_flow", bar=False)
    moments = [probability_flow_moments(h.sde, m, s * s, steps) for m, s in zip(MU, STD)]
    assert_moments(x, [m for m, _ in moments], [v for _, v in moments], MU, [s * s for s in STD], bound)


def test_predictor_corrector_sampler_recovers_gaussian_data_with_the_langevin_excess():
    # One Langevin corrector step per predictor step at snr r: the step 2 r^2 v settles the
    # variance at v / (1 - r^2) (2.6 % at r = 0.16); measured with 2e5 samples: +2.2 % (VP).
    # Expected: mean as Euler-Maruyama (bias <= 2e-3), variance s^2 / (1 - r^2) within 1 %.
    h = exact_handler("vp", MU, STD)
    torch.manual_seed(2)
    snr = 0.16
    x = h.sample((N, 2), 500, corrector_steps=1, snr=snr, bar=False)
    for i, (m, s) in enumerate(zip(MU, STD)):
        inflated = s * s / (1 - snr ** 2)
        assert abs(x[:, i].mean().item() - m) <= 4 * s / math.sqrt(N) + 2e-3
        assert abs(x[:, i].var().item() - inflated) <= 4 * inflated * math.sqrt(2 / N) + 0.01 * s * s


def test_guided_sampling_matches_the_analytic_posterior():
    # Prior x ~ N(mu, diag(s^2)), observation y = x + n, n ~ N(0, tau^2 I): the posterior is
    # N(m_post, diag(v_post)) with v_post = 1 / (1/s^2 + 1/tau^2), m_post = v_post (mu/s^2 + y/tau^2).
    # Under the SDE, x_t | y ~ N(m(t) m_post, m(t)^2 v_post + sigma(t)^2), so the exact score of the
    # noised likelihood is grad log p_t(x | y) - grad log p_t(x), which guidance adds.
    mu, s2 = torch.tensor(MU), torch.tensor(STD) ** 2
    tau2, y = 0.25, torch.tensor([0.2, 0.4])
    v_post = 1 / (1 / s2 + 1 / tau2)
    m_post = v_post * (mu / s2 + y / tau2)
    h = exact_handler("vp", MU, STD)
    sde = h.sde

    def likelihood_score(t, x):
        m, sig2 = sde.mean_coeff(t)[:, None], sde.sigma(t)[:, None] ** 2
        return -(x - m * m_post) / (m * m * v_post + sig2) + (x - m * mu) / (m * m * s2 + sig2)

    torch.manual_seed(3)
    x = h.sample((N, 2), 500, likelihood_score_fn=likelihood_score, guidance_factor=1.0, bar=False)
    moments = [euler_maruyama_moments(sde, m.item(), v.item(), 500) for m, v in zip(m_post, v_post)]
    assert_moments(x, [m for m, _ in moments], [v for _, v in moments], m_post.tolist(), v_post.tolist(),
                   (2e-3, 2e-3))


# Data points drawn from the data (zero-mean, isotropic, so that Rademacher probes are exact
# and only the ODE's discretisation is measured), and their exact log p_epsilon.
LL_STD = (0.5, 0.5)


def _ll_error(sde, method, steps):
    h = exact_handler(sde, (0.0, 0.0), LL_STD)
    x = LL_STD[0] * torch.randn(64, 2, generator=torch.Generator().manual_seed(4))
    ll = h.log_likelihood(x, ode_steps=steps, method=method)
    return (ll.double() - log_density(h.sde, h.sde.epsilon, x, (0.0, 0.0), LL_STD)).abs().max().item()


@pytest.mark.parametrize("sde,tolerance", [("vp", 0.01), ("ve", 0.02)])
@pytest.mark.parametrize("method,steps", [("Heun", 200), ("RK4", 100)])
def test_log_likelihood_matches_the_exact_density(sde, tolerance, method, steps):
    # Uniform grid in t (for VE, uniform in log sigma). Measured max errors over these 64 points:
    # VP Heun 5.5e-4, RK4 1.0e-4; VE Heun 8.8e-3, RK4 2.9e-4. VE's error grows as
    # 1e-4 + 1.1e-3 |x / std|^2 (Heun, 200): towards T its probability flow grows x at the rate
    # ln(sigma_max / sigma_min) / T = 8.5, and the relative error of that growth enters
    # log p_T(x_T); a point beyond |x / std|^2 = 18 (p = 1e-4 in 2-D) misses 0.02.
    assert _ll_error(sde, method, steps) <= tolerance


def test_euler_needs_four_hundred_steps_for_a_hundredth_of_a_nat_on_vp():
    # First order: the error halves with the step. VP needs about 400 Euler steps for 0.01 nats
    # on these points (500 give 0.008, 250 give 0.016); VE needs about 8,200 for 0.02 (8,000
    # give 0.0203, 9,000 give 0.018; docs/score_based.md), too slow to run here.
    assert _ll_error("vp", "Euler", 500) <= 0.01 < _ll_error("vp", "Euler", 250)


def test_a_dsm_trained_model_samples_the_mixture():
    # Two equal Gaussians N((+-1.5, 0), 0.3^2 I): mean 0, covariance diag(2.34, 0.09). 4,000
    # samples; Monte Carlo error (4 se): mean 0.097 (x) and 0.019 (y), variance 0.057 (x, from the
    # bimodal fourth moment) and 0.008 (y). The rest of each tolerance is the trained model's
    # error, measured over six training seeds of this set-up: mean x within +-0.07, var x
    # 2.22-2.31, var y 0.073-0.077 (0.087 after 300 epochs: under-training in the narrow
    # direction), |cov xy| <= 0.026, and 2-3 % of the samples between the modes (|x| < 0.5,
    # 0.04 % of the data). A sign or scale error in the loss or the score convention misses
    # these by far.
    g = torch.Generator().manual_seed(0)
    side = torch.randint(0, 2, (4096,), generator=g) * 2 - 1
    data = torch.stack([1.5 * side, torch.zeros(4096)], 1) + 0.3 * torch.randn(4096, 2, generator=g)
    torch.manual_seed(0)
    h = NNHandler(ScoreMLP, hidden=64, depth=2)
    h.set_sde(nnh.VPSDE)
    h.set_optimizer(torch.optim.Adam, lr=3e-3)
    h.set_loss_fn(nnh.denoising_score_matching)
    h.set_train_loader(TensorDataset(data), batch_size=256, shuffle=True)
    h.train(60, validate_every=0, ema_decay=0.99, progress_bar=False)
    x = h.sample((4000, 2), 200, bar=False)
    cov = torch.cov(x.T)
    assert abs(x[:, 0].mean().item()) <= 0.15 and abs(x[:, 1].mean().item()) <= 0.04
    assert cov[0, 0].item() == pytest.approx(2.34, abs=0.2) and cov[1, 1].item() == pytest.approx(0.09, abs=0.025)
    assert abs(cov[0, 1].item()) <= 0.05
    assert abs((x[:, 0] > 0).float().mean().item() - 0.5) <= 0.04  # both modes, equally
    assert (x[:, 0].abs() < 0.5).float().mean().item() <= 0.05     # few samples between them


# ---------------------------------------------------------------- dtypes
def test_a_float64_model_samples_in_float64_and_recovers_the_exact_moments():
    # The prior's draws follow the model's dtype (they were float32, and a float64 model failed
    # at its first forward pass). Exact moments of 50 Euler-Maruyama steps, 4 se.
    h = exact_handler("vp", MU, STD)
    h.model.double()
    torch.manual_seed(2)
    x = h.sample((N, 2), 50, bar=False)
    assert x.dtype == torch.float64
    moments = [euler_maruyama_moments(h.sde, m, s * s, 50) for m, s in zip(MU, STD)]
    assert_moments(x, [m for m, _ in moments], [v for _, v in moments], MU, [s * s for s in STD], (2e-2, 2e-2))


def test_a_float32_model_samples_in_float32_under_a_float64_default_dtype():
    h = exact_handler("vp", MU, STD)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        x = h.sample((64, 2), 5, bar=False)
    finally:
        torch.set_default_dtype(previous)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()


def test_a_float64_log_likelihood_adds_the_prior_log_density_in_float64():
    # VE prior N(0, 50^2 I) in D = 3072 dimensions: its log-density is about -2e4, so a float32
    # prior is off by ~1e-3 nats. The result is the ODE's (x_T, delta) composed by hand with the
    # prior's closed form in float64.
    D = 3072
    h = exact_handler("ve", [0.0] * D, [0.5] * D)
    h.model.double()
    x = torch.randn(2, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5
    torch.manual_seed(3)
    ll = h.log_likelihood(x, ode_steps=4, method="Euler")
    sde = h.sde
    torch.manual_seed(3)
    noise = nnh.func.hutchinson_probes(x, 1)
    times = torch.linspace(sde.epsilon, sde.T, 5, dtype=torch.float64)
    state = (x, torch.zeros(2, dtype=torch.float64))
    with torch.no_grad():
        for i in range(4):
            state = nnh.func.likelihood_ode_step(
                lambda t, z: nnh.func.probability_flow_drift(sde, lambda s, y: h.score(s, y), t, z),
                times[i].expand(2), state, (sde.T - sde.epsilon) / 4, noise, "euler")
    z, delta = state
    prior = -0.5 * (z * z).sum(-1) / sde.prior_std ** 2 - 0.5 * D * math.log(2 * math.pi * sde.prior_std ** 2)
    assert ll.dtype == torch.float64
    torch.testing.assert_close(ll, prior + delta, rtol=0, atol=1e-8)
