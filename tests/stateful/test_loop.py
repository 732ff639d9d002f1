import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnh import NNHandler


class Net(nn.Module):
    def __init__(self, d_in=4, hidden=16, d_out=3, p_drop=0.0, bn=False):
        super().__init__()
        self.l1 = nn.Linear(d_in, hidden)
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.drop = nn.Dropout(p_drop)
        self.l2 = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.l2(self.drop(torch.relu(self.bn(self.l1(x)))))


def _data(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x[:, :3].argmax(1))


def _handler(opt=torch.optim.SGD, lr=0.1, n=50, batch_size=16, shuffle=False, seed=0, **model_kw):
    torch.manual_seed(seed)
    h = NNHandler(Net, **model_kw)
    h.set_optimizer(opt, lr=lr)
    h.set_loss_fn(nn.functional.cross_entropy)
    h.set_train_loader(_data(n), batch_size=batch_size, shuffle=shuffle)
    h.set_val_loader(_data(30, seed=1), batch_size=16)
    return h


def _weights(h):
    return [t.detach().clone() for t in h.module.state_dict().values()]


def test_same_seed_gives_bitwise_identical_runs():
    runs = []
    for _ in range(2):
        h = _handler(opt=torch.optim.AdamW, lr=1e-2, shuffle=True, p_drop=0.3)
        h.train(3, seed=11, ema_decay=0.9, progress_bar=False)
        runs.append((_weights(h), h.train_losses, h.val_losses))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]
    h = _handler(opt=torch.optim.AdamW, lr=1e-2, shuffle=True, p_drop=0.3)
    h.train(3, seed=12, ema_decay=0.9, progress_bar=False)
    assert h.train_losses != runs[0][1]


def test_epoch_means_are_weighted_by_sample_count():
    h = _handler(lr=0.0)  # weights stay put: the epoch mean is the dataset's mean loss
    h.add_metric("acc", lambda o, t: (o.argmax(-1) == t).float().mean())
    h.train(1, progress_bar=False)
    x, y = _data().tensors
    with torch.no_grad():
        out = h.module(x)
    assert h.train_losses[0] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-6)
    assert h.train_metrics_history["acc"][0] == pytest.approx((out.argmax(-1) == y).float().mean().item())
    xv, yv = _data(30, seed=1).tensors
    with torch.no_grad():
        assert h.val_losses[0] == pytest.approx(nn.functional.cross_entropy(h.module(xv), yv).item(), rel=1e-6)


def test_validation_every_k_epochs_with_nan_placeholders_and_continued_epochs():
    h = _handler()
    h.add_metric("acc", lambda o, t: (o.argmax(-1) == t).float().mean())
    h.train(3, validate_every=2, progress_bar=False)
    assert len(h.train_losses) == len(h.val_losses) == 3
    assert math.isnan(h.val_losses[0]) and not math.isnan(h.val_losses[1]) and math.isnan(h.val_losses[2])
    assert math.isnan(h.val_metrics_history["acc"][0]) and len(h.train_metrics_history["acc"]) == 3
    h.train(1, validate_every=2, progress_bar=False)  # epoch 4 (1-based) is validated
    assert h.epoch == 4 and not math.isnan(h.val_losses[3])
    before = _weights(h)
    h.train(0)
    assert h.epoch == 4 and len(h.train_losses) == 4
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(h)))


def test_partial_last_accumulation_window_still_steps():
    h = _handler(n=80, batch_size=16)  # 5 batches
    h.train(1, validate_every=0, gradient_accumulation_steps=2, progress_bar=False)
    assert int(h.train_state["step"]) == 3
    h.train(1, validate_every=0, gradient_accumulation_steps=5, progress_bar=False)
    assert int(h.train_state["step"]) == 4


def test_ema_persists_across_calls_and_is_used_for_validation_and_predict():
    one = _handler(lr=0.2)
    one.train(2, ema_decay=0.8, validate_every=0, progress_bar=False)
    split = _handler(lr=0.2)
    split.train(1, ema_decay=0.8, validate_every=0, progress_bar=False)
    split.train(1, ema_decay=0.8, validate_every=0, progress_bar=False)
    for k in one.train_state["ema"].keys():
        assert torch.equal(one.train_state["ema", k], split.train_state["ema", k])

    raw = _weights(split)
    split.train(1, ema_decay=0.8, progress_bar=False)
    raw = _weights(split)
    ema_net = Net()
    ema_net.load_state_dict({k: split.train_state["ema", k] for k in split.train_state["ema"].keys()})
    xv, yv = _data(30, seed=1).tensors
    with torch.no_grad():
        expected = nn.functional.cross_entropy(ema_net(xv), yv).item()
        raw_loss = nn.functional.cross_entropy(split.module(xv), yv).item()
    assert split.val_losses[-1] == pytest.approx(expected, rel=1e-6)
    assert split.val_losses[-1] != pytest.approx(raw_loss, rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(raw, _weights(split)))  # raw weights kept

    loader = DataLoader(_data(30, seed=1), batch_size=16)
    with_ema = split.predict(loader)
    without = split.predict(loader, apply_ema=False)
    assert [o.shape for o in with_ema] == [torch.Size([16, 3]), torch.Size([14, 3])]
    torch.testing.assert_close(torch.cat(with_ema), ema_net(xv).detach())
    torch.testing.assert_close(torch.cat(without), split.module(xv).detach())
    assert all(torch.equal(a, b) for a, b in zip(raw, _weights(split)))


def test_keep_eval_on_module_freezes_batchnorm_statistics():
    h = _handler(bn=True)
    h.keep_eval_on_module(h.module.bn)
    mean, var = h.module.bn.running_mean.clone(), h.module.bn.running_var.clone()
    h.train(2, progress_bar=False)
    assert torch.equal(mean, h.module.bn.running_mean) and torch.equal(var, h.module.bn.running_var)
    assert h.module.l1.weight.grad is None and not torch.equal(h.module.l1.weight, _handler(bn=True).module.l1.weight)
    free = _handler(bn=True)
    free.train(1, progress_bar=False)
    assert not torch.equal(mean, free.module.bn.running_mean)


def test_loss_gets_epoch_and_kwargs_and_tuple_losses_backprop_the_first_element():
    seen = []

    def loss(out, target, epoch, weight):
        seen.append((epoch, weight))
        ce = nn.functional.cross_entropy(out, target)
        return ce * weight, {"unused": 0}

    h = _handler(n=32)
    h.set_loss_fn(loss, pass_epoch_to_loss=True, weight=2.0)
    h.train(2, validate_every=0, progress_bar=False)
    assert sorted(set(seen)) == [(0, 2.0), (1, 2.0)]
    h2 = _handler(n=32)
    h2.set_loss_fn(lambda out, target: nn.functional.cross_entropy(out, target) * 2.0)
    h2.train(2, validate_every=0, progress_bar=False)
    assert h.train_losses == pytest.approx(h2.train_losses, rel=1e-6)


def test_generative_model_without_targets_and_dict_batches():
    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = nn.Linear(4, 2), nn.Linear(2, 4)

        def forward(self, x, scale=1.0):
            return self.dec(self.enc(x)) * scale

    x = torch.randn(64, 4)
    torch.manual_seed(0)
    h = NNHandler(AE, model_type="generative")
    h.set_optimizer(torch.optim.Adam, lr=1e-2)
    h.set_loss_fn(nn.functional.mse_loss)
    h.set_train_loader(TensorDataset(x), batch_size=16)
    h.train(15, validate_every=0, progress_bar=False)
    assert h.train_losses[-1] < 0.8 * h.train_losses[0]

    dict_data = [{"x": x[i:i + 16], "y": x[i:i + 16], "scale": torch.tensor(1.0)} for i in range(0, 64, 16)]
    h.set_train_loader(DataLoader(dict_data, batch_size=None))
    h.train(1, validate_every=0, progress_bar=False)
    assert len(h.train_losses) == 16


def test_classification_batch_without_targets_is_a_clear_error():
    h = _handler()
    h.set_train_loader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    with pytest.raises(ValueError, match="needs targets"):
        h.train(1, validate_every=0, progress_bar=False)


def test_nonfinite_loss_skips_with_warning_then_raises():
    calls = {"n": 0}

    def sometimes_nan(out, target):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(out, target)
        return loss * float("nan") if calls["n"] == 2 else loss

    h = _handler(n=64)
    h.set_loss_fn(sometimes_nan)
    with pytest.warns(RuntimeWarning, match="epoch 0, batch 1"):
        h.train(1, validate_every=0, progress_bar=False)
    assert int(h.train_state["step"]) == 3 and math.isfinite(h.train_losses[0])

    h.set_loss_fn(lambda out, target: nn.functional.cross_entropy(out, target) * float("inf"))
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="3 non-finite losses in a row"):
        h.train(1, validate_every=0, progress_bar=False, max_nonfinite_steps=3)


def test_schedulers_per_epoch_plateau_and_per_batch():
    # lr so small that the losses stay within ReduceLROnPlateau's threshold: every epoch
    # after the first is "no improvement", and patience=0 halves the lr each time.
    h = _handler(lr=1e-6)
    h.set_scheduler(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=0.5, patience=0)
    h.train(3, progress_bar=False)
    assert h.optimizer.param_groups[0]["lr"] == pytest.approx(0.25e-6)
    assert h.scheduler.best == pytest.approx(h.val_losses[0])  # stepped on the validation loss
    assert h.scheduler.best != pytest.approx(h.train_losses[0])

    h = _handler(n=64)  # 4 batches
    h.set_scheduler(torch.optim.lr_scheduler.StepLR, interval="batch", step_size=1, gamma=0.5)
    h.train(1, validate_every=0, progress_bar=False)
    assert h.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    h = _handler(n=64)
    h.set_scheduler(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    h.train(2, validate_every=0, progress_bar=False)
    assert h.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)


class Recorder:
    def __init__(self, stop_at_epoch=None):
        self.events, self.stop_at_epoch, self.handler = [], stop_at_epoch, None

    def set_handler(self, handler):
        self.handler = handler

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def record(*args):
            self.events.append((hook, *[a if not isinstance(a, dict) else sorted(a) for a in args]))
            if hook == "on_epoch_end" and args[0] == self.stop_at_epoch:
                self.handler.stop_training = True

        return record


def test_callback_hooks_run_in_documented_order_and_can_stop_training():
    h = _handler(n=32)  # 2 train batches, 2 val batches
    rec = Recorder(stop_at_epoch=1)
    h.add_callback(rec)
    assert rec.handler is h
    h.train(5, progress_bar=False)
    names = [e[0] for e in rec.events]
    epoch0 = ["on_epoch_begin", "on_train_batch_begin", "on_train_batch_end", "on_train_batch_begin",
              "on_train_batch_end", "on_val_begin", "on_val_batch_begin", "on_val_batch_end",
              "on_val_batch_begin", "on_val_batch_end", "on_val_end", "on_epoch_end"]
    assert names == ["on_train_begin", *epoch0, *epoch0, "on_train_end"]
    assert h.epoch == 2 and len(h.train_losses) == 2
    end = [e for e in rec.events if e[0] == "on_epoch_end"][0]
    assert end[1] == 0 and end[2] == ["epoch", "loss", "lr", "val_loss"]
    assert ("on_train_batch_end", 1, ["loss", "size"]) in rec.events


def test_validate_every_without_validation_data_is_both_value_and_runtime_error():
    torch.manual_seed(0)
    h = NNHandler(Net)
    h.set_optimizer(torch.optim.SGD, lr=0.1)
    h.set_loss_fn(nn.functional.cross_entropy)
    h.set_train_loader(_data(32), batch_size=16)
    for kind in (ValueError, RuntimeError):  # code written for either kind keeps working
        with pytest.raises(kind, match="validate_every=1 but no validation data"):
            h.train(1, progress_bar=False)
    assert h.epoch == 0


def test_the_running_loss_is_read_on_the_host_once_per_epoch_without_a_bar(monkeypatch):
    from nnh.stateful import _batches

    reads = []
    real = _batches.EpochSums.flush

    def counting(self):
        out = real(self)
        reads.append(len(out))
        return out

    monkeypatch.setattr(_batches.EpochSums, "flush", counting)
    h = _handler(n=64)  # 4 training batches
    h.train(2, validate_every=0, progress_bar=False)
    assert reads == [4, 4]  # one read of four batches per epoch, none per step


def test_a_float64_default_dtype_trains_like_a_hand_written_loop():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        h = _handler(lr=0.1)
        torch.manual_seed(0)
        ref = Net()
        h.train(2, ema_decay=0.9, gradient_clipping_norm=1.0, progress_bar=False)
        opt = torch.optim.SGD(ref.parameters(), lr=0.1)
        x, y = _data().tensors
        for _ in range(2):
            for i in range(0, 50, 16):
                loss = nn.functional.cross_entropy(ref(x[i:i + 16]), y[i:i + 16])
                loss.backward()
                nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
        assert h.module.l1.weight.dtype == torch.float64 and not math.isnan(h.val_losses[1])
        for p, q in zip(h.module.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    finally:
        torch.set_default_dtype(before)
