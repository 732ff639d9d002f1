import math

import pytest
import torch

from nnh.func import VESDE, VPSDE, SubVPSDE, decode_value, encode_value

F64 = torch.float64
ALL = [VPSDE(), SubVPSDE(), VESDE(), VPSDE(beta_min=0.5, beta_max=8.0, T=2.0), VESDE(0.1, 20.0, T=3.0)]


def test_closed_forms_at_one_time():
    # Song et al. 2021, eqs. 29-33, evaluated by hand at t = 0.5 (T = 1).
    t = torch.tensor(0.5, dtype=F64)
    B = 0.1 * 0.5 + (20.0 - 0.1) * 0.25 / 2  # integral of beta from 0 to 0.5
    vp = VPSDE()
    assert vp.mean_coeff(t).item() == pytest.approx(math.exp(-B / 2), rel=1e-12)
    assert vp.sigma(t).item() == pytest.approx(math.sqrt(1 - math.exp(-B)), rel=1e-12)
    x = torch.tensor([[2.0]], dtype=F64)
    assert vp.drift(t, x).item() == pytest.approx(-0.5 * (0.1 + 19.9 * 0.5) * 2.0, rel=1e-12)
    assert vp.diffusion(t, x).item() == pytest.approx(math.sqrt(0.1 + 19.9 * 0.5), rel=1e-12)
    sub = SubVPSDE()
    assert sub.sigma(t).item() == pytest.approx(1 - math.exp(-B), rel=1e-12)
    assert sub.diffusion(t, x).item() == pytest.approx(math.sqrt((0.1 + 19.9 * 0.5) * (1 - math.exp(-2 * B))), rel=1e-12)
    ve = VESDE()
    assert ve.sigma(t).item() == pytest.approx(0.01 * 5000 ** 0.5, rel=1e-12)
    assert ve.diffusion(t, x).item() == pytest.approx(0.01 * 5000 ** 0.5 * math.sqrt(2 * math.log(5000)), rel=1e-12)
    assert ve.drift(t, x).item() == 0.0 and ve.marginal_prob(t, x)[0].item() == 2.0


@pytest.mark.parametrize("sde", ALL, ids=repr)
def test_marginals_solve_the_moment_equations(sde):
    # For dx = f(t) x dt + g(t) dw the kernel N(m x0, s^2) obeys m' = f m and (s^2)' = 2 f s^2 + g^2
    # (VE: m = 1, f = 0). Checked by central differences in float64 on a grid over (0, T).
    t = torch.linspace(0.05, 0.95, 19, dtype=F64) * sde.T
    h = 1e-6 * sde.T
    one = torch.ones(len(t), 1, dtype=F64)
    f = sde.drift(t, one).squeeze(1)
    g2 = sde.diffusion(t, one).squeeze(1) ** 2
    m, s2 = sde.mean_coeff(t), sde.sigma(t) ** 2
    dm = (sde.mean_coeff(t + h) - sde.mean_coeff(t - h)) / (2 * h)
    ds2 = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(dm, f * m, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ds2, 2 * f * s2 + g2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("sde", ALL[:3], ids=repr)
def test_time_as_float_0d_or_batch_broadcasts_the_same(sde):
    x = torch.randn(4, 3, 5)
    ts = torch.tensor([0.1, 0.3, 0.3, 0.9])
    batched = (sde.drift(ts, x), sde.diffusion(ts, x), *sde.marginal_prob(ts, x))
    for i in range(4):
        for t in (float(ts[i]), ts[i]):
            single = (sde.drift(t, x[i:i + 1]), sde.diffusion(t, x[i:i + 1]), *sde.marginal_prob(t, x[i:i + 1]))
            for a, b in zip(batched, single):
                torch.testing.assert_close((a + 0 * x)[i], (b + 0 * x[i:i + 1])[0])
    assert sde.sigma(ts).shape == (4,) and sde.sigma(0.3).shape == ()
    assert sde.diffusion(ts, x).shape == (4, 1, 1) and sde.marginal_prob(ts, x)[0].shape == x.shape
    assert sde.drift(0.3, x).dtype == x.dtype


@pytest.mark.parametrize("sde,std", [(VPSDE(), 1.0), (SubVPSDE(), 1.0), (VESDE(sigma_max=50.0), 50.0)], ids=repr)
def test_prior_is_one_distribution_over_a_sample(sde, std):
    prior = sde.prior((3, 4))
    x = prior.sample((7,))
    assert x.shape == (7, 3, 4)
    expected = torch.distributions.Normal(0.0, std).log_prob(x).sum((1, 2))
    torch.testing.assert_close(prior.log_prob(x), expected)
    assert prior.stddev.flatten()[0].item() == std


@pytest.mark.parametrize("make,match", [
    (lambda: VPSDE(beta_min=-1.0), "beta_min=-1.0"),
    (lambda: VPSDE(beta_min=1.0, beta_max=0.5), "beta_max=0.5"),
    (lambda: VESDE(sigma_min=0.0), "sigma_min=0.0"),
    (lambda: VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_max=1.0"),
    (lambda: SubVPSDE(T=0.0), "T=0.0"),
    (lambda: VPSDE(epsilon=1.0), r"epsilon=1.0 must be a number in \[0, T=1.0\)"),
])
def test_bad_constructor_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_stored_as_import_path_and_arguments():
    sde = VESDE(0.05, sigma_max=25.0, epsilon=1e-3)
    data = encode_value(sde, "sde")
    assert data == {"__nnh__": "object", "path": "nnh.func.sde:VESDE", "args": [0.05],
                    "kwargs": {"sigma_max": 25.0, "epsilon": 1e-3}, "state": None}
    back = decode_value(data)
    assert type(back) is VESDE and (back.sigma_min, back.sigma_max, back.epsilon, back.T) == (0.05, 25.0, 1e-3, 1.0)
    assert repr(back) == "VESDE(0.05, sigma_max=25.0, epsilon=0.001)"
