"""conditioned_energy_and_grad: which (energy, gradient) pair a conditional energy supplies."""

import torch

from nnh.func.energy_grad import conditioned_energy_and_grad


class Conditional:
    """U(x; c) = |x - c|^2 / 2. Its energy_and_gradient returns a marked gradient (2x the true
    one) so that a test can tell it from autograd's."""

    def __init__(self, takes_model_kwargs: bool):
        self.calls = 0
        if takes_model_kwargs:
            self.energy_and_gradient = self._with_kwargs
        else:
            self.energy_and_gradient = self._without_kwargs

    def __call__(self, x, c):
        return 0.5 * ((x - c) ** 2).sum(1)

    def _with_kwargs(self, x, model_kwargs=None):
        self.calls += 1
        c = model_kwargs["c"]
        return self(x, c), 2 * (x - c)

    def _without_kwargs(self, x):
        self.calls += 1
        return 0.5 * (x * x).sum(1), 2 * x


def test_a_model_whose_energy_and_gradient_takes_model_kwargs_supplies_the_pair():
    model = Conditional(takes_model_kwargs=True)
    x, c = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[0.5, 0.5], [1.0, -1.0]])
    energy, grad = conditioned_energy_and_grad(model, {"c": c})(x)
    assert model.calls == 1
    torch.testing.assert_close(energy, 0.5 * ((x - c) ** 2).sum(1))
    torch.testing.assert_close(grad, 2 * (x - c))  # the model's own (marked) gradient


def test_a_model_whose_energy_and_gradient_ignores_model_kwargs_is_differentiated_with_the_condition():
    model = Conditional(takes_model_kwargs=False)
    x, c = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[0.5, 0.5], [1.0, -1.0]])
    energy, grad = conditioned_energy_and_grad(model, {"c": c})(x)
    assert model.calls == 0
    torch.testing.assert_close(energy, 0.5 * ((x - c) ** 2).sum(1))
    torch.testing.assert_close(grad, x - c)  # autograd of model(x, c=c)
