"""Bad arguments are refused at the call, naming the argument, the value and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nnh import NNHandler
from nnh.stateful.checks import check_device


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x)


def ready():
    h = NNHandler(Net)
    h.set_optimizer(torch.optim.SGD, lr=0.1)
    h.set_loss_fn(nn.functional.cross_entropy)
    h.set_train_loader(TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))), batch_size=4)
    return h


@pytest.mark.parametrize("device, kind, match", [
    ("gpu", ValueError, "device='gpu' is not a device name"),
    (3.5, TypeError, "device=3.5 must be a str, a torch.device or a CUDA index"),
    (-1, ValueError, "device=-1 is not a CUDA index"),
    pytest.param("cuda", ValueError, "CUDA is not available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this check is about machines without CUDA")),
])
def test_bad_devices(device, kind, match):
    with pytest.raises(kind, match=match):
        NNHandler(Net, device=device)


def test_an_int_device_is_a_cuda_index_as_in_torch():
    if torch.cuda.is_available():
        assert check_device(0) == torch.device("cuda", 0)
    else:
        with pytest.raises(ValueError, match="device=0 but CUDA is not available"):
            check_device(0, owner="LangevinDynamics")


def test_bad_constructor_flags():
    with pytest.raises(ValueError, match="logger_level='loud' is not a logging level"):
        NNHandler(Net, logger_mode="console", logger_level="loud")
    with pytest.raises(TypeError, match="use_distributed='no' must be True, False or None"):
        NNHandler(Net, use_distributed="no")
    assert NNHandler(Net, logger_mode="console", logger_level="DEBUG").logger.level == 10


def test_bad_optimizer_scheduler_and_loss():
    h = ready()
    with pytest.raises(ValueError, match=r"Adam\(params, \*\*\{'lr': 'a'\}\) was refused"):
        h.set_optimizer(torch.optim.Adam, lr="a")
    assert type(h.optimizer) is torch.optim.SGD  # the failed setter changed nothing
    for bad in ("StepLR", torch.optim.lr_scheduler.StepLR(h.optimizer, step_size=1), torch.optim.Adam):
        with pytest.raises(TypeError, match="must be an LR scheduler class"):
            h.set_scheduler(bad)
    with pytest.raises(TypeError, match=r"pass an instance, e.g. handler.set_loss_fn\(MSELoss\(\)\)"):
        h.set_loss_fn(nn.MSELoss)
    with pytest.raises(TypeError, match=r"does not accept the keyword arguments \['bogus'\]"):
        h.set_loss_fn(nn.functional.cross_entropy, bogus=1)
    assert h.loss_fn is nn.functional.cross_entropy


@pytest.mark.parametrize("data", [[1, 2, 3], "data.csv", {"x": torch.zeros(3)}])
def test_bad_datasets(data):
    with pytest.raises(TypeError, match="pass a torch Dataset or DataLoader"):
        ready().set_train_loader(data, batch_size=2)


@pytest.mark.parametrize("kwargs, kind, match", [
    ({"gradient_clipping_norm": "a"}, TypeError, "gradient_clipping_norm='a' must be a number or None"),
    ({"ema_decay": "0.9"}, TypeError, "ema_decay='0.9' must be a number"),
    ({"ema_decay": None}, TypeError, "ema_decay=None must be a number"),
    ({"debug_print_interval": "x"}, ValueError, "debug_print_interval='x' must be an int >= 1"),
    ({"debug_print_interval": -1}, ValueError, "debug_print_interval=-1 must be an int >= 1"),
    ({"validate_every": True}, TypeError, "validate_every=True must be an int, not a bool"),
    ({"max_nonfinite_steps": True}, TypeError, "max_nonfinite_steps=True must be an int, not a bool"),
    ({"progress_bar": "no"}, TypeError, "progress_bar='no' must be True or False"),
])
def test_bad_train_arguments(kwargs, kind, match):
    h = ready()
    with pytest.raises(kind, match=match):
        h.train(1, **{"validate_every": 0, **kwargs})
    assert h.epoch == 0


def test_bad_auto_save_path_and_freeze_target():
    h = ready()
    with pytest.raises(TypeError, match="save_path=5 must be a folder path"):
        h.auto_save(1, save_path=5)
    with pytest.raises(TypeError, match="freeze_module expects an nn.Module"):
        h.freeze_module(5)
