import pytest
import torch
from torch import nn

from nnh.func import has_functional_update, init_train_state, train_step

CASES = [
    (torch.optim.SGD, dict(lr=0.1)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=1e-2)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    (torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-2)),
    (torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
    (torch.optim.AdamW, dict(lr=1e-2)),
    (torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.95), maximize=True)),
    (torch.optim.RMSprop, dict(lr=1e-2)),  # not foreach: stepped through .step()
]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _loss(model, batch):
    out = model(batch[0])
    return nn.functional.cross_entropy(out, batch[1]), out


@pytest.mark.parametrize("cls,kwargs", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_train_step_matches_torch_optim(cls, kwargs):
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(6)]
    ref, mine = _net(), _net()
    opt_ref, opt = cls(ref.parameters(), **kwargs), cls(mine.parameters(), **kwargs)
    state = init_train_state(mine, opt)
    for b in batches:
        opt_ref.zero_grad()
        nn.functional.cross_entropy(ref(b[0]), b[1]).backward()
        opt_ref.step()
        train_step(state, b, module=mine, loss_fn=_loss, optimizer=opt)
    for a, b in zip(ref.parameters(), mine.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(state["step"]) == len(batches)
    # The state references the optimizer's own tensors, and the optimizer state loads back.
    opt_ref.load_state_dict(opt.state_dict())


def test_functional_update_covers_exactly_sgd_adam_adamw():
    p = [nn.Parameter(torch.zeros(2))]
    assert has_functional_update(torch.optim.SGD(p, lr=0.1))
    assert has_functional_update(torch.optim.AdamW(p))
    assert not has_functional_update(torch.optim.RMSprop(p))

    class MySGD(torch.optim.SGD):
        pass

    assert not has_functional_update(MySGD(p, lr=0.1))
