"""The sampler classes: call forms, shapes, diagnostics, schedulers, save/load, errors, handler."""

import warnings

import pytest
import torch

import nnh
from nnh import (
    MALA,
    CosineScheduler,
    DoubleWellModel,
    ExponentialDecayScheduler,
    GaussianModel,
    HamiltonianMonteCarlo,
    HarmonicModel,
    LangevinDynamics,
    LinearScheduler,
    MultiStepScheduler,
    NNHandler,
    Sampler,
    WarmupScheduler,
)
from nnh.func.mcmc import init_chain_state, langevin_step
from nnh.stateful.sampler import call_sampler_load

ALL = [
    lambda m, **kw: LangevinDynamics(m, step_size=0.01, **kw),
    lambda m, **kw: MALA(m, step_size=0.01, **kw),
    lambda m, **kw: HamiltonianMonteCarlo(m, step_size=0.05, n_leapfrog_steps=3, **kw),
]


class LinearEnergy(torch.nn.Module):
    """U(x) = sum_i x_i: gradient 1, so Langevin with s = 0 moves by -h_k per step."""

    def forward(self, x):
        return x.flatten(1).sum(1)


class CountingModel(nnh.BaseModel):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        return 0.5 * (x * x).flatten(1).sum(1)

    def energy_and_gradient(self, x):
        self.calls += 1
        return self.forward(x), x.clone()


@pytest.mark.parametrize("make", ALL)
def test_call_forms_and_shapes(make):
    sampler = make(DoubleWellModel(), dim=2, n_steps=5)
    assert isinstance(sampler, Sampler)
    assert sampler.sample(7, "cpu").shape == (7, 2)  # the ABC's positional form
    assert sampler.sample(n_samples=3).shape == (3, 2)
    assert sampler.sample(N=4, dim=(3, 2)).shape == (4, 3, 2)
    x0 = torch.randn(6, 2)
    assert sampler.sample(x0, n_steps=3).shape == (6, 2)  # a tensor first is the initial state
    traj = sampler.sample(x=x0, n_steps=10, thin=3, return_trajectory=True)
    assert traj.shape == (6, 3, 2)


@pytest.mark.parametrize("make", ALL)
def test_trajectory_and_diagnostics(make):
    sampler = make(DoubleWellModel())
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 2, 2)
    traj, diag = sampler.sample(x=x0, n_steps=12, thin=4, return_trajectory=True, return_diagnostics=True, generator=gen)
    final = sampler.sample(x=x0, n_steps=12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(traj[:, -1], final)
    assert traj.shape == (5, 3, 2, 2)
    assert diag["mean"].shape == diag["var"].shape == (3, 2, 2)
    assert diag["energy"].shape == sampler.n_nonfinite.shape == (3,)
    torch.testing.assert_close(diag["mean"][-1], final.mean(0))
    torch.testing.assert_close(diag["var"][-1], final.var(0, correction=0))
    torch.testing.assert_close(diag["energy"][-1], DoubleWellModel()(final).mean())
    has_rate = not isinstance(sampler, LangevinDynamics)
    assert set(diag) == {"mean", "var", "energy"} | ({"acceptance_rate"} if has_rate else set())
    if has_rate:
        assert ((diag["acceptance_rate"] >= 0) & (diag["acceptance_rate"] <= 1)).all()


def test_langevin_class_equals_the_pure_step():
    model = DoubleWellModel()
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    out = LangevinDynamics(model, step_size=0.02, noise_scale=0.7).sample(
        x=x0, n_steps=25, generator=torch.Generator().manual_seed(2))
    state, gen = init_chain_state(x0, model.energy_and_gradient), torch.Generator().manual_seed(2)
    for _ in range(25):
        state, _ = langevin_step(state, model.energy_and_gradient, 0.02, 0.7, generator=gen)
    torch.testing.assert_close(out, state.x)


class BlowsUp(torch.nn.Module):
    """Energy and gradient NaN where x_0 > 2."""

    def forward(self, x):
        return 0.5 * (x * x).sum(1) + torch.sqrt(2.0 - x[:, 0])


@pytest.mark.parametrize("make", ALL)
def test_divergent_chains_are_counted_and_not_propagated(make):
    sampler = make(BlowsUp())
    sampler.register_scheduler("step_size", 0.5)
    x0 = torch.zeros(200, 2)
    x0[:100, 0] = 1.9  # these chains keep proposing into the region where U = inf
    out, diag = sampler.sample(x=x0, n_steps=20, return_diagnostics=True, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
    assert int(sampler.n_nonfinite.sum()) > 0
    assert (out[:, 0] <= 2.0).all()


def test_hmc_class_gradient_count():
    model = CountingModel()
    HamiltonianMonteCarlo(model, step_size=0.1, n_leapfrog_steps=4).sample(x=torch.randn(8, 2), n_steps=6)
    assert model.calls == 6 * 4 + 1


@pytest.mark.parametrize("mass", [2, 2.0, torch.tensor([2.0, 2.0]), torch.tensor(2.0)])
def test_hmc_mass_forms(mass):
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x0 = torch.randn(10, 2, generator=gen())
    ref = HamiltonianMonteCarlo(HarmonicModel(), 0.1, 3, mass=2.0).sample(x=x0, n_steps=4, generator=gen())
    out = HamiltonianMonteCarlo(HarmonicModel(), 0.1, 3, mass=mass).sample(x=x0, n_steps=4, generator=gen())
    torch.testing.assert_close(out, ref)


def test_schedulers_drive_the_steps_and_continue_across_calls():
    # With s = 0 and grad U = 1, step k moves every coordinate by -v(k).
    sched = LinearScheduler(start_value=0.1, end_value=0.0, n_steps=10)
    sampler = LangevinDynamics(LinearEnergy(), step_size=sched, noise_scale=0.0)
    x = sampler.sample(x=torch.zeros(1, 1), n_steps=4)
    assert x.item() == pytest.approx(-(0.1 + 0.09 + 0.08 + 0.07))
    x = sampler.sample(x=x, n_steps=4, reset_schedulers=False)  # k = 4..7 continue the schedule
    assert x.item() == pytest.approx(-sum(0.1 - 0.01 * k for k in range(8)))
    x = sampler.sample(x=torch.zeros(1, 1), n_steps=2)  # reset: k = 0, 1 again
    assert x.item() == pytest.approx(-0.19)


def test_save_and_load_restore_scheduler_state():
    make = lambda: LangevinDynamics(  # noqa: E731
        LinearEnergy(), step_size=WarmupScheduler(LinearScheduler(0.1, 0.01, 20), warmup_steps=3), noise_scale=0.0)
    a = make()
    a.sample(x=torch.zeros(1, 1), n_steps=7)
    state = a.save()
    assert state["schedulers"]["step_size"]["step_count"] == 7
    b = make()
    assert call_sampler_load(b, state) is b
    xa = a.sample(x=torch.zeros(1, 1), n_steps=5, reset_schedulers=False)
    xb = b.sample(x=torch.zeros(1, 1), n_steps=5, reset_schedulers=False)
    torch.testing.assert_close(xa, xb)
    with pytest.raises(KeyError, match="build it with the same arguments"):
        b.load({"schedulers": {"temperature": {"step_count": 0, "current_value": 1.0}}})


def test_scheduler_registry_api():
    s = MALA(HarmonicModel(), step_size=0.1)
    s.register_scheduler("my_parameter", LinearScheduler(1.0, 0.0, 2))
    assert s.get_scheduled_value("my_parameter") == 1.0
    s.step_schedulers()
    assert s.get_scheduled_value("my_parameter") == 0.5
    s.reset_schedulers()
    assert s.get_scheduled_value("my_parameter") == 1.0
    with pytest.raises(KeyError, match="my_parameter"):
        s.get_scheduled_value("nope")


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: LangevinDynamics(HarmonicModel(), step_size=-1.0), "step_size must be finite and > 0, got -1.0"),
        (lambda: MALA(HarmonicModel(), step_size=0.1, noise_scale=0.0), "noise_scale must be finite and > 0"),
        (lambda: LangevinDynamics(HarmonicModel(), step_size="big"), "step_size must be a number or an nnh scheduler"),
        (lambda: HamiltonianMonteCarlo(HarmonicModel(), 0.1, n_leapfrog_steps=0), "n_leapfrog_steps must be an int >= 1"),
        (lambda: HamiltonianMonteCarlo(HarmonicModel(), 0.1, mass=-1.0), "mass must be finite and > 0"),
        (lambda: HamiltonianMonteCarlo(HarmonicModel(), 0.1, mass=torch.tensor([1.0, 0.0])), "mass must be finite"),
        (lambda: LangevinDynamics(HarmonicModel(), 0.1, dim=0), "dim must be a positive int"),
        (lambda: LangevinDynamics("not a model", 0.1), "model must be an nn.Module"),
        (lambda: LangevinDynamics(HarmonicModel(), 0.1, n_steps=0), "n_steps must be an int >= 1"),
    ],
)
def test_constructor_errors(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_sample_errors():
    s = LangevinDynamics(HarmonicModel(), 0.1)
    with pytest.raises(ValueError, match="unknown event shape; pass x=..., or dim="):
        s.sample(4)
    with pytest.raises(ValueError, match="thin=5 > n_steps=3"):
        s.sample(4, dim=2, n_steps=3, thin=5)
    with pytest.raises(ValueError, match="N=4 and n_samples=3 disagree"):
        s.sample(4, dim=2, n_samples=3)
    with pytest.raises(ValueError, match="N=4 but x has 2 chains"):
        s.sample(N=4, x=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="mass of shape"):
        HamiltonianMonteCarlo(HarmonicModel(), 0.1, mass=torch.ones(3)).sample(x=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"one energy per chain, shape \(2,\)"):
        LangevinDynamics(torch.nn.Identity(), 0.1).sample(x=torch.zeros(2, 2))


def test_event_shape_from_a_gaussian_model():
    model = GaussianModel(torch.zeros(3), torch.eye(3))
    assert MALA(model, step_size=0.1, n_steps=3).sample(5).shape == (5, 3)


def test_handler_set_sampler_and_get_samples(tmp_path):
    handler = NNHandler(DoubleWellModel, device="cpu", barrier_height=2.0)
    handler.set_sampler(LangevinDynamics, model=handler.module, step_size=LinearScheduler(0.05, 0.01, 10), dim=2, n_steps=5)
    samples = handler.get_samples(16)
    assert samples.shape == (16, 2) and torch.isfinite(samples).all()
    handler.sampler.sample(4, n_steps=3, reset_schedulers=False)
    path = tmp_path / "ckpt.pt"
    handler.save(path)
    loaded = NNHandler.load(path)
    assert isinstance(loaded.sampler, LangevinDynamics)
    assert loaded.sampler.model is loaded.module
    assert loaded.sampler.save() == handler.sampler.save()
    assert loaded.get_samples(3).shape == (3, 2)


# -- scheduled values that leave their bound, non-finite starts --------------------------------

def flips_sign_at(start, k):
    """start for steps < k, -start from step k on."""
    return MultiStepScheduler(start, [k], gamma=-1.0)


U = HarmonicModel()
LEAVING = [
    # (sampler factory, the step whose value breaks the bound, the parameter, its value there)
    (lambda: MALA(U, step_size=CosineScheduler(0.1, 0.0, 10)), 10, "step_size", "0.0"),
    # 0.1 * (1e-100)^4 underflows to 0.0, as ExponentialDecayScheduler(0.1, 0.5) does at ~1,070 steps.
    (lambda: MALA(U, step_size=ExponentialDecayScheduler(0.1, 1e-100)), 4, "step_size", "0.0"),
    (lambda: MALA(U, 0.1, noise_scale=LinearScheduler(1.0, 0.0, 5)), 5, "noise_scale", "0.0"),
    (lambda: MALA(U, step_size=flips_sign_at(0.1, 3)), 3, "step_size", "-0.1"),
    (lambda: LangevinDynamics(U, step_size=flips_sign_at(0.1, 3)), 3, "step_size", "-0.1"),
    (lambda: LangevinDynamics(U, 0.1, noise_scale=flips_sign_at(1.0, 2)), 2, "noise_scale", "-1.0"),
    (lambda: HamiltonianMonteCarlo(U, flips_sign_at(0.1, 3), 2), 3, "step_size", "-0.1"),
    (lambda: HamiltonianMonteCarlo(U, CosineScheduler(0.1, 0.0, 4), 2), 4, "step_size", "0.0"),
]


@pytest.mark.parametrize("make, step, name, value", LEAVING)
def test_a_schedule_leaving_its_bound_is_refused_at_that_step(make, step, name, value):
    sampler = make()
    bound = ">= 0" if isinstance(sampler, LangevinDynamics) and name == "noise_scale" else "> 0"
    with pytest.raises(ValueError, match=rf"\.sample: {name} must be finite and {bound} at every step, "
                                         rf"but its scheduler gives {value} at step {step} of this run;"):
        sampler.sample(x=torch.zeros(4, 1), n_steps=12, generator=torch.Generator().manual_seed(0))
    # The same schedule runs up to the step before, and the error gives the scheduler's own clock
    # when the run continues it.
    sampler.sample(x=torch.zeros(4, 1), n_steps=step, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=rf"at step 0 of this run \(scheduler step {step}\)"):
        sampler.sample(x=torch.zeros(4, 1), n_steps=1, reset_schedulers=False)


def test_langevin_noise_scale_may_reach_zero():
    # s = 0 is gradient descent (Langevin's noise_scale is bounded by >= 0, not > 0).
    sampler = LangevinDynamics(LinearEnergy(), step_size=0.1, noise_scale=LinearScheduler(1.0, 0.0, 2))
    assert torch.isfinite(sampler.sample(x=torch.zeros(3, 1), n_steps=5)).all()


@pytest.mark.parametrize("cls", [LangevinDynamics, MALA, HamiltonianMonteCarlo])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0])
def test_a_nonfinite_or_zero_step_size_names_the_sampler_parameter(cls, bad):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: step_size must be finite and > 0, got {bad!r}\.$"):
        cls(HarmonicModel(), step_size=bad)


class NaNAboveTwo(torch.nn.Module):
    """U = |x|^2 / 2 + sqrt(2 - x_0): energy and gradient NaN where x_0 > 2."""

    def forward(self, x):
        return 0.5 * (x * x).sum(1) + torch.sqrt(2.0 - x[:, 0])


class NaNEnergyFiniteGradient(nnh.BaseModel):
    """Energy NaN where x_0 > 2, gradient x everywhere: Langevin moves, Metropolis cannot."""

    def forward(self, x):
        return self.energy_and_gradient(x)[0]

    def energy_and_gradient(self, x):
        energy = 0.5 * (x * x).sum(1)
        return torch.where(x[:, 0] > 2.0, float("nan"), energy), x.clone()


@pytest.mark.parametrize("make", ALL)
@pytest.mark.parametrize("model", [NaNAboveTwo, NaNEnergyFiniteGradient])
def test_chains_stuck_at_a_nonfinite_start_warn_once_with_their_count(make, model):
    sampler = make(model())
    x0 = torch.zeros(10, 2)
    x0[:3, 0] = 3.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sampler.sample(x=x0, n_steps=20, generator=torch.Generator().manual_seed(0))
    stuck = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    if isinstance(sampler, LangevinDynamics) and model is NaNEnergyFiniteGradient:
        assert not stuck  # the dynamics use only the gradient, which is finite: the chains move
        assert (out[:3] != x0[:3]).all()
        return
    assert len(stuck) == 1, [str(w.message) for w in stuck]
    assert f"{type(sampler).__name__}.sample: 3 of 10 chains never moved" in str(stuck[0].message)
    torch.testing.assert_close(out[:3], x0[:3])


@pytest.mark.parametrize("make", ALL)
def test_finite_starts_do_not_warn(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(NaNAboveTwo()).sample(x=torch.zeros(10, 2), n_steps=5, generator=torch.Generator().manual_seed(0))
