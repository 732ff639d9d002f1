import logging
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnh import LoggingMode, ModelType, NNHandler


class Net(nn.Module):
    def __init__(self, d_in=4, hidden=8, d_out=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.head = nn.Linear(hidden, d_out)
        self.tag = "net"

    def forward(self, x):
        return self.head(self.body(x))


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x[:, :3].argmax(1))


def _ready(**kw):
    h = NNHandler(Net, **kw)
    h.set_optimizer(torch.optim.SGD, lr=0.1)
    h.set_loss_fn(nn.functional.cross_entropy)
    h.set_train_loader(_data(), batch_size=16)
    return h


def test_enums_nested_importable_and_parsed_case_insensitively():
    assert NNHandler.ModelType is ModelType and NNHandler.LoggingMode is LoggingMode
    assert ModelType.from_string("Score_Based") is ModelType.SCORE_BASED
    assert ModelType.from_string("REGRESSION") is ModelType.REGRESSION
    with pytest.raises(ValueError, match="'classification', 'generative', 'regression', 'score_based'"):
        ModelType.from_string("classifier")
    with pytest.raises(ValueError, match="valid values"):
        NNHandler(Net, model_type="segmentation")
    assert NNHandler(Net, model_type="regression").model_type is ModelType.REGRESSION


def test_constructor_builds_model_with_kwargs_on_device():
    h = NNHandler(Net, device="cpu", hidden=5)
    assert h.module.head.in_features == 5 and h.device == torch.device("cpu")
    assert h.model is h.module
    assert NNHandler(Net, model_kwargs={"hidden": 6}).module.head.in_features == 6
    with pytest.raises(TypeError, match="nn.Module subclass"):
        NNHandler(Net())


def test_properties_reflect_configuration():
    h = _ready()
    assert isinstance(h.optimizer, torch.optim.SGD) and h.scheduler is None
    assert h.loss_fn is nn.functional.cross_entropy and isinstance(h.train_loader, DataLoader)
    assert h.val_loader is None and h.metrics == {} and h.callbacks == []
    assert h.sde is None and h.sampler is None and h.seed is None and h.logger is None
    h.pass_epoch_to_loss = True
    h.loss_fn_kwargs = {"label_smoothing": 0.1}
    assert h.pass_epoch_to_loss is True and h.loss_fn_kwargs == {"label_smoothing": 0.1}
    assert h.train_losses == [] and h.val_losses == []
    h.add_metric("acc", lambda o, t: 0.0)
    assert h.train_metrics_history == {"acc": []} and list(h.metrics) == ["acc"]
    h.clear_metrics()
    assert h.metrics == {}
    with pytest.raises(TypeError, match="dict"):
        h.loss_fn_kwargs = [1]


def test_bad_input_raises_before_any_work():
    h = NNHandler(Net)
    with pytest.raises(RuntimeError, match="set_optimizer"):
        h.train(1)
    h.set_optimizer(torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="set_loss_fn"):
        h.train(1)
    h.set_loss_fn(nn.functional.cross_entropy)
    with pytest.raises(RuntimeError, match="set_train_loader"):
        h.train(1)
    h.set_train_loader(_data(), batch_size=16)
    with pytest.raises(RuntimeError, match="set_val_loader"):
        h.train(1, validate_every=1)
    with pytest.raises(ValueError, match="gradient_accumulation_steps=0"):
        h.train(1, validate_every=0, gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match="epochs=-1"):
        h.train(-1, validate_every=0)
    with pytest.raises(ValueError, match="ema_decay=1.0"):
        h.train(1, validate_every=0, ema_decay=1.0)
    with pytest.raises(RuntimeError, match="set_optimizer"):
        NNHandler(Net).set_scheduler(torch.optim.lr_scheduler.StepLR, step_size=1)
    with pytest.raises(ValueError, match="ready DataLoader"):
        h.set_train_loader(DataLoader(_data()), batch_size=4)
    assert h.epoch == 0  # nothing ran


def test_unknown_attribute_names_the_handler_not_the_model():
    h = NNHandler(Net)
    with pytest.raises(AttributeError, match="'NNHandler' object has no attribute 'tag'.*handler.module"):
        h.tag
    assert h.module.tag == "net"


def test_two_handlers_in_one_process_share_nothing():
    a, b = _ready(), _ready()
    a.add_metric("m", lambda o, t: 1.0)
    a.keep_eval_on_module(a.module.body)
    a.train(2, validate_every=0, progress_bar=False)
    assert b.metrics == {} and b.train_losses == [] and b.epoch == 0
    assert b.parts.model.keep_eval == [] and b.train_state is not a.train_state
    assert not any(pa is pb for pa, pb in zip(a.module.parameters(), b.module.parameters()))
    assert a.optimizer is not b.optimizer


def test_seed_setter_seeds_torch_random_and_numpy():
    h = NNHandler(Net)
    h.seed = 7
    first = (torch.rand(1).item(), random.random(), np.random.rand())
    h.seed = 7
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == first
    assert h.seed == 7
    with pytest.raises(ValueError, match="seed=-1"):
        h.seed = -1


def test_eval_keep_eval_freeze_count_call():
    h = NNHandler(Net)
    h.keep_eval_on_module(h.module.body[1])
    h.eval(activate=False, log=False)
    assert h.module.training and not h.module.body[1].training
    h.eval(log=False)
    assert not h.module.training
    h.keep_eval_on_module(h.module.body[1], activate=False)
    h.eval(activate=False, log=False)
    assert h.module.body[1].training
    total = h.count_parameters()
    assert total == sum(p.numel() for p in h.module.parameters())
    h.freeze_module(h.module.head)
    assert h.count_parameters() == total - (8 * 3 + 3)
    assert h.count_parameters(trainable_only=False) == total
    h.eval(log=False)
    x = torch.randn(5, 4)
    torch.testing.assert_close(h(x), h.module(x))


def test_compile_model_keeps_plain_state_dict_keys():
    h = NNHandler(Net)
    keys = list(h.module.state_dict())
    h.compile_model(backend="eager")
    assert h.model is not h.module and isinstance(h.module, Net)
    assert list(h.module.state_dict()) == keys


def test_plots_write_png_files(tmp_path):
    h = _ready()
    h.set_val_loader(_data(32, seed=1), batch_size=16)
    h.add_metric("acc", lambda o, t: (o.argmax(-1) == t).float().mean())
    h.train(3, validate_every=2, progress_bar=False)
    fig = h.plot_losses(log_y_scale=True, save_path=str(tmp_path / "loss.png"))
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_yscale() == "log"
    # The validation line has only the validated epoch (NaN placeholders are left out).
    assert list(fig.axes[0].lines[1].get_xdata()) == [2]
    figs = h.plot_metrics(save_path_prefix=str(tmp_path / "m"))
    assert set(figs) == {"acc"} and (tmp_path / "m_acc.png").stat().st_size > 1000


def test_print_summary():
    h = _ready()
    h.train(1, validate_every=0, progress_bar=False)
    text = h.print(show_model_structure=True)
    assert "Net" in text and "SGD" in text and "epochs trained: 1" in text and "BatchNorm1d" in text
    assert "BatchNorm1d" not in h.print()


def test_logging_to_file(tmp_path):
    path = tmp_path / "run.log"
    h = _ready(logger_mode=LoggingMode.FILE, logger_filename=str(path), logger_level=logging.INFO)
    h.train(2, validate_every=0, progress_bar=False)
    text = path.read_text()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert isinstance(h.logger, logging.Logger) and not h.logger.propagate
    other = _ready(logger_mode="console")
    assert other.logger is not h.logger
