"""Integrator objects: the registry, the dict-state API, and their use by the samplers
(by name, by instance, and through a user subclass that only defines the update)."""

import math

import pytest
import torch

import nnh
from nnh import (
    DoubleWellModel,
    EulerMaruyamaIntegrator,
    GeneralisedLeapfrogIntegrator,
    HamiltonianMonteCarlo,
    HeunIntegrator,
    LangevinDynamics,
    LeapfrogIntegrator,
    RK4Integrator,
    get_integrator,
)
from nnh.func.integrators import leapfrog


def test_registry():
    assert type(get_integrator("euler")) is EulerMaruyamaIntegrator
    assert type(get_integrator("generalized_leapfrog")) is GeneralisedLeapfrogIntegrator
    with pytest.raises(ValueError, match="unknown integrator 'dopri9'; known names: euler, euler_maruyama"):
        get_integrator("dopri9")


def test_sde_step_and_ode_integrate():
    x, noise = torch.ones(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    out = EulerMaruyamaIntegrator().step({"x": x}, 0.1, drift=lambda y, t: -y, noise_scale=0.5, noise=noise)["x"]
    torch.testing.assert_close(out, 0.9 * x + 0.5 * math.sqrt(0.2) * noise)
    out = EulerMaruyamaIntegrator().step({"x": x}, 0.1, drift=lambda y, t: -y, diffusion=0.25, noise=noise)["x"]
    torch.testing.assert_close(out, 0.9 * x + 0.5 * math.sqrt(0.2) * noise)  # D = s^2
    # dx/dt = -x t on [0, 1]: x(1) = exp(-1/2); RK4 with 10 steps is within 1e-6, Heun within 1e-3.
    for integrator, tol in ((RK4Integrator(), 1e-6), (HeunIntegrator(), 1e-3)):
        end = integrator.integrate({"x": x}, 0.1, 10, drift=lambda y, t: -y * t.unsqueeze(1))["x"]
        torch.testing.assert_close(end, x * math.exp(-0.5), atol=tol, rtol=0)
    grid = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    end = RK4Integrator().integrate({"x": x}, None, None, drift=lambda y, t: -y * t.unsqueeze(1), t=grid)["x"]
    torch.testing.assert_close(end, x * math.exp(-0.5), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="pass drift=... as a callable"):
        RK4Integrator().step({"x": x}, 0.1)


def test_symplectic_objects_match_the_pure_leapfrog():
    gen = torch.Generator().manual_seed(0)
    x, p = torch.randn(4, 2, generator=gen), torch.randn(4, 2, generator=gen)
    mass = torch.tensor([1.0, 3.0])
    ref_x, ref_p, _, _ = leapfrog(x, p, x.clone(), lambda y: (0.5 * (y * y).sum(1), y.clone()), 0.1, 5, mass)
    out = LeapfrogIntegrator().integrate({"x": x, "p": p}, 0.1, 5, mass, drift=lambda y, t: -y)
    torch.testing.assert_close(out["x"], ref_x)
    torch.testing.assert_close(out["p"], ref_p)
    out = GeneralisedLeapfrogIntegrator(solver_max_iter=3).integrate(
        {"x": x, "p": p}, 0.1, 5, force=lambda y, q, t: -y, velocity=lambda y, q, t: q / mass)
    torch.testing.assert_close(out["x"], ref_x)
    torch.testing.assert_close(out["p"], ref_p)
    one = LeapfrogIntegrator().step({"x": x, "p": p}, 0.1, drift=lambda y, t: -y)
    torch.testing.assert_close(one["x"], x + 0.1 * (p - 0.05 * x))
    safe = LeapfrogIntegrator().integrate({"x": x, "p": p}, 0.1, 2, drift=lambda y, t: torch.full_like(y, float("nan")),
                                          safe=True)
    assert torch.isfinite(safe["x"]).all() and torch.isfinite(safe["p"]).all()
    with pytest.raises(ValueError, match="solver_max_iter must be an int >= 1"):
        GeneralisedLeapfrogIntegrator(solver_max_iter=0)


class PlainEuler(nnh.BaseSDERungeKuttaIntegrator):
    """A user's integrator that defines only the deterministic update."""

    def update(self, x, drift, step_size, t):
        return x + step_size * drift(x, t)


class LoggedLeapfrog(LeapfrogIntegrator):
    """A user's leapfrog that overrides integrate (to log, say) and defers to the parent."""

    calls = 0

    def integrate(self, state, step_size=None, n_steps=None, mass=None, *, drift=None, safe=False):
        self.calls += 1
        return super().integrate(state, step_size, n_steps, mass, drift=drift, safe=safe)


def run(sampler):
    return sampler.sample(x=torch.linspace(-2, 2, 12).view(6, 2), n_steps=15, generator=torch.Generator().manual_seed(5))


def test_samplers_take_a_name_or_an_instance_and_user_subclasses_run_through_their_api():
    model = DoubleWellModel()
    reference = run(LangevinDynamics(model, 0.01))
    torch.testing.assert_close(run(LangevinDynamics(model, 0.01, integrator=EulerMaruyamaIntegrator())), reference)
    torch.testing.assert_close(run(LangevinDynamics(model, 0.01, integrator=PlainEuler())), reference)
    assert not torch.allclose(run(LangevinDynamics(model, 0.01, integrator="heun")), reference)
    reference = run(HamiltonianMonteCarlo(model, 0.05, 4))
    logged = LoggedLeapfrog()
    torch.testing.assert_close(run(HamiltonianMonteCarlo(model, 0.05, 4, integrator=logged)), reference)
    assert logged.calls == 15


def test_samplers_refuse_the_wrong_kind_of_integrator():
    with pytest.raises(TypeError, match="LangevinDynamics: needs a BaseSDERungeKuttaIntegrator integrator, got RK4Integrator"):
        LangevinDynamics(DoubleWellModel(), 0.1, integrator="rk4")
    with pytest.raises(TypeError, match="HMC needs a separable one"):
        HamiltonianMonteCarlo(DoubleWellModel(), 0.1, 3, integrator="generalised_leapfrog")
    with pytest.raises(ValueError, match="LangevinDynamics: unknown integrator 'dopri5'"):
        LangevinDynamics(DoubleWellModel(), 0.1, integrator="dopri5")


@pytest.mark.parametrize("tol", [math.inf, "a", True], ids=["inf", "str", "bool"])
def test_generalised_leapfrog_names_a_solver_tol_that_is_not_a_finite_positive_number(tol):
    # "a" failed on a bare '>' comparison; inf was taken (every check stops the solver).
    with pytest.raises(ValueError, match=r"^GeneralisedLeapfrogIntegrator: solver_tol must be a finite number > 0, got"):
        GeneralisedLeapfrogIntegrator(solver_tol=tol)


@pytest.mark.parametrize("kwargs,named", [({"noise_scale": 1.0}, "step_size=-0.1"),
                                          ({"diffusion": -1.0}, "diffusion=-1.0")])
def test_an_sde_step_with_noise_refuses_a_negative_step_or_diffusion(kwargs, named):
    # sqrt(2 D h) < 0 under the root: the step returned a complex tensor, silently.
    step = -0.1 if "noise_scale" in kwargs else 0.1
    with pytest.raises(ValueError, match=rf"^EulerMaruyamaIntegrator.step: {named} with noise must be a number >= 0"):
        EulerMaruyamaIntegrator().step({"x": torch.zeros(4, 2)}, step, drift=lambda x, t: -x, **kwargs)
    # Without noise a negative step is an ODE step backwards, as before.
    out = EulerMaruyamaIntegrator().step({"x": torch.ones(4, 2)}, -0.1, drift=lambda x, t: -x)["x"]
    torch.testing.assert_close(out, torch.full((4, 2), 1.1))
