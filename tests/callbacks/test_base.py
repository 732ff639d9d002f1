import logging
import pathlib

import pytest
import torch

from nnh.callbacks import Callback, EarlyStopping, ModelCheckpoint
from nnh.func.checkpoint import decode_value, encode_value

HOOKS = {
    "on_train_begin": ({},), "on_train_end": ({},), "on_epoch_begin": (0, {}), "on_epoch_end": (0, {}),
    "on_train_batch_begin": (0, {}), "on_train_batch_end": (0, {}), "on_val_begin": ({},),
    "on_val_end": ({},), "on_val_batch_begin": (0, {}), "on_val_batch_end": (0, {}),
}


def test_every_hook_is_a_no_op_that_leaves_logs_alone():
    cb = Callback()
    for hook, args in HOOKS.items():
        before = [dict(a) if isinstance(a, dict) else a for a in args]
        assert getattr(cb, hook)(*args) is None
        assert list(args) == before


def test_handler_is_none_until_set():
    cb = Callback()
    assert cb.handler is None
    sentinel = object()
    cb.set_handler(sentinel)
    assert cb.handler is sentinel


class NoSuperInit(Callback):
    def __init__(self, a, b=2, *, path=None):  # deliberately does not call super().__init__
        self.a = a


def test_constructor_args_are_recorded_without_super_init():
    path = pathlib.Path("x") / "y.csv"
    cb = NoSuperInit(1, b=3, path=path)
    assert cb.init_args == (1,)
    assert cb.init_kwargs == {"b": 3, "path": str(path)}
    assert cb.handler is None
    assert repr(cb) == f"NoSuperInit(1, b=3, path={str(path)!r})"


def test_two_instances_keep_their_own_args():
    a, b = EarlyStopping(patience=1), EarlyStopping(patience=7, mode="max")
    assert a.init_kwargs == {"patience": 1}
    assert b.init_kwargs == {"patience": 7, "mode": "max"}


def test_default_state_is_empty_and_foreign_state_is_refused():
    cb = Callback()
    assert cb.state_dict() == {}
    cb.load_state_dict({})
    with pytest.raises(ValueError, match=r"keys \['wait'\].*override load_state_dict"):
        cb.load_state_dict({"wait": 3})


def test_a_callback_round_trips_through_the_checkpoint_encoding(tmp_path):
    cb = EarlyStopping(monitor="val_acc", patience=4, mode="max")
    cb.best, cb.wait = 0.75, 2
    unrecorded = []
    encoded = encode_value(cb, "callbacks[0]", {}, unrecorded)
    assert unrecorded == []
    path = tmp_path / "cb.pt"
    torch.save(encoded, path)
    rebuilt = decode_value(torch.load(path, weights_only=True))
    assert type(rebuilt) is EarlyStopping
    assert (rebuilt.monitor, rebuilt.patience, rebuilt.mode) == ("val_acc", 4, "max")
    assert (rebuilt.best, rebuilt.wait) == (0.75, 2)


def test_path_arguments_encode_as_plain_strings(tmp_path):
    cb = ModelCheckpoint(tmp_path / "best.pth", save_weights_only=True)
    encoded = encode_value(cb, "callbacks[0]")
    assert encoded["args"] == [str(tmp_path / "best.pth")]


def test_info_goes_to_the_handler_logger_or_nnh_callbacks(caplog):
    cb = Callback()
    with caplog.at_level(logging.INFO, logger="nnh.callbacks"):
        cb._info("no handler yet")
    assert [r.name for r in caplog.records] == ["nnh.callbacks"]

    class H:
        logger = logging.getLogger("nnh.test.handler")

    cb.set_handler(H())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nnh.test.handler"):
        cb._info("with a handler logger")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("nnh.test.handler", "with a handler logger")]
