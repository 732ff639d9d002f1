"""Score-based sampling and likelihoods: nnh against hand-written loops, peers, and torch.compile.

Model: `nnh._demo.ScoreMLP` (2-D points, 3 hidden SiLU layers of 128, sin/cos time features),
random weights (speed does not depend on training), VP SDE with the default coefficients.
Interleaved runs after a warm-up (benchmarks/_timing.py), medians and paired ratios.

    sample       handler.sample((B, 2), steps) against a hand-written Euler-Maruyama loop on
                 the same network (target: at most 1.05x), with and without its bar
    divergence   handler.log_likelihood with K = 8 probes, one vmapped vector-Jacobian
                 product per evaluation, against the same integration with a Python loop
                 over the 8 probes (a forward and a backward each) and with one forward and 8
                 backward passes (retain_graph) (target: at least 3x over the probe loop)
    peers        on Gaussian data N(0, 0.25 I) with the exact score (so every error is
                 measured against the analytic log p_epsilon): nnh Euler/Heun/RK4,
                 score_models 0.5.11 (Euler/Heun, t0 = epsilon set by hand, K = 1: it crashes
                 with K > 1 at B > 1) and torchdiffeq 0.2.5's adaptive dopri5 on the same
                 probability-flow ODE; then both libraries' sampling on the MLP. A peer that
                 is not installed is skipped with a message.
    compiled     the pure Euler-Maruyama step and the Hutchinson divergence under
                 torch.compile(fullgraph=True) against the same functions eager, noise passed in

Peers, optional: .venv/bin/pip install --no-deps score_models==0.5.11 torchdiffeq==0.2.5
torch-ema==0.3 scipy (score_models imports torch_ema and scipy).

    .venv/bin/python benchmarks/sde.py [--repeats 7] [--batch 4096] [--steps 200] [--threads 1]
                                       [--likelihood-batches 64 512] [--skip-peers] [--skip-compile]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

from _timing import interleave, load_line, machine_line, median, report, stopwatch

import nnh
from nnh import NNHandler
from nnh._demo import ScoreMLP
from nnh.func import (ODE_STEPS, euler_maruyama_step, hutchinson_divergence, hutchinson_probes, model_score,
                      probability_flow_drift)

SD = 0.5  # the Gaussian data's standard deviation in the peer comparison


def mlp_handler() -> NNHandler:
    torch.manual_seed(0)
    h = NNHandler(ScoreMLP)
    h.set_sde(nnh.VPSDE)
    return h


def hand_em(net: nn.Module, sde: nnh.VPSDE, batch: int, steps: int) -> torch.Tensor:
    """Euler-Maruyama on the reverse VP SDE, written out as one would without a library."""
    T, eps = sde.T, sde.epsilon
    dt = (T - eps) / steps
    db = sde.beta_max - sde.beta_min
    with torch.no_grad():
        x = torch.randn(batch, 2)
        for i in range(steps):
            t = torch.full((batch,), T - i * dt)
            beta = (sde.beta_min + db * t)[:, None]
            sigma = torch.sqrt(-torch.expm1(-(sde.beta_min * t + 0.5 * db * t * t)))[:, None]
            score = net(t, x) / sigma
            x_mean = x + dt * (0.5 * beta * x + beta * score)
            x = x_mean + torch.sqrt(beta * dt) * torch.randn_like(x)
    return x_mean


def sample_cases(batch: int, steps: int):
    h = mlp_handler()
    net, sde = h.module, h.sde
    return {
        "hand-written EM loop": lambda: stopwatch(lambda: hand_em(net, sde, batch, steps)),
        "handler.sample(bar=False)": lambda: stopwatch(lambda: h.sample((batch, 2), steps, bar=False)),
        "handler.sample (bar)": lambda: stopwatch(lambda: h.sample((batch, 2), steps, bar=True)),
    }


def loop_divergence(fn, x, noise):
    """The Python loop over probes: a forward and a backward pass per probe."""
    total = 0
    for v in noise:
        out, pullback = torch.func.vjp(fn, x)
        total = total + (pullback(v)[0] * v).flatten(1).sum(-1)
    return out, total / len(noise)


def retain_divergence(fn, x, noise):
    """One forward pass, then a backward pass per probe through the kept graph."""
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        out = fn(y)
        total = 0
        for k, v in enumerate(noise):
            (g,) = torch.autograd.grad(out, y, v, retain_graph=k < len(noise) - 1)
            total = total + (g * v).flatten(1).sum(-1)
    return out.detach(), total / len(noise)


def integrate_with(divergence, h: NNHandler, x: torch.Tensor, steps: int, k: int) -> torch.Tensor:
    """`handler.log_likelihood(x, ode_steps=steps, method="Heun")` with another divergence."""
    sde, net = h.sde, h.module
    score = lambda t, y: model_score(net, sde, t, y)  # noqa: E731
    noise = hutchinson_probes(x, k)
    times = torch.linspace(sde.epsilon, sde.T, steps + 1)
    dt = (sde.T - sde.epsilon) / steps

    def field(t, s):
        return divergence(lambda z: probability_flow_drift(sde, score, t, z), s[0], noise)

    state = (x, torch.zeros(x.shape[0]))
    with torch.no_grad():
        for i in range(steps):
            state = ODE_STEPS["heun"](field, times[i].expand(x.shape[0]), state, dt)
    return sde.prior((2,)).log_prob(state[0]) + state[1]


def divergence_cases(batch: int, steps: int, k: int):
    h = mlp_handler()
    x = torch.randn(batch, 2)
    return {
        "probe loop (K fwd + K bwd)": lambda: stopwatch(lambda: integrate_with(loop_divergence, h, x, steps, k)),
        "retain_graph (1 fwd + K bwd)": lambda: stopwatch(lambda: integrate_with(retain_divergence, h, x, steps, k)),
        "handler.log_likelihood (vmap)": lambda: stopwatch(lambda: h.log_likelihood(
            x, ode_steps=steps, n_cotangent_vectors=k, method="Heun")),
    }


class ExactScore(nn.Module):
    """sigma(t) times the exact score of N(0, SD^2 I) data under the default VP SDE."""

    def __init__(self) -> None:
        super().__init__()
        self.sde = nnh.VPSDE()

    def forward(self, t, x):
        m, sig = self.sde.mean_coeff(t)[:, None], self.sde.sigma(t)[:, None]
        return -sig * x / (m * m * SD * SD + sig * sig)


def exact_log_density(x: torch.Tensor) -> torch.Tensor:
    sde = nnh.VPSDE()
    t = torch.tensor(sde.epsilon, dtype=torch.float64)
    sd = (sde.mean_coeff(t) ** 2 * SD * SD + sde.sigma(t) ** 2).sqrt()
    return torch.distributions.Normal(0.0, sd).log_prob(x.double()).sum(-1)


def peer_likelihoods(x: torch.Tensor, repeats: int) -> None:
    h = NNHandler(ExactScore)
    h.set_sde(nnh.VPSDE)
    exact = exact_log_density(x)
    runs: dict[str, tuple] = {}
    for method, steps in (("Euler", 1000), ("Heun", 200), ("RK4", 100)):
        runs[f"nnh {method} {steps}"] = (lambda m=method, n=steps: h.log_likelihood(x, ode_steps=n, method=m), "")
    try:
        from score_models import ScoreModel
    except ImportError as exc:
        print(f"score_models is not installed ({exc}): .venv/bin/pip install --no-deps score_models==0.5.11 "
              "torch-ema==0.3 scipy")
    else:
        sm = ScoreModel(model=ExactScore(), sde="vp", beta_min=0.1, beta_max=20.0, epsilon=1e-5, device="cpu")
        for method, steps in (("Euler", 1000), ("Heun", 200)):
            runs[f"score_models {method} {steps}"] = (lambda m=method, n=steps: sm.log_likelihood(
                x, ode_steps=n, method=m, t0=sm.sde.epsilon, t1=sm.sde.T), "")
    try:
        import torchdiffeq
    except ImportError as exc:
        print(f"torchdiffeq is not installed ({exc}): .venv/bin/pip install --no-deps torchdiffeq==0.2.5")
    else:
        sde, net = h.sde, h.module
        for tol in (1e-3, 1e-5):
            nfe = [0]

            def field(t, state, nfe=nfe):
                nfe[0] += 1
                y = state[0]
                score = lambda s, z: model_score(net, sde, s, z)  # noqa: E731
                return hutchinson_divergence(lambda z: probability_flow_drift(sde, score, t.expand(len(y)), z), y,
                                             noise)

            def solve(tol=tol, field=field):
                with torch.no_grad():
                    xs, ds = torchdiffeq.odeint(field, (x, torch.zeros(len(x))),
                                                torch.tensor([sde.epsilon, sde.T]), method="dopri5", rtol=tol,
                                                atol=tol)
                return sde.prior((2,)).log_prob(xs[-1]) + ds[-1]

            noise = hutchinson_probes(x, 1)
            runs[f"torchdiffeq dopri5 tol {tol:g}"] = (solve, nfe)
    print(f"\nLog-likelihood of {len(x)} points of N(0, {SD}^2 I), exact score, VP SDE, K = 1 Rademacher "
          "(exact here: the Jacobian is a multiple of I)")
    print(f"{'case':<30} {'median ms':>10} {'max |error| nats':>17} {'mean error':>11}  evaluations")
    cases = {name: (lambda fn=fn: stopwatch(fn)) for name, (fn, _) in runs.items()}
    times = interleave(cases, repeats, warmup=1)
    for name, (fn, nfe) in runs.items():
        if nfe:
            nfe[0] = 0
        err = fn().double() - exact
        evals = f"{nfe[0]} (adaptive)" if nfe else ""
        print(f"{name:<30} {median(times[name]) * 1e3:>10.1f} {err.abs().max().item():>17.2e} "
              f"{err.mean().item():>11.2e}  {evals}")


def peer_sampling(batch: int, steps: int, repeats: int) -> None:
    try:
        from score_models import ScoreModel
    except ImportError:
        print("score_models is not installed: no sampling comparison.")
        return
    h = mlp_handler()
    sm = ScoreModel(model=h.module, sde="vp", beta_min=0.1, beta_max=20.0, epsilon=1e-5, device="cpu")
    cases = {
        "score_models.sample": lambda: stopwatch(lambda: sm.sample((batch, 2), steps)),
        "handler.sample (bar)": lambda: stopwatch(lambda: h.sample((batch, 2), steps)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = interleave(cases, repeats, warmup=1)
    print(f"\nSampling, the same MLP, {batch} points x {steps} Euler-Maruyama steps (ms per step)")
    print(report(times, "score_models.sample", scale=1e3, per=steps, per_label="step"))


def compiled_cases(batch: int, k: int):
    h = mlp_handler()
    net, sde = h.module, h.sde
    score = lambda t, y: model_score(net, sde, t, y)  # noqa: E731

    def em(t, x, noise):
        return euler_maruyama_step(sde, score, t, x, 0.005, noise)

    def div(t, x, noise):
        return hutchinson_divergence(lambda z: probability_flow_drift(sde, score, t, z), x, noise)

    em_c, div_c = torch.compile(em, fullgraph=True), torch.compile(div, fullgraph=True)
    t, x = torch.full((batch,), 0.5), torch.randn(batch, 2)
    xs = torch.randn(batch // 8, 2)
    ts = torch.full((batch // 8,), 0.5)
    probes = hutchinson_probes(xs, k)
    start = time.perf_counter()
    with torch.no_grad():
        em_c(t, x, torch.randn_like(x))
        div_c(ts, xs, probes)
    print(f"\ncompile time (2 graphs): {time.perf_counter() - start:.1f} s")

    def run(fn, *args, n=50):
        def case():
            with torch.no_grad():
                start = time.perf_counter()
                for _ in range(n):
                    fn(*args)
                return (time.perf_counter() - start) / n
        return case

    return {
        f"EM step compiled (B={batch})": run(em_c, t, x, torch.randn_like(x)),
        f"EM step eager (B={batch})": run(em, t, x, torch.randn_like(x)),
        f"Hutchinson K={k} compiled (B={batch // 8})": run(div_c, ts, xs, probes),
        f"Hutchinson K={k} eager (B={batch // 8})": run(div, ts, xs, probes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--likelihood-batches", type=int, nargs="*", default=[64, 512])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch.set_num_threads)")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    print(load_line())

    times = interleave(sample_cases(args.batch, args.steps), args.repeats, warmup=1)
    print(f"\nSampling: {args.batch} points x {args.steps} Euler-Maruyama steps, ScoreMLP (ms per step)")
    print(report(times, "hand-written EM loop", scale=1e3, per=args.steps, per_label="step"))

    k, div_steps = 8, 20
    for div_batch in args.likelihood_batches:
        times = interleave(divergence_cases(div_batch, div_steps, k), args.repeats, warmup=1)
        print(f"\nlog_likelihood: {div_batch} points, Heun x {div_steps} steps, K = {k} probes (ms per step)")
        print(report(times, "probe loop (K fwd + K bwd)", scale=1e3, per=div_steps, per_label="step"))
        loop, vmapped = median(times["probe loop (K fwd + K bwd)"]), median(times["handler.log_likelihood (vmap)"])
        print(f"speed-up of the vmapped divergence over the probe loop: {loop / vmapped:.2f}x; over retain_graph: "
              f"{median(times['retain_graph (1 fwd + K bwd)']) / vmapped:.2f}x")

    if not args.skip_peers:
        x = SD * torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
        peer_likelihoods(x, max(3, args.repeats // 2))
        peer_sampling(args.batch // 4, args.steps, max(3, args.repeats // 2))
    if not args.skip_compile:
        times = interleave(compiled_cases(args.batch, k), max(3, args.repeats // 2), warmup=1)
        print("\nPure steps: compiled (fullgraph) against the same function eager (ms per call)")
        for name in ("EM step", f"Hutchinson K={k}"):
            c = next(median(v) for n, v in times.items() if n.startswith(name) and "compiled" in n)
            e = next(median(v) for n, v in times.items() if n.startswith(name) and "eager" in n)
            print(f"{name:<15} compiled {c * 1e3:8.3f}  eager {e * 1e3:8.3f}  speed-up {e / c:5.2f}x")
    print("\n" + load_line())


if __name__ == "__main__":
    main()
