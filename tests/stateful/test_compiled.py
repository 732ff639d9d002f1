"""NNHandler.train(compile=True): the whole step as one compiled graph."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.utils.data import TensorDataset

from nnh import NNHandler


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # BatchNorm: a forward that updates buffers in place, which the traced step must allow.
        self.net = nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)


def _loss_only(out, y):
    return nn.functional.mse_loss(out, y)


def build(opt=torch.optim.Adam):
    torch.manual_seed(0)
    h = NNHandler(MLP, model_type="regression")
    h.set_optimizer(opt, lr=1e-2)
    h.set_scheduler(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    h.set_loss_fn(_loss_only)
    g = torch.Generator().manual_seed(1)
    # 100 samples in batches of 32: a short last batch of 4 every epoch.
    h.set_train_loader(TensorDataset(torch.randn(100, 8, generator=g), torch.randn(100, 1, generator=g)),
                       batch_size=32, shuffle=True)
    return h


def test_compiled_step_matches_eager_and_compiles_a_bounded_number_of_graphs():
    torch._dynamo.reset()
    eager = build()
    eager.train(4, validate_every=0, progress_bar=False, seed=0)
    compiled = build()
    before = counters["stats"]["unique_graphs"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no scheduler-order warning either
        compiled.train(2, validate_every=0, progress_bar=False, seed=0, compile=True)
    after_first = counters["stats"]["unique_graphs"]
    compiled.train(2, validate_every=0, progress_bar=False, compile=True)
    # The full batch and the short last batch (dynamic batch size): no graph per epoch, none
    # for the second call, none for the learning rate the scheduler changes every epoch.
    assert 1 <= after_first - before <= 3
    assert counters["stats"]["unique_graphs"] == after_first
    for a, b in zip(eager.module.state_dict().values(), compiled.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert int(compiled.module.net[0].num_batches_tracked) == 16
    assert compiled.train_losses == pytest.approx(eager.train_losses, rel=1e-5)
    assert int(compiled.train_state["step"]) == int(eager.train_state["step"]) == 16


def test_an_optimizer_without_a_traceable_update_falls_back_with_a_warning():
    eager = build(torch.optim.RMSprop)
    eager.train(2, validate_every=0, progress_bar=False, seed=0)
    fallback = build(torch.optim.RMSprop)
    with pytest.warns(RuntimeWarning, match="RMSprop has no traceable update"):
        fallback.train(2, validate_every=0, progress_bar=False, seed=0, compile=True)
    for a, b in zip(eager.module.parameters(), fallback.module.parameters()):
        assert torch.equal(a, b)
