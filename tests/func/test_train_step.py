import pytest
import torch
from torch import nn

from nnh.func import (
    batch_size_of,
    clip_grad_norm,
    init_train_state,
    load_state_from_dict,
    state_to_dict,
    train_step,
)


def _net(seed=0, d_in=5, d_out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 16), nn.Tanh(), nn.Linear(16, d_out))


def _loss(model, batch):
    out = model(batch[0])
    return nn.functional.cross_entropy(out, batch[1]), out


def _data(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


@pytest.mark.parametrize("sizes", [(8, 8, 8, 8), (10, 3, 7)])
def test_accumulated_micro_batches_equal_one_step_on_concatenation(sizes):
    x, y = _data(sum(sizes))
    whole, acc = _net(), _net()
    o1, o2 = torch.optim.SGD(whole.parameters(), lr=0.5), torch.optim.SGD(acc.parameters(), lr=0.5)
    s1, s2 = init_train_state(whole, o1), init_train_state(acc, o2)
    train_step(s1, (x, y), module=whole, loss_fn=_loss, optimizer=o1)
    start = 0
    for i, n in enumerate(sizes):
        b = (x[start:start + n], y[start:start + n])
        start += n
        _, m = train_step(s2, b, module=acc, loss_fn=_loss, optimizer=o2, micro_batch=i,
                          update=i == len(sizes) - 1)
        assert bool(m["stepped"]) == (i == len(sizes) - 1)
    before = _params(_net())
    for a, b, p0 in zip(whole.parameters(), acc.parameters(), before):
        assert not torch.equal(a, p0)  # the step moved the weights
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(s2["step"]) == 1


def test_clipping_bounds_the_global_gradient_norm():
    x, y = _data(32)
    m = _net()
    x = x * 100  # large gradients
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    s = init_train_state(m, opt)
    before = _params(m)
    _, metrics = train_step(s, (x, y), module=m, loss_fn=_loss, optimizer=opt, max_grad_norm=0.5)
    # With plain SGD and lr=1 the update is minus the clipped gradient.
    delta = torch.cat([(p0 - p.detach()).flatten() for p0, p in zip(before, m.parameters())])
    assert float(metrics["grad_norm"]) > 0.5
    assert float(delta.norm()) == pytest.approx(0.5, rel=1e-4)


def test_clip_grad_norm_leaves_small_gradients_alone():
    g = [torch.tensor([0.3, 0.4])]
    norm = clip_grad_norm(g, 1.0)
    assert float(norm) == pytest.approx(0.5)
    torch.testing.assert_close(g[0], torch.tensor([0.3, 0.4]))


def test_bf16_autocast_trains_and_lowers_the_loss():
    x, _ = _data(256)
    y = x[:, :3].argmax(dim=1)  # a learnable rule
    m = _net()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    s = init_train_state(m, opt)
    losses = []
    for _ in range(60):
        _, metrics = train_step(s, (x, y), module=m, loss_fn=_loss, optimizer=opt, amp_dtype=torch.bfloat16)
        losses.append(float(metrics["loss"]))
    assert metrics["output"].dtype == torch.bfloat16  # the forward really ran in bf16
    assert losses[-1] < 0.5 * losses[0]


def test_fp16_scaler_skips_overflowing_steps_and_backs_off():
    x, y = _data(16)
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    s = init_train_state(m, opt, grad_scaler=True, init_scale=2.0**16)
    _, metrics = train_step(s, (x, y), module=m, loss_fn=_loss, optimizer=opt, amp_dtype=torch.float16)
    assert bool(metrics["stepped"]) and float(s["scaler", "scale"]) == 2.0**16
    before = _params(m)

    def exploding(model, batch):
        loss, out = _loss(model, batch)
        return loss * torch.tensor(float("inf")), out

    _, metrics = train_step(s, (x, y), module=m, loss_fn=exploding, optimizer=opt, amp_dtype=torch.float16)
    assert not bool(metrics["stepped"])
    assert float(s["scaler", "scale"]) == 2.0**15
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert int(s["step"]) == 1


def test_fp16_without_scaler_is_refused():
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="grad_scaler=True"):
        train_step(init_train_state(m, opt), _data(4), module=m, loss_fn=_loss, optimizer=opt,
                   amp_dtype=torch.float16)


def test_skip_nonfinite_drops_the_step_and_zeroes_gradients():
    m = _net()
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    s = init_train_state(m, opt)
    before = _params(m)

    def nan_loss(model, batch):
        return _loss(model, batch)[0] * float("nan")

    _, metrics = train_step(s, _data(8), module=m, loss_fn=nan_loss, optimizer=opt, skip_nonfinite=True)
    assert bool(metrics["nonfinite"]) and not bool(metrics["stepped"])
    assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_ema_in_train_step_equals_hand_computed_average():
    x, y = _data(16)
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.3)
    s = init_train_state(m, opt, ema=True)
    expected = _params(m)
    d = 0.8
    for _ in range(4):
        train_step(s, (x, y), module=m, loss_fn=_loss, optimizer=opt, ema_decay=d)
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, m.parameters())]
    for (name, _), e in zip(m.named_parameters(), expected):
        torch.testing.assert_close(s["ema", name], e, rtol=1e-6, atol=1e-7)


def test_state_round_trips_through_plain_dicts(tmp_path):
    m = _net()
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    s = init_train_state(m, opt, ema=True)
    train_step(s, _data(8), module=m, loss_fn=_loss, optimizer=opt, ema_decay=0.9)
    torch.save(state_to_dict(s), tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    m2 = _net(seed=5)
    opt2 = torch.optim.Adam(m2.parameters(), lr=0.1)
    s2 = init_train_state(m2, opt2, ema=True)
    load_state_from_dict(s2, saved)
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)  # the module sees the loaded values (in-place copy)
    assert torch.equal(opt.state[next(m.parameters())]["exp_avg"], opt2.state[next(m2.parameters())]["exp_avg"])
    assert int(s2["step"]) == 1
    del saved["ema"]
    with pytest.raises(Exception, match="missing keys \\['ema"):
        load_state_from_dict(s2, saved)


def test_batch_size_of():
    assert batch_size_of(torch.zeros(7, 2)) == 7
    assert batch_size_of((torch.zeros(3), torch.zeros(3))) == 3
    assert batch_size_of({"x": torch.zeros(4, 1)}) == 4
    with pytest.raises(ValueError, match="found no tensor"):
        batch_size_of(("a", "b"))


def test_init_train_state_rejects_optimizer_of_another_model():
    m, other = _net(), _net()
    with pytest.raises(ValueError, match="module.parameters"):
        init_train_state(m, torch.optim.SGD(other.parameters(), lr=0.1))


def test_every_accumulation_window_is_averaged_over_its_own_samples():
    # Three windows of two micro-batches each against a plain torch loop that takes one SGD
    # step per window on the concatenated batch: a sample count carried over from the
    # previous window (acc.add_ instead of acc.fill_ at micro-batch 0) would shrink every
    # window's update after the first.
    sizes = [(6, 10), (4, 4), (9, 3)]
    x, y = _data(sum(a + b for a, b in sizes))
    ref, acc = _net(), _net()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5, foreach=True)
    opt = torch.optim.SGD(acc.parameters(), lr=0.5)
    state = init_train_state(acc, opt)
    start = 0
    for window in sizes:
        n = sum(window)
        xb, yb = x[start:start + n], y[start:start + n]
        ref_opt.zero_grad()
        nn.functional.cross_entropy(ref(xb), yb).backward()
        ref_opt.step()
        offset = 0
        for i, k in enumerate(window):
            train_step(state, (xb[offset:offset + k], yb[offset:offset + k]), module=acc, loss_fn=_loss,
                       optimizer=opt, micro_batch=i, update=i == len(window) - 1)
            offset += k
        start += n
        for a, b in zip(ref.parameters(), acc.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(state["step"]) == 3


def test_extra_keys_of_a_dict_batch_reach_the_model():
    from nnh.stateful._batches import unpack_batch

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, x, scale=1.0):
            return self.lin(x) * scale

    def loss_fn(model, batch):
        inputs, targets, args, kwargs = unpack_batch(batch)
        out = model(inputs, *args, **kwargs)
        return nn.functional.mse_loss(out, targets), out

    torch.manual_seed(0)
    m = Scaled()
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    x, y = torch.randn(4, 5), torch.randn(4, 3)
    _, metrics = train_step(init_train_state(m, opt), {"x": x, "y": y, "scale": torch.tensor(3.0)},
                            module=m, loss_fn=loss_fn, optimizer=opt)
    torch.testing.assert_close(metrics["output"], m.lin(x).detach() * 3.0)
    torch.testing.assert_close(metrics["loss"], nn.functional.mse_loss(m.lin(x) * 3.0, y).detach())


def test_fp16_loss_scaling_gives_the_fp32_step_within_fp16_error():
    # The scaler multiplies the loss by its scale and divides the gradients by it again: the
    # update must match an unscaled fp32 step (a loss divided by the scale would shrink the
    # gradients by scale**2 and leave the weights almost where they were).
    x, y = _data(32)
    ref, m = _net(), _net()
    o_ref, o = torch.optim.SGD(ref.parameters(), lr=0.5), torch.optim.SGD(m.parameters(), lr=0.5)
    start = _params(m)
    train_step(init_train_state(ref, o_ref), (x, y), module=ref, loss_fn=_loss, optimizer=o_ref)
    state = init_train_state(m, o, grad_scaler=True, init_scale=2.0**10)
    _, metrics = train_step(state, (x, y), module=m, loss_fn=_loss, optimizer=o, amp_dtype=torch.float16)
    assert bool(metrics["stepped"])
    for a, b, p0 in zip(ref.parameters(), m.parameters(), start):
        moved = (a - p0).abs().max()
        assert moved > 1e-3
        assert (a - b).abs().max() < 0.05 * moved  # fp16 forward: a few percent of the step


def test_ema_decay_zero_copies_the_weights():
    x, y = _data(16)
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.3)
    state = init_train_state(m, opt, ema=True)
    train_step(state, (x, y), module=m, loss_fn=_loss, optimizer=opt, ema_decay=0.0)
    for name, p in m.named_parameters():
        assert torch.equal(state["ema", name], p.detach())


class _Scaled(nn.Module):
    """A forward with an extra positional and keyword argument, and a buffer it updates."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        # (a bias before a BatchNorm would get a zero gradient, and Adam turns the rounding
        # noise of a zero into full steps: no comparison of two paths could hold)
        self.norm, self.lin = nn.BatchNorm1d(5), nn.Linear(5, 3)

    def forward(self, x, scale, *, shift):
        return self.lin(self.norm(x)) * scale + shift


def _scaled_loss(model, batch):
    out = model(batch[0], 2.0, shift=0.5)
    return nn.functional.cross_entropy(out, batch[1]), (out, {"n": out.shape[0]})


def test_the_torch_func_path_of_a_traced_step_equals_the_eager_one(monkeypatch):
    # Under torch.compile the gradients come from torch.func over a functional call, and the
    # update is gated on the device. Run that code path eagerly against the backward path:
    # two accumulated micro-batches, a buffer, arguments and a tuple output.
    runs = {}
    for traced in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced)
        m = _Scaled()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        s = init_train_state(m, opt)
        for i in range(6):
            _, mt = train_step(s, _data(8, seed=i), module=m, loss_fn=_scaled_loss, optimizer=opt,
                               micro_batch=i % 2, update=i % 2 == 1, skip_nonfinite=True)
        out, extra = mt.get_non_tensor("output")
        assert out.shape == (8, 3) and out.grad_fn is None and extra == {"n": 8}
        runs[traced] = [t.detach().clone() for t in (*m.parameters(), *m.buffers())], int(s["step"])
    monkeypatch.undo()
    (eager, steps_e), (traced, steps_t) = runs[False], runs[True]
    assert steps_e == steps_t == 3
    for a, b in zip(eager, traced):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(eager[3], _Scaled().lin.bias)  # it trained


def test_init_train_state_layout():
    # The documented dtypes, no EMA or scaler unless asked, and a module without parameters.
    s = init_train_state(nn.ReLU())
    assert set(s.keys()) == {"params", "buffers", "step", "acc_samples", "acc_nonfinite"}
    assert (s["step"].dtype, s["acc_samples"].dtype, s["acc_nonfinite"].dtype) == (torch.int64, torch.float32, torch.bool)
    assert set(init_train_state(nn.BatchNorm1d(3))["buffers"].keys()) == {"running_mean", "running_var",
                                                                         "num_batches_tracked"}
    s = init_train_state(_net(), grad_scaler=True, init_scale=8.0)
    assert (s["scaler", "scale"].dtype, s["scaler", "growth_tracker"].dtype) == (torch.float32, torch.int32)
    assert float(s["scaler", "scale"]) == 8.0 and "ema" not in s.keys()


def test_batch_size_of_a_scalar_and_of_a_batch_whose_first_item_holds_no_tensor():
    assert batch_size_of(torch.tensor(2.5)) == 1
    assert batch_size_of(({"note": "x"}, ["y"], torch.zeros(6, 2))) == 6


def test_clip_grad_norm_uses_the_same_coefficient_as_torch():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    ref = [nn.Parameter(t.clone()) for t in grads]
    for p, t in zip(ref, grads):
        p.grad = t.clone()
    expected_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm=0.5)
    norm = clip_grad_norm(grads, 0.5)
    assert norm.item() == pytest.approx(expected_norm.item(), rel=1e-15)
    for p, t in zip(ref, grads):
        torch.testing.assert_close(t, p.grad, rtol=1e-15, atol=0)
    assert float(clip_grad_norm([], 1.0)) == 0.0
    half = [torch.full((4,), 2.0, dtype=torch.bfloat16)]  # bf16 gradients take a bf16 coefficient
    clip_grad_norm(half, 1.0)
    assert half[0].dtype == torch.bfloat16 and half[0].tolist() == pytest.approx([0.5] * 4, rel=1e-2)


@pytest.mark.parametrize("dtypes", [(torch.bfloat16, torch.float32), (torch.float32, torch.float64)],
                         ids=["bf16-then-fp32", "fp32-then-fp64"])
def test_clip_grad_norm_of_mixed_dtypes_scales_every_gradient_as_torch_does(dtypes):
    # The coefficient stays in the dtype of the norm (the widest), as torch applies it: rounded
    # to the first gradient's dtype it scaled a bf16-then-fp32 model's gradients up to 0.4% off
    # (beyond max_norm where it rounded up), and fp64 gradients after fp32 ones by 1e-8.
    g = torch.Generator().manual_seed(1)
    grads = [(10 * torch.randn(50, generator=g)).to(d) for d in dtypes]
    ref = [nn.Parameter(t.clone()) for t in grads]
    for p, t in zip(ref, grads):
        p.grad = t.clone()
    expected_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm=1.0)
    norm = clip_grad_norm(grads, 1.0)
    assert torch.equal(norm, expected_norm)
    for p, t in zip(ref, grads):
        assert t.dtype == p.grad.dtype and torch.equal(t, p.grad)


def test_defaults_skip_nothing_and_an_update_free_micro_batch_reports_no_step():
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    s = init_train_state(m, opt)
    _, mt = train_step(s, _data(4), module=m, loss_fn=lambda model, b: (_loss(model, b)[0],), optimizer=opt,
                       update=False)
    assert "nonfinite" not in mt.keys() and "output" not in mt.keys()  # a 1-tuple: the loss alone
    assert mt["stepped"].dtype == torch.bool and not bool(mt["stepped"])
    assert all(p.grad is not None for p in m.parameters())


def test_the_forward_given_is_the_one_run():
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        return m(x)

    train_step(init_train_state(m, opt), _data(4), module=m, loss_fn=_loss, optimizer=opt, forward=forward)
    assert calls == [4]


def test_ema_decay_one_freezes_the_ema():
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    s = init_train_state(m, opt, ema=True)
    before = s["ema"].clone()
    for skip in (False, True):
        train_step(s, _data(4), module=m, loss_fn=_loss, optimizer=opt, ema_decay=1.0, skip_nonfinite=skip)
    assert int(s["step"]) == 2 and (before == s["ema"]).all()


def test_fp16_autocast_runs_the_forward_in_fp16_and_no_amp_warns_nothing():
    import warnings

    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    s = init_train_state(m, opt, grad_scaler=True)
    _, mt = train_step(s, _data(4), module=m, loss_fn=_loss, optimizer=opt, amp_dtype=torch.float16)
    assert mt["output"].dtype == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, mt = train_step(s, _data(4), module=m, loss_fn=_loss, optimizer=opt)
    assert mt["output"].dtype == torch.float32
