"""train_step and ema_update under torch.compile(fullgraph=True) equal eager (tiny graphs:
compiling is slow on CPU)."""

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from nnh.func import ema_update, init_train_state, train_step


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _loss(model, batch):
    out = model(batch[0])
    return nn.functional.cross_entropy(out, batch[1]), out


@pytest.mark.parametrize("cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_compiled_train_step_equals_eager(cls):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)) for _ in range(3)]
    eager_m, comp_m = _net(), _net()
    kw = {"lr": 0.05, "momentum": 0.9} if cls is torch.optim.SGD else {"lr": 0.01}
    eager_o, comp_o = cls(eager_m.parameters(), **kw), cls(comp_m.parameters(), **kw)
    eager_s = init_train_state(eager_m, eager_o, ema=True)
    comp_s = init_train_state(comp_m, comp_o, ema=True)

    def step(state, batch, module, optimizer):
        return train_step(state, batch, module=module, loss_fn=_loss, optimizer=optimizer,
                          max_grad_norm=1.0, ema_decay=0.9)

    compiled = torch.compile(step, fullgraph=True)
    for b in batches:
        _, m_e = step(eager_s, b, eager_m, eager_o)
        _, m_c = compiled(comp_s, b, comp_m, comp_o)
        torch.testing.assert_close(m_e["loss"], m_c["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(eager_m.parameters(), comp_m.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for k in eager_s["ema"].keys():
        torch.testing.assert_close(eager_s["ema", k], comp_s["ema", k], rtol=1e-5, atol=1e-6)
    assert int(comp_s["step"]) == 3


def test_compiled_ema_update_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    ema = TensorDict({"a": torch.randn(3, 3), "b": torch.randn(4)}, batch_size=[])
    params = TensorDict({"a": torch.randn(3, 3), "b": torch.randn(4)}, batch_size=[])
    ema_c = ema.clone()
    ema_update(ema, params, 0.9)
    torch.compile(ema_update, fullgraph=True)(ema_c, params, 0.9)
    for k in ("a", "b"):
        torch.testing.assert_close(ema[k], ema_c[k])


def test_compiled_skip_nonfinite_with_a_loss_only_loss_fn():
    # One graph covers two fixes: skip_nonfinite decided on the device, and a loss_fn that
    # returns the loss alone (no aux) under torch.func.
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)
    bad = x.clone()
    bad[0, 0] = float("nan")
    eager_m, comp_m = _net(), _net()
    eager_o = torch.optim.Adam(eager_m.parameters(), lr=0.01)
    comp_o = torch.optim.Adam(comp_m.parameters(), lr=0.01)
    eager_s, comp_s = init_train_state(eager_m, eager_o), init_train_state(comp_m, comp_o)

    def step(state, batch, module, optimizer):
        return train_step(state, batch, module=module, optimizer=optimizer, skip_nonfinite=True,
                          loss_fn=lambda model, b: nn.functional.cross_entropy(model(b[0]), b[1]))

    compiled = torch.compile(step, fullgraph=True)
    before = [p.detach().clone() for p in comp_m.parameters()]
    _, m = compiled(comp_s, (bad, y), comp_m, comp_o)
    assert bool(m["nonfinite"]) and not bool(m["stepped"]) and int(comp_s["step"]) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, comp_m.parameters()))
    assert all(p.grad is None for p in comp_m.parameters())
    _, m = compiled(comp_s, (x, y), comp_m, comp_o)
    step(eager_s, (x, y), eager_m, eager_o)
    assert bool(m["stepped"]) and int(comp_s["step"]) == 1
    for a, b in zip(eager_m.parameters(), comp_m.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
