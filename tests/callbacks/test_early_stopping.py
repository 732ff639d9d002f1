import logging
import math

import pytest
import torch

from nnh.callbacks import EarlyStopping


def test_stops_after_patience_epochs_without_improvement(handler):
    cb = EarlyStopping(patience=3)
    handler.add_callback(cb)
    ran = handler.fake_train([{"val_loss": v} for v in [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.4]])
    assert [logs["epoch"] for logs in ran] == [0, 1, 2, 3, 4]
    assert handler.stop_training
    assert (cb.best, cb.best_epoch, cb.wait, cb.stopped_epoch) == (0.9, 1, 3, 4)


def test_an_improvement_restarts_the_count(handler):
    cb = EarlyStopping(patience=2)
    handler.add_callback(cb)
    ran = handler.fake_train([{"val_loss": v} for v in [1.0, 1.1, 0.8, 0.9, 0.7, 0.75, 0.76, 0.1]])
    assert len(ran) == 7 and cb.best == 0.7 and cb.stopped_epoch == 6


def test_patience_zero_stops_at_the_first_miss(handler):
    handler.add_callback(EarlyStopping(patience=0))
    assert len(handler.fake_train([{"val_loss": v} for v in [1.0, 0.5, 0.6, 0.1]])) == 3


def test_min_delta_ignores_small_gains(handler):
    cb = EarlyStopping(patience=2, min_delta=0.1)
    handler.add_callback(cb)
    ran = handler.fake_train([{"val_loss": v} for v in [1.0, 0.95, 0.91, 0.5]])
    assert len(ran) == 3 and cb.best == 1.0


def test_mode_max(handler):
    cb = EarlyStopping(monitor="val_acc", mode="max", patience=1)
    handler.add_callback(cb)
    ran = handler.fake_train([{"val_acc": v} for v in [0.5, 0.6, 0.55, 0.9]])
    assert len(ran) == 3 and (cb.best, cb.best_epoch) == (0.6, 1)


def test_epochs_without_validation_are_not_counted(handler):
    cb = EarlyStopping(patience=2)
    handler.add_callback(cb)
    values = [1.0, math.nan, 2.0, math.nan, math.nan, 3.0, math.nan]
    ran = handler.fake_train([{"val_loss": v} for v in values])
    assert len(ran) == 6 and cb.stopped_epoch == 5


def test_restore_best_weights(handler):
    cb = EarlyStopping(patience=2, restore_best_weights=True)
    handler.add_callback(cb)
    handler.fake_train([{"val_loss": v} for v in [3.0, 1.0, 2.0, 2.0]],
                       on_epoch=lambda e: handler.fill_weights(10.0 + e))
    assert torch.equal(handler.module.weight, torch.full((2, 3), 11.0))
    assert torch.equal(handler.module.bias, torch.full((2,), 11.0))


def test_without_restore_the_last_weights_stay(handler):
    handler.add_callback(EarlyStopping(patience=1))
    handler.fake_train([{"val_loss": v} for v in [1.0, 2.0]], on_epoch=lambda e: handler.fill_weights(10.0 + e))
    assert torch.equal(handler.module.weight, torch.full((2, 3), 11.0))


def test_patience_carries_over_between_train_calls(handler):
    cb = EarlyStopping(patience=3)
    handler.add_callback(cb)
    assert len(handler.fake_train([{"val_loss": v} for v in [1.0, 2.0, 2.0]])) == 3
    assert len(handler.fake_train([{"val_loss": v} for v in [2.0, 2.0]])) == 1
    cb.reset()
    assert (cb.wait, cb.best, cb.stopped_epoch) == (0, math.inf, -1)


def test_state_survives_a_weights_only_round_trip(handler, tmp_path):
    cb = EarlyStopping(patience=3, restore_best_weights=True)
    handler.add_callback(cb)
    handler.fake_train([{"val_loss": v} for v in [1.0, 2.0, 2.0]], on_epoch=lambda e: handler.fill_weights(float(e)))
    torch.save(cb.state_dict(), tmp_path / "es.pt")

    resumed = EarlyStopping(patience=3, restore_best_weights=True)
    resumed.load_state_dict(torch.load(tmp_path / "es.pt", weights_only=True))
    assert (resumed.best, resumed.best_epoch, resumed.wait) == (1.0, 0, 2)
    handler.callbacks = []
    handler.add_callback(resumed)
    ran = handler.fake_train([{"val_loss": v} for v in [2.0, 0.1]], on_epoch=lambda e: handler.fill_weights(float(e)))
    assert len(ran) == 1 and resumed.stopped_epoch == 3
    assert torch.equal(handler.module.weight, torch.zeros(2, 3))  # epoch 0's weights


@pytest.mark.parametrize("kwargs, match", [
    ({"patience": -1}, "patience=-1"),
    ({"patience": 2.5}, "patience=2.5"),
    ({"min_delta": -0.1}, "min_delta=-0.1"),
    ({"mode": "up"}, "mode='up'"),
    ({"monitor": ""}, "monitor=''"),
])
def test_bad_arguments_raise_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


def test_missing_monitor_raises(handler):
    handler.add_callback(EarlyStopping(monitor="val_acc"))
    with pytest.raises(KeyError, match="monitor='val_acc'"):
        handler.fake_train([{"val_loss": 1.0}])


def test_verbose_logs_the_stop(handler, caplog):
    handler.add_callback(EarlyStopping(patience=1, verbose=1, restore_best_weights=True))
    with caplog.at_level(logging.INFO, logger="nnh.callbacks"):
        handler.fake_train([{"val_loss": v} for v in [1.0, 2.0]])
    assert "stopping after epoch 2" in caplog.text and "restored the weights of epoch 1" in caplog.text
