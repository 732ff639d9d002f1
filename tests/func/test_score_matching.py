"""Score-matching losses against their closed forms on Gaussian data and a Gaussian energy; the
sliced loss with basis probes against the exact (Hyvarinen) objective, value and parameter
gradient; the probes."""

import math

import pytest
import torch

from nnh.func import VESDE, dsm_loss, hutchinson_probes
from nnh.func.score_matching import (
    denoising_score_matching_loss,
    energy_score,
    projection_probes,
    sliced_score_matching_loss,
)

D, S2, N = 3, 2.0, 20_000  # data N(0, S2 I) in D dimensions, N samples


def data(seed):
    return math.sqrt(S2) * torch.randn(N, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gaussian_energy(theta):
    """U(x) = |x|^2 / (2 theta): model score -x / theta."""
    return lambda x: 0.5 * (x * x).sum(1) / theta


def test_denoising_loss_matches_its_closed_form_and_is_minimal_at_the_noised_variance():
    # x~ = x + sigma xi, a = x~/theta - xi/sigma ~ N(0, v_a I) with v_a = S2/theta^2 + (sigma/theta - 1/sigma)^2,
    # so the per-sample loss is v_a chi2_D / 2: mean D v_a / 2, variance D v_a^2 / 2.
    sigma, x = 0.5, data(0)
    xi = torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for theta in (1.0, 2.25, 4.0):
        v_a = S2 / theta**2 + (sigma / theta - 1 / sigma) ** 2
        loss = denoising_score_matching_loss(gaussian_energy(theta), x, xi, sigma).item()
        assert abs(loss - D * v_a / 2) < 5 * math.sqrt(D * v_a**2 / 2 / N), (theta, loss, D * v_a / 2)
    # Common random numbers: the minimum sits at theta = S2 + sigma^2 = 2.25.
    losses = {t: denoising_score_matching_loss(gaussian_energy(t), x, xi, sigma).item() for t in (2.25 / 1.2, 2.25, 2.25 * 1.2)}
    assert losses[2.25] < min(losses[2.25 / 1.2], losses[2.25 * 1.2])


@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "sphere"])
def test_sliced_loss_matches_its_closed_form_and_is_minimal_at_the_data_variance(kind):
    # s = -x/theta, grad s = -I/theta: E[v^T grad(v.s)] = -D/theta (exact per probe for Rademacher and
    # sphere, |v|^2 = D), E[(v.s)^2]/2 = |x|^2 / (2 theta^2); the loss is D S2 / (2 theta^2) - D / theta,
    # minimised at theta = S2. Per-sample sd below that of one probe: sqrt(D^2 S2^2 / 2) / theta^2 (+ the
    # divergence term's D / theta * sqrt(2 / D) for Gaussian probes).
    x = data(2)
    probes = projection_probes(4, x, kind, torch.Generator().manual_seed(3))
    assert probes.shape == (4, N, D)
    if kind != "gaussian":
        torch.testing.assert_close((probes * probes).sum(-1), torch.full((4, N), float(D), dtype=torch.float64))
    for theta in (1.0, 2.0, 3.0):
        loss = sliced_score_matching_loss(gaussian_energy(theta), x, probes).item()
        expected = D * S2 / (2 * theta**2) - D / theta
        sd = math.sqrt(D**2 * S2**2 / 2) / theta**2 + (D / theta * math.sqrt(2 / D) if kind == "gaussian" else 0.0)
        assert abs(loss - expected) < 5 * sd / math.sqrt(N), (theta, loss, expected)
    losses = {t: sliced_score_matching_loss(gaussian_energy(t), x, probes).item() for t in (S2 / 1.2, S2, S2 * 1.2)}
    assert losses[S2] < min(losses[S2 / 1.2], losses[S2 * 1.2])


def test_with_basis_probes_the_sliced_loss_is_the_exact_objective_and_trains_through_the_divergence():
    # Probes sqrt(D) e_k, k = 1..D: the Hutchinson term is tr(grad s) exactly and the projection
    # term |s|^2 / 2, so the loss is Hyvarinen's mean_b [tr(grad_x s) + |s|^2 / 2] with s = -grad U.
    # Its gradient in the parameters matches only if the divergence term is differentiated too.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    energy = lambda x: net(x).squeeze(-1)  # noqa: E731
    x = torch.randn(6, 3, dtype=torch.float64)
    basis = (math.sqrt(3) * torch.eye(3, dtype=torch.float64)).unsqueeze(1).expand(3, 6, 3)
    loss = sliced_score_matching_loss(energy, x, basis)
    hessian = torch.func.vmap(torch.func.hessian(lambda y: net(y).squeeze(-1)))(x)
    score = -torch.func.vmap(torch.func.grad(lambda y: net(y).squeeze(-1)))(x)
    exact = (-torch.diagonal(hessian, dim1=-2, dim2=-1).sum(-1) + 0.5 * (score * score).sum(-1)).mean()
    torch.testing.assert_close(loss, exact)
    params = list(net.parameters())[:-1]  # the last bias does not change the score
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(exact, params)):
        torch.testing.assert_close(got, want)
    # The same holds for the score as energy_score builds it (autograd, create_graph).
    s, leaf = energy_score(energy, x)
    torch.testing.assert_close(s, score)
    assert torch.autograd.grad(s.sum(), net[0].weight)[0].abs().sum() > 0


def test_projection_probes_come_from_one_gaussian_draw_of_hutchinson_probes():
    # Gaussian probes are hutchinson_probes' own; Rademacher ones their signs (TorchEBM's draws, so
    # a seed gives TorchEBM's loss); sphere ones the same draw normalised to radius sqrt(D).
    x = torch.randn(5, 3)
    gaussian = hutchinson_probes(x, 4, "gaussian", torch.Generator().manual_seed(7))
    for kind, expected in (("gaussian", gaussian), ("rademacher", gaussian.sign()),
                           ("sphere", gaussian / gaussian.norm(dim=-1, keepdim=True) * math.sqrt(3))):
        torch.testing.assert_close(projection_probes(4, x, kind, torch.Generator().manual_seed(7)), expected)


def test_the_score_based_denoising_loss_is_two_sigma_squared_times_the_energy_one_at_one_level():
    # The relation the docstrings state: at one t of a VE SDE (m = 1), with net(t, x) = -sigma(t) grad U(x),
    # dsm_loss = 2 sigma^2 denoising_score_matching_loss for the same noise draws.
    sde, theta = VESDE(), 1.7
    x, z = data(4)[:256], torch.randn(256, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.full((256,), 0.3, dtype=torch.float64)
    sigma = sde.sigma(t)[0].item()
    net = lambda s, y: -sde.sigma(s)[:, None] * y / theta  # noqa: E731  -sigma grad U, U = |y|^2 / (2 theta)
    torch.testing.assert_close(dsm_loss(net, sde, x, t, z),
                               2 * sigma**2 * denoising_score_matching_loss(gaussian_energy(theta), x, z, sigma))


def test_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"probes must be \(K, \*x.shape\) = \(K, 4, 2\)"):
        sliced_score_matching_loss(lambda y: y.sum(1), x, torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="kind must be 'rademacher', 'gaussian' or 'sphere'"):
        projection_probes(2, x, "cube")
    with pytest.raises(ValueError, match=r"the energy must have shape \(4,\)"):
        denoising_score_matching_loss(lambda y: y, x, x, 0.1)
    with pytest.raises(ValueError, match="noise_scale must be finite and > 0, got 0.0"):
        denoising_score_matching_loss(lambda y: y.sum(1), x, x, 0.0)


def test_denoising_loss_names_an_infinite_scale_and_noise_not_shaped_like_x():
    # inf gave a NaN loss; (4, 1) noise broadcast into the loss of another perturbation.
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"^denoising_score_matching_loss: noise_scale must be finite and > 0, got inf"):
        denoising_score_matching_loss(lambda y: y.sum(1), x, x, math.inf)
    with pytest.raises(ValueError, match=r"^denoising_score_matching_loss: noise of shape \(4, 1\) does not fit x of shape \(4, 2\)"):
        denoising_score_matching_loss(lambda y: y.sum(1), x, torch.zeros(4, 1), 0.1)


def test_projection_probes_are_rademacher_by_default():
    x = torch.randn(5, 3)
    gaussian = hutchinson_probes(x, 4, "gaussian", torch.Generator().manual_seed(7))
    torch.testing.assert_close(projection_probes(4, x, generator=torch.Generator().manual_seed(7)), gaussian.sign())


def test_sphere_probes_of_a_multi_dimensional_event_are_normalised_over_the_last_dimension():
    # x (B, 2, 3): each row of 3 lies on the sphere of radius sqrt(3), the draw's direction kept.
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    gaussian = hutchinson_probes(x, 4, "gaussian", torch.Generator().manual_seed(7))
    probes = projection_probes(4, x, "sphere", torch.Generator().manual_seed(7))
    torch.testing.assert_close((probes * probes).sum(-1), torch.full((4, 5, 2), 3.0, dtype=torch.float64))
    torch.testing.assert_close(probes, gaussian / gaussian.norm(dim=-1, keepdim=True) * math.sqrt(3))
