"""Custom `BaseSampler` subclasses in both styles: a `_transition`, or a whole `sample` loop.

The `sample`-only style is seed document 003's (`MyCustomSampler`, `SimpleLangevin`), run from
tests/stateful/seed_examples as the document writes them.
"""

import pathlib
import runpy

import pytest
import torch

from nnh import BaseSampler, ConstantScheduler, GaussianModel, HarmonicModel
from nnh.func.mcmc import langevin_step, standard_normal_like

EXAMPLES = pathlib.Path(__file__).parents[1] / "seed_examples"
MU = torch.tensor([2.0, -1.0])


def gaussian() -> GaussianModel:
    """U(x) = |x - mu|^2 / 2: gradient x - mu, target N(mu, I)."""
    return GaussianModel(MU, torch.eye(2))


def test_seed_003_my_custom_sampler_contracts_to_the_energy_minimum():
    cls = runpy.run_path(str(EXAMPLES / "custom_sampler_003.py"))["MyCustomSampler"]
    model = gaussian()
    sampler = cls(model, my_parameter=0.1)
    assert sampler.init_args == (model,) and sampler.init_kwargs == {"my_parameter": 0.1}
    assert sampler.get_scheduled_value("my_parameter") == 0.1
    torch.manual_seed(0)
    n = 2000
    x0 = torch.randn(n, 2)
    x = sampler.sample(x=x0, dim=2, n_steps=200, n_samples=n)
    # x' = x - 0.1 (x - mu) + 0.01 xi: an AR(1) around mu with coefficient 0.9, so after 200
    # steps the start is forgotten (0.9^200 ~ 7e-10) and x ~ N(mu, 1e-4 / (1 - 0.81) I).
    sd = (1e-4 / (1 - 0.81)) ** 0.5
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert model(x).mean() < 1e-3 < model(x0).mean()
    torch.testing.assert_close(x.mean(0), MU, atol=5 * sd / n**0.5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((2,), sd), rtol=0.1, atol=0)

    traj, diagnostics = sampler.sample(dim=2, n_steps=30, n_samples=5, return_trajectory=True, return_diagnostics=True)
    assert traj.shape == (5, 30, 2) and diagnostics.shape == (30, 3, 5, 2)
    # The scheduler clock: reset at the start of the call, stepped once per step.
    assert sampler.schedulers["my_parameter"].step_count == 30


def test_seed_003_simple_langevin_samples_the_gaussian():
    cls = runpy.run_path(str(EXAMPLES / "simple_langevin_003.py"))["SimpleLangevin"]
    h = 0.05
    sampler = cls(model=gaussian(), step_size=h, noise_scale=1.0)
    torch.manual_seed(1)
    n = 4000
    x = sampler.sample(x=torch.randn(n, 2), n_steps=400)
    # Unadjusted Langevin on N(mu, I): an AR(1) with coefficient 1 - h, stationary variance
    # 2h / (1 - (1 - h)^2) = 1 / (1 - h / 2); (1 - h)^400 ~ 1e-9 of the start remains.
    var = 1.0 / (1.0 - h / 2)
    assert x.shape == (n, 2)
    torch.testing.assert_close(x.mean(0), MU, atol=5 * (var / n) ** 0.5, rtol=0)
    # The variance of a sample variance is 2 var^2 / n.
    torch.testing.assert_close(x.var(0), torch.full((2,), var), atol=5 * var * (2 / n) ** 0.5, rtol=0)
    traj = sampler.sample(dim=2, n_samples=3, n_steps=7, return_trajectory=True)
    assert traj.shape == (3, 7, 2)


class TransitionOnly(BaseSampler):
    """The other style: one `_transition`; `BaseSampler.sample` runs the loop."""

    def __init__(self, model, step_size=0.01):
        super().__init__(model)
        self.register_scheduler("step_size", ConstantScheduler(step_size))

    def _transition(self, state, generator):
        noise = standard_normal_like(state.x, generator)
        return langevin_step(state, self._energy_and_grad, self.get_scheduled_value("step_size"), noise=noise)


def test_a_transition_subclass_gets_the_ready_sample():
    model = HarmonicModel()
    g = torch.Generator().manual_seed(3)
    x, diag = TransitionOnly(model, 0.1).sample(x=torch.full((8, 2), 3.0), n_steps=50, return_diagnostics=True, generator=g)
    assert x.shape == (8, 2) and diag["energy"].shape == (50,)
    assert diag["energy"][-1] < diag["energy"][0] / 5  # from U = 9 per chain towards E[U] = 1


class Neither(BaseSampler):
    pass


def test_a_subclass_with_neither_method_is_told_what_to_implement():
    model = HarmonicModel()
    sampler = Neither(model)  # constructible: save/load and the scheduler registry work
    assert sampler.save() == {"schedulers": {}}
    with pytest.raises(NotImplementedError, match=r"Neither implements neither _transition nor sample"):
        sampler.sample(x=torch.zeros(2, 2), n_steps=3)
