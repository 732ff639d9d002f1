"""DenoisingScoreMatching and SlicedScoreMatching: the classes over the pure losses, training a
Gaussian energy to its analytic optimum, schedulers, regularisation, conditioning and errors."""

import pytest
import torch
from torch import nn

import nnh
from nnh import DenoisingScoreMatching, LinearScheduler, SlicedScoreMatching
from nnh.func.score_matching import denoising_score_matching_loss, projection_probes, sliced_score_matching_loss

COV = torch.tensor([[2.0, 0.6], [0.6, 0.5]])


class QuadraticEnergy(nnh.BaseModel):
    """U(x) = x^T A x / 2 with A = L L^T, L lower triangular with a positive diagonal (learnable)."""

    def __init__(self):
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(3))

    def precision(self):
        a, b, c = self.raw
        chol = torch.stack([torch.stack([a.exp(), torch.zeros(())]), torch.stack([b, c.exp()])])
        return chol @ chol.T

    def forward(self, x, shift=None):
        if shift is not None:
            x = x - shift
        return 0.5 * ((x @ self.precision()) * x).sum(1)


def train(loss_fn, model, steps=300):
    gen = torch.Generator().manual_seed(0)
    chol = torch.linalg.cholesky(COV)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for k in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 0.05 * (1 - k / steps) + 1e-3  # anneal: the last iterates average the noise
        x = torch.randn(1024, 2, generator=gen) @ chol.T
        optimizer.zero_grad()
        loss_fn(x, generator=gen).backward()
        optimizer.step()
    return model.precision().detach()


@pytest.mark.parametrize("loss, target", [
    # Sliced score matching recovers the data precision; denoising that of the data plus noise.
    (lambda m: SlicedScoreMatching(m, n_projections=2), torch.linalg.inv(COV)),
    (lambda m: DenoisingScoreMatching(m, noise_scale=0.3), torch.linalg.inv(COV + 0.09 * torch.eye(2))),
])
def test_training_a_gaussian_energy_reaches_the_analytic_optimum(loss, target):
    model = QuadraticEnergy()
    precision = train(loss(model), model)
    # Measured errors after 300 annealed Adam steps: <= 0.022 per entry. The bound, 0.1, is far
    # below the 0.73 that separates the two optima.
    torch.testing.assert_close(precision, target, atol=0.1, rtol=0)


def test_classes_compute_the_pure_losses():
    model, x = QuadraticEnergy(), torch.randn(64, 2)
    dsm = DenoisingScoreMatching(model, 0.2)
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(dsm(x, generator=torch.Generator().manual_seed(1)),
                               denoising_score_matching_loss(model, x, xi, 0.2))
    ssm = SlicedScoreMatching(model, 3, "gaussian")
    probes = projection_probes(3, x, "gaussian", torch.Generator().manual_seed(2))
    torch.testing.assert_close(ssm(x, generator=torch.Generator().manual_seed(2)), sliced_score_matching_loss(model, x, probes))
    functional = SlicedScoreMatching(model, 3, "gaussian", use_autograd=False)
    torch.testing.assert_close(functional(x, generator=torch.Generator().manual_seed(2)), ssm(x, generator=torch.Generator().manual_seed(2)))


def test_regularisation_schedules_and_conditioning():
    model, x = QuadraticEnergy(), torch.randn(32, 2)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    base = DenoisingScoreMatching(model, 0.2)(x, generator=gen())
    grad = x @ model.precision()
    regularised = DenoisingScoreMatching(model, 0.2, regularization_strength=0.5)(x, generator=gen())
    torch.testing.assert_close(regularised, base + 0.5 * (grad * grad).sum(1).mean())
    custom = DenoisingScoreMatching(model, 0.2, 0.5, custom_regularization=lambda x, m: torch.tensor(2.0))
    torch.testing.assert_close(custom(x, generator=gen()), base + 1.0)
    scheduled = DenoisingScoreMatching(model, LinearScheduler(0.4, 0.2, 2))
    assert scheduled.noise_scale == 0.4
    scheduled.step_schedulers()
    scheduled.step_schedulers()
    torch.testing.assert_close(scheduled(x, generator=gen()), base)  # sigma 0.2 after two steps
    shift = torch.full((32, 2), 3.0)  # U(x; shift) = U(x - shift): the same loss on shifted data
    for cls in (DenoisingScoreMatching, SlicedScoreMatching):
        loss_fn = cls(model)
        torch.testing.assert_close(loss_fn(x + shift, model_kwargs={"shift": shift}, generator=gen()),
                                   loss_fn(x, generator=gen()))
    torch.testing.assert_close(DenoisingScoreMatching(model).compute_score(x), grad)  # grad U, TorchEBM's convention


def test_errors():
    with pytest.raises(ValueError, match="projection_type must be 'rademacher', 'gaussian' or 'sphere', got 'cube'"):
        SlicedScoreMatching(QuadraticEnergy(), projection_type="cube")
    with pytest.raises(ValueError, match="n_projections must be an int >= 1"):
        SlicedScoreMatching(QuadraticEnergy(), 0)
    with pytest.raises(ValueError, match="noise_scale must be finite and > 0"):
        DenoisingScoreMatching(QuadraticEnergy(), 0.0)


@pytest.mark.parametrize("cls", [DenoisingScoreMatching, SlicedScoreMatching])
@pytest.mark.parametrize("x,got", [([[0.0, 1.0]], "got list"), (torch.tensor(1.0), r"got shape \(\)"),
                                   (torch.zeros(0, 2), r"got shape \(0, 2\)")])
def test_a_batch_that_is_not_b_by_event_is_named(cls, x, got):
    # AttributeError ('list' object has no attribute 'to') or IndexError before.
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: x must be a tensor of shape \(B, \*event_shape\) with B >= 1, {got}"):
        cls(QuadraticEnergy())(x)


@pytest.mark.parametrize("cls", [DenoisingScoreMatching, SlicedScoreMatching])
def test_use_autograd_must_be_a_bool(cls):
    # "no" selected the autograd path by truth value.
    with pytest.raises(TypeError, match=rf"^{cls.__name__}: use_autograd='no' must be True or False"):
        cls(QuadraticEnergy(), use_autograd="no")
