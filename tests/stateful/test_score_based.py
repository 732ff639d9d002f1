import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnh
from nnh import NNHandler, ModelType
from nnh.func import read_checkpoint
from nnh.stateful.runtime import Runtime
from tests._gaussian import ExactGaussianScore, exact_handler
from tests._models import ToySDE


class ConstantSampler(nnh.Sampler):
    """A custom sampler: N copies of `value` in `dim` dimensions."""

    def __init__(self, value: float = 3.0, dim: int = 2) -> None:
        self.value, self.dim = value, dim

    def sample(self, N, device=None, **kwargs):
        return torch.full((N, self.dim), self.value, device=device)

    def save(self):
        return {}

    def load(self, state_dict):
        return self


class TimeNet(nn.Module):
    """net(t, x, *cond) = tanh-MLP of (x, t, cond); records the conditioning it was given."""

    def __init__(self, n_cond: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 + n_cond, 16), nn.Tanh(), nn.Linear(16, 2))
        self.seen: list = []

    def forward(self, t, x, *cond, **kw):
        self.seen.append((len(cond), sorted(kw)))
        extra = [c.reshape(len(x), -1).float() for c in (*cond, *kw.values())]
        return self.net(torch.cat([x, t[:, None], *extra], -1))


# ---------------------------------------------------------------- the SDE on a handler
def test_set_sde_and_assigning_an_sde_make_the_handler_score_based():
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VESDE, sigma_max=10.0)
    assert isinstance(h.sde, nnh.VESDE) and h.sde.sigma_max == 10.0 and h.model_type is ModelType.SCORE_BASED
    h2 = NNHandler(TimeNet, model_type="regression")
    h2.sde = ToySDE(scale=2.0)  # duck-typed: no nnh class, the members are enough
    assert h2.model_type is ModelType.SCORE_BASED
    h2.sde = None
    assert h2.sde is None and h2.model_type is ModelType.SCORE_BASED


@pytest.mark.parametrize("call,error,match", [
    (lambda h: h.set_sde(nnh.VPSDE(), beta_max=3.0), TypeError, r"sde_class=VPSDE\(\) must be a class"),
    (lambda h: h.set_sde(nnh.VPSDE, beta_mx=3.0), TypeError, r"VPSDE\(\*\*\{'beta_mx': 3.0\}\) was refused"),
    (lambda h: h.set_sde(nnh.VESDE, sigma_min=-1.0), ValueError, r"sigma_min=-1.0 must be a number > 0"),
    (lambda h: h.set_sde(dict), TypeError, r"dict object lacks \['T', 'epsilon'"),
    (lambda h: setattr(h, "sde", nnh.VPSDE), TypeError, r"got the class VPSDE; assign an instance"),
    (lambda h: setattr(h, "sde", object()), TypeError, r"object object lacks \['T', 'epsilon', 'sigma', "
                                                     r"'marginal_prob', 'drift', 'diffusion', 'prior'\]"),
    (lambda h: setattr(h, "sde", ToySDE(epsilon=2.0)), ValueError, r"T=1.0, epsilon=2.0"),
    # An infinite T passed, and sampling stepped by (T - epsilon) / steps = inf into NaN.
    (lambda h: setattr(h, "sde", ToySDE(T=math.inf)), ValueError,
     r"^handler.sde: ToySDE has T=inf, epsilon=0.001; they must be finite numbers with 0 <= epsilon < T"),
])
def test_a_refused_sde_names_the_problem_and_changes_nothing(call, error, match):
    h = NNHandler(TimeNet, model_type="regression")
    with pytest.raises(error, match=match):
        call(h)
    assert h.sde is None and h.model_type is ModelType.REGRESSION


@pytest.mark.parametrize("t", [0.4, torch.tensor(0.4), torch.full((5,), 0.4)], ids=["float", "0-d", "(B,)"])
def test_score_is_the_output_over_sigma(t):
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    x = torch.randn(5, 2)
    expected = h.module(torch.full((5,), 0.4), x) / nnh.VPSDE().sigma(torch.tensor(0.4))
    torch.testing.assert_close(h.score(t, x), expected)


def test_score_without_an_sde_says_how_to_set_one():
    with pytest.raises(RuntimeError, match=r"score needs an SDE; call handler.set_sde\(nnh.VPSDE\)"):
        NNHandler(TimeNet).score(0.5, torch.zeros(1, 2))


# ---------------------------------------------------------------- sample: dispatch and arguments
def test_sample_n_reaches_the_custom_sampler_with_or_without_an_sde():
    h = NNHandler(TimeNet)
    h.set_sampler(ConstantSampler, value=3.0)
    assert torch.equal(h.sample(N=4), torch.full((4, 2), 3.0)) and h.sample(3).shape == (3, 2)
    h.set_sde(nnh.VPSDE)
    assert torch.equal(h.sample(N=2), torch.full((2, 2), 3.0))  # still the custom sampler
    assert h.sample((6, 2), 3, bar=False).shape == (6, 2)       # the reverse SDE
    with pytest.raises(TypeError, match=r"no SDE is set; call handler.set_sde"):
        NNHandler(TimeNet).sample((4, 2), 10)


@pytest.mark.parametrize("kwargs,match", [
    ({"shape": 8, "steps": 10}, r"shape=8 must be a tuple of positive ints"),
    ({"shape": (8, 0), "steps": 10}, r"shape=\(8, 0\)"),
    ({"shape": (8, 2), "steps": 0}, r"steps=0 must be an int >= 1"),
    ({"shape": (8, 2), "steps": 10, "method": "heun"}, r"method='heun' must be one of \('euler_maruyama'"),
    ({"shape": (8, 2), "steps": 10, "snr": 0.0}, r"snr=0.0 must be a finite number > 0"),
    ({"shape": (8, 2), "steps": 10, "corrector_steps": -1}, r"corrector_steps=-1 must be an int >= 0"),
    ({"shape": (8, 2), "steps": 10, "guidance_factor": math.nan}, r"guidance_factor=nan"),
    ({"shape": (8, 2), "steps": 10, "condition": {"c": 1}}, r"condition must be a list or tuple"),
    # Non-bool flags were read by truth value ("no" is True); device was ignored by the SDE path.
    ({"shape": (8, 2), "steps": 10, "apply_ema": "no"}, r"^sample: apply_ema='no' must be True or False"),
    ({"shape": (8, 2), "steps": 10, "stop_on_NaN": None}, r"^sample: stop_on_NaN=None must be True or False"),
    ({"shape": (8, 2), "steps": 10, "device": "cuda"}, r"^sample: device='cuda' applies to the custom sampler"),
])
def test_sample_refuses_bad_arguments(kwargs, match):
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    with pytest.raises((ValueError, TypeError), match=match):
        h.sample(bar=False, **kwargs)


def test_sample_refuses_a_non_bool_bar():
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    with pytest.raises(TypeError, match=r"^sample: bar='no' must be True or False"):
        h.sample((8, 2), 10, bar="no")


@pytest.mark.parametrize("kwargs,named", [
    ({"N": 4, "steps": 10}, "steps=10"),
    ({"N": 4, "shape": (4, 2)}, r"shape=\(4, 2\)"),
    ({"N": 4, "method": "probability_flow", "corrector_steps": 2}, "method='probability_flow', corrector_steps=2"),
    ({"N": 4, "guidance_factor": 2.0}, "guidance_factor=2.0"),
    ({"shape": 4, "steps": 10}, "steps=10"),  # no SDE: sample(4, 10) is the custom sampler's
])
def test_the_custom_sampler_path_refuses_the_arguments_of_sde_sampling(kwargs, named):
    # They were silently ignored: sample(N=4, steps=10) drew from the custom sampler without steps.
    h = NNHandler(TimeNet)
    h.set_sampler(ConstantSampler, value=3.0)
    if "N" in kwargs:
        h.set_sde(nnh.VPSDE)
    with pytest.raises(ValueError, match=rf"^sample: {named} apply to reverse-SDE sampling"):
        h.sample(**kwargs)
    assert h.sample(N=4, guidance_factor=1.0, method="euler_maruyama").shape == (4, 2)  # the defaults pass


@pytest.mark.parametrize("fn", [lambda t, x: x[:, :1], lambda t, x: x[0], lambda t, x: 0.0],
                         ids=["(B, 1)", "(D,)", "float"])
def test_a_likelihood_score_not_shaped_like_x_is_named(fn):
    # A (B, 1) or (D,) guidance term broadcast into a wrong score without an error.
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    with pytest.raises(ValueError, match=r"^sample: likelihood_score_fn\(t, x\) returned .* for x of shape \(8, 2\)"):
        h.sample((8, 2), 3, likelihood_score_fn=fn, bar=False)


class HalfNet(TimeNet):
    def forward(self, t, x, *cond, **kw):
        return super().forward(t, x)[:, :1]


def test_a_network_output_not_shaped_like_x_is_named_by_sample_score_and_log_likelihood():
    h = NNHandler(HalfNet)
    h.set_sde(nnh.VPSDE)
    match = r"the network returned shape \(8, 1\) for x of shape \(8, 2\)"
    with pytest.raises(ValueError, match=match):
        h.sample((8, 2), 3, bar=False)
    with pytest.raises(ValueError, match=match):
        h.score(0.5, torch.zeros(8, 2))
    with pytest.raises(ValueError, match=match):
        h.log_likelihood(torch.zeros(8, 2), ode_steps=2)


def test_score_refuses_x_that_is_not_a_tensor():
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    with pytest.raises(TypeError, match=r"^score: x must be a tensor of shape \(B, \*event_shape\), got list"):
        h.score(0.5, [[0.0, 1.0]])


def test_condition_reaches_the_model():
    h = NNHandler(TimeNet, n_cond=1)
    h.set_sde(nnh.VPSDE)
    out = h.sample((4, 2), 5, condition=[torch.ones(4, 1)], bar=False)
    assert out.shape == (4, 2) and h.module.seen[-1] == (1, [])
    h.log_likelihood(torch.zeros(3, 2), torch.ones(3, 1), ode_steps=2)
    assert h.module.seen[-1] == (1, [])


# ---------------------------------------------------------------- non-finite states, host reads
class BlowsUp(ExactGaussianScore):
    """The exact Gaussian score until t drops below `t_bad`, NaN from there on; keeps its inputs."""

    def __init__(self, t_bad: float = 0.5) -> None:
        super().__init__("vp")
        self.t_bad, self.inputs = t_bad, []

    def forward(self, t, x):
        self.inputs.append(x.clone())
        out = super().forward(t, x)
        return torch.where(t[:, None] < self.t_bad, torch.full_like(out, math.nan), out)


def test_stop_on_nan_returns_the_last_finite_state_and_names_the_step():
    h = NNHandler(BlowsUp, t_bad=0.5)
    h.set_sde(nnh.VPSDE)
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match=r"non-finite at step 12 of 20 \(t = 0.45\).*\(after step 11\)"):
        out = h.sample((8, 2), 20, bar=False)
    # Step i (0-based) evaluates the model at t_i = 1 - i (1 - eps) / 20: t_11 = 0.45 is the first
    # below 0.5 (t_10 = 0.5 + eps / 2), and the state it was given is the last finite one.
    assert torch.equal(out, h.module.inputs[11]) and torch.isfinite(out).all()
    assert not torch.isfinite(h.module.inputs[12]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isnan(h.sample((8, 2), 20, bar=False, stop_on_NaN=False)).all()


def test_sampling_reads_the_device_once_per_refresh(monkeypatch):
    # 200 steps in well under the 0.5 s refresh period: one host read (the final one).
    h = exact_handler("vp")
    reads = []
    for name in ("__bool__", "item", "__int__", "__float__", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name: reads.append(_n) or _o(self, *a))
    h.sample((16, 2), 200, bar=True)
    monkeypatch.undo()
    assert reads == ["__bool__"]


# ---------------------------------------------------------------- EMA, ranks
def test_apply_ema_samples_with_the_ema_weights_and_restores_the_raw_ones():
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    ema = h.ensure_ema()
    for v in ema.values():
        v.add_(0.5)
    raw = {k: v.clone() for k, v in h.module.state_dict().items()}

    def draw(apply_ema):
        torch.manual_seed(1)
        return h.sample((4, 2), 3, apply_ema=apply_ema, bar=False)

    with_ema, without = draw(True), draw(False)
    for k, v in h.module.state_dict().items():
        assert torch.equal(v, raw[k])
    with torch.no_grad():
        for name, p in h.module.named_parameters():
            p.copy_(ema[name])
    torch.testing.assert_close(draw(False), with_ema)
    assert not torch.allclose(with_ema, without)
    ll_ema = h.log_likelihood(torch.zeros(2, 2), ode_steps=2, apply_ema=True)
    assert ll_ema.shape == (2,)


def test_only_the_main_process_samples_and_evaluates_likelihoods(monkeypatch):
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    monkeypatch.setattr(NNHandler, "runtime", property(lambda self: Runtime(torch.device("cpu"), rank=1, world_size=2)))
    assert h.sample((4, 2), 3, bar=False) is None
    assert h.log_likelihood(torch.zeros(2, 2), ode_steps=2) is None
    with pytest.raises(ValueError, match="steps=0"):  # arguments are checked on every rank
        h.sample((4, 2), 0)
    # Under FSDP every forward is a collective: rank 1 runs the network too, and returns None.
    calls = []
    h.module.register_forward_hook(lambda *_: calls.append(1))
    monkeypatch.setattr(NNHandler, "runtime", property(
        lambda self: Runtime(torch.device("cpu"), rank=1, world_size=2, strategy="fsdp")))
    assert h.sample((4, 2), 3, bar=False) is None and len(calls) == 3


# ---------------------------------------------------------------- log_likelihood
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("noise_type", ["rademacher", "gaussian"])
def test_log_likelihood_for_any_batch_and_number_of_probes(batch, k, noise_type):
    # Isotropic Gaussian data: the Jacobian of the probability-flow drift is a multiple of I, so
    # Rademacher probes are exact and every (B, K) gives the same values; Gaussian probes scatter.
    h = exact_handler("vp", std=(0.5, 0.5))
    x = torch.tensor([[0.1, -0.3], [0.5, 0.2], [-0.7, 0.0]])[:batch]
    torch.manual_seed(0)
    ll = h.log_likelihood(x, ode_steps=20, n_cotangent_vectors=k, noise_type=noise_type, method="RK4")
    reference = h.log_likelihood(x[:1], ode_steps=20, method="RK4")
    assert ll.shape == (batch,) and torch.isfinite(ll).all()
    if noise_type == "rademacher":
        assert ll[0].item() == pytest.approx(reference.item(), abs=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"ode_steps": 0}, r"ode_steps=0 must be an int >= 1"),
    ({"ode_steps": 5, "n_cotangent_vectors": 0}, r"n_cotangent_vectors=0"),
    ({"ode_steps": 5, "noise_type": "normal"}, r"noise_type='normal' must be 'rademacher' or 'gaussian'"),
    ({"ode_steps": 5, "method": "dopri5"}, r"method='dopri5' must be 'Euler', 'Heun' or 'RK4'"),
    ({"ode_steps": 5, "t0": 0.5, "t1": 0.2}, r"t0=0.5, t1=0.2; they must satisfy 0 <= t0 < t1"),
    # Past T the prior at T is not p_t1: a wrong likelihood, silently.
    ({"ode_steps": 5, "t1": 5.0}, r"t0=1e-05, t1=5.0; they must satisfy 0 <= t0 < t1 <= T=1.0"),
    # sigma(0) = 0 for a VP SDE: net / sigma was inf or NaN.
    ({"ode_steps": 5, "t0": 0.0}, r"^log_likelihood: sigma\(t0=0.0\) = 0.0 for VPSDE"),
])
def test_log_likelihood_refuses_bad_arguments(kwargs, match):
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    with pytest.raises(ValueError, match=match):
        h.log_likelihood(torch.zeros(2, 2), **kwargs)


@pytest.mark.parametrize("x,kwargs,error,match", [
    (torch.zeros(2, 2, dtype=torch.long), {}, ValueError, r"^log_likelihood: x has dtype torch.int64"),
    (torch.zeros(2, 2), {"apply_ema": "no"}, TypeError, r"^log_likelihood: apply_ema='no' must be True or False"),
    (torch.zeros(2, 2), {"pbar": 1}, TypeError, r"^log_likelihood: pbar=1 must be True or False"),
])
def test_log_likelihood_names_integer_data_and_non_bool_flags(x, kwargs, error, match):
    # Integer x failed deep in autograd ("only Tensors of floating point dtype can require gradients").
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    with pytest.raises(error, match=match):
        h.log_likelihood(x, ode_steps=2, **kwargs)


def test_log_likelihood_from_t0_0_is_allowed_where_sigma_0_is_positive():
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VESDE)  # sigma(0) = sigma_min
    assert torch.isfinite(h.log_likelihood(torch.zeros(2, 2), ode_steps=2, t0=0.0)).all()


# ---------------------------------------------------------------- checkpoints
class ForeignSDE(ToySDE):
    """An SDE class that does not record its constructor arguments (as another package's)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(scale)
        del self.init_kwargs


def test_checkpoint_stores_the_sde_as_import_path_and_kwargs(tmp_path):
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE, beta_max=15.0, epsilon=1e-3)
    h.save(tmp_path / "a.pth")
    assert read_checkpoint(tmp_path / "a.pth")["sde"] == {
        "__nnh__": "object", "path": "nnh.func.sde:VPSDE", "args": [],
        "kwargs": {"beta_max": 15.0, "epsilon": 1e-3}, "state": None}
    loaded = NNHandler.load(tmp_path / "a.pth")
    assert isinstance(loaded.sde, nnh.VPSDE) and (loaded.sde.beta_max, loaded.sde.epsilon) == (15.0, 1e-3)
    assert loaded.model_type is ModelType.SCORE_BASED
    assert NNHandler.load(tmp_path / "a.pth", skip_sampler_sde=True).sde is None

    h.set_sde(ForeignSDE, scale=3.0)  # set_sde records the kwargs of a class that does not
    h.save(tmp_path / "b.pth")
    loaded = NNHandler.load(tmp_path / "b.pth")
    assert type(loaded.sde) is ForeignSDE and loaded.sde.scale == 3.0


# ---------------------------------------------------------------- training
def test_training_calls_the_loss_with_inputs_sde_model_device_and_conditions_the_model():
    calls = []

    def loss_fn(x, sde, model, device, weight=1.0):
        calls.append((x.shape, type(sde), str(device), weight))
        return weight * nnh.denoising_score_matching(x, sde, model, device)

    h = NNHandler(TimeNet, n_cond=1)
    h.set_sde(nnh.VPSDE)
    h.set_optimizer(torch.optim.SGD, lr=0.01)
    h.set_loss_fn(loss_fn, weight=2.0)
    h.set_train_loader(TensorDataset(torch.randn(16, 2), torch.randn(16, 1)), batch_size=8)
    h.set_val_loader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=8)
    h.train(1, progress_bar=False)
    assert calls[0] == (torch.Size([8, 2]), nnh.VPSDE, "cpu", 2.0) and len(calls) == 3  # 2 train, 1 val
    assert h.module.seen[-1] == (1, []) and math.isfinite(h.val_losses[-1])
    # A dict batch: every key but the inputs' is a keyword argument of the model.
    h.set_train_loader(DataLoader([{"x": torch.randn(4, 2), "c": torch.randn(4, 1)}], batch_size=None))
    h.train(1, validate_every=0, progress_bar=False)
    assert h.module.seen[-1] == (0, ["c"])


def test_score_based_training_keeps_amp_accumulation_clipping_and_ema():
    torch.manual_seed(0)
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    h.set_optimizer(torch.optim.Adam, lr=1e-2)
    h.set_loss_fn(nnh.denoising_score_matching)
    h.set_train_loader(TensorDataset(torch.randn(64, 2)), batch_size=8)
    before = [p.detach().clone() for p in h.module.parameters()]
    h.train(2, validate_every=0, use_amp="bf16", gradient_accumulation_steps=2, gradient_clipping_norm=0.5,
            ema_decay=0.9, progress_bar=False)
    assert int(h.train_state["step"]) == 8  # 8 micro-batches an epoch, 2 per update, 2 epochs
    assert all(math.isfinite(v) for v in h.train_losses)
    ema = h.train_state["ema"]
    for (name, p), p0 in zip(h.module.named_parameters(), before):
        assert not torch.equal(p, p0) and not torch.equal(ema[name], p)


def test_training_a_score_based_handler_needs_an_sde():
    h = NNHandler(TimeNet, model_type="score_based")
    h.set_optimizer(torch.optim.SGD, lr=0.01)
    h.set_loss_fn(nnh.denoising_score_matching)
    h.set_train_loader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    with pytest.raises(RuntimeError, match=r"model_type='score_based' needs an SDE; call handler.set_sde"):
        h.train(1, validate_every=0, progress_bar=False)
    h.set_sde(nnh.VPSDE)
    h.train(1, validate_every=0, progress_bar=False)
    h.set_sde(nnh.VESDE)  # a new SDE reaches the loss
    seen = []
    h.set_loss_fn(lambda x, sde, model, device: seen.append(sde) or nnh.denoising_score_matching(x, sde, model))
    h.train(1, validate_every=0, progress_bar=False)
    assert isinstance(seen[0], nnh.VESDE)


def test_a_float64_network_samples_in_float64():
    # The prior's draws were float32 whatever the model, and a float64 Linear refused them.
    h = NNHandler(TimeNet)
    h.set_sde(nnh.VPSDE)
    h.model.double()
    torch.manual_seed(0)
    x = h.sample((8, 2), 3, bar=False)
    assert x.dtype == torch.float64 and x.shape == (8, 2) and torch.isfinite(x).all()
