"""Faults leave nothing half-done; bad metric and data arguments are refused early."""

from __future__ import annotations

import math
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nnh import NNHandler
from nnh.callbacks import Callback


class Net(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.l1 = nn.Linear(4, hidden)
        self.l2 = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


class TwoHeads(Net):
    def forward(self, x):
        h = torch.relu(self.l1(x))
        return self.l2(h), h


def data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x[:, :3].argmax(1))


def first_head_cross_entropy(out, y):
    return nn.functional.cross_entropy(out[0] if isinstance(out, tuple) else out, y)


def handler(model=Net, n=48):
    torch.manual_seed(0)
    h = NNHandler(model)
    h.set_optimizer(torch.optim.Adam, lr=1e-2)
    h.set_loss_fn(first_head_cross_entropy)
    h.set_train_loader(data(n), batch_size=8)
    return h


QUIET = dict(validate_every=0, progress_bar=False)


class RaiseAt(Callback):
    def __init__(self, batch):
        self.batch = batch

    def on_train_batch_end(self, batch, logs):
        if batch == self.batch:
            self.batch = None
            raise KeyboardInterrupt


def test_an_interrupted_accumulation_window_leaves_no_gradient_behind():
    clean = handler()
    clean.train(2, gradient_accumulation_steps=3, **QUIET)
    interrupted = handler()
    interrupted.add_callback(RaiseAt(batch=0))  # after micro-batch 0 of a 3-batch window
    with pytest.raises(KeyboardInterrupt):
        interrupted.train(2, gradient_accumulation_steps=3, **QUIET)
    assert all(p.grad is None for p in interrupted.module.parameters())
    assert float(interrupted.train_state["acc_samples"]) == 0.0
    assert interrupted.epoch == 0 and interrupted.train_losses == []
    interrupted.train(2, gradient_accumulation_steps=3, **QUIET)
    for a, b in zip(clean.module.parameters(), interrupted.module.parameters()):
        assert torch.equal(a, b)


def test_an_empty_training_or_validation_set_is_refused_before_training():
    h = handler()
    h.set_train_loader(data(0), batch_size=8)
    with pytest.raises(ValueError, match="train loader yields no batches"):
        h.train(1, **QUIET)
    h = handler()
    h.set_train_loader(data(5), batch_size=8, drop_last=True)
    with pytest.raises(ValueError, match="drop_last=True"):
        h.train(1, **QUIET)
    h = handler()
    h.set_val_loader(data(0), batch_size=8)
    with pytest.raises(ValueError, match="val loader yields no batches"):
        h.train(1, progress_bar=False)
    assert h.epoch == 0 and int(h.train_state["step"]) == 0


def test_training_metrics_see_a_tuple_output_as_validation_does():
    h = handler(TwoHeads)
    h.set_val_loader(data(48), batch_size=8)  # the same data: train and val metrics agree
    h.add_metric("acc", lambda out, y: (out[0].argmax(-1) == y).float().mean())
    h.set_optimizer(torch.optim.SGD, lr=0.0)  # weights fixed: both passes see the same model
    h.train(1, progress_bar=False)
    assert math.isfinite(h.train_metrics_history["acc"][0])
    assert h.train_metrics_history["acc"][0] == pytest.approx(h.val_metrics_history["acc"][0], abs=1e-6)


@pytest.mark.parametrize("name", ["loss", "val_loss", "lr", "epoch"])
def test_reserved_metric_names_are_refused(name):
    with pytest.raises(ValueError, match=f"name='{name}' is a key of the epoch logs"):
        handler().add_metric(name, lambda out, y: 0.0)


def test_every_history_keeps_one_entry_per_epoch_across_clear_and_re_add():
    h = handler()
    h.add_metric("m", lambda out, y: 1.0)
    h.train(1, **QUIET)
    h.clear_metrics()
    h.train(1, **QUIET)
    h.add_metric("m", lambda out, y: 3.0)
    h.train(1, **QUIET)
    assert len(h.train_losses) == 3
    values = h.train_metrics_history["m"]
    assert len(values) == 3 and values[0] == 1.0 and math.isnan(values[1]) and values[2] == 3.0


def test_a_duplicate_metric_name_warns():
    h = handler()
    h.add_metric("m", lambda out, y: 1.0)
    with pytest.warns(UserWarning, match="'m' was already tracked"):
        h.add_metric("m", lambda out, y: 2.0)


def test_a_failed_set_model_changes_nothing(tmp_path):
    h = handler()
    h.train(1, **QUIET)
    before = h.module
    with pytest.raises(TypeError):
        h.set_model(Net, hiden=16)
    assert h.module is before and h.parts.model.model_kwargs == {}
    h.save(tmp_path / "ok.pth")
    loaded = NNHandler.load(tmp_path / "ok.pth")
    assert type(loaded.module) is Net and loaded.epoch == 1


def test_a_metric_that_raises_or_returns_a_non_scalar_is_named():
    h = handler()
    h.add_metric("broken", lambda out, y: 1 / 0)
    with pytest.raises(ZeroDivisionError, match="metric 'broken' raised"):
        h.train(1, **QUIET)
    h = handler()
    h.add_metric("vector", lambda out, y: out.argmax(-1) == y)
    with pytest.raises(ValueError, match=r"metric 'vector' returned a tensor of shape \(8,\)"):
        h.train(1, **QUIET)


def test_a_run_whose_every_loss_is_non_finite_raises_across_epochs():
    # Two batches per epoch and max_nonfinite_steps=3: the count must run on across epochs.
    h = handler(n=16)
    h.set_loss_fn(lambda out, y: nn.functional.cross_entropy(out, y) * float("nan"))
    before = [p.detach().clone() for p in h.module.parameters()]
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="3 non-finite losses in a row"):
        h.train(5, max_nonfinite_steps=3, **QUIET)
    assert h.epoch == 1 and int(h.train_state["step"]) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, h.module.parameters()))


def test_a_finite_loss_with_non_finite_gradients_does_not_reach_the_weights():
    class NanGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    class Poisoned(Net):
        def forward(self, x):
            return NanGrad.apply(super().forward(x))

    h = handler(Poisoned, n=16)
    before = [p.detach().clone() for p in h.module.parameters()]
    h.train(1, **QUIET)
    assert math.isfinite(h.train_losses[0]) and int(h.train_state["step"]) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, h.module.parameters()))
