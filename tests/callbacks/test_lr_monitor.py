import torch
from torch import nn

from nnh.callbacks import LearningRateMonitor


def _two_group_handler(handler):
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    handler.module = net
    handler.optimizer = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.1},
                                         {"params": net[1].parameters(), "lr": 0.01}])
    return handler


def test_adds_the_rate_each_group_trained_with(handler):
    handler = _two_group_handler(handler)
    scheduler = torch.optim.lr_scheduler.StepLR(handler.optimizer, step_size=1, gamma=0.5)
    cb = LearningRateMonitor()
    handler.add_callback(cb)
    # The scheduler steps inside the epoch, before on_epoch_end, as the handler's does.

    def train_epoch(epoch):
        handler.optimizer.step()
        scheduler.step()

    ran = handler.fake_train([{}, {}, {}], on_epoch=train_epoch)
    assert [(logs["lr_group0"], logs["lr_group1"]) for logs in ran] == [(0.1, 0.01), (0.05, 0.005), (0.025, 0.0025)]
    assert cb.history == [[0.1, 0.01], [0.05, 0.005], [0.025, 0.0025]]
    assert cb.log_keys == ("lr_group0", "lr_group1")


def test_without_an_optimizer_it_adds_nothing(handler):
    handler.add_callback(LearningRateMonitor())
    (logs,) = handler.fake_train([{}])
    assert not any(k.startswith("lr_group") for k in logs)


def test_history_round_trips(handler, tmp_path):
    handler = _two_group_handler(handler)
    cb = LearningRateMonitor()
    handler.add_callback(cb)
    handler.fake_train([{}, {}])
    torch.save(cb.state_dict(), tmp_path / "s.pt")
    fresh = LearningRateMonitor()
    fresh.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert fresh.history == [[0.1, 0.01], [0.1, 0.01]]
