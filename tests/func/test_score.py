import pytest
import torch

from nnh.func import VESDE, VPSDE, batch_time, denoising_score_matching, dsm_loss, model_score


class Recorder:
    """A network returning sigma(t) * (-x), which records the times it is called with."""

    def __init__(self, sde):
        self.sde, self.times = sde, []

    def __call__(self, t, x, *args):
        self.times.append(t)
        return -self.sde.sigma(t)[:, None] * x * (1 + sum(args))


@pytest.mark.parametrize("t", [0.3, torch.tensor(0.3), torch.full((4,), 0.3)], ids=["float", "0-d", "(B,)"])
def test_model_score_divides_by_sigma_and_gives_the_network_batched_times(t):
    sde, x = VPSDE(), torch.randn(4, 2)
    net = Recorder(sde)
    torch.testing.assert_close(model_score(net, sde, t, x), -x)
    torch.testing.assert_close(model_score(net, sde, t, x, 2.0), -3 * x)  # conditioning reaches the network
    assert all(s.shape == (4,) for s in net.times)


def test_batch_time_refuses_a_mismatched_batch():
    with pytest.raises(ValueError, match=r"t of shape \(3,\) does not fit x of shape \(4, 2\)"):
        batch_time(torch.zeros(3), torch.zeros(4, 2))


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=repr)
def test_dsm_loss_is_zero_for_the_network_that_knows_the_noise(sde):
    # x_t = m x0 + sigma z, and sigma * score of p(x_t | x0) is -z: a network returning exactly
    # that has loss 0; a network returning 0 has loss sum(z^2) / B.
    torch.manual_seed(0)
    x0, z = torch.randn(8, 3), torch.randn(8, 3)
    t = torch.rand(8) * 0.9 + 0.05

    def oracle(tt, xt):
        mean, std = sde.marginal_prob(tt, x0)
        return -(xt - mean) / std

    assert dsm_loss(oracle, sde, x0, t, z).item() == pytest.approx(0.0, abs=1e-9)
    assert dsm_loss(lambda tt, xt: torch.zeros_like(xt), sde, x0, t, z).item() == pytest.approx(
        (z ** 2).sum().item() / 8, rel=1e-6)


def test_denoising_score_matching_draws_t_in_the_interval_and_z_standard_normal():
    sde = VPSDE(epsilon=0.2, T=2.0)
    x0 = torch.randn(5, 2)
    seen = []

    def net(t, x):
        seen.append(t)
        return torch.zeros_like(x)

    loss = denoising_score_matching(x0, sde, net, "cpu", generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = 0.2 + 1.8 * torch.rand(5, generator=g)
    z = torch.randn(5, 2, generator=g)
    torch.testing.assert_close(seen[0], t)
    assert loss.item() == pytest.approx((z ** 2).sum().item() / 5, rel=1e-6)


def test_batch_time_of_a_float_takes_the_dtype_of_x():
    x = torch.zeros(3, 2, dtype=torch.float64)
    t = batch_time(0.1, x)
    assert t.dtype == torch.float64 and t.shape == (3,)
    assert t.tolist() == [0.1] * 3  # 0.1 as a double, not a float32 rounding of it


def test_dsm_loss_passes_the_conditioning_to_the_network():
    # net(t, x, c) = -(1 + c) sigma(t) x: the residual at x_t = m x0 + sigma z is -(1 + c) sigma x_t + z.
    sde = VPSDE()
    x0, z = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    m, sigma = sde.mean_coeff(t)[:, None], sde.sigma(t)[:, None]
    xt = m * x0 + sigma * z
    by_hand = ((-3.0 * sigma * xt + z) ** 2).sum() / 4
    torch.testing.assert_close(dsm_loss(Recorder(sde), sde, x0, t, z, 2.0), by_hand, rtol=1e-12, atol=0)


def test_denoising_score_matching_draws_in_the_dtype_of_the_data():
    # float64 data: t and z are float64 draws (torch.rand / torch.randn in float64 from the same seed).
    sde = VPSDE(epsilon=0.2, T=2.0)
    x0 = torch.randn(5, 2, dtype=torch.float64)
    seen = []

    def net(t, x):
        seen.append((t, x))
        return torch.zeros_like(x)

    loss = denoising_score_matching(x0, sde, net, "cpu", generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = 0.2 + 1.8 * torch.rand(5, generator=g, dtype=torch.float64)
    z = torch.randn(5, 2, generator=g, dtype=torch.float64)
    assert seen[0][0].dtype == torch.float64 and seen[0][1].dtype == torch.float64
    torch.testing.assert_close(seen[0][0], t, rtol=0, atol=0)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx((z ** 2).sum().item() / 5, rel=1e-12)


@pytest.mark.parametrize("out", [lambda x: x[:, :1], lambda x: x[0]], ids=["(B, 1)", "(D,)"])
def test_a_network_output_not_shaped_like_x_is_named(out):
    # Both broadcast against x (B, D): a wrong score, and a wrong loss, with no error.
    sde, x = VPSDE(), torch.randn(4, 2)
    net = lambda t, y: out(y)  # noqa: E731
    with pytest.raises(ValueError, match=r"model_score: the network returned shape \((4, 1|2,)\) for x of shape \(4, 2\)"):
        model_score(net, sde, 0.5, x)
    with pytest.raises(ValueError, match=r"dsm_loss: the network returned shape \((4, 1|2,)\) for x of shape \(4, 2\)"):
        dsm_loss(net, sde, x, torch.rand(4), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"dsm_loss: the network returned shape"):
        denoising_score_matching(x, sde, net)


def test_dsm_loss_refuses_noise_not_shaped_like_the_data():
    net = lambda t, y: -y  # noqa: E731
    with pytest.raises(ValueError, match=r"dsm_loss: z of shape \(4, 1\) does not fit x0 of shape \(4, 2\)"):
        dsm_loss(net, VPSDE(), torch.randn(4, 2), torch.rand(4), torch.randn(4, 1))


@pytest.mark.parametrize("x0,sde,error,match", [
    (torch.ones(4, 2, dtype=torch.long), VPSDE(), ValueError, r"x0 must be a floating-point tensor .* got a torch.int64"),
    ([[1.0, 2.0]], VPSDE(), ValueError, r"x0 must be a floating-point tensor .* got list"),
    (torch.tensor(1.0), VPSDE(), ValueError, r"x0 must be a floating-point tensor .* shape \(\)"),
    (torch.randn(4, 2), None, TypeError, r"sde=None must be an SDE"),
])
def test_denoising_score_matching_names_bad_data_and_sde(x0, sde, error, match):
    # Before: NotImplementedError from torch.rand on int64, AttributeError / IndexError.
    with pytest.raises(error, match=r"^denoising_score_matching: " + match):
        denoising_score_matching(x0, sde, lambda t, y: -y)
