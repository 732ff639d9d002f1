import csv
import math
import os

import pytest
import torch

from nnh.callbacks import CSVLogger


def _read(path):
    with open(path, newline="") as f:
        text = f.read()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return reader.fieldnames, rows, text


def test_one_row_per_epoch_with_every_key(handler, tmp_path):
    path = tmp_path / "logs" / "history.csv"
    handler.add_callback(CSVLogger(path))
    handler.fake_train([{"loss": 0.5, "val_loss": 0.25, "acc": 1 / 3, "lr": 1e-3},
                        {"loss": 0.4, "val_loss": math.nan, "acc": 0.5, "lr": 1e-3},
                        {"loss": torch.tensor(0.3), "val_loss": 0.125, "acc": 0.75, "lr": 5e-4}])
    header, rows, text = _read(path)
    assert header == ["epoch", "loss", "val_loss", "acc", "lr"]
    assert text.count("epoch,") == 1
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert float(rows[0]["acc"]) == 1 / 3  # full precision
    assert rows[1]["val_loss"] == "nan"
    assert float(rows[2]["loss"]) == pytest.approx(0.3)


def test_a_second_train_call_appends_without_a_second_header(handler, tmp_path):
    path = tmp_path / "h.csv"
    handler.add_callback(CSVLogger(path))
    handler.fake_train([{"loss": 1.0}, {"loss": 0.9}])
    handler.fake_train([{"loss": 0.8}])
    header, rows, text = _read(path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert text.count("epoch") == 1


def test_resume_from_an_earlier_checkpoint_drops_the_later_rows(handler, tmp_path):
    path = tmp_path / "h.csv"
    handler.add_callback(CSVLogger(path))
    handler.fake_train([{"loss": 1.0}, {"loss": 0.9}, {"loss": 0.8}, {"loss": 0.7}])
    # A run restored from the checkpoint written after epoch 2 (1-based) goes on from epoch 2.
    resumed = type(handler)()
    resumed.epoch = 2
    resumed.add_callback(CSVLogger(str(path)))
    resumed.fake_train([{"loss": 0.85}, {"loss": 0.75}])
    _, rows, _ = _read(path)
    assert [(r["epoch"], r["loss"]) for r in rows] == [("0", "1.0"), ("1", "0.9"), ("2", "0.85"), ("3", "0.75")]


def test_a_run_from_epoch_zero_starts_a_new_file(handler, tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("old,content\n1,2\n")
    handler.add_callback(CSVLogger(path))
    handler.fake_train([{"loss": 1.0}])
    header, rows, _ = _read(path)
    assert header == ["epoch", "loss", "val_loss"] and len(rows) == 1


def test_a_key_that_appears_later_widens_the_header(handler, tmp_path):
    path = tmp_path / "h.csv"
    handler.add_callback(CSVLogger(path))
    handler.fake_train([{"loss": 1.0}, {"loss": 0.9, "epoch_time": 2.5}, {"loss": 0.8}])
    header, rows, text = _read(path)
    assert header == ["epoch", "loss", "val_loss", "epoch_time"]
    assert [r["epoch_time"] for r in rows] == ["", "2.5", ""]
    assert text.count("epoch_time") == 1
    assert all(len(line.split(",")) == 4 for line in text.splitlines())


def test_resuming_a_foreign_file_is_refused(handler, tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("step,value\n1,2\n")
    handler.epoch = 3
    handler.add_callback(CSVLogger(path))
    with pytest.raises(ValueError, match="no 'epoch' column"):
        handler.fake_train([{"loss": 1.0}])
    assert path.read_text() == "step,value\n1,2\n"


def test_bad_path_raises():
    with pytest.raises(ValueError, match="path=''"):
        CSVLogger("")


def test_the_rewritten_file_gets_the_umask_mode_and_leaves_no_temporary(handler, tmp_path):
    path = tmp_path / "h.csv"
    handler.add_callback(CSVLogger(path))
    old = os.umask(0o022)
    try:
        handler.fake_train([{"loss": 0.5}, {"loss": 0.4, "acc": 0.1}])  # the second widens: a rewrite
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644  # as open(path, "w") gives, not mkstemp's 0600
    assert os.listdir(tmp_path) == ["h.csv"]
    assert _read(path)[0][-1] == "acc"
