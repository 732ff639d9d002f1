"""nnh's MCMC samplers side by side with TorchEBM, on the 2-D double well U = 2 sum_i (x_i^2 - 1)^2.

Same energy, chains, step sizes and step counts for both libraries; interleaved runs after a
warm-up (benchmarks/_timing.py), medians and paired ratios:

    langevin   10,000 chains x 1,000 steps, step_size 0.01, noise_scale 1
    hmc        10,000 chains x 100 transitions x 10 leapfrog steps, step_size 0.05

Cases per workload:
    torchebm           TorchEBM's sampler on its DoubleWellModel (autograd gradient)
    nnh                nnh's sampler on nnh.DoubleWellModel (analytic energy_and_gradient)
    nnh autograd       nnh's sampler on the same energy as a plain nn.Module (autograd), to
                       separate what the sampler costs from what the analytic gradient saves

Target: nnh at least 3x faster than TorchEBM in eager mode. The samplers and losses nnh added
for TorchEBM parity run against TorchEBM's on the same workloads (`parity_cases`; target: nnh at
least as fast for each):

    gradient descent   10,000 chains x 1,000 steps, step_size 0.005 (double well)
    nesterov           the same, momentum 0.9
    langevin heun      10,000 chains x 1,000 steps, step_size 0.01, integrator="heun"
    rmhmc              Neal's funnel in 5-D with its Fisher metric, 1,000 chains x 20 transitions,
                       3 generalised leapfrog steps of 0.5, 4 fixed-point iterations
    flow ode / sde     a velocity MLP (3-32-32-2, ReLU), 10,000 points, 50 Euler, Heun or RK4
                       steps; the SDE with Euler-Maruyama, 250 steps, sample_eps 0.01
    dsm, ssm           forward + backward of the loss of an energy MLP (2-64-64-1, SiLU),
                       4,096 points (SSM: 5 Rademacher projections)

Then, for nnh only:
    compiled           the pure step under torch.compile(fullgraph=True), noise passed in
    ESS/s              effective samples per second of MALA and HMC (min over coordinates of
                       x_i and x_i^2), from 1,000 chains after a burn-in

Threads: one intra-op thread by default (--threads), for both libraries. On a 2-core machine
shared with other work, every OpenMP region (torch.log and torch.exp open one even on 1,000
elements) waits a scheduler quantum for the busy core: 12 ms measured for one torch.log. At
these sizes (20,000 numbers per op) no kernel gains from a second thread.

    .venv/bin/python benchmarks/mcmc.py [--repeats 7] [--chains 10000] [--threads 1] [--skip-compile] [--skip-ess]
                                        [--skip-parity] [--only-parity]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from _timing import interleave, load_line, machine_line, median, report, stopwatch
from mcmc_parity import parity_report

import nnh
from nnh.func import effective_sample_size, hmc_step, init_chain_state, langevin_step, mala_step

H, B = 2.0, 1.0


class PlainDoubleWell(nn.Module):
    """The same energy as an ordinary module: nnh differentiates it with autograd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return H * ((x * x - B * B) ** 2).sum(-1)


def torchebm_samplers():
    try:
        from torchebm.core import DoubleWellModel as TDoubleWell
        from torchebm.samplers import HamiltonianMonteCarlo as THMC
        from torchebm.samplers import LangevinDynamics as TLangevin
    except ImportError:
        print("TorchEBM is not installed (.venv/bin/pip install --no-deps torchebm): nnh cases only.")
        return None
    model = TDoubleWell(barrier_height=H, b=B)
    return TLangevin(model, step_size=0.01, noise_scale=1.0), THMC(model, step_size=0.05, n_leapfrog_steps=10)


def eager_cases(x0: torch.Tensor, steps: int, transitions: int):
    tebm = torchebm_samplers()
    langevin = {
        "nnh": nnh.LangevinDynamics(nnh.DoubleWellModel(H, B), step_size=0.01, noise_scale=1.0),
        "nnh autograd": nnh.LangevinDynamics(PlainDoubleWell(), step_size=0.01, noise_scale=1.0),
    }
    hmc = {
        "nnh": nnh.HamiltonianMonteCarlo(nnh.DoubleWellModel(H, B), step_size=0.05, n_leapfrog_steps=10),
        "nnh autograd": nnh.HamiltonianMonteCarlo(PlainDoubleWell(), step_size=0.05, n_leapfrog_steps=10),
    }
    if tebm is not None:
        langevin = {"torchebm": tebm[0], **langevin}
        hmc = {"torchebm": tebm[1], **hmc}
    as_case = lambda s, n: (lambda: stopwatch(lambda: s.sample(x=x0, n_steps=n)))  # noqa: E731
    return ({k: as_case(s, steps) for k, s in langevin.items()},
            {k: as_case(s, transitions) for k, s in hmc.items()}, langevin, hmc)


def compiled_cases(x0: torch.Tensor, steps: int, transitions: int):
    """The pure steps compiled whole (fullgraph), against the same functions eager. Noise and
    uniforms are drawn outside the graph with torch.randn / torch.rand and passed in: drawn
    inside (torch.randn_like in the graph) they cost 0.79 ms per Langevin step on this CPU
    against 0.13 ms (measured), inductor's CPU generator being much slower than ATen's."""
    eg = nnh.DoubleWellModel(H, B).energy_and_gradient

    def langevin(state, noise, uniform):
        return langevin_step(state, eg, 0.01, 1.0, noise=noise)[0]

    def mala(state, noise, uniform):
        return mala_step(state, eg, 0.01, 1.0, noise=noise, uniform=uniform)[0]

    def hmc(state, noise, uniform):
        return hmc_step(state, eg, 0.05, 10, noise=noise, uniform=uniform)[0]

    def run(step, n):
        def case():
            state = init_chain_state(x0, eg)
            start = time.perf_counter()
            for _ in range(n):
                state = step(state, torch.randn_like(state.x), torch.rand_like(state.energy))
            return time.perf_counter() - start
        return case

    compiled = {name: torch.compile(fn, fullgraph=True) for name, fn in
                (("langevin", langevin), ("mala", mala), ("hmc", hmc))}
    t0 = time.perf_counter()
    for fn in compiled.values():
        fn(init_chain_state(x0, eg), torch.randn_like(x0), torch.rand(x0.shape[0]))
    print(f"compile time (3 graphs): {time.perf_counter() - t0:.1f} s")
    return {
        "langevin compiled": run(compiled["langevin"], steps),
        "langevin eager step": run(langevin, steps),
        "mala compiled": run(compiled["mala"], steps),
        "mala eager step": run(mala, steps),
        "hmc compiled": run(compiled["hmc"], transitions),
        "hmc eager step": run(hmc, transitions),
    }


def ess_per_second(chains: int, draws: int, burn_in: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    model = nnh.DoubleWellModel(H, B)
    x0 = 0.7 * torch.randn(chains, 2, generator=gen)
    lines = []
    # MALA with h = 0.05 leaves some chains stuck in the quartic tails (proposals overshoot),
    # which shows as a tiny ESS of x_i^2; h = 0.02 does not.
    for name, sampler, n in (("MALA h=0.02", nnh.MALA(model, step_size=0.02), draws),
                             ("HMC eps=0.05 L=10", nnh.HamiltonianMonteCarlo(model, step_size=0.05, n_leapfrog_steps=10), draws // 10)):
        x = sampler.sample(x=x0, n_steps=burn_in, generator=gen)
        start = time.perf_counter()
        traj, diag = sampler.sample(x=x, n_steps=n, return_trajectory=True, return_diagnostics=True, generator=gen)
        seconds = time.perf_counter() - start
        ess_x = effective_sample_size(traj).min().item()
        ess_x2 = effective_sample_size(traj**2).min().item()
        lines.append(f"{name:<18} {chains} chains x {n} steps in {seconds:.2f} s, acceptance "
                     f"{diag['acceptance_rate'].mean().item():.3f}: ESS(x_i) {ess_x:.0f} -> {ess_x / seconds:.0f}/s, "
                     f"ESS(x_i^2) {ess_x2:.0f} -> {ess_x2 / seconds:.0f}/s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chains", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--transitions", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch.set_num_threads)")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-ess", action="store_true")
    parser.add_argument("--skip-parity", action="store_true", help="skip the parity samplers and losses")
    parser.add_argument("--only-parity", action="store_true", help="run the parity samplers and losses only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    print(load_line())
    if not args.skip_parity:
        parity_report(args.repeats, args.chains)
    if args.only_parity:
        print("\n" + load_line())
        return
    x0 = torch.randn(args.chains, 2, generator=torch.Generator().manual_seed(0))
    langevin, hmc, lsamplers, hsamplers = eager_cases(x0, args.steps, args.transitions)
    # Same statistics from every implementation (a check that they run the same chain law).
    for label, samplers, n in (("langevin", lsamplers, args.steps), ("hmc", hsamplers, args.transitions)):
        for name, sampler in samplers.items():
            torch.manual_seed(1)
            out = sampler.sample(x=x0, n_steps=n)
            print(f"{label:<8} {name:<13} E|x_i| = {out.abs().mean().item():.4f}  E x_i^2 = {(out**2).mean().item():.4f}")
    baseline = "torchebm" if "torchebm" in langevin else "nnh"
    for label, cases, per, unit in (("Langevin", langevin, args.steps, "step"), ("HMC", hmc, args.transitions, "transition")):
        times = interleave(cases, args.repeats, warmup=1)
        print(f"\n{label}: {args.chains} chains, {per} {unit}s, eager (times in ms per {unit})")
        print(report(times, baseline, scale=1e3, per=per, per_label=unit))
        if baseline == "torchebm":
            print(f"speed-up of nnh over TorchEBM: {median(times['torchebm']) / median(times['nnh']):.2f}x "
                  f"(autograd energy: {median(times['torchebm']) / median(times['nnh autograd']):.2f}x)")
    if not args.skip_compile:
        cases = compiled_cases(x0, args.steps, args.transitions)
        times = interleave(cases, max(3, args.repeats // 2), warmup=1)
        print(f"\nPure steps, {args.chains} chains: compiled (fullgraph) against the same function eager (ms per step)")
        for name in ("langevin", "mala", "hmc"):
            per = args.transitions if name == "hmc" else args.steps
            c, e = median(times[f"{name} compiled"]), median(times[f"{name} eager step"])
            print(f"{name:<9} compiled {c * 1e3 / per:8.4f}  eager {e * 1e3 / per:8.4f}  speed-up {e / c:5.2f}x")
    if not args.skip_ess:
        print("\nEffective samples per second (2-D double well, nnh eager, after a burn-in of 500 steps or transitions)")
        for line in ess_per_second(1_000, 2_000, 500):
            print(line)
    print("\n" + load_line())


if __name__ == "__main__":
    main()
