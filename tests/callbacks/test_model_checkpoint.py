import logging
import math

import pytest
import torch

from nnh.callbacks import ModelCheckpoint


def _weights_of(path):
    return torch.load(path, weights_only=True)


def test_save_best_only_keeps_the_best_weights(handler, tmp_path):
    cb = ModelCheckpoint(tmp_path / "best.pth", save_weights_only=True)
    handler.add_callback(cb)
    val = [3.0, 2.0, 2.5, 1.0, 1.5]
    handler.fake_train([{"val_loss": v} for v in val], on_epoch=lambda e: handler.fill_weights(float(e)))
    # Epoch 3 (0-based) had the lowest val_loss; its weights were filled with 3.0.
    saved = _weights_of(tmp_path / "best.pth")
    assert torch.equal(saved["weight"], torch.full((2, 3), 3.0))
    assert (cb.best, cb.best_epoch, cb.best_path) == (1.0, 3, str(tmp_path / "best.pth"))


def test_formatted_names_write_one_file_per_improvement(handler, tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "e{epoch:02d}_{val_loss:.1f}.pth"), save_weights_only=True)
    handler.add_callback(cb)
    handler.fake_train([{"val_loss": v} for v in [3.0, 2.0, 2.5, 1.0]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e01_3.0.pth", "e02_2.0.pth", "e04_1.0.pth"]
    assert cb.best_path == str(tmp_path / "e04_1.0.pth")


def test_full_checkpoints_go_through_handler_save(handler, tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "sub" / "h{epoch}.pth"))
    handler.add_callback(cb)
    handler.fake_train([{"val_loss": v} for v in [2.0, 1.0, 1.5]])
    assert handler.saved == [str(tmp_path / "sub" / "h1.pth"), str(tmp_path / "sub" / "h2.pth")]
    assert torch.load(tmp_path / "sub" / "h2.pth", weights_only=True)["epoch"] == 1


def test_nan_never_counts_as_an_improvement(handler, tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "e{epoch}.pth"), save_weights_only=True)
    handler.add_callback(cb)
    handler.fake_train([{"val_loss": math.nan}, {"val_loss": 5.0}, {"val_loss": math.nan}, {"val_loss": 6.0}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2.pth"]
    assert cb.best == 5.0


def test_mode_max(handler, tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "e{epoch}.pth"), monitor="val_acc", mode="max", save_weights_only=True)
    handler.add_callback(cb)
    handler.fake_train([{"val_acc": v} for v in [0.5, 0.4, 0.7, 0.7]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.pth", "e3.pth"]
    assert (cb.best, cb.best_epoch) == (0.7, 2)


def test_save_freq_counts_epochs(handler, tmp_path):
    every = ModelCheckpoint(str(tmp_path / "all{epoch}.pth"), save_best_only=False, save_freq=2,
                            save_weights_only=True)
    best = ModelCheckpoint(str(tmp_path / "best{epoch}.pth"), save_freq=2, save_weights_only=True)
    handler.add_callback(every)
    handler.add_callback(best)
    # The lowest value falls on epoch 1 (1-based), which save_freq=2 never considers.
    handler.fake_train([{"val_loss": v} for v in [0.1, 3.0, 2.0, 2.5, 9.0]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all2.pth", "all4.pth", "best2.pth", "best4.pth"]
    assert best.best == 2.5


def test_epoch_names_continue_across_train_calls(handler, tmp_path):
    handler.add_callback(ModelCheckpoint(str(tmp_path / "e{epoch}.pth"), save_best_only=False,
                                         save_weights_only=True))
    handler.fake_train([{}, {}])
    handler.fake_train([{}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.pth", "e2.pth", "e3.pth"]


def test_missing_monitor_names_the_available_keys(handler, tmp_path):
    handler.add_callback(ModelCheckpoint(str(tmp_path / "b.pth"), monitor="val_acc", save_weights_only=True))
    with pytest.raises(KeyError, match=r"monitor='val_acc'.*'loss', 'val_loss'"):
        handler.fake_train([{"val_loss": 1.0}])


def test_unknown_name_key_is_reported(handler, tmp_path):
    handler.add_callback(ModelCheckpoint(str(tmp_path / "{acc}.pth"), save_weights_only=True))
    with pytest.raises(KeyError, match=r"uses 'acc'.*available keys"):
        handler.fake_train([{"val_loss": 1.0}])


@pytest.mark.parametrize("kwargs, match", [
    ({"filepath": ""}, "filepath=''"),
    ({"filepath": "a{.pth"}, "not a valid format string"),
    ({"filepath": "a.pth", "mode": "minimum"}, "mode='minimum'"),
    ({"filepath": "a.pth", "save_freq": 0}, "save_freq=0"),
    ({"filepath": "a.pth", "monitor": ""}, "monitor=''"),
])
def test_bad_arguments_raise_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelCheckpoint(**kwargs)


def test_full_checkpoints_need_a_handler_with_save(tmp_path):
    class NoSave:
        module = torch.nn.Linear(1, 1)

    with pytest.raises(TypeError, match="save_weights_only=True"):
        ModelCheckpoint(str(tmp_path / "a.pth")).set_handler(NoSave())
    ModelCheckpoint(str(tmp_path / "a.pth"), save_weights_only=True).set_handler(NoSave())


def test_state_round_trips_and_keeps_the_best(handler, tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "b.pth"), save_weights_only=True)
    handler.add_callback(cb)
    handler.fake_train([{"val_loss": 2.0}, {"val_loss": 1.0}])
    torch.save(cb.state_dict(), tmp_path / "state.pt")
    fresh = ModelCheckpoint(str(tmp_path / "b.pth"), save_weights_only=True)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (fresh.best, fresh.best_epoch, fresh.best_path) == (1.0, 1, str(tmp_path / "b.pth"))
    handler.callbacks = []
    handler.add_callback(fresh)
    handler.fill_weights(7.0)
    handler.fake_train([{"val_loss": 1.5}])  # worse than the restored best: no save
    assert not torch.equal(_weights_of(tmp_path / "b.pth")["weight"], torch.full((2, 3), 7.0))


def test_verbose_logs_saves_and_misses(handler, tmp_path, caplog):
    handler.add_callback(ModelCheckpoint(str(tmp_path / "b.pth"), save_weights_only=True, verbose=1))
    with caplog.at_level(logging.INFO, logger="nnh.callbacks"):
        handler.fake_train([{"val_loss": 2.0}, {"val_loss": 3.0}])
    text = caplog.text
    assert "improved from inf to 2" in text and "did not improve on 2" in text and "saved" in text


def test_a_failed_save_leaves_the_best_unchanged(handler, tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "b.pth"))
    handler.add_callback(cb)

    def broken_save(path):
        raise OSError("disk full")

    handler.save = broken_save
    with pytest.raises(OSError, match="disk full"):
        handler.fake_train([{"val_loss": 1.0}])
    assert (cb.best, cb.best_epoch, cb.best_path) == (math.inf, -1, None)
