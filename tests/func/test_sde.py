import math
import re

import pytest
import torch

from nnh.func import VESDE, VPSDE, SubVPSDE, decode_value, encode_value
from nnh.func.sde import as_time

F64 = torch.float64
# Built inside each test (not at collection), so that a test runs the constructor it checks.
ALL = {"VPSDE()": VPSDE, "SubVPSDE()": SubVPSDE, "VESDE()": VESDE,
       "VPSDE(0.5, 8.0, T=2.0)": lambda: VPSDE(beta_min=0.5, beta_max=8.0, T=2.0),
       "VESDE(0.1, 20.0, T=3.0)": lambda: VESDE(0.1, 20.0, T=3.0)}


@pytest.mark.parametrize("t", [torch.tensor(0.5, dtype=F64), 0.5], ids=["float64 t", "float t"])
def test_closed_forms_at_one_time(t):
    # Song et al. 2021, eqs. 29-33, evaluated by hand at t = 0.5 (T = 1). A Python float t takes
    # the dtype of x (float64 here), so the coefficients against x are float64-exact either way.
    B = 0.1 * 0.5 + (20.0 - 0.1) * 0.25 / 2  # integral of beta from 0 to 0.5
    vp = VPSDE()
    t64 = torch.tensor(0.5, dtype=F64)
    assert vp.mean_coeff(t64).item() == pytest.approx(math.exp(-B / 2), rel=1e-12)
    assert vp.sigma(t64).item() == pytest.approx(math.sqrt(1 - math.exp(-B)), rel=1e-12)
    x = torch.tensor([[2.0]], dtype=F64)
    results = {}
    results["vp drift"] = (vp.drift(t, x), -0.5 * (0.1 + 19.9 * 0.5) * 2.0)
    results["vp diffusion"] = (vp.diffusion(t, x), math.sqrt(0.1 + 19.9 * 0.5))
    mean, std = vp.marginal_prob(t, x)
    results["vp mean"] = (mean, math.exp(-B / 2) * 2.0)
    results["vp std"] = (std, math.sqrt(1 - math.exp(-B)))
    sub = SubVPSDE()
    assert sub.sigma(t64).item() == pytest.approx(1 - math.exp(-B), rel=1e-12)
    results["subvp diffusion"] = (sub.diffusion(t, x), math.sqrt((0.1 + 19.9 * 0.5) * (1 - math.exp(-2 * B))))
    results["subvp std"] = (sub.marginal_prob(t, x)[1], 1 - math.exp(-B))
    ve = VESDE()
    assert ve.sigma(t64).item() == pytest.approx(0.01 * 5000 ** 0.5, rel=1e-12)
    results["ve diffusion"] = (ve.diffusion(t, x), 0.01 * 5000 ** 0.5 * math.sqrt(2 * math.log(5000)))
    results["ve std"] = (ve.marginal_prob(t, x)[1], 0.01 * 5000 ** 0.5)
    assert ve.drift(t, x).item() == 0.0 and ve.marginal_prob(t, x)[0].item() == 2.0
    for name, (got, want) in results.items():
        assert got.dtype == F64, name
        assert got.item() == pytest.approx(want, rel=1e-12), name


def test_as_time_takes_the_dtype_of_like():
    x = torch.zeros(2, dtype=F64)
    assert as_time(0.1, x).dtype == F64 and as_time(0.1, x).item() == 0.1  # 0.1 exactly as a double
    assert as_time(0.1).dtype == torch.float32
    t = torch.tensor(0.25)
    assert as_time(t, x) is t


def test_a_float_time_against_integer_data_stays_a_float():
    # as_time(0.5, x) took x's int64 and truncated t to 0: mean x, std 0, silently.
    x = torch.ones(4, 2, dtype=torch.long)
    assert as_time(0.5, x).dtype == torch.get_default_dtype() and as_time(0.5, x).item() == 0.5
    mean, std = VPSDE().marginal_prob(0.5, x)
    want_mean, want_std = VPSDE().marginal_prob(0.5, x.float())
    assert torch.equal(mean, want_mean) and torch.equal(std, want_std) and std.item() > 0


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
@pytest.mark.parametrize("t", [torch.rand(3), torch.rand(4, 2)], ids=["(3,)", "(4, 2)"])
def test_a_time_that_does_not_fit_the_batch_is_named(make, t):
    # A (3,) t against 4 samples broadcast into a (3, 1) diffusion, or failed inside torch.
    sde, x = make(), torch.randn(4, 2)
    match = rf"t of shape {re.escape(str(tuple(t.shape)))} does not fit x of shape \(4, 2\)"
    for call in (sde.marginal_prob, sde.diffusion) + ((sde.drift,) if isinstance(sde, VPSDE) else ()):
        with pytest.raises(ValueError, match=match):
            call(t, x)


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_marginals_solve_the_moment_equations(make):
    sde = make()
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


@pytest.mark.parametrize("make", list(ALL.values())[:3], ids=list(ALL.keys())[:3])
def test_time_as_float_0d_or_batch_broadcasts_the_same(make):
    sde = make()
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


PRIORS = {"VPSDE()": (VPSDE, 1.0), "SubVPSDE()": (SubVPSDE, 1.0), "VESDE(sigma_max=50.0)": (lambda: VESDE(sigma_max=50.0), 50.0)}


@pytest.mark.parametrize("make,std", PRIORS.values(), ids=PRIORS.keys())
def test_prior_is_one_distribution_over_a_sample(make, std):
    sde = make()
    prior = sde.prior((3, 4))
    x = prior.sample((7,))
    assert x.shape == (7, 3, 4)
    expected = torch.distributions.Normal(0.0, std).log_prob(x).sum((1, 2))
    torch.testing.assert_close(prior.log_prob(x), expected)
    assert prior.stddev.flatten()[0].item() == std


@pytest.mark.parametrize("make,std", PRIORS.values(), ids=PRIORS.keys())
def test_prior_in_float64_is_float64_exact(make, std):
    # log N(x; 0, std^2) = -x^2 / (2 std^2) - log(std) - log(2 pi) / 2 per dimension, by hand in float64.
    prior = make().prior((3, 4), dtype=F64)
    x = prior.sample((7,))
    assert x.dtype == F64 and prior.stddev.dtype == F64
    by_hand = (-x * x / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).sum((1, 2))
    torch.testing.assert_close(prior.log_prob(x), by_hand, rtol=1e-14, atol=0)


def test_prior_log_prob_of_a_non_finite_point_is_nan_not_an_error():
    # The prior does not validate its arguments: a likelihood solve that diverged gets NaN back, and
    # no check runs per call.
    prior = VESDE().prior((2,))
    assert torch.isnan(prior.log_prob(torch.tensor([float("nan"), 0.0]))).item()
    assert prior.log_prob(torch.tensor([float("inf"), 0.0])).item() == -math.inf


@pytest.mark.parametrize("make,match", [
    (lambda: VPSDE(beta_min=-1.0), "beta_min=-1.0"),
    (lambda: VPSDE(beta_min=1.0, beta_max=0.5), "beta_max=0.5"),
    (lambda: VESDE(sigma_min=0.0), "sigma_min=0.0"),
    (lambda: VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_max=1.0"),
    (lambda: SubVPSDE(T=0.0), "^SubVPSDE: T=0.0 must be a finite number > 0"),
    (lambda: VPSDE(T=-1.0), "^VPSDE: T=-1.0 must be a finite number > 0"),
    (lambda: VESDE(T=True), "^VESDE: T=True must be a finite number > 0"),
    (lambda: VPSDE(T="1"), "^VPSDE: T='1' must be a finite number > 0"),
    (lambda: VPSDE(epsilon=1.0), r"^VPSDE: epsilon=1.0 must be a number in \[0, T=1.0\)"),
    (lambda: VESDE(epsilon=-0.1), r"^VESDE: epsilon=-0.1 must be a number in \[0, T=1.0\)"),
    (lambda: VPSDE(T=2.0, epsilon=True), r"^VPSDE: epsilon=True must be a number in \[0, T=2.0\)"),
    (lambda: VPSDE(beta_min=True), "beta_min=True must be a number >= 0"),
    (lambda: VPSDE(beta_max=True), "beta_max=True must be a finite number > 0 and >= beta_min"),
    (lambda: VESDE(sigma_min=True), "sigma_min=True must be a number > 0"),
    (lambda: VESDE(sigma_max=True), "sigma_max=True must be a finite number > sigma_min"),
    # Infinite ends, and a VP SDE whose beta is 0 everywhere (sigma(t) = 0, every score a 0 / 0).
    (lambda: VPSDE(beta_max=math.inf), "^VPSDE: beta_max=inf must be a finite number > 0"),
    (lambda: SubVPSDE(beta_min=0.0, beta_max=0.0), "^SubVPSDE: beta_max=0.0 must be a finite number > 0"),
    (lambda: VPSDE(T=math.inf), "^VPSDE: T=inf must be a finite number > 0"),
    (lambda: VESDE(sigma_max=math.inf), "^VESDE: sigma_max=inf must be a finite number > sigma_min"),
])
def test_bad_constructor_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_edges_of_the_allowed_arguments_are_allowed():
    # epsilon = 0 (sampling down to t = 0), beta_min = 0, and beta_max = beta_min (a constant beta).
    assert VPSDE(epsilon=0.0).epsilon == 0.0 and VESDE(epsilon=0).epsilon == 0.0
    t = torch.tensor(0.5, dtype=F64)
    # beta(t) = 2 t: B(t) = t^2.
    assert VPSDE(beta_min=0.0, beta_max=2.0).mean_coeff(t).item() == pytest.approx(math.exp(-0.125), rel=1e-12)
    # beta(t) = 1: B(t) = t.
    assert VPSDE(beta_min=1.0, beta_max=1.0).sigma(t).item() == pytest.approx(math.sqrt(1 - math.exp(-0.5)), rel=1e-12)


def test_stored_as_import_path_and_arguments():
    sde = VESDE(0.05, sigma_max=25.0, epsilon=1e-3)
    data = encode_value(sde, "sde")
    assert data == {"__nnh__": "object", "path": "nnh.func.sde:VESDE", "args": [0.05],
                    "kwargs": {"sigma_max": 25.0, "epsilon": 1e-3}, "state": None}
    back = decode_value(data)
    assert type(back) is VESDE and (back.sigma_min, back.sigma_max, back.epsilon, back.T) == (0.05, 25.0, 1e-3, 1.0)
    assert repr(back) == "VESDE(0.05, sigma_max=25.0, epsilon=0.001)"


@pytest.mark.parametrize("shape", [5, (-1,), (0, 2), ("a",), (2.0,)])
def test_prior_names_a_shape_that_is_not_a_tuple_of_positive_ints(shape):
    # int: "'int' object is not iterable"; (-1,): torch's "Dimension size must be non-negative";
    # (0, 2): an empty distribution, silently.
    with pytest.raises(ValueError, match=r"^VESDE.prior: shape=.* must be a tuple of positive ints"):
        VESDE().prior(shape)
    assert VPSDE().prior(()).sample((3,)).shape == (3,) and VPSDE().prior(torch.Size([2])).event_shape == (2,)
