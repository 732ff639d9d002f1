"""The argument shapes shared with TorchEBM: constructor order, both sample() call forms,
conditioning through y / model_kwargs, generators, diagnostics keys and errors."""

import pytest
import torch

import nnh
from nnh import MALA, DoubleWellModel, GaussianModel, HamiltonianMonteCarlo, HarmonicModel, LangevinDynamics


class Counting(nnh.BaseModel):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        return 0.5 * (x * x).sum(1)

    def energy_and_gradient(self, x):
        self.calls += 1
        return self.forward(x), x.clone()


class Conditional(torch.nn.Module):
    """U(x; y) = |x - y|^2 / 2."""

    def forward(self, x, y):
        return 0.5 * ((x - y) ** 2).sum(1)


def test_positional_constructor_arguments_follow_torchebm():
    m = HarmonicModel()
    langevin = LangevinDynamics(m, 0.1, 0.5, 0.2, (-1.0, 1.0), torch.float64, "cpu", "heun")
    assert langevin.get_scheduled_value("step_size") == 0.1 and langevin.get_scheduled_value("noise_scale") == 0.5
    assert langevin.decay == 0.2 and langevin.clamp == (-1.0, 1.0)
    assert langevin.dtype == torch.float64 and langevin.device == torch.device("cpu")
    assert type(langevin.integrator) is nnh.HeunIntegrator
    hmc = HamiltonianMonteCarlo(m, 0.1, 5, 2.0, torch.float64, "cpu", "leapfrog")
    assert (hmc.n_leapfrog_steps, hmc.mass, hmc.dtype) == (5, 2.0, torch.float64)
    mala = MALA(m, 0.1, 0.5, torch.float64)
    assert mala.dtype == torch.float64
    assert LangevinDynamics(m).device is None  # None until set


def test_both_call_forms():
    model = Counting()
    sampler = LangevinDynamics(model, 0.1)
    out = sampler.sample(None, 2, 5, 3)  # TorchEBM's positional order: x, dim, n_steps, n_samples
    assert out.shape == (3, 2) and model.calls == 1 + 5
    assert sampler.sample(64, 2, n_steps=2).shape == (64, 2)  # N chains, event shape 2
    shaped = LangevinDynamics(HarmonicModel(), 0.1, dim=(2, 3), n_steps=2)
    assert shaped.sample(7, "cpu").shape == (7, 2, 3)  # the Sampler ABC's (N, device)
    assert sampler.sample(N=4, device=torch.device("cpu"), dim=1, n_steps=2).shape == (4, 1)
    x0 = torch.zeros(5, 2, dtype=torch.float64)
    assert sampler.sample(x0, n_steps=2).dtype == torch.float32  # the sampler's dtype


def test_generator_makes_a_call_reproducible():
    sampler = HamiltonianMonteCarlo(DoubleWellModel(), 0.05, 3)
    a = sampler.sample(dim=2, n_samples=6, n_steps=4, generator=torch.Generator().manual_seed(3))
    b = sampler.sample(dim=2, n_samples=6, n_steps=4, generator=torch.Generator().manual_seed(3))
    c = sampler.sample(dim=2, n_samples=6, n_steps=4, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("make", [
    lambda m: LangevinDynamics(m, 0.2, noise_scale=0.0),
    lambda m: MALA(m, 0.2),
    lambda m: HamiltonianMonteCarlo(m, 0.1, 5),
])
def test_conditioning_reaches_the_model(make):
    # U(x; y) = |x - y|^2 / 2: each chain samples N(y_b, I) (a point mass at y_b with noise_scale
    # 0), so x - y has mean 0 over n chains, within 5 / sqrt(n); without y the model cannot run.
    # MALA (h = 0.2) and HMC (eps L = 0.5) contract the start's offset of 3 to below 1e-3 in 100 steps.
    n = 4000
    y = torch.tensor([[3.0, -1.0], [-2.0, 4.0]]).repeat(n // 2, 1)
    sampler = make(Conditional())
    for kwargs in ({"y": y}, {"model_kwargs": {"y": y}}):
        out = sampler.sample(x=torch.zeros(n, 2), n_steps=100, generator=torch.Generator().manual_seed(0), **kwargs)
        assert ((out - y).mean(0).abs() < 5 / n**0.5).all(), (out - y).mean(0)
    with pytest.raises(ValueError, match=r"y was passed as y=... and in model_kwargs\['y'\]"):
        sampler.sample(x=torch.zeros(2, 2), n_steps=1, y=y[:2], model_kwargs={"y": y[:2]})


def test_conditioning_uses_a_base_model_with_model_kwargs():
    class Shifted(nnh.BaseModel):
        def forward(self, x, y=None):
            return 0.5 * ((x - y) ** 2).sum(1)

    y = torch.full((4, 1), 2.0)
    out = LangevinDynamics(Shifted(), 0.3, noise_scale=0.0).sample(x=torch.zeros(4, 1), n_steps=100, y=y)
    torch.testing.assert_close(out, y)


@pytest.mark.parametrize("make, keys", [
    (lambda m: LangevinDynamics(m, 0.01), {"mean", "var", "energy"}),
    (lambda m: MALA(m, 0.01), {"mean", "var", "energy", "acceptance_rate"}),
    (lambda m: HamiltonianMonteCarlo(m, 0.05, 3), {"mean", "var", "energy", "acceptance_rate"}),
])
def test_diagnostics_keys_are_exactly_torchebms(make, keys):
    sampler = make(DoubleWellModel())
    _, diag = sampler.sample(dim=2, n_samples=8, n_steps=6, thin=2, return_diagnostics=True)
    assert set(diag) == keys
    assert sampler.n_nonfinite.shape == (3,) and sampler.n_nonfinite.dtype == torch.int64


def test_value_errors_where_torchebm_raises_them():
    with pytest.raises(ValueError, match="unknown event shape; pass x=..., or dim="):
        LangevinDynamics(DoubleWellModel(), 0.1).sample(n_steps=2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        HamiltonianMonteCarlo(GaussianModel(torch.zeros(2), torch.eye(2)), 0.1, 5).sample(x=torch.zeros(4, 3), n_steps=2)
    with pytest.raises(ValueError, match="x must be a tensor of shape"):
        LangevinDynamics(DoubleWellModel(), 0.1).sample([[0.0, 1.0]])
    with pytest.raises(ValueError, match="got 5 chains positionally and N=4"):
        LangevinDynamics(DoubleWellModel(), 0.1).sample(5, 2, N=4)
    with pytest.raises(TypeError, match="model_kwargs must be a dict"):
        LangevinDynamics(DoubleWellModel(), 0.1).sample(x=torch.zeros(1, 2), model_kwargs=[1])


@pytest.mark.parametrize("call,error,match", [
    # An empty batch failed in a reshape deep in the first step.
    (lambda s: s.sample(torch.zeros(0, 2), n_steps=2), ValueError,
     r"^LangevinDynamics.sample: x must be a tensor of shape \(B, \*event_shape\) with B >= 1 chains, got shape \(0, 2\)"),
    # Non-bool flags were read by truth value; a generator that is not one was ignored when x was given.
    (lambda s: s.sample(torch.zeros(4, 2), n_steps=2, return_trajectory="no"), TypeError,
     r"^LangevinDynamics.sample: return_trajectory='no' must be True or False"),
    (lambda s: s.sample(torch.zeros(4, 2), n_steps=2, reset_schedulers=None), TypeError,
     r"^LangevinDynamics.sample: reset_schedulers=None must be True or False"),
    (lambda s: s.sample(torch.zeros(4, 2), n_steps=2, generator=0), TypeError,
     r"^LangevinDynamics.sample: generator=0 must be a torch.Generator or None"),
    # Device strings failed inside torch.device, without the argument's name.
    (lambda s: s.sample(torch.zeros(4, 2), n_steps=2, device="gpu"), ValueError,
     r"^LangevinDynamics.sample: device='gpu' is not a device name"),
    (lambda s: s.to(device="gpu"), ValueError, r"^LangevinDynamics.to: device='gpu' is not a device name"),
    (lambda s: LangevinDynamics(DoubleWellModel(), 0.1, device="gpu"), ValueError,
     r"^LangevinDynamics: device='gpu' is not a device name"),
    (lambda s: nnh.DenoisingScoreMatching(DoubleWellModel(), device="gpu"), ValueError,
     r"^DenoisingScoreMatching: device='gpu' is not a device name"),
    # to(dtype="float32") stored the string, and the next sample failed in torch.randn.
    (lambda s: s.to(dtype="float32"), ValueError, r"^LangevinDynamics.to: dtype must be a floating torch.dtype"),
])
def test_bad_sample_to_and_device_arguments_are_named_before_any_step(call, error, match):
    sampler = LangevinDynamics(Counting(), 0.1)
    with pytest.raises(error, match=match):
        call(sampler)
    assert sampler.model.calls == 0 and sampler.device is None and sampler.dtype == torch.float32  # nothing changed
