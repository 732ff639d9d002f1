"""Interpolants and the velocity / score / noise conversions of nnh.func.flow."""

import pytest
import torch

from nnh.func.flow import (
    CosineInterpolant,
    LinearInterpolant,
    VariancePreservingInterpolant,
    diffusion_coefficient,
    expand_t_like_x,
    get_interpolant,
    score_from_prediction,
    velocity_from_prediction,
)
from nnh.func.sde import VPSDE, per_sample
from tests._flow_models import ExactGaussianField

INTERPOLANTS = [LinearInterpolant(), CosineInterpolant(), VariancePreservingInterpolant()]


@pytest.mark.parametrize("interp", INTERPOLANTS, ids=lambda i: type(i).__name__)
def test_derivatives_endpoints_and_interpolation(interp):
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64).requires_grad_(True)
    alpha, d_alpha = interp.compute_alpha_t(t)
    sigma, d_sigma = interp.compute_sigma_t(t)
    torch.testing.assert_close(torch.autograd.grad(alpha.sum(), t)[0], d_alpha)
    torch.testing.assert_close(torch.autograd.grad(sigma.sum(), t)[0], d_sigma)
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    if not isinstance(interp, VariancePreservingInterpolant):  # VP reaches alpha(0) = e^-5.025 only
        torch.testing.assert_close(interp.compute_alpha_t(ends)[0], torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(interp.compute_sigma_t(ends)[0][1:], torch.zeros(1, dtype=torch.float64), atol=1e-6, rtol=0)
    gen = torch.Generator().manual_seed(1)
    x0, x1, tt = torch.randn(4, 3, dtype=torch.float64, generator=gen), torch.randn(4, 3, dtype=torch.float64, generator=gen), t.detach()[:4]
    xt, ut = interp.interpolate(x0, x1, tt)
    a, da = interp.compute_alpha_t(tt[:, None])
    s, ds = interp.compute_sigma_t(tt[:, None])
    torch.testing.assert_close(xt, a * x1 + s * x0)
    torch.testing.assert_close(ut, da * x1 + ds * x0)


def test_the_vp_interpolant_is_the_vp_sde_in_flow_time():
    # alpha(t) = m(1 - t) and sigma(t) = sigma(1 - t) of nnh.VPSDE(beta_min, beta_max) with T = 1.
    t = torch.linspace(0.0, 0.99, 12, dtype=torch.float64)
    interp, sde = VariancePreservingInterpolant(0.2, 15.0), VPSDE(0.2, 15.0)
    torch.testing.assert_close(interp.compute_alpha_t(t)[0], sde.mean_coeff(1 - t))
    torch.testing.assert_close(interp.compute_sigma_t(t)[0], sde.sigma(1 - t))
    torch.testing.assert_close(interp.compute_d_alpha_alpha_ratio_t(t), 0.5 * sde.beta(1 - t))


def test_expand_t_like_x_is_per_sample():
    t, x = torch.arange(3.0), torch.zeros(3, 2, 4)
    assert expand_t_like_x(t, x).shape == (3, 1, 1) and torch.equal(expand_t_like_x(t, x), per_sample(t, x))


@pytest.mark.parametrize("name", ["linear", "cosine", "vp"])
def test_the_three_predictions_give_the_same_velocity_and_score(name):
    # The exact fields of Gaussian data, in each parameterisation, convert to one velocity and one
    # score (to 1e-6: the conversions floor denominators at 1e-8, as sigma + 1e-8).
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    interp = get_interpolant(name)
    outputs = {p: ExactGaussianField(name, p)(x, t) for p in ("velocity", "score", "noise")}
    for p, out in outputs.items():
        torch.testing.assert_close(velocity_from_prediction(p, out, x, t, interp), outputs["velocity"], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(score_from_prediction(p, out, x, t, interp), outputs["score"], rtol=1e-6, atol=1e-9)


def test_diffusion_forms_and_errors():
    x, t = torch.zeros(3, 2, dtype=torch.float64), torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    linear = LinearInterpolant()
    torch.testing.assert_close(diffusion_coefficient("SBDM", x, t, linear)[:, 0], 1 / t, rtol=1e-6, atol=0)  # eta/sigma = 1/t
    torch.testing.assert_close(diffusion_coefficient("sigma", x, t, linear, 2.0)[:, 0], 2 * (1 - t))
    torch.testing.assert_close(diffusion_coefficient("increasing-decreasing", x, t, linear)[:, 0], 4 * t * (1 - t))
    assert diffusion_coefficient("constant", x, t, linear).shape == (3, 1)
    with pytest.raises(ValueError, match="unknown diffusion form 'wide'"):
        diffusion_coefficient("wide", x, t, linear)
    with pytest.raises(ValueError, match="unknown interpolant 'spline'"):
        get_interpolant("spline")
    with pytest.raises(ValueError, match="prediction must be 'velocity', 'score' or 'noise'"):
        score_from_prediction("x0", x, x, t, linear)


def test_the_default_vp_interpolant_has_beta_from_0_1_to_20():
    # log alpha = -(1-t)^2 (beta_1 - beta_0) / 4 - (1-t) beta_0 / 2 with beta_0 = 0.1, beta_1 = 20.
    t = torch.linspace(0.0, 1.0, 9, dtype=torch.float64)
    s = 1 - t
    torch.testing.assert_close(VariancePreservingInterpolant().compute_alpha_t(t)[0], torch.exp(-0.25 * s * s * 19.9 - 0.05 * s))


def test_the_vp_interpolant_takes_beta_0_equal_to_0_and_needs_beta_0_below_beta_1():
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    s = 1 - t
    torch.testing.assert_close(VariancePreservingInterpolant(0.0, 8.0).compute_alpha_t(t)[0], torch.exp(-2.0 * s * s))
    for bad in [(5.0, 5.0), (6.0, 5.0), (-0.1, 5.0)]:
        with pytest.raises(ValueError, match="VariancePreservingInterpolant: need 0 <= sigma_min < sigma_max"):
            VariancePreservingInterpolant(*bad)


def test_get_interpolant_rejects_a_non_name_with_a_value_error():
    with pytest.raises(ValueError, match="unknown interpolant"):
        get_interpolant(["linear"])


def test_a_velocity_prediction_is_the_velocity_even_where_eta_vanishes():
    # At t = 1 the linear interpolant has eta = 0, so the score form kappa x + eta s cannot
    # recover v: the velocity prediction is returned as it is.
    x, out = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    for interp in INTERPOLANTS:
        assert torch.equal(velocity_from_prediction("velocity", out, x, t, interp), out)


def test_at_t_1_the_score_of_a_noise_prediction_points_against_the_noise_and_sbdm_is_non_negative():
    # sigma(1) = 0 (linear) or ~6e-17 (cosine): the floored denominator keeps s = -eps / sigma
    # finite with the sign of -eps, and w = eta / sigma finite and >= 0 (sqrt(2w) is the noise).
    x, eps = torch.zeros(2, 3, dtype=torch.float64), torch.tensor([[1.0, -2.0, 0.5], [-1.0, 3.0, -0.25]], dtype=torch.float64)
    t = torch.ones(2, dtype=torch.float64)
    for interp in (LinearInterpolant(), CosineInterpolant()):
        score = score_from_prediction("noise", eps, x, t, interp)
        assert torch.isfinite(score).all() and torch.equal(torch.sign(score), -torch.sign(eps))
        w = diffusion_coefficient("SBDM", x, t, interp)
        assert torch.isfinite(w).all() and (w >= 0).all()


def test_linear_and_decreasing_diffusions():
    x, t = torch.zeros(4, 2, dtype=torch.float64), torch.tensor([0.0, 0.2, 0.5, 0.9], dtype=torch.float64)
    linear = LinearInterpolant()
    torch.testing.assert_close(diffusion_coefficient("linear", x, t, linear)[:, 0], 1 - t)
    torch.testing.assert_close(diffusion_coefficient("linear", x, t, linear, 3.0)[:, 0], 3 * (1 - t))
    torch.testing.assert_close(diffusion_coefficient("decreasing", x, t, linear)[:, 0], (1 - t) ** 2)
    torch.testing.assert_close(diffusion_coefficient("decreasing", x, t, linear, 0.5)[:, 0], 0.5 * (1 - t) ** 2)
    torch.testing.assert_close(diffusion_coefficient("constant", x, t, linear, 2.5), torch.full((4, 1), 2.5, dtype=torch.float64))


def test_interpolants_repr_their_class_and_numbers():
    assert repr(CosineInterpolant()) == "CosineInterpolant()"
    assert repr(VariancePreservingInterpolant(0.2, 15)) == "VariancePreservingInterpolant(sigma_min=0.2, sigma_max=15.0)"


@pytest.mark.parametrize("norm", [-1.0, float("nan"), float("inf")])
def test_diffusion_coefficient_refuses_a_norm_that_is_not_finite_and_non_negative(norm):
    # A negative norm gave w < 0 and NaN noise sqrt(2w); nan and inf gave NaN states.
    x, t = torch.zeros(4, 2), torch.full((4,), 0.5)
    with pytest.raises(ValueError, match=r"^diffusion_coefficient: norm must be finite and >= 0, got"):
        diffusion_coefficient("constant", x, t, LinearInterpolant(), norm)
