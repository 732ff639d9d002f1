"""Contrastive divergence: training an energy MLP, the persistent buffer, the handler call form,
and non-finite losses."""

import pytest
import torch
from torch import nn

import nnh
from nnh import ContrastiveDivergence, LangevinDynamics, LinearScheduler, ModelType, NNHandler, PersistentContrastiveDivergence


class EnergyMLP(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def mixture(n, generator):
    """Four Gaussians of std 0.3 at (+-2, +-2)."""
    centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
    pick = torch.randint(4, (n,), generator=generator)
    return centres[pick] + 0.3 * torch.randn(n, 2, generator=generator)


@pytest.mark.parametrize("persistent", [False, True])
def test_cd_training_lowers_energy_at_the_data(persistent):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = EnergyMLP()
    sampler = LangevinDynamics(model, step_size=0.05, noise_scale=1.0)
    # init_steps=0: the buffer starts as uniform noise. Burning it in on the untrained energy (the
    # default 100 steps) gathers the chains where that random energy is low, and 200 updates
    # then reach an AUC of 0.71 instead of 0.92.
    cd = ContrastiveDivergence(model, sampler, k_steps=10, persistent=persistent, buffer_size=1024, init_steps=0,
                               init_dist=torch.distributions.Uniform(torch.full((2,), -4.0), torch.full((2,), 4.0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        optimizer.zero_grad(set_to_none=True)
        loss, negatives = cd(mixture(128, gen))
        loss.backward()
        optimizer.step()
    assert negatives.shape == (128, 2) and not negatives.requires_grad
    with torch.no_grad():
        data_energy = model(mixture(2000, gen))
        noise_energy = model(8.0 * torch.rand(2000, 2, generator=gen) - 4.0)
    # Scale-free: the probability that a data point has lower energy than a uniform noise point
    # (the AUC). An untrained energy gives about 0.5.
    auc = (data_energy[:, None] < noise_energy[None, :]).double().mean().item()
    assert data_energy.mean() < noise_energy.mean()
    assert auc > 0.8, auc


class ShiftSampler:
    """A fake sampler that moves every chain by +1, to watch the buffer."""

    def sample(self, x, n_steps):
        return x + 1.0


def test_persistent_buffer_is_kept_slot_by_slot():
    model = nn.Linear(2, 1)
    energy = lambda x: model(x).squeeze(-1)  # noqa: E731
    cd = ContrastiveDivergence(energy, ShiftSampler(), k_steps=1, persistent=True, buffer_size=8, new_sample_ratio=0.0)
    x = torch.zeros(4, 2)
    cd(x)
    buffer = cd.replay_buffer.clone()
    _, negatives = cd(x)
    changed = (cd.replay_buffer != buffer).any(1)
    assert int(changed.sum()) == 4  # four distinct slots, each written back with its own chain
    torch.testing.assert_close(cd.replay_buffer[changed] - 1.0, buffer[changed])
    assert sorted(negatives.sum(1).tolist()) == sorted(cd.replay_buffer[changed].sum(1).tolist())
    always_new = ContrastiveDivergence(energy, ShiftSampler(), persistent=True, buffer_size=8, new_sample_ratio=1.0,
                                       init_dist=lambda n: torch.full((n, 2), 5.0))
    _, negatives = always_new(x)
    torch.testing.assert_close(negatives, torch.full((4, 2), 6.0))


def test_non_persistent_chains_start_at_the_data():
    cd = ContrastiveDivergence(lambda x: x.sum(1), ShiftSampler())
    x = torch.randn(3, 2)
    torch.testing.assert_close(cd(x)[1], x + 1.0)


def test_handler_call_form_reuses_the_forward_pass():
    model = EnergyMLP()
    cd = ContrastiveDivergence(model, LangevinDynamics(model, step_size=0.01), k_steps=2)
    x = torch.randn(8, 2)
    torch.manual_seed(1)
    loss_a, _ = cd(x)
    torch.manual_seed(1)
    loss_b, _ = cd(model(x), x, epoch=3)  # NNHandler's loss_fn(output, inputs, epoch=...)
    torch.testing.assert_close(loss_a, loss_b)


def test_cd_as_the_loss_of_an_nnhandler():
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(mixture(256, gen))
    handler = NNHandler(EnergyMLP, device="cpu", model_type=ModelType.GENERATIVE)
    handler.set_optimizer(torch.optim.Adam, lr=1e-3)
    sampler = LangevinDynamics(handler.module, step_size=0.05)
    handler.set_loss_fn(ContrastiveDivergence(handler.module, sampler, k_steps=5))
    handler.set_train_loader(data, batch_size=64)
    handler.train(epochs=2, validate_every=0, progress_bar=False)
    assert len(handler.train_losses) == 2 and all(torch.isfinite(torch.tensor(handler.train_losses)))


class NaNEnergy(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return (x * self.w).sum(1) * float("nan")


def test_nonfinite_loss_raises_or_skips_with_zero_gradients():
    model = NaNEnergy()
    x = torch.randn(4, 2)
    with pytest.raises(FloatingPointError, match="non-finite"):
        ContrastiveDivergence(model, ShiftSampler())(x)
    cd = ContrastiveDivergence(model, ShiftSampler(), on_nonfinite="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        loss, _ = cd(x)
    loss.backward()
    assert loss.item() == 0.0
    torch.testing.assert_close(model.w.grad, torch.zeros(2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="k_steps must be an int >= 1"):
        ContrastiveDivergence(nn.Linear(2, 1), ShiftSampler(), k_steps=0)
    with pytest.raises(ValueError, match="new_sample_ratio must be in \\[0, 1\\]"):
        ContrastiveDivergence(nn.Linear(2, 1), ShiftSampler(), new_sample_ratio=2.0)
    with pytest.raises(ValueError, match="use buffer_size >= the batch size"):
        ContrastiveDivergence(lambda x: x.sum(1), ShiftSampler(), persistent=True, buffer_size=2)(torch.zeros(4, 2))


class StepSampler(nnh.BaseSampler):
    """Moves every chain by +n_steps and records the keywords it was called with."""

    def __init__(self, model=None):
        super().__init__(model or (lambda x: x.sum(1)))
        self.register_scheduler("step_size", LinearScheduler(1.0, 0.5, 10))
        self.calls = []

    def sample(self, x=None, n_steps=100, **kwargs):
        self.calls.append(kwargs)
        return x + n_steps


class LinearEnergy(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0]))

    def forward(self, x, y=None):
        return x @ self.w if y is None else x @ self.w + y


def test_constructor_follows_torchebms_order():
    cd = ContrastiveDivergence(LinearEnergy(), StepSampler(), 5, True, 64, 3, 0.1, 0.01, True, 0.5, torch.float64, "cpu")
    assert (cd.k_steps, cd.persistent, cd.buffer_size, cd.init_steps, cd.new_sample_ratio) == (5, True, 64, 3, 0.1)
    assert (cd.energy_reg_weight, cd.add_noise_to_real, cd.noise_scale) == (0.01, True, 0.5)
    assert cd.dtype == torch.float64 and cd.device == torch.device("cpu")
    defaults = ContrastiveDivergence(LinearEnergy(), StepSampler())
    assert (defaults.k_steps, defaults.buffer_size, defaults.init_steps, defaults.new_sample_ratio) == (10, 10000, 100, 0.05)
    assert (defaults.energy_reg_weight, defaults.add_noise_to_real, defaults.noise_scale) == (0.001, False, 1e-4)
    assert PersistentContrastiveDivergence(LinearEnergy(), StepSampler(), 5).persistent
    assert isinstance(cd, nnh.BaseContrastiveDivergence) and isinstance(cd, nnh.BaseLoss)


def test_loss_formula_with_regulariser_and_data_noise():
    model = LinearEnergy()
    x = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, -1.0]])
    cd = ContrastiveDivergence(model, StepSampler(), k_steps=2, energy_reg_weight=0.1)
    loss, negatives = cd(x)
    torch.testing.assert_close(negatives, x + 2)
    pos, neg = x @ model.w, (x + 2) @ model.w
    expected = pos.mean() - neg.mean() + 0.1 * (pos.square().mean() + neg.square().mean())
    torch.testing.assert_close(loss, expected)
    noisy = ContrastiveDivergence(model, StepSampler(), k_steps=2, energy_reg_weight=0.0, add_noise_to_real=True,
                                  noise_scale=0.3)
    loss, _ = noisy(x, generator=torch.Generator().manual_seed(4))
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(loss, ((x + 0.3 * xi) @ model.w).mean() - neg.mean())
    loss, _ = noisy(x, add_noise_to_real=False)  # a per-call override
    torch.testing.assert_close(loss, pos.mean() - neg.mean())


def test_persistent_buffer_is_burned_in_then_updated_slot_by_slot():
    cd = PersistentContrastiveDivergence(LinearEnergy(), StepSampler(), k_steps=2, buffer_size=6, init_steps=3,
                                         new_sample_ratio=0.0, init_dist=lambda n: torch.zeros(n, 2))
    _, negatives = cd(torch.zeros(4, 2))
    buffer = cd.replay_buffer
    assert buffer.shape == (6, 2) and cd.buffer_initialized
    assert sorted(buffer[:, 0].tolist()) == [3.0, 3.0, 5.0, 5.0, 5.0, 5.0]  # 3 burn-in steps, 2 more for 4 slots
    torch.testing.assert_close(negatives, torch.full((4, 2), 5.0))
    state = cd.state_dict()
    fresh = PersistentContrastiveDivergence(LinearEnergy(), StepSampler(), buffer_size=6)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.replay_buffer, buffer)


def test_conditioning_reaches_model_and_sampler_and_schedulers_step_together():
    model, sampler = LinearEnergy(), StepSampler()
    cd = ContrastiveDivergence(model, sampler, k_steps=1, energy_reg_weight=0.0)
    x, y = torch.zeros(2, 2), torch.tensor([3.0, 5.0])
    loss, _ = cd(x, y=y, generator=torch.Generator())
    assert sampler.calls[-1]["model_kwargs"] == {"y": y} and "generator" in sampler.calls[-1]
    torch.testing.assert_close(loss, (x @ model.w + y).mean() - ((x + 1) @ model.w + y).mean())
    cd.register_scheduler("energy_reg_weight", LinearScheduler(0.0, 1.0, 4))
    cd.step_schedulers()
    assert cd.get_scheduled_value("energy_reg_weight") == 0.25
    assert sampler.get_scheduled_value("step_size") == 0.95  # the sampler's schedulers step with the loss's
    cd.reset_schedulers()
    assert sampler.get_scheduled_value("step_size") == 1.0


def test_a_user_loss_on_the_contrastive_divergence_base():
    class MarginCD(nnh.BaseContrastiveDivergence):
        """max(0, 1 + U(x+) - U(x-)), averaged."""

        def forward(self, x):
            negatives = self.sampler.sample(x=self.get_start_points(x), n_steps=self.k_steps)
            self.update_buffer(negatives)
            return self.compute_loss(x, negatives), negatives

        def compute_loss(self, x, pred_x):
            return torch.relu(1 + self.model(x) - self.model(pred_x)).mean()

    model = LinearEnergy()
    loss_fn = MarginCD(model, StepSampler(), k_steps=1, persistent=True, buffer_size=8, init_dist=lambda n: torch.zeros(n, 2))
    loss, negatives = loss_fn(torch.zeros(3, 2))
    torch.testing.assert_close(loss, torch.relu(1 - negatives @ model.w).mean())
    assert int((loss_fn.replay_buffer != 0).any(1).sum()) == 3  # three slots written back


@pytest.mark.parametrize("make,error,match", [
    (lambda m, s: ContrastiveDivergence(m, s, persistent="no"), TypeError,
     r"^ContrastiveDivergence: persistent='no' must be True or False"),
    (lambda m, s: ContrastiveDivergence(m, s, add_noise_to_real=1), TypeError,
     r"^ContrastiveDivergence: add_noise_to_real=1 must be True or False"),
    (lambda m, s: ContrastiveDivergence(m, s)([[0.0, 1.0]]), ValueError,
     r"^ContrastiveDivergence: x must be a tensor of shape \(B, \*event_shape\) with B >= 1, got list"),
    (lambda m, s: ContrastiveDivergence(m, s)(torch.zeros(0, 2)), ValueError,
     r"^ContrastiveDivergence: x must be a tensor of shape \(B, \*event_shape\) with B >= 1, got shape \(0, 2\)"),
])
def test_non_bool_flags_and_a_batch_that_is_not_a_tensor_are_named(make, error, match):
    # The flags were read by truth value ("no" made the loss persistent); a list failed on .detach.
    model = EnergyMLP()
    with pytest.raises(error, match=match):
        make(model, LangevinDynamics(model, 0.01))


def test_an_init_dist_that_cannot_draw_is_named_at_construction():
    # It failed at the first persistent call with "'int' object is not callable".
    with pytest.raises(TypeError, match=r"^ContrastiveDivergence: init_dist=3 must be None, a torch.distributions"):
        ContrastiveDivergence(EnergyMLP(), ShiftSampler(), persistent=True, init_dist=3)
