"""Energy models: analytic gradients against autograd, conventions, bad input."""

import math

import pytest
import torch

from nnh import (
    AckleyModel,
    BaseModel,
    BoothModel,
    DoubleWellModel,
    GaussianModel,
    HarmonicModel,
    HimmelblauModel,
    RastriginModel,
    RosenbrockModel,
    StyblinskiTangModel,
)
from nnh.func.mcmc import autograd_energy_and_grad

MODELS = [
    DoubleWellModel(barrier_height=2.0, b=1.0),
    DoubleWellModel(barrier_height=0.5, b=1.5),
    GaussianModel(torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64),
                  torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=torch.float64)),
    HarmonicModel(k=3.0),
    RosenbrockModel(a=1.0, b=100.0),
    AckleyModel(),
    RastriginModel(a=10.0),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_analytic_gradient_matches_autograd(model):
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    energy, grad = model.energy_and_gradient(x)
    ref_energy, ref_grad = autograd_energy_and_grad(model.forward)(x)
    torch.testing.assert_close(energy, ref_energy)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(model.gradient(x), ref_grad)
    assert energy.shape == (16,)


def test_formulas_at_known_points():
    assert DoubleWellModel(2.0, 1.0)(torch.tensor([[0.0, 1.0]])).item() == pytest.approx(2.0)  # h (0 - 1)^2
    assert RosenbrockModel()(torch.tensor([[1.0, 1.0, 1.0]])).item() == 0.0
    assert RastriginModel()(torch.zeros(1, 4)).item() == 0.0
    assert AckleyModel()(torch.zeros(1, 2)).item() == pytest.approx(0.0, abs=1e-5)
    assert HarmonicModel(2.0)(torch.tensor([1.0, 2.0])).item() == pytest.approx(5.0)  # 1-D input is one point


def test_ackley_gradient_is_finite_at_its_minimum():
    zero = torch.zeros(3, 2)
    assert torch.isfinite(AckleyModel().gradient(zero)).all()
    assert torch.isfinite(autograd_energy_and_grad(AckleyModel())(zero)[1]).all()
    assert (AckleyModel().gradient(zero) == 0).all()


def test_any_event_shape_for_elementwise_energies():
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    for model in (DoubleWellModel(), HarmonicModel(), RastriginModel(), AckleyModel()):
        e, g = model.energy_and_gradient(x)
        assert e.shape == (4,) and g.shape == x.shape
        torch.testing.assert_close(g, autograd_energy_and_grad(model.forward)(x)[1])


def test_base_model_default_gradient_is_autograd():
    class Quartic(BaseModel):
        def forward(self, x):
            return (x**4).sum(-1)

    x = torch.randn(5, 2)
    e, g = Quartic().energy_and_gradient(x)
    torch.testing.assert_close(g, 4 * x**3)
    assert not g.requires_grad


def test_gaussian_errors():
    with pytest.raises(ValueError, match="mean must be 1-D"):
        GaussianModel(torch.zeros(2, 2), torch.eye(2))
    with pytest.raises(ValueError, match=r"cov must be \(2, 2\)"):
        GaussianModel(torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match="symmetric positive definite"):
        GaussianModel(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    assert math.isclose(GaussianModel(torch.zeros(2), torch.eye(2))(torch.ones(1, 2)).item(), 1.0)


TWO_D = [BoothModel(), HimmelblauModel(), StyblinskiTangModel()]


@pytest.mark.parametrize("model", TWO_D, ids=lambda m: type(m).__name__)
def test_new_analytic_gradients_match_autograd(model):
    x = 3.0 * torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    energy, grad = model.energy_and_gradient(x)
    ref_energy, ref_grad = autograd_energy_and_grad(model.forward)(x)
    torch.testing.assert_close(energy, ref_energy)
    torch.testing.assert_close(grad, ref_grad)
    assert energy.shape == (16,)


def test_new_models_at_their_minima():
    booth, himmelblau, tang = BoothModel(), HimmelblauModel(), StyblinskiTangModel()
    for model, point, value in ((booth, [1.0, 3.0], 0.0), (himmelblau, [3.0, 2.0], 0.0),
                                (himmelblau, [-2.805118, 3.131312], 0.0), (tang, [-2.903534, -2.903534], -78.33234)):
        x = torch.tensor([point], dtype=torch.float64)
        energy, grad = model.energy_and_gradient(x)
        assert energy.item() == pytest.approx(value, abs=1e-4)
        assert grad.abs().max().item() < 1e-4
    # Hand-computed values away from the minima.
    assert booth(torch.tensor([[0.0, 0.0]])).item() == pytest.approx(74.0)  # 49 + 25
    assert himmelblau(torch.tensor([[0.0, 0.0]])).item() == pytest.approx(170.0)  # 121 + 49
    assert tang(torch.tensor([[1.0, 2.0, 0.0]])).item() == pytest.approx(0.5 * (-10.0 - 38.0))


def test_two_dimensional_models_refuse_other_widths():
    with pytest.raises(ValueError, match=r"BoothModel: x must be \(B, 2\), got shape \(4, 3\)"):
        BoothModel()(torch.zeros(4, 3))


def test_dtype_and_device_of_models():
    # BaseModel(dtype=None, device=None): None is the default dtype (float32 here) at construction.
    assert BaseModel.__init__.__defaults__ == (None, None)
    assert DoubleWellModel(2.0, 1.0, torch.float64).dtype == torch.float64  # TorchEBM's positional order
    assert HarmonicModel().dtype == torch.float32 and HarmonicModel().device == torch.device("cpu")
    gaussian = GaussianModel(torch.zeros(2), torch.eye(2), dtype=torch.float64)
    assert gaussian.dtype == torch.float64 and gaussian.mean.dtype == torch.float64


def test_gaussian_refuses_a_state_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\) to match the mean, got \(4, 3\)"):
        GaussianModel(torch.zeros(2), torch.eye(2))(torch.zeros(4, 3))


class Conditional(BaseModel):
    """U(x; y) = |x - y|^2 / 2: the gradient x - y needs the condition."""

    def forward(self, x, y=None):
        return 0.5 * ((x - y) ** 2).sum(1)


def test_conditional_gradient_through_model_kwargs():
    x, y = torch.randn(5, 2), torch.randn(5, 2)
    torch.testing.assert_close(Conditional().gradient(x, model_kwargs={"y": y}), x - y)
    energy, _ = Conditional().energy_and_gradient(x, {"y": y})
    torch.testing.assert_close(energy, 0.5 * ((x - y) ** 2).sum(1))
