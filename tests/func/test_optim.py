import pytest
import torch
from torch import nn

from nnh.func import (
    has_functional_update,
    init_optimizer_state,
    init_train_state,
    optimizer_update,
    train_step,
)

CASES = [
    (torch.optim.SGD, dict(lr=0.1)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=1e-2)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    (torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-2)),
    (torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
    (torch.optim.Adam, dict(lr=1e-2, weight_decay=1.0)),  # 1 is no special value
    (torch.optim.SGD, dict(lr=0.01, momentum=1.0)),  # nor for the momentum
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


GATED = [c for c in CASES if c[0] is not torch.optim.RMSprop] + [
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    (torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
]


def _bits(t):
    # Bitwise comparison: NaN == NaN and -0.0 != +0.0, unlike torch.equal.
    views = {torch.float32: torch.int32, torch.float64: torch.int64}
    return t.detach().view(views[t.dtype]) if t.dtype in views else t.detach()


def _tensors(m, opt):
    out = [p for p in m.parameters()]
    for p in m.parameters():
        out += [v for _, v in sorted(opt.state[p].items())]
    return [_bits(t).clone() for t in out]


def _set_grads(m, seed, nan=False):
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        if nan:
            p.grad.view(-1)[0] = float("nan")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls,kwargs", GATED, ids=lambda c: getattr(c, "__name__", str(c)))
def test_gated_update_equals_ungated_bitwise_and_found_inf_is_an_identity(cls, kwargs, dtype):
    # float64 parameters get float64 gated coefficients, as the ungated kernels use.
    plain, gated = _net().to(dtype), _net().to(dtype)
    opt_p, opt_g = cls(plain.parameters(), **kwargs), cls(gated.parameters(), **kwargs)
    init_optimizer_state(opt_p), init_optimizer_state(opt_g)
    step = torch.zeros((), dtype=torch.int64)
    for k in range(4):
        # A skipped update first (at step 0, where Adam's bias corrections are 0), then one
        # that must equal the ungated update bit for bit.
        before = _tensors(gated, opt_g)
        _set_grads(gated, 100 + k, nan=True)
        optimizer_update(opt_g, step, found_inf=torch.ones(1))
        assert all(torch.equal(a, b) for a, b in zip(before, _tensors(gated, opt_g)))
        _set_grads(plain, k), _set_grads(gated, k)
        optimizer_update(opt_p, step)
        optimizer_update(opt_g, step, found_inf=torch.zeros(1))
        assert all(torch.equal(a, b) for a, b in zip(_tensors(plain, opt_p), _tensors(gated, opt_g)))
        step += 1
    assert not torch.equal(_tensors(gated, opt_g)[0], _bits(_net()[0].weight.to(dtype)))  # it did move


def test_step_fallback_reads_found_inf():
    m = _net()
    opt = torch.optim.RMSprop(m.parameters(), lr=1e-2)
    before = _tensors(m, opt)
    _set_grads(m, 0, nan=True)
    optimizer_update(opt, torch.zeros((), dtype=torch.int64), found_inf=torch.ones(1))
    assert all(torch.equal(a, b) for a, b in zip(before, _tensors(m, opt)))
    _set_grads(m, 0)
    optimizer_update(opt, torch.zeros((), dtype=torch.int64), found_inf=torch.zeros(1))
    assert not torch.equal(before[0], _tensors(m, opt)[0])


def test_fused_and_differentiable_optimizers_are_stepped_by_their_own_step():
    # nnh's foreach maths is not theirs (fused kernels, autograd through the update): their
    # own step() must run, once per update.
    m = _net()
    for flag in ("fused", "differentiable"):
        assert not has_functional_update(torch.optim.Adam(m.parameters(), lr=1e-2, **{flag: True}))
    assert has_functional_update(torch.optim.Adam(m.parameters(), lr=1e-2))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, fused=True)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    _set_grads(m, 0)
    optimizer_update(opt, torch.zeros((), dtype=torch.int64))
    assert calls == [1]


def test_state_is_created_for_every_parameter_without_any_yet():
    # A parameter that already has state (from an earlier torch step) is skipped, not the rest.
    m = _net()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = next(m.parameters())
    first.grad = torch.ones_like(first)
    opt.step()
    init_optimizer_state(opt)
    assert all(set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"} for p in m.parameters())
    assert float(opt.state[first]["step"]) == 1.0


def test_schedulers_see_the_foreach_update_as_an_optimizer_step():
    # Otherwise every LR scheduler warns that it was stepped before the optimizer.
    import warnings

    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    _set_grads(m, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer_update(opt, torch.zeros((), dtype=torch.int64))
        sched.step()


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("cls,kwargs", [(torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
                                        (torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1))],
                         ids=lambda c: getattr(c, "__name__", str(c)))
def test_float64_adam_matches_torch_optim_to_float64_precision(cls, kwargs, traced, monkeypatch):
    # The bias corrections are taken in float64 for float64 parameters, in the eager and the
    # traced (exp-log) form alike: in float32 they would differ by ~1e-6 after a few steps.
    ref, mine = _net().double(), _net().double()
    opt_ref, opt = cls(ref.parameters(), **kwargs), cls(mine.parameters(), **kwargs)
    init_optimizer_state(opt)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced)
    g = torch.Generator().manual_seed(2)
    step = torch.zeros((), dtype=torch.int64)
    for _ in range(8):
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in ref.parameters()]
        for p, q, gr in zip(ref.parameters(), mine.parameters(), grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        optimizer_update(opt, step)
        step += 1
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
        opt_ref.step()
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced)
    for a, b in zip(ref.parameters(), mine.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
