"""NNHandler.auto_save and its properties."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnh import NNHandler
from tests._models import CHILD_ENV, build_handler, set_loaders

# These tests start child processes: a hang fails in seconds, not at CI's limit.
pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(progress_bar=False)


def small_handler():
    # 2 batches per epoch: auto-save tests are about files, not training.
    h = build_handler(scheduler=None)
    set_loaders(h, n_train=32)
    return h


def pth_files(folder) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.endswith(".pth"))


def test_interval_saves_at_multiples_and_at_the_end(tmp_path):
    h = small_handler()
    h.auto_save(2, save_path=str(tmp_path))
    h.train(5, **QUIET)
    assert pth_files(tmp_path) == ["model_epoch02.pth", "model_epoch04.pth", "model_epoch05.pth"]
    assert [f for f in os.listdir(tmp_path) if not f.endswith(".pth")] == []  # no temporary files left
    for epoch in (2, 4, 5):
        loaded = NNHandler.load(tmp_path / f"model_epoch{epoch:02d}.pth")
        assert loaded.epoch == epoch and len(loaded.train_losses) == epoch
    assert torch.equal(loaded.module.net[0].weight, h.module.net[0].weight)


def test_interval_counts_epochs_across_train_calls(tmp_path):
    h = small_handler()
    h.auto_save(2, save_path=str(tmp_path))
    h.train(3, save_on_last_epoch=False, **QUIET)
    h.train(3, save_on_last_epoch=False, **QUIET)
    assert pth_files(tmp_path) == ["model_epoch02.pth", "model_epoch04.pth", "model_epoch06.pth"]


def test_interval_minus_one_saves_only_at_the_end(tmp_path):
    h = small_handler()
    h.auto_save(-1, save_path=str(tmp_path))
    h.train(3, save_on_last_epoch=False, **QUIET)  # -1 saves at the end regardless
    assert pth_files(tmp_path) == ["model_epoch03.pth"]


def test_interval_none_turns_auto_saving_off(tmp_path):
    h = small_handler()
    h.auto_save(1, save_path=str(tmp_path))
    h.save_interval = None
    h.train(2, **QUIET)
    assert pth_files(tmp_path) == []


def test_names_are_formatted_with_the_epoch_logs(tmp_path):
    h = small_handler()
    h.auto_save(1, save_path=str(tmp_path), name="ckpt_{epoch:03d}_{val_loss:.3f}_{val_acc:.2f}")
    h.train(2, **QUIET)
    expected = [f"ckpt_{e + 1:03d}_{h.val_losses[e]:.3f}_{h.val_metrics_history['acc'][e]:.2f}.pth" for e in range(2)]
    assert pth_files(tmp_path) == sorted(expected)


def test_pth_is_added_once(tmp_path):
    h = small_handler()
    h.auto_save(1, save_path=str(tmp_path), name="run-{epoch}.pth")
    h.train(1, **QUIET)
    h.save_model_name = "plain-{epoch}"
    h.train(1, **QUIET)
    assert pth_files(tmp_path) == ["plain-2.pth", "run-1.pth"]


def test_name_problems_raise_when_auto_save_is_called():
    h = small_handler()
    with pytest.raises(ValueError, match=r"\['val_f1'\].*never hold"):
        h.auto_save(1, name="m_{epoch}_{val_f1:.2f}")
    with pytest.raises(ValueError, match="positional field"):
        h.auto_save(1, name="m_{}")
    with pytest.raises(ValueError, match="cannot be formatted"):
        h.auto_save(1, name="m_{loss:d}")
    with pytest.raises(ValueError, match="not a valid format string"):
        h.auto_save(1, name="m_{epoch")
    with pytest.raises(ValueError, match="never hold"):
        h.save_model_name = "m_{nope}"
    h.add_metric("f1", lambda out, y: 0.0)
    h.auto_save(1, name="m_{epoch}_{val_f1:.2f}")  # fine once the metric exists


@pytest.mark.parametrize("interval", [0, -2, 1.5, True, "2"])
def test_bad_interval_raises(interval):
    with pytest.raises(ValueError, match="interval"):
        small_handler().auto_save(interval)


def test_properties_read_and_write_the_settings(tmp_path):
    h = small_handler()
    assert (h.save_interval, h.save_path, h.save_model_name, h.overwrite_last_saved) == (
        None, ".", "model_epoch{epoch:02d}", False)
    h.auto_save(3, save_path=tmp_path / "a", name="x{epoch}", overwrite=True)
    assert (h.save_interval, h.save_path, h.save_model_name, h.overwrite_last_saved) == (
        3, str(tmp_path / "a"), "x{epoch}", True)
    h.save_interval = 1
    h.save_path = tmp_path / "b"
    h.save_model_name = "y{epoch}"
    h.overwrite_last_saved = False
    assert (h.save_interval, h.save_path, h.save_model_name, h.overwrite_last_saved) == (
        1, str(tmp_path / "b"), "y{epoch}", False)
    with pytest.raises(ValueError):
        h.save_interval = 0
    h.train(2, **QUIET)
    assert pth_files(tmp_path / "b") == ["y1.pth", "y2.pth"]


def test_overwrite_keeps_only_the_latest(tmp_path):
    h = small_handler()
    h.auto_save(1, save_path=str(tmp_path), overwrite=True)
    h.train(3, **QUIET)
    assert pth_files(tmp_path) == ["model_epoch03.pth"]
    assert NNHandler.load(tmp_path / "model_epoch03.pth").epoch == 3


def test_overwrite_never_removes_the_file_loaded_from(tmp_path):
    h = small_handler()
    h.auto_save(1, save_path=str(tmp_path), overwrite=True)
    h.train(2, **QUIET)
    loaded = NNHandler.load(tmp_path / "model_epoch02.pth")  # the auto-saver settings come along
    set_loaders(loaded, n_train=32)
    loaded.train(2, **QUIET)
    assert pth_files(tmp_path) == ["model_epoch02.pth", "model_epoch04.pth"]


def test_overwrite_keeps_the_previous_file_when_the_new_save_fails(tmp_path, monkeypatch):
    h = small_handler()
    h.auto_save(1, save_path=str(tmp_path), overwrite=True)
    h.train(1, **QUIET)

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        h.train(1, **QUIET)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model_epoch01.pth"]  # no partial or temporary file either
    assert NNHandler.load(tmp_path / "model_epoch01.pth").epoch == 1


def test_docs_examples_run(tmp_path):
    # Every ```python block of docs/autosaver.md, in order, as one script in an empty folder.
    text = (ROOT / "docs" / "autosaver.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    script = tmp_path / "doc_examples.py"
    script.write_text("\n".join(blocks))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=CHILD_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
