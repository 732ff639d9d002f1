"""The callbacks inside a real `NNHandler.train`, and through `handler.save` / `NNHandler.load`."""

import csv
import math
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

from nnh import NNHandler
from nnh.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    EpochTimer,
    GarbageCollector,
    LearningRateMonitor,
    ModelCheckpoint,
)
from nnh.func.checkpoint import read_checkpoint


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, x @ torch.linspace(-1, 1, 8)[:, None] + 0.5 * torch.randn(n, 1, generator=g))


TRAIN, VAL = _data(48, 0), _data(32, 1)


def _handler(lr=0.05, seed=0):
    torch.manual_seed(seed)
    h = NNHandler(torch.nn.Linear, in_features=8, out_features=1)
    h.set_optimizer(torch.optim.SGD, lr=lr)
    h.set_loss_fn(torch.nn.functional.mse_loss)
    h.set_train_loader(TRAIN, batch_size=16, shuffle=True)
    h.set_val_loader(VAL, batch_size=32)
    return h


def _reattach_data(h):
    h.set_train_loader(TRAIN, batch_size=16, shuffle=True)
    h.set_val_loader(VAL, batch_size=32)
    return h


class WeightsPerEpoch(Callback):
    """Keeps a copy of the weights at every epoch end (never saved: test-only)."""

    def __init__(self):
        self.weights = []

    def on_epoch_end(self, epoch, logs):
        self.weights.append({k: v.clone() for k, v in self.handler.module.state_dict().items()})


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_model_checkpoint_keeps_the_best_weights(tmp_path):
    # A large rate makes val_loss go up and down, so the best epoch is not the last one.
    h = _handler(lr=0.45)
    ckpt = ModelCheckpoint(str(tmp_path / "best.pth"), save_weights_only=True)
    spy = WeightsPerEpoch()
    h.add_callback(ckpt)
    h.add_callback(spy)
    h.train(8, progress_bar=False)
    best = min(range(8), key=lambda e: h.val_losses[e])
    assert best != 7, "precondition: the last epoch is not the best"
    assert (ckpt.best, ckpt.best_epoch) == (h.val_losses[best], best)
    _assert_same(torch.load(tmp_path / "best.pth", weights_only=True), spy.weights[best])


def test_model_checkpoint_full_checkpoints_load_as_handlers(tmp_path):
    h = _handler(lr=0.45)
    h.add_callback(ModelCheckpoint(str(tmp_path / "e{epoch:02d}_{val_loss:.3f}.pth")))
    h.train(8, progress_bar=False)
    improving = [e for e in range(8) if h.val_losses[e] < min(h.val_losses[:e], default=math.inf)]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"e{e + 1:02d}_{h.val_losses[e]:.3f}.pth" for e in improving]
    loaded = NNHandler.load(tmp_path / names[-1])
    (restored,) = loaded.callbacks
    assert restored.best == min(h.val_losses) and restored.best_path == str(tmp_path / names[-1])


def test_a_model_checkpoint_file_resumes_after_its_epoch(tmp_path):
    h = _handler()
    h.add_callback(ModelCheckpoint(str(tmp_path / "last.pth"), save_best_only=False))
    h.train(3, progress_bar=False)
    loaded = NNHandler.load(tmp_path / "last.pth")
    assert loaded.epoch == len(loaded.train_losses) == 3


def test_early_stopping_stops_the_handler():
    h = _handler()
    # min_delta so large that nothing after the first epoch counts as an improvement.
    stopper = EarlyStopping(monitor="loss", min_delta=1e6, patience=2)
    h.add_callback(stopper)
    h.train(10, progress_bar=False)
    assert h.epoch == 3 and len(h.train_losses) == 3
    assert (stopper.best_epoch, stopper.wait, stopper.stopped_epoch) == (0, 2, 2)


def test_early_stopping_keeps_its_patience_across_save_and_load(tmp_path):
    def stopper():
        return EarlyStopping(monitor="loss", min_delta=1e6, patience=3, restore_best_weights=True)

    straight = _handler()
    straight.add_callback(stopper())
    straight.train(10, progress_bar=False)
    assert straight.epoch == 4

    h = _handler()
    h.add_callback(stopper())
    h.train(2, progress_bar=False)
    h.save(tmp_path / "run.pth")
    saved = h.callbacks[0]
    loaded = _reattach_data(NNHandler.load(tmp_path / "run.pth"))
    (resumed,) = loaded.callbacks
    assert type(resumed) is EarlyStopping and resumed.handler is loaded
    assert (resumed.patience, resumed.min_delta, resumed.restore_best_weights) == (3, 1e6, True)
    assert (resumed.best, resumed.best_epoch, resumed.wait) == (saved.best, 0, 1)
    _assert_same(resumed.best_weights, saved.best_weights)
    loaded.train(10, progress_bar=False)
    # Two more epochs reach the patience of 3, as in the run without the interruption.
    assert loaded.epoch == 4 and resumed.stopped_epoch == 3
    _assert_same(loaded.module.state_dict(), straight.module.state_dict())


def test_csv_logger_writes_a_row_per_epoch(tmp_path):
    h = _handler()
    h.add_metric("mae", lambda out, y: (out - y).abs().mean())
    h.add_callback(EpochTimer())
    h.add_callback(LearningRateMonitor())
    h.add_callback(CSVLogger(tmp_path / "h.csv"))
    h.train(3, validate_every=2, progress_bar=False)
    h.train(2, validate_every=2, progress_bar=False)
    with open(tmp_path / "h.csv", newline="") as f:
        text = f.read()
        f.seek(0)
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["epoch", "loss", "mae", "val_loss", "val_mae", "lr", "epoch_time", "lr_group0"]
    assert text.count("epoch_time") == 1
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == h.train_losses
    assert [r["val_loss"] == "nan" for r in rows] == [True, False, True, False, True]  # epochs 2 and 4 (1-based)
    assert all(float(r["epoch_time"]) > 0 and float(r["lr_group0"]) == 0.05 for r in rows)


def test_csv_logger_after_loading_an_earlier_checkpoint(tmp_path):
    h = _handler()
    h.add_callback(CSVLogger(tmp_path / "h.csv"))
    h.train(2, progress_bar=False)
    h.save(tmp_path / "e2.pth")
    h.train(2, progress_bar=False)
    loaded = _reattach_data(NNHandler.load(tmp_path / "e2.pth"))
    loaded.train(1, progress_bar=False)
    with open(tmp_path / "h.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(r["loss"]) for r in rows] == loaded.train_losses


def test_every_builtin_is_rebuilt_with_its_arguments_and_state(tmp_path):
    callbacks = [
        ModelCheckpoint(tmp_path / "b.pth", monitor="val_loss", save_weights_only=True, verbose=0),
        EarlyStopping(patience=7, mode="min"),
        EarlyStopping(monitor="loss", patience=2, min_delta=0.5),
        LearningRateMonitor(),
        EpochTimer(),
        CSVLogger(str(tmp_path / "h.csv")),
        GarbageCollector(every_n_epochs=3),
    ]
    h = _handler()
    for cb in callbacks:
        h.add_callback(cb)
    h.train(2, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is recorded by name only
        h.save(tmp_path / "all.pth")
    read_checkpoint(tmp_path / "all.pth")  # weights_only=True reads it
    loaded = NNHandler.load(tmp_path / "all.pth")
    assert [type(c) for c in loaded.callbacks] == [type(c) for c in callbacks]
    for old, new in zip(callbacks, loaded.callbacks):
        assert new is not old and new.handler is loaded
        assert (new.init_args, new.init_kwargs) == (old.init_args, old.init_kwargs)
        assert repr(new) == repr(old)
    es1, es2 = loaded.callbacks[1], loaded.callbacks[2]
    assert (es1.monitor, es1.patience, es2.monitor, es2.patience) == ("val_loss", 7, "loss", 2)
    assert es1.state_dict()["best"] == callbacks[1].best and es2.wait == callbacks[2].wait
    assert loaded.callbacks[4].times == callbacks[4].times and len(loaded.callbacks[4].times) == 2
    assert loaded.callbacks[3].history == [[0.05], [0.05]]


def test_an_exception_in_a_callback_propagates():
    class Boom(Callback):
        def on_epoch_end(self, epoch, logs):
            raise RuntimeError("boom at epoch end")

    h = _handler()
    h.add_callback(Boom())
    with pytest.raises(RuntimeError, match="boom at epoch end"):
        h.train(1, progress_bar=False)
