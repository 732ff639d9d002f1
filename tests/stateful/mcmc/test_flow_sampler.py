"""FlowSampler on Gaussian data with the exact field in every parameterisation: the ODE's
deterministic map, the SDE's marginals, reversal, conditioning, diagnostics and errors."""

import math

import pytest
import torch

from nnh import FlowSampler, PredictionType
from tests._flow_models import MU, S2, ExactGaussianField

N = 20_000


def noise(n=N, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("interpolant", ["linear", "cosine", "vp"])
@pytest.mark.parametrize("prediction", ["velocity", "score", "noise"])
def test_the_ode_maps_noise_to_data_by_the_gaussian_transport_map(interpolant, prediction):
    # For isotropic Gaussians the flow map is x0 -> MU + sqrt(S2) x0, sample by sample. Errors:
    # RK4 with 50 steps ~1e-8; starting at t0 = sample_eps = 1e-3 (score and noise on linear and
    # cosine), or from N(0, I) where VP's t = 0 marginal has alpha(0) = 6.6e-3: measured at most
    # 0.007; the bound is 0.02.
    x0 = noise(200)
    sampler = FlowSampler(ExactGaussianField(interpolant, prediction), "ode", interpolant, prediction,
                          sample_eps=1e-3 if prediction != "velocity" else 0.0, dtype=torch.float64)
    out = sampler.sample(x0, n_steps=50)
    exact = interpolant == "linear" and prediction == "velocity"
    torch.testing.assert_close(out, MU + math.sqrt(S2) * x0, atol=1e-6 if exact else 0.02, rtol=0)
    if exact:
        back = FlowSampler(ExactGaussianField(), reverse=True, dtype=torch.float64).sample(out, n_steps=50)
        torch.testing.assert_close(back, x0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("interpolant, prediction, form", [("linear", "score", "SBDM"), ("cosine", "velocity", "constant")])
def test_the_sde_has_the_data_marginal(interpolant, prediction, form):
    # last_step="Euler" ends with the ODE drift, which keeps the marginal ("Mean", the default,
    # also removes the last noise: it shrinks a non-degenerate law, by 32% in variance here).
    # Bounds: 5 standard errors, sqrt(S2 / N) for the mean and S2 sqrt(2 / N) for the variance,
    # plus 0.01 S2 for the discretisation (measured 0.5-0.8% at 250 steps).
    sampler = FlowSampler(ExactGaussianField(interpolant, prediction), "sde", interpolant, prediction, sample_eps=1e-3,
                          diffusion_form=form, last_step="Euler", dtype=torch.float64)
    out = sampler.sample(dim=2, n_samples=N, generator=torch.Generator().manual_seed(1))
    assert ((out.mean(0) - MU).abs() < 5 * math.sqrt(S2 / N)).all(), out.mean(0)
    assert ((out.var(0) - S2).abs() < 5 * S2 * math.sqrt(2 / N) + 0.01 * S2).all(), out.var(0)


def test_trajectory_diagnostics_defaults_and_conditioning():
    sampler = FlowSampler(ExactGaussianField(), dtype=torch.float64)
    assert sampler.n_steps == 50 and FlowSampler(ExactGaussianField(), "sde", sample_eps=0.01).n_steps == 250
    traj, diag = sampler.sample(noise(8), n_steps=10, thin=5, return_trajectory=True, return_diagnostics=True)
    assert traj.shape == (8, 2, 2) and set(diag) == {"mean", "var", "t"}
    torch.testing.assert_close(diag["t"], torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(diag["mean"][-1], traj[:, -1].mean(0))
    sde = FlowSampler(ExactGaussianField(), "sde", sample_eps=0.01, dtype=torch.float64)
    traj, diag = sde.sample(noise(8), n_steps=20, return_trajectory=True, return_diagnostics=True,
                            generator=torch.Generator().manual_seed(2))
    assert diag["t"][-1].item() == pytest.approx(1.0)  # t1 = 1 - last_step_size, then the last step
    shift = torch.tensor([1.0, 1.0], dtype=torch.float64)
    out = sampler.sample(noise(50), model_kwargs={"shift": shift})
    torch.testing.assert_close(out, MU + shift + math.sqrt(S2) * noise(50), atol=1e-6, rtol=0)
    assert sampler.prediction_type is PredictionType.VELOCITY


def test_errors():
    field = ExactGaussianField()
    with pytest.raises(ValueError, match="mode must be 'ode' or 'sde'"):
        FlowSampler(field, "pde")
    with pytest.raises(ValueError, match="prediction must be 'velocity', 'score' or 'noise'"):
        FlowSampler(field, prediction="x0")
    with pytest.raises(ValueError, match="diffusion_form, last_step only apply to mode='sde'"):
        FlowSampler(field, diffusion_form="SBDM", last_step="Mean")
    with pytest.raises(ValueError, match="reverse=True integrates the ODE only"):
        FlowSampler(field, "sde", reverse=True)
    with pytest.raises(ValueError, match="singular at t = 0; set sample_eps > 0"):
        FlowSampler(ExactGaussianField(prediction="score"), prediction="score").sample(dim=2, n_samples=2)
    with pytest.raises(TypeError, match="needs a BaseSDERungeKuttaIntegrator integrator, got RK4Integrator"):
        FlowSampler(field, "sde", integrator="rk4")
    with pytest.raises(ValueError, match="unknown integrator 'dopri5'"):
        FlowSampler(field, integrator="dopri5")


@pytest.mark.parametrize("make,error,match", [
    # Accepted before: sqrt(2 w) of a negative w is NaN; a last step of 2 ran the grid past t = 1.
    (lambda f: FlowSampler(f, "sde", diffusion_norm=-1.0), ValueError, r"^FlowSampler: diffusion_norm=-1.0 must be a finite number >= 0"),
    (lambda f: FlowSampler(f, "sde", diffusion_norm=math.nan), ValueError, r"^FlowSampler: diffusion_norm=nan"),
    (lambda f: FlowSampler(f, "sde", last_step_size=2.0), ValueError, r"^FlowSampler: last_step_size=2.0 must be a number in \[0, 1\)"),
    (lambda f: FlowSampler(f, "sde", last_step_size="a"), ValueError, r"^FlowSampler: last_step_size='a' must be a number"),
    # Silently ignored before.
    (lambda f: FlowSampler(f, "sde", last_step=None, last_step_size=0.1), ValueError,
     r"^FlowSampler: last_step_size=0.1 is the size of the last step, but last_step=None takes none"),
    # Read by truth value before: "no" negated the velocity.
    (lambda f: FlowSampler(f, negate_velocity="no"), TypeError, r"^FlowSampler: negate_velocity='no' must be True or False"),
    (lambda f: FlowSampler(f, reverse=1), TypeError, r"^FlowSampler: reverse=1 must be True or False"),
])
def test_bad_sde_and_flag_arguments_are_named_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make(ExactGaussianField())


@pytest.mark.parametrize("kwargs", [{"prediction": "score", "sample_eps": 0.6}, {"interpolant": "vp", "sample_eps": 1.0},
                                    {"mode": "sde", "sample_eps": 0.5, "last_step": None}])
def test_a_margin_that_empties_the_time_interval_is_named_before_any_step(kwargs):
    # sample_eps = 0.6 integrated from t0 = 0.6 back to t1 = 0.4 and returned that, silently.
    calls = []
    field = ExactGaussianField(prediction=kwargs.get("prediction", "velocity"))
    sampler = FlowSampler(lambda x, t: calls.append(1) or field(x, t), **kwargs)
    with pytest.raises(ValueError, match=r"^FlowSampler.sample: the time interval \[t0, t1\] = .* is empty; sample_eps="):
        sampler.sample(dim=2, n_samples=4, n_steps=2)
    assert not calls


@pytest.mark.parametrize("mode", ["ode", "sde"])
@pytest.mark.parametrize("out", [lambda x: x[:, :1], lambda x: x[0]], ids=["(B, 1)", "(D,)"])
def test_a_model_output_not_shaped_like_x_is_named(mode, out):
    # Both broadcast against x (B, 2) into a wrong drift, with no error.
    sampler = FlowSampler(lambda x, t: out(x), mode, sample_eps=1e-3 if mode == "sde" else 0.0)
    with pytest.raises(ValueError, match=r"^FlowSampler.sample: the model returned shape \((8, 1|2,)\) for x of shape \(8, 2\)"):
        sampler.sample(torch.zeros(8, 2), n_steps=2)
