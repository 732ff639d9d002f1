"""The samplers and losses nnh added for TorchEBM parity, side by side with TorchEBM's (called by
benchmarks/mcmc.py; the workloads are listed in its docstring).

Same models, starting points, step sizes and step counts in both libraries; interleaved runs
after a warm-up, medians and paired ratios. Before timing, each workload checks that both
libraries compute the same thing: deterministic samplers (descent, the flow ODE) must return the
same states, stochastic ones the same moments, losses the same value for the same random draws
where the draws coincide. Without TorchEBM the nnh cases still run, with a message.
"""

from __future__ import annotations

import torch
from torch import nn

from _timing import interleave, median, report, stopwatch

import nnh

H, B = 2.0, 1.0
FUNNEL_N = 4  # x dimensions of the funnel; v is coordinate 0


def _torchebm():
    try:
        import torchebm.core as core
        import torchebm.integrators as integrators
        import torchebm.losses as losses
        import torchebm.samplers as samplers
    except ImportError:
        print("TorchEBM is not installed (.venv/bin/pip install --no-deps torchebm): nnh parity cases only.")
        return None
    return core, samplers, integrators, losses


def funnel_energy(z: torch.Tensor) -> torch.Tensor:
    v, x = z[:, 0], z[:, 1:]
    return v * v / 18 + 0.5 * (x * x).sum(1) * torch.exp(-v) + 0.5 * FUNNEL_N * v


def fisher_metric(z: torch.Tensor) -> torch.Tensor:
    v = z[:, 0]
    diagonal = torch.cat([torch.full_like(v, 1 / 9 + FUNNEL_N / 2)[:, None], torch.exp(-v)[:, None].expand(-1, FUNNEL_N)], 1)
    return torch.diag_embed(diagonal)


class NnhFunnel(nnh.BaseModel):
    def forward(self, z):
        return funnel_energy(z)


class VelocityMLP(nn.Module):
    """v(x, t) for 2-D flows: the model both libraries call as model(x, t)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))


def _energy_mlp(base: type) -> nn.Module:
    class EnergyMLP(base):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))

        def forward(self, x):
            return self.net(x).squeeze(-1)

    return EnergyMLP()


def workloads(chains: int) -> list[tuple[str, dict, int, str, str]]:
    """(label, {case: callable run}, count, unit, check) per workload; check is "same" (equal
    outputs) or "moments" (equal means and variances)."""
    tebm = _torchebm()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(chains, 2, generator=gen)
    nnh_dw = nnh.DoubleWellModel(H, B)
    v0 = 3 * torch.randn(1000, generator=gen)
    z0 = torch.cat([v0[:, None], torch.randn(1000, FUNNEL_N, generator=gen) * torch.exp(v0 / 2)[:, None]], 1)
    flow_model = VelocityMLP()
    data = torch.randn(4096, 2, generator=gen) * 0.5 + 1.0
    out: list[tuple[str, dict, int, str, str]] = []

    def add(label, make_nnh, make_tebm, count, unit, check):
        cases = {"nnh": make_nnh()}
        if tebm is not None:
            cases = {"torchebm": make_tebm(*tebm), **cases}
        out.append((label, cases, count, unit, check))

    add("gradient descent",
        lambda: (lambda: nnh.GradientDescentSampler(nnh_dw, 0.005).sample(x=x0, n_steps=1000)),
        lambda core, smp, itg, los: (lambda s=smp.GradientDescentSampler(core.DoubleWellModel(H, B), 0.005): s.sample(x=x0, n_steps=1000)),
        1000, "step", "same")
    add("nesterov",
        lambda: (lambda: nnh.NesterovSampler(nnh_dw, 0.005, 0.9).sample(x=x0, n_steps=1000)),
        lambda core, smp, itg, los: (lambda s=smp.NesterovSampler(core.DoubleWellModel(H, B), 0.005, 0.9): s.sample(x=x0, n_steps=1000)),
        1000, "step", "same")
    add("langevin heun",
        lambda: (lambda s=nnh.LangevinDynamics(nnh_dw, 0.01, 1.0, integrator="heun"): s.sample(x=x0, n_steps=1000)),
        lambda core, smp, itg, los: (lambda s=smp.LangevinDynamics(core.DoubleWellModel(H, B), 0.01, 1.0, integrator="heun"): s.sample(x=x0, n_steps=1000)),
        1000, "step", "moments")

    def tebm_rmhmc(core, smp, itg, los):
        class Funnel(core.BaseModel):
            def forward(self, z):
                return funnel_energy(z)

        s = smp.RiemannianManifoldHMC(Funnel(), fisher_metric, 0.5, 3,
                                      integrator=itg.GeneralisedLeapfrogIntegrator(device=torch.device("cpu"),
                                                                                   dtype=torch.float32, solver_max_iter=4))
        return lambda: s.sample(x=z0, n_steps=20)

    add("rmhmc",
        lambda: (lambda s=nnh.RiemannianManifoldHMC(NnhFunnel(), fisher_metric, 0.5, 3, solver_max_iter=4): s.sample(x=z0, n_steps=20)),
        tebm_rmhmc, 20, "transition", "moments")
    for integrator in ("euler", "heun", "rk4"):
        add(f"flow ode {integrator}",
            lambda i=integrator: (lambda s=nnh.FlowSampler(flow_model, integrator=i): s.sample(x=x0, n_steps=50)),
            lambda core, smp, itg, los, i=integrator: (lambda s=smp.FlowSampler(flow_model, integrator=i): s.sample(x=x0, n_steps=50)),
            50, "step", "same")
    add("flow sde",
        lambda: (lambda s=nnh.FlowSampler(flow_model, "sde", sample_eps=0.01): s.sample(x=x0, n_steps=250)),
        lambda core, smp, itg, los: (lambda s=smp.FlowSampler(flow_model, "sde", sample_eps=0.01): s.sample(x=x0, n_steps=250)),
        250, "step", "moments")

    def loss_case(loss):
        def run():
            loss.model.zero_grad(set_to_none=True)
            value = loss(data)
            value.backward()
            return value.detach()
        return run

    for name, cls_name, kwargs in (("dsm", "DenoisingScoreMatching", {"noise_scale": 0.1}),
                                   ("ssm", "SlicedScoreMatching", {"n_projections": 5})):
        torch.manual_seed(1)
        nnh_model = _energy_mlp(nnh.BaseModel)
        add(name,
            lambda c=cls_name, k=kwargs, m=nnh_model: loss_case(getattr(nnh, c)(m, **k)),
            lambda core, smp, itg, los, c=cls_name, k=kwargs, m=nnh_model: loss_case(
                getattr(los, c)(_copy_into(_energy_mlp(core.BaseModel), m), **k)),
            1, "call", "moments")
    return out


def _copy_into(target: nn.Module, source: nn.Module) -> nn.Module:
    target.load_state_dict(source.state_dict())
    return target


def _check(label: str, cases: dict, check: str) -> str:
    results = {}
    for name, run in cases.items():
        torch.manual_seed(2)
        results[name] = run()
    if len(results) == 1:
        return f"{label:<16} nnh only"
    a, b = results["torchebm"], results["nnh"]
    if check == "same":
        return f"{label:<16} max |torchebm - nnh| = {(a - b).abs().max().item():.2e}"
    if a.ndim == 0:  # both draw the noise (or probes) from the global RNG, seeded alike, in the same order
        return f"{label:<16} loss torchebm {a.item():.6f}  nnh {b.item():.6f}"
    return (f"{label:<16} mean {a.mean(0).tolist()} vs {b.mean(0).tolist()}; "
            f"var {a.var(0).mean().item():.4f} vs {b.var(0).mean().item():.4f}")


def funnel_ess(chains: int = 200, transitions: int = 300) -> None:
    """ESS of v per gradient and per second on the 5-D funnel (float64, chains started at exact
    draws): HMC (10 leapfrog steps of 0.2) against RMHMC with the Fisher metric (3 generalised
    leapfrog steps of 0.8, 4 fixed-point iterations). RMHMC's cost is counted as its 3 gradients of
    U plus its 15 vector-Jacobian products of the metric: 18 per transition."""
    import time

    from nnh.func import effective_sample_size

    gen = torch.Generator().manual_seed(0)
    v0 = 3 * torch.randn(chains, generator=gen, dtype=torch.float64)
    z0 = torch.cat([v0[:, None], torch.randn(chains, FUNNEL_N, generator=gen, dtype=torch.float64)
                    * torch.exp(v0 / 2)[:, None]], 1)
    print(f"\nNeal's funnel (5-D), {chains} chains x {transitions} transitions from exact draws: ESS of v")
    for name, sampler, gradients in (
        ("HMC eps=0.2 L=10", nnh.HamiltonianMonteCarlo(NnhFunnel(), 0.2, 10, dtype=torch.float64), 10),
        ("RMHMC eps=0.8 L=3", nnh.RiemannianManifoldHMC(NnhFunnel(), fisher_metric, 0.8, 3, solver_max_iter=4,
                                                        dtype=torch.float64), 18),
    ):
        start = time.perf_counter()
        traj, diag = sampler.sample(z0, n_steps=transitions, return_trajectory=True, return_diagnostics=True,
                                    generator=gen)
        seconds = time.perf_counter() - start
        ess = effective_sample_size(traj[:, :, :1]).item()
        print(f"{name:<18} acceptance {diag['acceptance_rate'].mean().item():.2f}, var(v) {traj[:, :, 0].var().item():.2f} "
              f"(9 exact), ESS {ess:.0f}: {ess / (transitions * gradients):.3f} per gradient, {ess / seconds:.0f} per s")


def parity_report(repeats: int, chains: int) -> None:
    """Print the check line and the timing table of every parity workload."""
    funnel_ess()
    print("\nParity samplers and losses: the same computation in both libraries")
    found = workloads(chains)
    for label, cases, _, _, check in found:
        print(_check(label, cases, check))
    summary = []
    for label, cases, count, unit, _ in found:
        timed = {name: (lambda run=run: stopwatch(run)) for name, run in cases.items()}
        times = interleave(timed, repeats, warmup=1)
        print(f"\n{label}: ms per {unit}")
        baseline = "torchebm" if "torchebm" in times else "nnh"
        print(report(times, baseline, scale=1e3, per=count, per_label=unit))
        if baseline == "torchebm":
            summary.append((label, median(times["torchebm"]) * 1e3 / count, median(times["nnh"]) * 1e3 / count,
                            median(times["torchebm"]) / median(times["nnh"])))
    if summary:
        print("\nworkload           TorchEBM ms   nnh ms   nnh speed-up")
        for label, a, b, ratio in summary:
            print(f"{label:<18} {a:11.4f} {b:8.4f}   {ratio:6.2f}x")
