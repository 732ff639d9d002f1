"""The samplers on CUDA (skipped without a GPU): the Langevin class then takes the per-chain
torch.where path of the pure step instead of the CPU fast path."""

import pytest
import torch

from nnh import MALA, DoubleWellModel, HamiltonianMonteCarlo, LangevinDynamics
from nnh.func.mcmc import init_chain_state, langevin_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_langevin_on_cuda_equals_the_pure_step():
    model = DoubleWellModel()
    x0 = torch.randn(64, 2, device="cuda")
    out = LangevinDynamics(model, step_size=0.02).sample(x=x0, n_steps=20, generator=torch.Generator("cuda").manual_seed(0))
    state, gen = init_chain_state(x0, model.energy_and_gradient), torch.Generator("cuda").manual_seed(0)
    for _ in range(20):
        state, _ = langevin_step(state, model.energy_and_gradient, 0.02, generator=gen)
    torch.testing.assert_close(out, state.x)


@pytest.mark.parametrize("cls", [LangevinDynamics, MALA, HamiltonianMonteCarlo])
def test_samplers_run_on_cuda(cls):
    sampler = cls(DoubleWellModel(), step_size=0.05, dim=2, n_steps=10)
    out, diag = sampler.sample(128, "cuda", return_diagnostics=True)
    assert out.device.type == "cuda" and torch.isfinite(out).all()
    assert diag["energy"].device.type == "cuda"
