"""Preemption: SIGTERM / SIGUSR1 during `train` saves a checkpoint that resumes exactly.

The resume contract: after `NNHandler.load`, set the loaders again and call
`train(total - handler.epoch)`. `handler.epoch` counts completed epochs, so an epoch that
was interrupted half-way counts as remaining; the loaded handler skips the batches it had
already trained and finishes that epoch first.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nnh import NNHandler
from tests._models import CHILD_ENV, build_handler, classification_data, set_loaders

TOTAL = 4
KW = dict(use_amp=True, ema_decay=0.9, progress_bar=False)
# The signalling callbacks live in this test module: saving them warns that they cannot be
# imported again, which is expected here (they are left out at load with callbacks=[]).
pytestmark = [pytest.mark.filterwarnings("ignore:NNHandler.save. callbacks:UserWarning"),
              pytest.mark.timeout(60)]  # child processes: a hang fails in a minute, not at CI's limit


class SignalAt:
    """Sends `signum` to this process after training batch `batch` of epoch `epoch`."""

    def __init__(self, epoch: int, batch: int, signum: int = signal.SIGTERM) -> None:
        self.at, self.signum, self.epoch = (epoch, batch), signum, None

    def on_train_begin(self, logs):
        pass

    def on_epoch_begin(self, epoch, logs):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        pass

    def on_train_batch_end(self, batch, logs):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), self.signum)


@functools.lru_cache(maxsize=None)
def reference(accumulate: int = 1) -> NNHandler:
    """The uninterrupted run (computed once per setting; tests only read it)."""
    h = build_handler()
    h.train(TOTAL, seed=5, gradient_accumulation_steps=accumulate, **KW)
    return h


def assert_same_run(a: NNHandler, b: NNHandler) -> None:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(a.train_state["ema"][k], b.train_state["ema"][k]) for k in a.train_state["ema"].keys())
    assert a.train_losses == b.train_losses
    assert a.val_losses == b.val_losses
    assert a.train_metrics_history == b.train_metrics_history
    assert a.scheduler.state_dict() == b.scheduler.state_dict()
    assert b.epoch == TOTAL


def interrupted(tmp_path, at: tuple[int, int], signum=signal.SIGTERM, accumulate: int = 1) -> NNHandler:
    h = build_handler()
    h.set_preemption_checkpoint(tmp_path / "pre.pth")
    h.add_callback(SignalAt(*at, signum=signum))
    before = signal.getsignal(signum)
    h.train(TOTAL, seed=5, gradient_accumulation_steps=accumulate, **KW)  # returns; does not raise
    assert signal.getsignal(signum) is before  # the handler's signal hook is removed again
    return h


def resume(path, accumulate: int = 1) -> NNHandler:
    h = NNHandler.load(path, callbacks=[])  # leave the signalling callback behind
    set_loaders(h)
    h.train(TOTAL - h.epoch, gradient_accumulation_steps=accumulate, **KW)
    return h


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_mid_epoch_signal_saves_and_resumes_exactly(tmp_path, signum):
    h = interrupted(tmp_path, at=(1, 2), signum=signum)
    # It stopped after batch 2 of epoch 1: one full epoch done, three batches of the second.
    assert h.epoch == 1 and len(h.train_losses) == 1
    assert int(h.train_state["step"]) == 6 + 3
    ckpt = torch.load(tmp_path / "pre.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["resume"]["batches_done"] == 3
    assert_same_run(reference(), resume(tmp_path / "pre.pth"))


def test_signal_inside_an_accumulation_window_stops_when_it_closes(tmp_path):
    h = interrupted(tmp_path, at=(2, 2), accumulate=2)  # batch 2 opens a window of 2
    assert int(h.train_state["step"]) == 2 * 3 + 2  # 3 updates per epoch; batches 0-3 of epoch 2
    assert torch.load(tmp_path / "pre.pth", weights_only=True)["resume"]["batches_done"] == 4
    assert_same_run(reference(accumulate=2), resume(tmp_path / "pre.pth", accumulate=2))


def test_preempted_twice_in_one_epoch_still_resumes_exactly(tmp_path):
    interrupted(tmp_path, at=(1, 1))
    again = NNHandler.load(tmp_path / "pre.pth", callbacks=[])
    set_loaders(again)
    again.add_callback(SignalAt(1, 3))
    again.train(TOTAL - again.epoch, **KW)
    assert torch.load(tmp_path / "pre.pth", weights_only=True)["resume"]["batches_done"] == 4
    assert_same_run(reference(), resume(tmp_path / "pre.pth"))


def test_default_target_is_preempted_pth_in_the_auto_save_folder(tmp_path):
    h = build_handler()
    h.auto_save(None, save_path=str(tmp_path / "auto"))
    h.add_callback(SignalAt(0, 1))
    h.train(TOTAL, **KW)
    assert os.listdir(tmp_path / "auto") == ["preempted.pth"]
    assert h.epoch == 0


def test_signal_in_the_last_batch_of_an_epoch_resumes_exactly(tmp_path):
    # 6 batches per epoch: the signal comes in the last one, so the epoch completes, validation
    # included (skipping it would leave a NaN in the history and shift the RNG stream).
    h = interrupted(tmp_path, at=(1, 5))
    assert h.epoch == 2 and not any(v != v for v in h.val_losses)
    ckpt = torch.load(tmp_path / "pre.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["resume"] is None
    assert_same_run(reference(), resume(tmp_path / "pre.pth"))


# ---------------------------------------------------------------------------- a real signal from outside
_CHILD = """
import os, sys, time
import torch
from tests._models import build_handler


class WaitForSignal:
    # After batch 2 of epoch 1, tell the parent we are training, and wait (at most 30 s) until
    # it says it has sent the signal: the signal then lands at a known step.
    def on_train_begin(self, logs): pass
    def on_epoch_end(self, epoch, logs): pass
    def on_epoch_begin(self, epoch, logs): self.epoch = epoch
    def on_train_batch_end(self, batch, logs):
        if (self.epoch, batch) == (1, 2):
            open("training", "w").close()
            deadline = time.monotonic() + 30
            while not os.path.exists("sent") and time.monotonic() < deadline:
                time.sleep(0.01)


h = build_handler()
h.set_preemption_checkpoint("pre.pth")
h.add_callback(WaitForSignal())
h.train({total}, seed=5, use_amp=True, ema_decay=0.9, progress_bar=False)
print("train returned at epoch", h.epoch, flush=True)
"""


def test_signal_from_another_process(tmp_path):
    # SIGTERM from the parent; SIGUSR1 takes the same path (see the in-process tests above).
    signum = signal.SIGTERM
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(total=TOTAL))
    child = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=CHILD_ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "training").exists():
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the child never started training"
            time.sleep(0.02)
        child.send_signal(signum)
        (tmp_path / "sent").touch()
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err[-3000:]
    assert "train returned at epoch 1" in out
    assert torch.load(tmp_path / "pre.pth", weights_only=True)["resume"]["batches_done"] == 3
    assert_same_run(reference(), resume(tmp_path / "pre.pth"))


class FailsOnce(torch.utils.data.Dataset):
    """`base`, except that the first item read raises KeyboardInterrupt (Ctrl-C in the loader)."""

    def __init__(self, base) -> None:
        self.base, self.armed = base, True

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return self.base[i]


def test_an_interrupt_while_skipping_the_trained_batches_keeps_the_resume_point(tmp_path):
    # Nothing is trained while a resumed run skips the batches it already trained, so an
    # exception there must leave the resume point, so that the next train still resumes exactly
    # (the resume point used to be dropped: the epoch restarted, training three batches twice).
    interrupted(tmp_path, at=(1, 2))
    h = NNHandler.load(tmp_path / "pre.pth", callbacks=[])
    h.set_train_loader(FailsOnce(classification_data(96)), batch_size=16, shuffle=True)
    h.set_val_loader(classification_data(32, seed=1), batch_size=16)
    with pytest.raises(KeyboardInterrupt):
        h.train(TOTAL - h.epoch, **KW)
    assert int(h.train_state["step"]) == 6 + 3
    h.train(TOTAL - h.epoch, **KW)
    assert_same_run(reference(), h)
