"""Score-based models on an `NNHandler`: the SDE it holds, the score, reverse-time sampling and
likelihoods.

`score`, `sample` and `log_likelihood` are the handler's methods of those names (`NNHandler`
binds these functions as methods); they read the handler's public surface only (`sde`,
`model`, `parts`, `runtime`, `device`) and leave the maths to `nnh.func`. The network outputs
sigma(t) times the score: see `nnh.func.score`.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from nnh._init_record import recorded_init
from nnh.func.divergence import hutchinson_probes
from nnh.func.likelihood import likelihood_ode_step
from nnh.func.ode import ODE_STEPS
from nnh.func.sampling import (euler_maruyama_step, langevin_corrector_step, probability_flow_drift,
                               probability_flow_step)
from nnh.func.score import model_score
from nnh.stateful._dtype import resolve_dtype
from nnh.stateful.checks import check_flag

__all__ = ["SDE_MEMBERS", "check_sde", "build_sde", "score", "sample", "log_likelihood", "on_main"]

SDE_MEMBERS = ("T", "epsilon", "sigma", "marginal_prob", "drift", "diffusion", "prior")
_SDE_METHODS = ("sigma", "marginal_prob", "drift", "diffusion", "prior")
SAMPLING_METHODS = ("euler_maruyama", "probability_flow")
_REFRESH_EVERY_S = 0.5  # progress-bar refresh period: the only host read of a sampling loop


def check_sde(sde: Any, owner: str = "handler.sde") -> Any:
    """`sde` if it is None or has every member an SDE needs (duck-typed, see `nnh.func.sde`);
    a TypeError naming what is missing otherwise."""
    if sde is None:
        return None
    if isinstance(sde, type):
        raise TypeError(f"{owner}: got the class {sde.__name__}; assign an instance (handler.sde = "
                        f"{sde.__name__}(...)) or call handler.set_sde({sde.__name__}, **kwargs).")
    missing = [m for m in SDE_MEMBERS if not hasattr(sde, m)]
    missing += [m for m in _SDE_METHODS if hasattr(sde, m) and not callable(getattr(sde, m))]
    if missing:
        raise TypeError(f"{owner}: {type(sde).__name__} object lacks {missing}; an SDE needs T, epsilon, sigma(t), "
                        "marginal_prob(t, x), drift(t, x), diffusion(t, x) and prior(shape): use nnh.VPSDE, "
                        "nnh.VESDE or nnh.SubVPSDE, or an object with those members.")
    try:
        T, eps = float(sde.T), float(sde.epsilon)
    except (TypeError, ValueError):
        T, eps = math.nan, math.nan
    if not 0 <= eps < T < math.inf:
        raise ValueError(f"{owner}: {type(sde).__name__} has T={sde.T!r}, epsilon={sde.epsilon!r}; they must be "
                         "finite numbers with 0 <= epsilon < T.")
    return sde


def build_sde(sde_class: Any, sde_kwargs: dict[str, Any]) -> Any:
    """`sde_class(**sde_kwargs)`, checked (`check_sde`); an error names the class and kwargs.

    A class that does not record its constructor arguments (one from another package) gets
    them recorded as ``init_kwargs`` on the instance, so that a checkpoint stores it as its
    import path and these kwargs (`nnh.func.checkpoint.encode_value`)."""
    if not inspect.isclass(sde_class):
        raise TypeError(f"set_sde: sde_class={sde_class!r} must be a class, e.g. handler.set_sde(nnh.VPSDE, "
                        "beta_max=20.0); assign a ready instance with handler.sde = instance.")
    try:
        sde = sde_class(**sde_kwargs)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"set_sde: {sde_class.__name__}(**{sde_kwargs!r}) was refused: {exc}. Check the keyword "
                        "names and values.") from exc
    check_sde(sde, f"set_sde({sde_class.__name__})")
    if recorded_init(sde) is None:
        try:
            sde.init_kwargs = dict(sde_kwargs)
        except AttributeError:  # __slots__: the checkpoint records it by name instead
            pass
    return sde


def on_main(handler: Any, work: Callable[[], Any]) -> Any:
    """`work()`'s result on the main process (rank 0), None on the others: the one place where
    sampling and likelihoods decide where they run. Rank 0 works alone, except under FSDP,
    where every forward is a collective and every rank runs it (`Runtime.main_result`)."""
    return handler.runtime.main_result(work)


def _require_sde(handler: Any, who: str) -> Any:
    if handler.sde is None:
        raise RuntimeError(f"{who} needs an SDE; call handler.set_sde(nnh.VPSDE) (or nnh.VESDE, nnh.SubVPSDE) "
                           "first, or assign handler.sde = instance.")
    return handler.sde


def _prior(sde: Any, event_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Any:
    """`sde.prior(event_shape)` on `device` in `dtype`, for SDEs whose prior takes a device and a
    dtype (nnh's do) and for those whose prior takes neither: their draws are cast by the caller."""
    try:
        params = inspect.signature(sde.prior).parameters.values()
    except (TypeError, ValueError):
        params = []
    names = {p.name for p in params}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        names |= {"device", "dtype"}
    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if k in names}
    return sde.prior(event_shape, **kwargs)


def _on_device(args: Sequence[Any], device: torch.device) -> tuple[Any, ...]:
    return tuple(a.to(device) if isinstance(a, Tensor) else a for a in args)


def _check_int(who: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{who}: {name}={value!r} must be an int >= {low}.")


# The defaults of sample's SDE-only arguments: anything else is refused on the custom sampler's path.
_SDE_SAMPLING_DEFAULTS = {"shape": None, "steps": None, "condition": None, "likelihood_score_fn": None,
                          "guidance_factor": 1.0, "method": "euler_maruyama", "corrector_steps": 0, "snr": 0.16}


def _differs(value: Any, default: Any) -> bool:
    return value is not default and not (type(value) is type(default) and value == default)


def _check_number(who: str, name: str, value: Any, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
            positive and not value > 0):
        raise ValueError(f"{who}: {name}={value!r} must be a finite number{' > 0' if positive else ''}.")


def score(handler: Any, t: float | Tensor, x: Tensor, *args: Any) -> Tensor:
    """The score s(t, x) = model(t, x, *args) / sigma(t), shaped like x (B, *event_shape).

    ``t`` is a float, a 0-d tensor or a (B,) tensor; the model always receives t of shape (B,).
    Gradients flow (call it under `torch.no_grad()` when none are needed).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"score: x must be a tensor of shape (B, *event_shape), got {type(x).__name__}.")
    return model_score(handler.model, _require_sde(handler, "score"), t, x, *args)


def _guided_score(handler: Any, sde: Any, condition: tuple[Any, ...], likelihood_score_fn: Callable | None,
                  guidance_factor: float) -> Callable[[Tensor, Tensor], Tensor]:
    net = handler.model

    def score_fn(t: Tensor, x: Tensor) -> Tensor:
        s = model_score(net, sde, t, x, *condition)
        if likelihood_score_fn is not None:
            with torch.enable_grad():  # a likelihood score may differentiate a forward model
                guide = likelihood_score_fn(t, x)
            if not isinstance(guide, Tensor) or guide.shape != x.shape:  # would broadcast into a wrong score
                got = tuple(guide.shape) if isinstance(guide, Tensor) else type(guide).__name__
                raise ValueError(f"sample: likelihood_score_fn(t, x) returned {got} for x of shape {tuple(x.shape)}; "
                                 "it must return a score shaped like x.")
            s = s + guidance_factor * guide.detach()
        return s

    return score_fn


def sample(handler: Any, shape: Sequence[int] | int | None = None, steps: int | None = None,
           condition: Sequence[Any] | Tensor | None = None, likelihood_score_fn: Callable | None = None,
           guidance_factor: float = 1.0, apply_ema: bool = True, bar: bool = True, stop_on_NaN: bool = True, *,
           method: str = "euler_maruyama", corrector_steps: int = 0, snr: float = 0.16, N: int | None = None,
           device: torch.device | str | None = None) -> Tensor | Any | None:
    r"""Samples of shape `shape` = (B, *event_shape) by integrating from the prior at T down to
    epsilon in `steps` uniform steps of the reverse-time dynamics, under `torch.no_grad()`:

    - ``method="euler_maruyama"``: the reverse SDE, `nnh.func.euler_maruyama_step`; the last
      step returns its noise-free mean.
    - ``method="probability_flow"``: the probability-flow ODE by Heun steps and a last Euler
      step (`nnh.func.probability_flow_step`, two model evaluations a step, none at
      epsilon): deterministic given the prior draw, and with an accurate score it needs far
      fewer steps than the SDE.
    - ``corrector_steps=n``: predictor-corrector sampling, n Langevin corrector steps at each
      time before the predictor step (`nnh.func.langevin_corrector_step`, signal-to-noise
      ratio `snr`).

    The score is model(t, x, *condition) / sigma(t) + guidance_factor * likelihood_score_fn(t, x)
    (the second term for posterior sampling: the score of the likelihood of an observation,
    called with autograd enabled). `condition` is a list or tuple of extra model arguments (or
    one tensor). `apply_ema` samples with the EMA weights when the handler has them (the raw
    weights are back afterwards). `bar` shows a tqdm bar refreshed every 0.5 s.

    `stop_on_NaN`: a non-finite state stops sampling with a warning naming the step, and the
    last finite state is returned. Finiteness is tracked on the device and read once per bar
    refresh, so the loop never waits for the device at every step.

    ``sample(N=16)`` (or ``sample(16)`` when no SDE is set) draws from the custom sampler
    instead (`set_sampler`), on `device`; the arguments of SDE sampling (`steps`, `method`...)
    are refused there, and `device` is refused for SDE sampling, which runs on the handler's
    device. Runs on rank 0 only; other ranks get None.
    """
    if N is not None or (handler.sde is None and isinstance(shape, int) and not isinstance(shape, bool)):
        given = {"shape": shape if N is not None else None, "steps": steps, "condition": condition,
                 "likelihood_score_fn": likelihood_score_fn, "guidance_factor": guidance_factor, "method": method,
                 "corrector_steps": corrector_steps, "snr": snr}
        ignored = [f"{k}={v!r}" for k, v in given.items() if _differs(v, _SDE_SAMPLING_DEFAULTS[k])]
        if ignored:
            raise ValueError(f"sample: {', '.join(ignored)} apply to reverse-SDE sampling, not to the custom sampler "
                             "that sample(N=...) draws from; call handler.sample(shape, steps, ...) for the SDE.")
        return handler.get_samples(shape if N is None else N, device)
    if handler.sde is None:
        raise TypeError("sample: no SDE is set; call handler.set_sde(nnh.VPSDE) for reverse-SDE sampling, or "
                        "handler.sample(N=...) to draw from the custom sampler.")
    sde = handler.sde
    if not (isinstance(shape, (tuple, list, torch.Size)) and len(shape) >= 1
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise ValueError(f"sample: shape={shape!r} must be a tuple of positive ints (batch, *event_shape), "
                         "e.g. (64, 2).")
    if device is not None:
        raise ValueError(f"sample: device={device!r} applies to the custom sampler (sample(N=...)); reverse-SDE "
                         f"sampling runs on the handler's device ({handler.device}): move the handler with "
                         "handler.to(device).")
    _check_int("sample", "steps", steps, 1)
    _check_int("sample", "corrector_steps", corrector_steps, 0)
    for name, flag in (("apply_ema", apply_ema), ("bar", bar), ("stop_on_NaN", stop_on_NaN)):
        check_flag("sample", name, flag)
    _check_number("sample", "guidance_factor", guidance_factor)
    _check_number("sample", "snr", snr, positive=True)
    if method not in SAMPLING_METHODS:
        raise ValueError(f"sample: method={method!r} must be one of {SAMPLING_METHODS}.")
    if likelihood_score_fn is not None and not callable(likelihood_score_fn):
        raise TypeError(f"sample: likelihood_score_fn={likelihood_score_fn!r} must be callable (t, x) -> score.")
    if isinstance(condition, Tensor):
        condition = [condition]
    if condition is not None and not isinstance(condition, (list, tuple)):
        raise TypeError(f"sample: condition must be a list or tuple of model arguments (or one tensor), got "
                        f"{type(condition).__name__}.")

    def work() -> Tensor:
        dev = handler.device
        score_fn = _guided_score(handler, sde, _on_device(condition or (), dev), likelihood_score_fn, guidance_factor)
        T, eps = float(sde.T), float(sde.epsilon)
        B, event_shape = shape[0], tuple(shape[1:])
        dtype = resolve_dtype("sample", None, handler.model)
        parts = handler.parts
        with torch.no_grad(), parts.model.evaluating(parts.optimization.ema() if apply_ema else None):
            x = _prior(sde, event_shape, dev, dtype).sample((B,)).to(dev, dtype)
            times = torch.linspace(T, eps, steps + 1, device=dev, dtype=x.dtype)
            dt = (T - eps) / steps

            def step(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
                t = times[i].expand(B)
                for _ in range(corrector_steps):
                    x, _ = langevin_corrector_step(score_fn, t, x, snr, torch.randn_like(x))
                if method == "probability_flow":  # Heun, and Euler last: never the network at epsilon
                    x = probability_flow_step(sde, score_fn, t, x, dt, "euler" if i == steps - 1 else "heun")
                    return x, x
                return euler_maruyama_step(sde, score_fn, t, x, dt, torch.randn_like(x))

            return _integrate(step, x, steps, times, bar, stop_on_NaN)

    return on_main(handler, work)


class _FiniteTracker:
    """The last finite state of a loop and the count of steps that kept it finite, both on
    the device: tracking costs a few small kernels a step and no host read."""

    def __init__(self, x: Tensor) -> None:
        self.last = x
        self.ok = torch.ones((), dtype=torch.bool, device=x.device)
        self.finite_steps = torch.zeros((), dtype=torch.int64, device=x.device)

    def update(self, x: Tensor) -> None:
        # A NaN or inf anywhere makes the sum non-finite (as does a sum overflowing float32, a
        # state that has diverged anyway); isfinite(x).all() costs 90 us a step on 8,192 numbers
        # on this CPU, the sum 5 us (benchmarks/sde.py).
        self.ok = self.ok & torch.isfinite(x.sum())
        self.last = torch.where(self.ok, x, self.last)
        self.finite_steps = self.finite_steps + self.ok


def _integrate(step: Callable[[int, Tensor], tuple[Tensor, Tensor]], x: Tensor, steps: int, times: Tensor,
               bar: bool, stop_on_nan: bool) -> Tensor:
    """Run ``x, out = step(i, x)`` for i < steps and return the last `out`, with the bar and
    the non-finite stop of `sample`."""
    tracker = _FiniteTracker(x) if stop_on_nan else None
    progress = tqdm(total=steps, desc="Sampling", disable=not bar, leave=False, dynamic_ncols=True)
    last_refresh = time.monotonic()
    out = x
    try:
        for i in range(steps):
            x, out = step(i, x)
            if tracker is not None:
                tracker.update(out if i == steps - 1 else x)
            if i == steps - 1 or time.monotonic() - last_refresh >= _REFRESH_EVERY_S:
                progress.update(i + 1 - progress.n)
                last_refresh = time.monotonic()
                if tracker is not None and not bool(tracker.ok):  # the host read, once per refresh
                    bad = int(tracker.finite_steps)
                    warnings.warn(f"sample: the state became non-finite at step {bad + 1} of {steps} (t = "
                                  f"{float(times[bad]):.4g}); stopped there and returned the last finite state "
                                  f"(after step {bad}). Try more steps, or check the model and the guidance.",
                                  RuntimeWarning, stacklevel=4)
                    return tracker.last
    finally:
        progress.close()
    return out


def log_likelihood(handler: Any, x: Tensor, *args: Any, ode_steps: int, n_cotangent_vectors: int = 1,
                   noise_type: str = "rademacher", method: str = "Euler", t0: float | None = None,
                   t1: float | None = None, apply_ema: bool = True, pbar: bool = False) -> Tensor | None:
    r"""log p(x) per sample, (B,), for x (B, *event_shape), by the probability-flow ODE:

    .. math:: \log p_{t_0}(x) = \log p_{T}(x_{t_1}) + \int_{t_0}^{t_1} \nabla \cdot \tilde f(t, x_t)\,dt

    integrated from t0 (default epsilon) to t1 (default T) in `ode_steps` uniform steps of
    `method` ("Euler", "Heun" or "RK4"; see `nnh.func.likelihood_ode_step`), the divergence
    estimated with `n_cotangent_vectors` probes of `noise_type` ("rademacher" or "gaussian"),
    drawn once per call and kept along the path, in one vmapped pass
    (`nnh.func.hutchinson_divergence`). ``args`` are conditioning inputs of the model. Under
    `torch.no_grad()`, with the EMA weights when `apply_ema` and the handler has them.

    A uniform grid in t is uniform in log sigma for `nnh.VESDE`, whose probability-flow
    velocity grows x at the rate ln(sigma_max / sigma_min) / T towards T: Euler needs about
    ten times the steps there that it needs for a VP SDE (docs/score_based.md gives counts).
    For bits per dimension see `nnh.func.bits_per_dim`. Runs on rank 0 only; other ranks get None.
    """
    sde = _require_sde(handler, "log_likelihood")
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"log_likelihood: x must be a tensor of shape (B, *event_shape) with B >= 1, got "
                         f"{type(x).__name__}{tuple(x.shape) if isinstance(x, Tensor) else ''}.")
    if not x.is_floating_point():
        raise ValueError(f"log_likelihood: x has dtype {x.dtype}; the likelihood is a density of real-valued "
                         "points: pass x.float() (dequantised, see nnh.func.bits_per_dim).")
    for name, flag in (("apply_ema", apply_ema), ("pbar", pbar)):
        check_flag("log_likelihood", name, flag)
    _check_int("log_likelihood", "ode_steps", ode_steps, 1)
    _check_int("log_likelihood", "n_cotangent_vectors", n_cotangent_vectors, 1)
    if not isinstance(noise_type, str) or noise_type.lower() not in ("rademacher", "gaussian"):
        raise ValueError(f"log_likelihood: noise_type={noise_type!r} must be 'rademacher' or 'gaussian'.")
    if not isinstance(method, str) or method.lower() not in ODE_STEPS:
        raise ValueError(f"log_likelihood: method={method!r} must be 'Euler', 'Heun' or 'RK4'.")
    t0 = float(sde.epsilon) if t0 is None else t0
    t1 = float(sde.T) if t1 is None else t1
    _check_number("log_likelihood", "t0", t0)
    _check_number("log_likelihood", "t1", t1)
    if not 0 <= t0 < t1 <= float(sde.T):
        raise ValueError(f"log_likelihood: t0={t0!r}, t1={t1!r}; they must satisfy 0 <= t0 < t1 <= T={sde.T} "
                         f"(defaults: epsilon={sde.epsilon}, T={sde.T}); past T the prior at T is not p_t1.")
    # sigma in the dtype the ODE runs in (x's), read once a call.
    sigma_t0 = float(sde.sigma(torch.full((1,), float(t0), dtype=x.dtype, device=handler.device)).reshape(-1)[0])
    if not sigma_t0 > 0:
        raise ValueError(f"log_likelihood: sigma(t0={t0!r}) = {sigma_t0} for {type(sde).__name__}: the score, "
                         "net / sigma(t), is not defined there; start at t0 > 0, e.g. the default t0=epsilon with "
                         "epsilon > 0 (1e-5).")

    def work() -> Tensor:
        dev = handler.device
        y = x.to(dev)
        B = y.shape[0]
        score_fn = _guided_score(handler, sde, _on_device(args, dev), None, 0.0)
        parts = handler.parts
        with torch.no_grad(), parts.model.evaluating(parts.optimization.ema() if apply_ema else None):
            noise = hutchinson_probes(y, n_cotangent_vectors, noise_type)
            times = torch.linspace(t0, t1, ode_steps + 1, device=dev, dtype=y.dtype)
            dt = (t1 - t0) / ode_steps
            state = (y, torch.zeros(B, device=dev, dtype=y.dtype))
            for i in tqdm(range(ode_steps), desc="log-likelihood", disable=not pbar, leave=False, dynamic_ncols=True):
                state = likelihood_ode_step(lambda t, z: probability_flow_drift(sde, score_fn, t, z),
                                            times[i].expand(B), state, dt, noise, method)
            return _prior(sde, tuple(y.shape[1:]), dev, y.dtype).log_prob(state[0]) + state[1]

    return on_main(handler, work)
