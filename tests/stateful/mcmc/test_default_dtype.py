"""The dtype a sampler or a loss takes when its constructor gets none: the model's (``model.dtype``,
else its first floating parameter or buffer, else the default dtype); the analytic models take
the default dtype. So a float64 energy gets float64 chains and losses, whether it is float64
because of ``torch.set_default_dtype`` or by ``.double()``, and an explicit dtype still wins."""

import contextlib

import pytest
import torch
from torch import nn

from nnh import (
    MALA,
    ContrastiveDivergence,
    DenoisingScoreMatching,
    DoubleWellModel,
    FlowSampler,
    GradientDescentSampler,
    HamiltonianMonteCarlo,
    HarmonicModel,
    LangevinDynamics,
    NesterovSampler,
    PersistentContrastiveDivergence,
    RiemannianManifoldHMC,
    SlicedScoreMatching,
)


class MLPEnergy(nn.Module):
    """U(x) = MLP(x), (B, 2) -> (B,), with parameters in the default dtype of its construction."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.SiLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


class MLPVelocity(nn.Module):
    """v(x, t) = MLP([x, t]), (B, 2) -> (B, 2), for FlowSampler."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], dim=1))


def identity_metric(x):
    return torch.eye(x.shape[1], dtype=x.dtype).expand(x.shape[0], -1, -1)


SAMPLERS = {
    "LangevinDynamics": lambda model: LangevinDynamics(model, 0.01),
    "MALA": lambda model: MALA(model, 0.01),
    "HamiltonianMonteCarlo": lambda model: HamiltonianMonteCarlo(model, 0.01, 2),
    "RiemannianManifoldHMC": lambda model: RiemannianManifoldHMC(model, identity_metric, 0.01, 2),
    "GradientDescentSampler": lambda model: GradientDescentSampler(model, 0.01),
    "NesterovSampler": lambda model: NesterovSampler(model, 0.01),
}

LOSSES = {
    "ContrastiveDivergence": lambda model: ContrastiveDivergence(model, LangevinDynamics(model, 0.01), k_steps=2),
    "PersistentContrastiveDivergence": lambda model: PersistentContrastiveDivergence(
        model, LangevinDynamics(model, 0.01), k_steps=2, buffer_size=16, init_steps=1),
    "DenoisingScoreMatching": lambda model: DenoisingScoreMatching(model, noise_scale=0.1),
    "SlicedScoreMatching": lambda model: SlicedScoreMatching(model),
}


@contextlib.contextmanager
def default_dtype(dtype):
    """``torch.set_default_dtype(dtype)`` inside the block, the previous default after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def float64_default():
    with default_dtype(torch.float64):
        yield


@pytest.fixture
def float32_default():
    with default_dtype(torch.float32):
        yield


@pytest.fixture(params=["float64 default dtype", "float64 module, float32 default"])
def float64_mlp(request):
    """A float64 `MLPEnergy`, made either under a float64 default dtype or with ``.double()``
    under the float32 default; that default holds for the whole test."""
    as_default = request.param == "float64 default dtype"
    with default_dtype(torch.float64 if as_default else torch.float32):
        torch.manual_seed(0)
        model = MLPEnergy() if as_default else MLPEnergy().double()
        assert next(model.parameters()).dtype == torch.float64
        yield model


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_sampler_runs_a_float64_module_in_float64(float64_mlp, name):
    sampler = SAMPLERS[name](float64_mlp)
    assert sampler.dtype == torch.float64
    out = sampler.sample(dim=2, n_samples=4, n_steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 2) and out.dtype == torch.float64
    assert torch.isfinite(out).all()


def test_flow_sampler_runs_a_float64_velocity_network_in_float64(float64_default):
    torch.manual_seed(0)
    sampler = FlowSampler(MLPVelocity())
    assert sampler.dtype == torch.float64
    out = sampler.sample(dim=2, n_samples=4, n_steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 2) and out.dtype == torch.float64


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_trains_a_float64_module_in_float64(float64_mlp, name):
    loss_fn = LOSSES[name](float64_mlp)
    assert loss_fn.dtype == torch.float64
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = loss_fn(x, generator=torch.Generator().manual_seed(2))
    loss = out[0] if isinstance(out, tuple) else out
    assert loss.shape == () and loss.dtype == torch.float64
    if isinstance(out, tuple):  # contrastive divergence: (loss, negative samples)
        assert out[1].shape == (8, 2) and out[1].dtype == torch.float64
    loss.backward()
    assert float64_mlp.net[0].weight.grad.dtype == torch.float64  # (score matching leaves the last bias out)


def test_a_plain_callable_takes_the_default_dtype(float64_default):
    # The reproduction of the bug: a lambda has no dtype to read, so the chains take the default.
    net = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 1))
    sampler = LangevinDynamics(lambda x: net(x).squeeze(-1), 0.01)
    assert sampler.dtype == torch.float64
    assert sampler.sample(dim=2, n_samples=3, n_steps=2).dtype == torch.float64


def test_the_first_floating_tensor_of_a_module_decides(float32_default):
    class Buffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros((), dtype=torch.int64))  # skipped: not floating
            self.register_buffer("scale", torch.ones((), dtype=torch.float64))

        def forward(self, x):
            return self.scale * (x * x).sum(1)

    assert LangevinDynamics(Buffers(), 0.01).dtype == torch.float64
    assert LangevinDynamics(nn.Identity(), 0.01).dtype == torch.float32  # no tensors: the default


def test_analytic_models_take_the_default_dtype(float64_default):
    model = DoubleWellModel()
    assert model.dtype == torch.float64 and HarmonicModel().dtype == torch.float64
    sampler = LangevinDynamics(model, 0.01)
    assert sampler.dtype == torch.float64
    assert sampler.sample(dim=2, n_samples=4, n_steps=3).dtype == torch.float64
    assert DoubleWellModel(dtype=torch.float32).dtype == torch.float32


def test_an_explicit_dtype_wins_over_the_models(float32_default):
    model = DoubleWellModel(dtype=torch.float64)  # no tensors: reports the dtype it was given
    assert LangevinDynamics(model, 0.01).dtype == torch.float64  # the model's
    sampler = LangevinDynamics(model, 0.01, dtype=torch.float32)
    assert sampler.dtype == torch.float32
    assert sampler.sample(dim=2, n_samples=4, n_steps=3).dtype == torch.float32
    assert DenoisingScoreMatching(model).dtype == torch.float64
    loss_fn = DenoisingScoreMatching(model, dtype=torch.float32)
    assert loss_fn(torch.randn(8, 2, dtype=torch.float64)).dtype == torch.float32


def test_a_non_floating_dtype_is_refused_naming_the_argument():
    model = HarmonicModel()
    with pytest.raises(ValueError, match=r"MALA: dtype must be a floating torch.dtype, or None for the model's, got torch.int64"):
        MALA(model, 0.01, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"SlicedScoreMatching: dtype must be a floating torch.dtype, or None"):
        SlicedScoreMatching(model, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"HarmonicModel: dtype must be a torch.dtype \(or None\), got 'float64'"):
        HarmonicModel(dtype="float64")
