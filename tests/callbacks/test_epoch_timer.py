import torch

from nnh.callbacks import Callback, EpochTimer
from nnh.callbacks import epoch_timer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_adds_epoch_time_and_keeps_the_history(handler, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(epoch_timer.time, "perf_counter", clock)
    cb = EpochTimer()
    handler.add_callback(cb)

    def advance(epoch):
        clock.now += 2.0 + epoch

    ran = handler.fake_train([{}, {}, {}], on_epoch=advance)
    assert [logs["epoch_time"] for logs in ran] == [2.0, 3.0, 4.0]
    assert cb.times == [2.0, 3.0, 4.0]
    assert cb.train_time == 9.0
    assert cb.log_keys == ("epoch_time",)


def test_later_callbacks_see_the_key(handler):
    seen = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append("epoch_time" in logs)

    handler.add_callback(EpochTimer())
    handler.add_callback(Spy())
    handler.fake_train([{}])
    assert seen == [True]


def test_times_round_trip(handler, tmp_path):
    cb = EpochTimer()
    handler.add_callback(cb)
    handler.fake_train([{}, {}])
    torch.save(cb.state_dict(), tmp_path / "t.pt")
    fresh = EpochTimer()
    fresh.load_state_dict(torch.load(tmp_path / "t.pt", weights_only=True))
    assert fresh.times == cb.times and len(fresh.times) == 2
