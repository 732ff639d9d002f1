"""Pure MCMC steps (nnh.func.mcmc): shapes, explicit randomness, per-chain MH, divergence,
HMC's gradient count, torch.compile, and the effective sample size."""

import math

import pytest
import torch

from nnh.func.mcmc import (
    ChainState,
    autograd_energy_and_grad,
    effective_sample_size,
    energy_and_grad_fn,
    event_sum,
    func_energy_and_grad,
    heun_langevin_step,
    hmc_step,
    init_chain_state,
    kinetic_energy,
    langevin_step,
    leapfrog,
    mala_step,
    reject_nonfinite,
    select_chains,
    standard_normal_like,
    uniform_per_chain,
)


def quadratic(x):
    """U(x) = |x|^2 / 2 over any event shape."""
    return 0.5 * (x * x).flatten(1).sum(1)


def quadratic_eg(x):
    return quadratic(x), x.clone()


class CountingEnergy(torch.nn.Module):
    """U = |x|^2 / 2 that counts its energy-and-gradient evaluations."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        return quadratic(x)

    def energy_and_gradient(self, x):
        self.calls += 1
        return quadratic(x), x.clone()


def test_langevin_step_formula_with_explicit_noise():
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    noise = torch.tensor([[0.1, 0.2], [-0.3, 0.4]])
    state = init_chain_state(x, quadratic_eg)
    h, s = 0.1, 0.5
    new, info = langevin_step(state, quadratic_eg, h, s, noise=noise)
    expected = x - h * x + s * math.sqrt(2 * h) * noise
    torch.testing.assert_close(new.x, expected)
    torch.testing.assert_close(new.grad, expected)
    torch.testing.assert_close(new.energy, quadratic(expected))
    assert info.accepted.all() and info.finite.all()
    torch.testing.assert_close(info.accept_prob, torch.ones(2))


def test_langevin_decay_and_clamp_with_explicit_noise():
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    noise = torch.tensor([[0.1, 0.2], [-0.3, 0.4]])
    h, s, lam = 0.1, 0.5, 0.3
    new, _ = langevin_step(init_chain_state(x, quadratic_eg), quadratic_eg, h, s, noise=noise, decay=lam,
                           clamp=(-1.5, 0.9))
    expected = (x - h * (x + lam * x) + s * math.sqrt(2 * h) * noise).clamp(-1.5, 0.9)
    torch.testing.assert_close(new.x, expected)
    torch.testing.assert_close(new.grad, expected)  # the gradient is taken at the clamped state
    with pytest.raises(ValueError, match=r"clamp must be a \(min, max\) pair with min < max, got \(1.0, 0.0\)"):
        langevin_step(init_chain_state(x, quadratic_eg), quadratic_eg, h, s, noise=noise, clamp=(1.0, 0.0))


def test_heun_langevin_step_formula():
    # U = |x|^2/2, f(x) = -(1 + lam) x: Heun's drift gives x (1 - c h + (c h)^2 / 2), c = 1 + lam.
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    noise = torch.tensor([[0.1, 0.2], [-0.3, 0.4]], dtype=torch.float64)
    model = CountingEnergy()
    h, s, lam = 0.2, 0.7, 0.5
    state = init_chain_state(x, model.energy_and_gradient)
    new, info = heun_langevin_step(state, model.energy_and_gradient, h, s, noise=noise, decay=lam)
    c = 1 + lam
    torch.testing.assert_close(new.x, x * (1 - c * h + (c * h) ** 2 / 2) + s * math.sqrt(2 * h) * noise)
    assert model.calls == 1 + 2 and info.accepted.all()  # two gradients per step


def test_heun_langevin_step_defaults_unit_noise_scale_no_decay_and_noise_from_the_generator():
    # U = |x|^2/2, f(x) = -x: x' = x (1 - h + h^2 / 2) + sqrt(2h) xi with xi the generator's draw.
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    h = 0.2
    new, info = heun_langevin_step(init_chain_state(x, quadratic_eg), quadratic_eg, h,
                                   generator=torch.Generator().manual_seed(7))
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = x * (1 - h + h * h / 2) + math.sqrt(2 * h) * xi
    torch.testing.assert_close(new.x, expected)
    torch.testing.assert_close(new.grad, expected)
    assert info.accepted.all()


@pytest.mark.parametrize("step", ["langevin", "heun_langevin"])
def test_clamp_holds_the_state_at_both_bounds(step):
    # Noise of +-3 pushes chain 0 past both bounds; chain 1 stays inside.
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    noise = torch.tensor([[3.0, -3.0], [0.1, -0.2]], dtype=torch.float64)
    h = 0.1
    drift = 1 - h if step == "langevin" else 1 - h + h * h / 2
    unclamped = x * drift + math.sqrt(2 * h) * noise
    assert unclamped[0, 0] > 0.9 and unclamped[0, 1] < -1.5
    new, _ = _step(step, init_chain_state(x, quadratic_eg), quadratic_eg, h, noise=noise, clamp=(-1.5, 0.9))
    torch.testing.assert_close(new.x, unclamped.clamp(-1.5, 0.9))
    assert new.x[0].tolist() == [0.9, -1.5]
    torch.testing.assert_close(new.grad, new.x)  # the gradient is taken at the clamped state


@pytest.mark.parametrize("step", ["langevin", "heun_langevin"])
def test_an_empty_clamp_box_is_refused(step):
    state = init_chain_state(torch.zeros(2, 2), quadratic_eg)
    with pytest.raises(ValueError, match=rf"^{step}_step: clamp must be a \(min, max\) pair with min < max, "
                                         r"got \(0\.5, 0\.5\)"):
        _step(step, state, quadratic_eg, noise=torch.zeros(2, 2), clamp=(0.5, 0.5))


def test_generator_gives_reproducible_draws_and_randomness_is_required():
    state = init_chain_state(torch.zeros(4, 3), quadratic_eg)
    a, _ = mala_step(state, quadratic_eg, 0.1, generator=torch.Generator().manual_seed(3))
    b, _ = mala_step(state, quadratic_eg, 0.1, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.x, b.x)
    with pytest.raises(ValueError, match="noise=.*generator"):
        langevin_step(state, quadratic_eg, 0.1)
    with pytest.raises(ValueError, match="uniform"):
        mala_step(state, quadratic_eg, 0.1, noise=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"noise has shape \(4, 2\)"):
        hmc_step(state, quadratic_eg, 0.1, 2, noise=torch.zeros(4, 2), uniform=torch.rand(4))


def test_mala_log_alpha_matches_hand_computation_per_chain():
    torch.manual_seed(0)
    x = torch.randn(5, 2, dtype=torch.float64)
    noise = torch.randn(5, 2, dtype=torch.float64)
    h, s = 0.3, 1.0
    state = init_chain_state(x, quadratic_eg)
    _, info = mala_step(state, quadratic_eg, h, s, noise=noise, uniform=torch.full((5,), 0.5, dtype=torch.float64))
    y = x - h * x + math.sqrt(2 * h) * noise
    log_q = lambda a, b: -((a - b + h * b) ** 2).sum(1) / (4 * h)  # noqa: E731  (grad U(b) = b)
    log_alpha = quadratic(x) - quadratic(y) + log_q(x, y) - log_q(y, x)
    torch.testing.assert_close(info.accept_prob, log_alpha.clamp(max=0).exp())
    torch.testing.assert_close(info.accepted, info.accept_prob > 0.5)


def test_metropolis_is_per_chain_and_rejected_chains_keep_their_state():
    torch.manual_seed(1)
    x = torch.randn(64, 3)
    state = init_chain_state(x, quadratic_eg)
    uniform = torch.rand(64)
    new, info = hmc_step(state, quadratic_eg, 0.9, 3, noise=torch.randn(64, 3), uniform=uniform)
    # Per chain: accepted exactly where u < min(1, alpha), and both outcomes occur in this batch.
    torch.testing.assert_close(info.accepted, uniform < info.accept_prob)
    assert 0 < int(info.accepted.sum()) < 64
    rejected = ~info.accepted
    torch.testing.assert_close(new.x[rejected], x[rejected])
    torch.testing.assert_close(new.energy[rejected], state.energy[rejected])
    assert not torch.equal(new.x[info.accepted], x[info.accepted])
    torch.testing.assert_close(new.energy, quadratic(new.x))


class BlowsUp(torch.nn.Module):
    """Energy and gradient NaN where x_0 > 1 (a diverging model)."""

    def forward(self, x):
        return quadratic(x) + torch.sqrt(1.0 - x[:, 0])


@pytest.mark.parametrize("step", ["langevin", "mala", "hmc"])
def test_nonfinite_proposals_are_rejected_per_chain(step):
    eg = autograd_energy_and_grad(BlowsUp())
    x = torch.tensor([[0.0, 0.0], [0.9, 0.0], [-0.5, 0.3]])
    state = init_chain_state(x, eg)
    noise = torch.tensor([[0.0, 0.1], [5.0, 0.0], [0.0, -0.1]])  # pushes chain 1 past x_0 = 1
    uniform = torch.full((3,), 1e-6)
    if step == "langevin":
        new, info = langevin_step(state, eg, 0.1, noise=noise)
    elif step == "mala":
        new, info = mala_step(state, eg, 0.1, noise=noise, uniform=uniform)
    else:
        new, info = hmc_step(state, eg, 0.5, 2, noise=noise, uniform=uniform)
    assert info.finite.tolist() == [True, False, True]
    assert info.accepted.tolist() == [True, False, True]
    assert info.accept_prob[1] == 0
    torch.testing.assert_close(new.x[1], x[1])
    assert torch.isfinite(new.x).all() and torch.isfinite(new.energy).all() and torch.isfinite(new.grad).all()


def test_leapfrog_conserves_energy_and_is_reversible():
    torch.manual_seed(2)
    x = torch.randn(10, 2, dtype=torch.float64)
    p = torch.randn(10, 2, dtype=torch.float64)
    x1, p1, e1, g1 = leapfrog(x, p, x.clone(), quadratic_eg, 0.05, 40)
    h0 = quadratic(x) + kinetic_energy(p)
    h1 = e1 + kinetic_energy(p1)
    assert (h1 - h0).abs().max() < 1e-3  # O(eps^2) energy error of a symplectic integrator
    x2, p2, _, _ = leapfrog(x1, -p1, g1, quadratic_eg, 0.05, 40)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(-p2, p)


def test_hmc_costs_L_plus_one_gradients_then_L_per_transition():
    model = CountingEnergy()
    L = 7
    gen = torch.Generator().manual_seed(0)
    state = init_chain_state(torch.randn(16, 2, generator=gen), model.energy_and_gradient)
    state, _ = hmc_step(state, model.energy_and_gradient, 0.1, L, generator=gen)
    assert model.calls == L + 1  # the first transition: the start gradient plus L leapfrog ones
    for _ in range(4):
        state, _ = hmc_step(state, model.energy_and_gradient, 0.1, L, generator=gen)
    assert model.calls == 5 * L + 1  # afterwards the last gradient is reused as the next first


def test_mass_as_float_int_and_tensor_agree_when_equal():
    torch.manual_seed(4)
    x = torch.randn(8, 2, dtype=torch.float64)
    noise, u = torch.randn(8, 2, dtype=torch.float64), torch.rand(8, dtype=torch.float64)
    state = init_chain_state(x, quadratic_eg)
    outs = [hmc_step(state, quadratic_eg, 0.2, 3, m, noise=noise, uniform=u)[0].x
            for m in (2.0, 2, torch.full((2,), 2.0, dtype=torch.float64))]
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])


def test_any_event_shape():
    x = torch.randn(4, 3, 2, 2)
    state = init_chain_state(x, quadratic_eg)
    gen = torch.Generator().manual_seed(0)
    for step in (langevin_step, mala_step):
        new, info = step(state, quadratic_eg, 0.1, generator=gen)
        assert new.x.shape == x.shape and info.energy.shape == (4,)
    new, info = hmc_step(state, quadratic_eg, 0.1, 2, torch.ones(3, 2, 2), generator=gen)
    assert new.x.shape == x.shape and info.accepted.shape == (4,)


def test_helpers():
    v = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(event_sum(v), v.flatten(1).sum(1))
    mask = torch.tensor([True, False])
    torch.testing.assert_close(select_chains(mask, v, -v), torch.stack([v[0], -v[1]]))
    x = torch.randn(5, 2)
    eg_a, eg_f = autograd_energy_and_grad(quadratic), func_energy_and_grad(quadratic)
    for eg in (eg_a, eg_f, energy_and_grad_fn(quadratic), energy_and_grad_fn(CountingEnergy())):
        e, g = eg(x)
        torch.testing.assert_close(e, quadratic(x))
        torch.testing.assert_close(g, x)
        assert not e.requires_grad and not g.requires_grad


def test_autograd_energy_does_not_keep_graphs_across_steps():
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    eg = autograd_energy_and_grad(lambda x: net(x).squeeze(-1))
    state = init_chain_state(torch.randn(3, 2), eg)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        state, info = mala_step(state, eg, 0.1, generator=gen)
    assert state.x.grad_fn is None and state.energy.grad_fn is None and state.grad.grad_fn is None
    assert all(p.grad is None for p in net.parameters())


def test_effective_sample_size_of_ar1_chains():
    # AR(1) with coefficient r has integrated autocorrelation time (1 + r) / (1 - r).
    gen = torch.Generator().manual_seed(0)
    r, chains, draws = 0.8, 8, 4000
    eps = torch.randn(chains, draws, generator=gen, dtype=torch.float64)
    x = torch.empty_like(eps)
    x[:, 0] = eps[:, 0] / math.sqrt(1 - r * r)
    for t in range(1, draws):
        x[:, t] = r * x[:, t - 1] + eps[:, t]
    ess = effective_sample_size(x.unsqueeze(-1))
    expected = chains * draws * (1 - r) / (1 + r)
    assert ess.shape == (1,)
    assert abs(ess.item() / expected - 1) < 0.15


def test_mala_step_compiles_with_fullgraph_and_matches_eager():
    gen = torch.Generator().manual_seed(5)
    x, noise, u = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen), torch.rand(8, generator=gen)
    state = init_chain_state(x, quadratic_eg)
    eager, eager_info = mala_step(state, quadratic_eg, 0.4, 1.0, noise=noise, uniform=u)
    compiled = torch.compile(mala_step, fullgraph=True)
    got, got_info = compiled(state, quadratic_eg, 0.4, 1.0, noise=noise, uniform=u)
    torch.testing.assert_close(got.x, eager.x)
    torch.testing.assert_close(got.energy, eager.energy)
    torch.testing.assert_close(got_info.accepted, eager_info.accepted)
    assert isinstance(got, ChainState)


def _run(step, state, eg, value=0.1, **scales):
    gen = torch.Generator().manual_seed(0)
    if step == "langevin":
        return langevin_step(state, eg, value, generator=gen, **scales)
    if step == "heun_langevin":
        return heun_langevin_step(state, eg, value, generator=gen, **scales)
    if step == "mala":
        return mala_step(state, eg, value, generator=gen, **scales)
    return hmc_step(state, eg, value, 2, generator=gen)


@pytest.mark.parametrize("step", ["langevin", "heun_langevin", "mala", "hmc"])
def test_steps_refuse_a_b1_energy_with_the_sampler_message(step):
    eg = autograd_energy_and_grad(lambda x: 0.5 * x * x)  # (B, 1) energies on (B, 1) states
    state = init_chain_state(torch.randn(4, 1), eg)
    with pytest.raises(ValueError, match=rf"^{step}_step: the model must return one energy per chain, shape \(4,\), "
                                         r"got \(4, 1\); e\.g\. end forward with \.squeeze\(-1\)"):
        _run(step, state, eg)


@pytest.mark.parametrize("step", ["langevin", "heun_langevin", "mala", "hmc"])
@pytest.mark.parametrize("value", [0.0, -0.1, float("nan"), float("inf")])
def test_steps_refuse_a_step_size_outside_its_bound(step, value):
    state = init_chain_state(torch.zeros(3, 2), quadratic_eg)
    with pytest.raises(ValueError, match=rf"^{step}_step: step_size must be finite and > 0, got {value!r}\.$"):
        _run(step, state, quadratic_eg, value)


def test_noise_scale_bounds_of_the_pure_steps():
    state = init_chain_state(torch.zeros(3, 2), quadratic_eg)
    with pytest.raises(ValueError, match=r"^mala_step: noise_scale must be finite and > 0, got 0\.0\.$"):
        _run("mala", state, quadratic_eg, noise_scale=0.0)
    with pytest.raises(ValueError, match=r"^langevin_step: noise_scale must be finite and >= 0, got -1\.0\.$"):
        _run("langevin", state, quadratic_eg, noise_scale=-1.0)
    with pytest.raises(ValueError, match=r"^heun_langevin_step: noise_scale must be finite and >= 0, got -1\.0\.$"):
        _run("heun_langevin", state, quadratic_eg, noise_scale=-1.0)
    new, _ = _run("langevin", state, quadratic_eg, noise_scale=0.0)  # s = 0: gradient descent, allowed
    torch.testing.assert_close(new.x, state.x)  # the gradient at 0 is 0


def test_infinite_noise_scale_is_refused_by_langevin_too():
    state = init_chain_state(torch.zeros(3, 2), quadratic_eg)
    with pytest.raises(ValueError, match=r"^langevin_step: noise_scale must be finite and >= 0, got inf\.$"):
        _run("langevin", state, quadratic_eg, noise_scale=float("inf"))


def _step(step, state, eg, h=0.1, **kwargs):
    """One step with exactly the draws given (`_run` draws them from a generator)."""
    if step in ("langevin", "heun_langevin"):
        kwargs.pop("uniform", None)
        return (langevin_step if step == "langevin" else heun_langevin_step)(state, eg, h, **kwargs)
    return (mala_step if step == "mala" else hmc_step)(state, eg, h, **kwargs)


@pytest.mark.parametrize("step", ["langevin", "heun_langevin", "mala", "hmc"])
def test_misshapen_draws_are_refused_naming_the_step(step):
    state = init_chain_state(torch.zeros(4, 3), quadratic_eg)
    with pytest.raises(ValueError, match=rf"^{step}_step: noise has shape \(4, 2\)"):
        _step(step, state, quadratic_eg, noise=torch.zeros(4, 2), uniform=torch.rand(4))
    if step not in ("langevin", "heun_langevin"):
        with pytest.raises(ValueError, match=rf"^{step}_step: uniform has shape \(3,\)"):
            _step(step, state, quadratic_eg, noise=torch.zeros(4, 3), uniform=torch.rand(3))
        with pytest.raises(ValueError, match=rf"^{step}_step: pass uniform="):
            _step(step, state, quadratic_eg, noise=torch.zeros(4, 3))


def test_scalar_chains_and_a_single_chain():
    # x of shape (B,) (event shape ()) and B = 1 take the same steps as (B, 1).
    gen = torch.Generator().manual_seed(4)
    x, noise, u = torch.randn(5, generator=gen), torch.randn(5, generator=gen), torch.rand(5, generator=gen)

    def quadratic_eg(x):  # any event shape, () included
        return 0.5 * (x * x).reshape(x.shape[0], -1).sum(1), x.clone()

    for step in ("langevin", "mala", "hmc"):
        flat, flat_info = _step(step, init_chain_state(x, quadratic_eg), quadratic_eg, noise=noise, uniform=u)
        col, col_info = _step(step, init_chain_state(x[:, None], quadratic_eg), quadratic_eg, noise=noise[:, None],
                              uniform=u)
        torch.testing.assert_close(flat.x, col.x[:, 0])
        assert torch.equal(flat_info.accepted, col_info.accepted)
        one, _ = _step(step, init_chain_state(x[:1, None], quadratic_eg), quadratic_eg, noise=noise[:1, None],
                       uniform=u[:1])
        torch.testing.assert_close(one.x, col.x[:1])
    mask = torch.tensor([True, False])
    assert select_chains(mask, torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])).tolist() == [1.0, 4.0]


def test_an_energy_of_minus_infinity_is_no_finite_proposal_and_u_of_zero_accepts_nothing_wrong():
    # Proposal energies: chain 0 finite, chain 1 -inf (log alpha = +inf), chain 2 NaN.
    def eg(x):
        energy = quadratic(x).clone()
        energy[1], energy[2] = -math.inf, math.nan
        return energy, x.clone()

    state = init_chain_state(torch.ones(3, 2), quadratic_eg)
    noise, zero = torch.full((3, 2), 0.1), torch.zeros(3)
    for step in ("mala", "hmc"):
        new, info = _step(step, state, eg, noise=noise, uniform=zero)
        assert info.finite.tolist() == [True, False, False] and info.accepted.tolist() == [True, False, False]
        assert info.accept_prob[1:].tolist() == [0.0, 0.0]
        torch.testing.assert_close(new.x[1:], state.x[1:])
    # Langevin moves on the gradient alone: an energy that is not finite does not stop it.
    new, info = _step("langevin", state, eg, noise=noise)
    assert info.accepted.all() and not torch.equal(new.x, state.x)


def test_the_generator_draws_every_random_number_and_float64_chains_stay_float64():
    state = init_chain_state(torch.zeros(6, 2, dtype=torch.float64), quadratic_eg)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)  # must not matter
        new, info = _step("mala", state, quadratic_eg, 0.5, generator=torch.Generator().manual_seed(9))
        runs.append((new.x, info.accepted))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0].dtype == torch.float64


def test_documented_defaults_of_the_steps():
    # mala: noise_scale 1; hmc: 10 leapfrog steps, mass 1.
    state = init_chain_state(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), quadratic_eg)
    noise, u = torch.randn(4, 2, generator=torch.Generator().manual_seed(1)), torch.rand(4)
    a, _ = mala_step(state, quadratic_eg, 0.2, noise=noise, uniform=u)
    b, _ = mala_step(state, quadratic_eg, 0.2, 1.0, noise=noise, uniform=u)
    assert torch.equal(a.x, b.x)
    counting = CountingEnergy()
    eg = energy_and_grad_fn(counting)
    a, _ = hmc_step(state, eg, 0.1, noise=noise, uniform=u)
    assert counting.calls == 10
    b, _ = hmc_step(state, eg, 0.1, 10, 1.0, noise=noise, uniform=u)
    assert torch.equal(a.x, b.x)
    hmc_step(state, eg, 0.1, 1, noise=noise, uniform=u)  # one leapfrog step is allowed
    assert counting.calls == 21


def test_draws_follow_the_chains_dtype_from_the_generator():
    x = torch.zeros(5, 3, dtype=torch.float64)
    noise = standard_normal_like(x, torch.Generator().manual_seed(2))
    assert torch.equal(noise, torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    u = uniform_per_chain(x, torch.Generator().manual_seed(3))
    assert torch.equal(u, torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))


def test_reject_nonfinite_checks_the_energy_unless_told_not_to():
    old = init_chain_state(torch.zeros(2, 2), quadratic_eg)
    new = ChainState(torch.ones(2, 2), torch.tensor([1.0, math.nan]), torch.ones(2, 2))
    state, info = reject_nonfinite(old, new)
    assert info.finite.tolist() == [True, False] and state.x[1].tolist() == [0.0, 0.0]
    _, info = reject_nonfinite(old, new, check_energy=False)
    assert info.finite.tolist() == [True, True]


def test_finite_states_whose_sums_overflow_are_not_taken_for_divergent():
    # Every value below is finite: a float16 state of 4096 coordinates at 10 (with its gradient,
    # the coordinates sum past float16's maximum, 65504), and float32 values near 3e38 whose
    # sums with the gradient overflow float32. Only the non-finite chains are rejected.
    old16 = init_chain_state(torch.zeros(3, 4096, dtype=torch.float16), quadratic_eg)
    x16 = torch.full((3, 4096), 10.0, dtype=torch.float16)
    grad16 = x16.clone()
    grad16[1, 7] = math.inf
    x16[2, 0] = math.nan
    _, info = reject_nonfinite(old16, ChainState(x16, torch.full((3,), 6e4, dtype=torch.float16), grad16))
    assert info.finite.tolist() == [True, False, False]

    old = init_chain_state(torch.zeros(4, 2), quadratic_eg)
    x = torch.tensor([[3e38, 3e38], [3e38, -3e38], [3e38, 0.0], [1.0, 1.0]])
    grad = torch.tensor([[3e38, 3e38], [-3e38, 3e38], [math.inf, 0.0], [1.0, 1.0]])
    energy = torch.tensor([3e38, 3e38, 1.0, math.inf])
    _, info = reject_nonfinite(old, ChainState(x, energy, grad))
    assert info.finite.tolist() == [True, True, False, False]
    _, info = reject_nonfinite(old, ChainState(x, energy, grad), check_energy=False)
    assert info.finite.tolist() == [True, True, False, True]


def test_a_float16_langevin_chain_of_many_coordinates_moves():
    x = torch.full((2, 4096), 10.0, dtype=torch.float16)
    eg = lambda y: (torch.zeros(2, dtype=torch.float16), y.clone())  # noqa: E731  (U = |y|^2/2 up to a constant)
    new, info = langevin_step(init_chain_state(x, eg), eg, 0.125, noise=torch.zeros_like(x))
    assert info.accepted.all()
    assert torch.equal(new.x, torch.full_like(x, 10.0 - 0.125 * 10.0))
