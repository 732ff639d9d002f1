import math
import sys

import pytest

from nnh.callbacks import TensorBoardLogger
from nnh.callbacks import tensorboard as tb_module


class FakeWriter:
    instances = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.flushes, self.closed = log_dir, [], 0, False
        FakeWriter.instances.append(self)

    def add_scalar(self, tag, value, global_step):
        self.scalars.append((tag, value, global_step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


@pytest.fixture
def fake_writer(monkeypatch):
    FakeWriter.instances = []
    monkeypatch.setattr(tb_module, "_summary_writer_class", lambda: FakeWriter)
    return FakeWriter


def test_writes_numeric_log_keys_per_epoch_and_skips_nan(handler, tmp_path, fake_writer):
    handler.add_callback(TensorBoardLogger(tmp_path / "runs"))
    handler.fake_train([{"loss": 1.0, "val_loss": 0.5, "lr": 0.1, "note": "text"},
                        {"loss": 0.5, "val_loss": math.nan, "lr": 0.1, "note": "text"}])
    (writer,) = fake_writer.instances
    assert writer.log_dir == str(tmp_path / "runs")
    assert writer.scalars == [("loss", 1.0, 0), ("val_loss", 0.5, 0), ("lr", 0.1, 0),
                              ("loss", 0.5, 1), ("lr", 0.1, 1)]
    assert writer.flushes == 2 and writer.closed


def test_a_second_train_call_opens_a_new_writer_and_continues_the_steps(handler, tmp_path, fake_writer):
    handler.add_callback(TensorBoardLogger(str(tmp_path)))
    handler.fake_train([{"loss": 1.0}])
    handler.fake_train([{"loss": 0.5}])
    first, second = fake_writer.instances
    assert first.closed and second.scalars == [("loss", 0.5, 1)]


def test_without_tensorboard_the_error_says_how_to_install(monkeypatch, tmp_path):
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r'pip install tensorboard.*pip install "nnh\[tensorboard\]"'):
        TensorBoardLogger(tmp_path)


def test_real_event_files(handler, tmp_path):
    handler.add_callback(TensorBoardLogger(tmp_path / "runs"))
    handler.fake_train([{"loss": 1.0, "val_loss": 0.5}])
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "runs").iterdir())
