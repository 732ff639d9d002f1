"""GradientDescentSampler and NesterovSampler: the sampler call shape, convergence to known
minima, diagnostics, schedulers and errors."""

import pytest
import torch

from nnh import BoothModel, GradientDescentSampler, HarmonicModel, LinearScheduler, NesterovSampler


def test_gradient_descent_sampler_follows_the_closed_form_and_records_energy_only():
    x0 = torch.tensor([[2.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    sampler = GradientDescentSampler(HarmonicModel(k=3.0), 0.1, torch.float64)
    out, diag = sampler.sample(x0, n_steps=10, return_diagnostics=True)
    torch.testing.assert_close(out, x0 * 0.7**10)
    assert set(diag) == {"energy"}
    expected = torch.stack([1.5 * ((x0 * 0.7 ** (k + 1)) ** 2).sum(1).mean() for k in range(10)])
    torch.testing.assert_close(diag["energy"], expected)


@pytest.mark.parametrize("cls, kwargs, steps", [
    (GradientDescentSampler, {"step_size": 0.02}, 400),
    (NesterovSampler, {"step_size": 0.02, "momentum": 0.9}, 150),
])
def test_descent_reaches_the_booth_minimum(cls, kwargs, steps):
    out = cls(BoothModel(), dtype=torch.float64, **kwargs).sample(dim=2, n_samples=16, n_steps=steps,
                                                                 generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.tensor([[1.0, 3.0]], dtype=torch.float64).expand(16, 2), atol=1e-4, rtol=0)


def test_nesterov_beats_gradient_descent_on_an_ill_conditioned_quadratic():
    # Condition number 100 (curvatures 1 and 100, step 1/100): after 100 steps gradient descent
    # has shrunk the slow coordinate by 0.99^100 = 0.37, Nesterov with mu = 0.9 far more.
    class Stretched(HarmonicModel):
        def energy_and_gradient(self, x):
            scale = torch.tensor([1.0, 100.0], dtype=x.dtype)
            return 0.5 * (scale * x * x).sum(1), scale * x

        def gradient(self, x):
            return self.energy_and_gradient(x)[1]

    x0 = torch.ones(1, 2, dtype=torch.float64)
    gd = GradientDescentSampler(Stretched(), 0.01, torch.float64).sample(x0, n_steps=100)
    nag = NesterovSampler(Stretched(), 0.01, 0.9, torch.float64).sample(x0, n_steps=100)
    assert gd[0, 0].item() == pytest.approx(0.99**100)
    assert abs(nag[0, 0].item()) < 0.05


def test_schedules_and_errors():
    sampler = GradientDescentSampler(HarmonicModel(), LinearScheduler(0.1, 0.05, 5))
    out = sampler.sample(torch.ones(1, 1), n_steps=5)
    expected = 1.0
    for k in range(5):
        expected *= 1 - (0.1 - 0.01 * k)
    assert out.item() == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        NesterovSampler(HarmonicModel(), 0.1, momentum=1.0)
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        GradientDescentSampler(HarmonicModel(), 0.0)
