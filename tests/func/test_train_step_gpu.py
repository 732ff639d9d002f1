"""CUDA-only checks: fp16 autocast with the loss scaler, and the handler's default AMP on
CUDA. Skipped on machines without a GPU (CI runs on CPU)."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nnh import NNHandler
from nnh.func import init_train_state, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _loss(model, batch):
    out = model(batch[0])
    return nn.functional.cross_entropy(out, batch[1]), out


def test_fp16_with_scaler_trains_on_cuda():
    torch.manual_seed(0)
    x = torch.randn(512, 8, device="cuda")
    y = x[:, :3].argmax(1)
    m = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)).cuda()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    s = init_train_state(m, opt, grad_scaler=True)
    losses = []
    for _ in range(100):
        _, metrics = train_step(s, (x, y), module=m, loss_fn=_loss, optimizer=opt, amp_dtype=torch.float16)
        losses.append(metrics["loss"])
    assert metrics["output"].dtype == torch.float16
    assert float(losses[-1]) < 0.5 * float(losses[0])
    assert int(s["step"]) > 90  # a few early steps may overflow and be skipped


def test_handler_use_amp_on_cuda_uses_fp16_and_a_scaler():
    x = torch.randn(256, 8)
    data = TensorDataset(x, x[:, :3].argmax(1))
    torch.manual_seed(0)
    h = NNHandler(nn.Linear, device="cuda", in_features=8, out_features=3)
    h.set_optimizer(torch.optim.Adam, lr=1e-2)
    h.set_loss_fn(nn.functional.cross_entropy)
    h.set_train_loader(data, batch_size=64)
    h.train(5, validate_every=0, use_amp=True, progress_bar=False)
    assert "scaler" in h.train_state.keys() and h.train_losses[-1] < h.train_losses[0]
