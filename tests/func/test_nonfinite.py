"""train_step's skip_nonfinite: a window with a non-finite loss or gradient is skipped as a
whole, decided on the device."""

import pytest
import torch
from torch import nn

from nnh.func import init_train_state, train_step


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def _loss(model, batch):
    out = model(batch[0])
    return nn.functional.cross_entropy(out, batch[1]), out


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _poisoned(n, seed):
    x, y = _data(n, seed)
    x[0, 0] = float("nan")
    return x, y


def _snapshot(state):
    return {k: v.clone() for k, v in state.flatten_keys("/").items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _window(state, m, opt, batches, **kw):
    metrics = []
    for i, b in enumerate(batches):
        _, mt = train_step(state, b, module=m, loss_fn=_loss, optimizer=opt, micro_batch=i,
                           update=i == len(batches) - 1, skip_nonfinite=True, ema_decay=0.9, **kw)
        metrics.append(mt)
    return metrics


@pytest.mark.parametrize("cls,kwargs", [(torch.optim.Adam, dict(lr=1e-2)),
                                        (torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
                                        (torch.optim.RMSprop, dict(lr=1e-2))])
def test_a_nan_micro_batch_skips_its_whole_window_and_the_next_window_steps(cls, kwargs):
    m, ref = _net(), _net()
    opt, opt_ref = cls(m.parameters(), **kwargs), cls(ref.parameters(), **kwargs)
    s, s_ref = init_train_state(m, opt, ema=True), init_train_state(ref, opt_ref, ema=True)
    _window(s, m, opt, [_data(4, 1)])  # a first step, so the state is not all zeros
    _window(s_ref, ref, opt_ref, [_data(4, 1)])
    before = _snapshot(s)

    metrics = _window(s, m, opt, [_data(4, 2), _poisoned(4, 3), _data(4, 4)])
    assert [bool(mt["nonfinite"]) for mt in metrics] == [False, True, False]
    assert [bool(mt["stepped"]) for mt in metrics] == [False, False, False]
    assert bool(s["acc_nonfinite"])
    assert all(p.grad is None for p in m.parameters())
    after = _snapshot(s)
    del before["acc_nonfinite"], after["acc_nonfinite"], before["acc_samples"], after["acc_samples"]
    _assert_same(before, after)  # params, optimizer state, step, EMA

    good = [_data(4, 5), _data(4, 6), _data(4, 7)]
    metrics = _window(s, m, opt, good)
    _window(s_ref, ref, opt_ref, good)
    assert bool(metrics[-1]["stepped"]) and not bool(s["acc_nonfinite"])
    assert int(s["step"]) == 2
    _assert_same(_snapshot(s), _snapshot(s_ref))  # as if the skipped window never happened


def test_finite_loss_with_nonfinite_gradient_is_skipped():
    m = _net()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    s = init_train_state(m, opt)
    before = _snapshot(s)

    def nan_grad(model, batch):
        loss, out = _loss(model, batch)
        return loss + torch.sqrt((out * 0).sum()), out  # sqrt'(0) = inf: NaN gradients

    _, mt = train_step(s, _data(4, 1), module=m, loss_fn=nan_grad, optimizer=opt, skip_nonfinite=True)
    assert torch.isfinite(mt["loss"]) and not bool(mt["nonfinite"]) and not bool(mt["stepped"])
    _assert_same(before, _snapshot(s))


def test_skip_nonfinite_on_finite_data_equals_no_skip_bitwise():
    runs = []
    for skip in (False, True):
        m = _net()
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
        s = init_train_state(m, opt, ema=True)
        for k in range(3):
            _, mt = train_step(s, _data(8, k), module=m, loss_fn=_loss, optimizer=opt, ema_decay=0.99,
                               max_grad_norm=1.0, skip_nonfinite=skip)
            assert bool(mt["stepped"]) and mt["stepped"].dtype == torch.bool
        runs.append(_snapshot(s))
    del runs[0]["acc_nonfinite"], runs[1]["acc_nonfinite"]
    _assert_same(*runs)


def test_fp16_scaler_with_skip_nonfinite_skips_on_the_device_and_backs_off():
    m = _net()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    s = init_train_state(m, opt, grad_scaler=True, init_scale=2.0**10)
    before = _snapshot(s)
    _, mt = train_step(s, _poisoned(4, 1), module=m, loss_fn=_loss, optimizer=opt,
                       amp_dtype=torch.float16, skip_nonfinite=True)
    assert bool(mt["nonfinite"]) and not bool(mt["stepped"])
    assert float(s["scaler", "scale"]) == 2.0**9
    after = _snapshot(s)
    for k in before:
        if not k.startswith("scaler") and k != "acc_nonfinite":
            assert torch.equal(before[k], after[k]), k


def test_a_state_without_acc_nonfinite_still_trains():
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    s = init_train_state(m, opt)
    del s["acc_nonfinite"]  # as built by an older nnh
    _, mt = train_step(s, _data(4, 1), module=m, loss_fn=_loss, optimizer=opt, micro_batch=0, update=False,
                       skip_nonfinite=True)
    _, mt = train_step(s, _data(4, 2), module=m, loss_fn=_loss, optimizer=opt, micro_batch=1,
                       skip_nonfinite=True)
    assert bool(mt["stepped"]) and s["acc_nonfinite"].dtype == torch.bool and int(s["step"]) == 1


def test_step_fallback_is_refused_when_traced(monkeypatch):
    m = _net()
    opt = torch.optim.RMSprop(m.parameters(), lr=1e-2)
    s = init_train_state(m, opt)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.raises(ValueError, match="RMSprop reads found_inf on the host"):
        train_step(s, _data(4, 1), module=m, loss_fn=_loss, optimizer=opt, skip_nonfinite=True)


def test_loss_fn_may_return_the_loss_alone():
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    s = init_train_state(m, opt)
    _, mt = train_step(s, _data(4, 1), module=m, loss_fn=lambda model, b: _loss(model, b)[0], optimizer=opt)
    assert "output" not in mt.keys() and bool(mt["stepped"])


def test_bad_ema_decay_is_refused_before_the_step():
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    s = init_train_state(m, opt, ema=True)
    with pytest.raises(ValueError, match="ema_decay=1.5"):
        train_step(s, _data(4, 1), module=m, loss_fn=_loss, optimizer=opt, ema_decay=1.5, skip_nonfinite=True)


def _nan_constant_loss(model, batch):
    """A non-finite loss whose gradients are finite: the NaN is a constant term."""
    loss, out = _loss(model, batch)
    return loss + torch.tensor(float("nan")), out


def test_share_nonfinite_puts_a_non_finite_loss_into_the_gradients():
    # What DDP averages (or FSDP reduce-scatters) is the gradient: with share_nonfinite the
    # flag travels in it; without, a rank whose loss alone is NaN would keep finite gradients.
    grads = {}
    for share in (False, True):
        net = _net()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        state = init_train_state(net, opt)
        train_step(state, _data(8, 1), module=net, loss_fn=_nan_constant_loss, optimizer=opt, update=False,
                   skip_nonfinite=True, share_nonfinite=share)
        grads[share] = [p.grad.clone() for p in net.parameters()]
    assert all(torch.isfinite(g).all() for g in grads[False])
    assert all(torch.isnan(g).all() for g in grads[True])


def test_share_nonfinite_changes_nothing_for_finite_losses():
    states = []
    for share in (False, True):
        net = _net()
        opt = torch.optim.AdamW(net.parameters(), lr=0.1)
        state = init_train_state(net, opt, ema=True)
        for i in range(4):
            train_step(state, _data(8, i), module=net, loss_fn=_loss, optimizer=opt, micro_batch=i % 2,
                       update=i % 2 == 1, ema_decay=0.9, skip_nonfinite=True, share_nonfinite=share)
        states.append(_snapshot(state))
    _assert_same(*states)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_skip_nonfinite_under_a_float64_default_dtype(float64_default, clip):
    # The check's unit scale is float32 whatever the default dtype (the kernel refuses others).
    m, ref = _net(), _net()
    assert m[0].weight.dtype == torch.float64
    opt, opt_ref = torch.optim.SGD(m.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    s = init_train_state(m, opt)
    _, mt = train_step(s, _poisoned(4, 1), module=m, loss_fn=_loss, optimizer=opt,
                       skip_nonfinite=True, max_grad_norm=clip)
    assert not bool(mt["stepped"]) and int(s["step"]) == 0
    _, mt = train_step(s, _data(4, 2), module=m, loss_fn=_loss, optimizer=opt,
                       skip_nonfinite=True, max_grad_norm=clip)
    assert bool(mt["stepped"])
    loss, _ = _loss(ref, _data(4, 2))
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(ref.parameters(), clip)
    opt_ref.step()
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_share_nonfinite_is_off_by_default():
    # skip_nonfinite alone skips the window but leaves a NaN loss's finite gradients as they are.
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    state = init_train_state(net, opt)
    train_step(state, _data(8, 1), module=net, loss_fn=_nan_constant_loss, optimizer=opt, update=False,
               skip_nonfinite=True)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
