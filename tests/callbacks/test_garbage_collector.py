import pytest

from nnh.callbacks import GarbageCollector
from nnh.callbacks import garbage_collector


def test_collects_every_n_epochs_and_empties_the_cuda_cache(handler, monkeypatch):
    calls = []
    monkeypatch.setattr(garbage_collector.gc, "collect", lambda: calls.append("gc") or 0)
    monkeypatch.setattr(garbage_collector.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(garbage_collector.torch.cuda, "empty_cache", lambda: calls.append("cuda"))
    handler.add_callback(GarbageCollector(every_n_epochs=2))
    epochs_seen = []
    handler.fake_train([{}] * 5, on_epoch=lambda e: epochs_seen.append((e, len(calls))))
    # Before epochs 0..4 start, 0, 0, 2, 2, 4 calls have happened: after epochs 2 and 4 (1-based).
    assert [n for _, n in epochs_seen] == [0, 0, 2, 2, 4]
    assert calls == ["gc", "cuda", "gc", "cuda"]


def test_no_cuda_call_without_cuda(handler, monkeypatch):
    calls = []
    monkeypatch.setattr(garbage_collector.gc, "collect", lambda: calls.append("gc") or 0)
    monkeypatch.setattr(garbage_collector.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(garbage_collector.torch.cuda, "empty_cache", lambda: calls.append("cuda"))
    handler.add_callback(GarbageCollector(1))
    handler.fake_train([{}] * 2)
    assert calls == ["gc", "gc"]


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_interval_raises(n):
    with pytest.raises(ValueError, match=f"every_n_epochs={n!r}"):
        GarbageCollector(n)
