"""Functional optimizer updates for SGD, Adam and AdamW over lists of tensors.

`torch.optim.Optimizer.step` breaks a `torch.compile(fullgraph=True)` graph. These updates
compute the same formulas as `torch.optim.SGD`, `Adam` and `AdamW` with `torch._foreach_*`
kernels (one kernel per operation over all tensors of a parameter group), keep every
step-dependent quantity on the device (no host sync), and trace into a full graph.

The hyperparameters are read from a real `torch.optim` optimizer's `param_groups` (so an LR
scheduler acting on that optimizer acts on these updates too), and the per-parameter state is
kept in `optimizer.state[p]` in the layout `torch.optim` uses, so `optimizer.state_dict()`
stays valid. Any other optimizer class is stepped through its own `step()`: correct, but a
graph break under `torch.compile`.

Sharded parameters (DTensors, FSDP) are updated shard by shard (`nnh.func.shards`): the
updates are element-wise, so each process's shards get exactly what the whole tensor would.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from nnh.func.shards import local_shards

__all__ = ["has_functional_update", "init_optimizer_state", "optimizer_update"]


def _kind(optimizer: torch.optim.Optimizer) -> str | None:
    # Exact classes only: a subclass may override `step` with other maths.
    cls = type(optimizer)
    if cls is torch.optim.SGD:
        return "sgd"
    if cls is torch.optim.AdamW:
        return "adamw"
    if cls is torch.optim.Adam:
        return "adam"
    return None


def has_functional_update(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` is updated by the graph-friendly foreach path (SGD, Adam, AdamW)."""
    return _kind(optimizer) is not None and not any(
        g.get("differentiable", False) or g.get("fused", False) for g in optimizer.param_groups
    )


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the per-parameter state tensors of a fresh SGD/Adam/AdamW optimizer eagerly.

    `torch.optim` creates them lazily at the first `step`; creating them up front gives the
    train state fixed tensors to reference and keeps the first compiled step free of Python
    dict mutation. Adam's state is exactly what its first step would create (zeros, step 0).
    SGD's momentum buffer starts at zero and the update treats step 0 as torch does
    (buffer <- grad). Optimizers of other classes are left alone.
    """
    kind = _kind(optimizer)
    if kind is None:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state[p]
            if st:
                continue
            if kind == "sgd":
                if group["momentum"] != 0:
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                continue
            st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def optimizer_update(optimizer: torch.optim.Optimizer, step: Tensor, found_inf: Tensor | None = None) -> None:
    """Apply one update to the parameters of `optimizer` from their `.grad`, in place.

    Args:
        optimizer: the optimizer whose `param_groups` give parameters and hyperparameters.
        step: int64 scalar tensor, the number of updates applied before this one (used by
            SGD to treat its first momentum step as torch does).
        found_inf: optional 1-element tensor (float or bool); where it is nonzero the update
            is skipped: no parameter or state tensor changes. SGD/Adam/AdamW gate every
            in-place op on the device (no host read, traceable); with `found_inf` 0 their
            results equal the ungated update bitwise. Other optimizers read it on the host
            (one sync) to decide whether to call `step()`.

    SGD/Adam/AdamW use the foreach updates below; other classes call `optimizer.step()`.
    Parameters whose `.grad` is None are left untouched, as `torch.optim` does.
    """
    kind = _kind(optimizer)
    if kind is None or not has_functional_update(optimizer):
        if found_inf is None or not bool(found_inf):  # host read: `step()` must know whether to run
            optimizer.step()
        return
    ok = None if found_inf is None else found_inf.reshape(()) == 0
    update = _UPDATES[kind]
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            update(optimizer, group, params, step, ok)
    if not torch.compiler.is_compiling():
        # LR schedulers check this flag (set by `Optimizer.step`) to warn about calls made
        # before any update; the foreach path is an update too.
        optimizer._opt_called = True  # type: ignore[attr-defined]


def _gate(ok: Tensor | None, value: float | Tensor, identity: float, like: Tensor) -> float | Tensor:
    """`value`, or where `ok` is False the coefficient that makes its op an identity.

    Ungated (`ok` None) the value is returned as it is, so that path runs the kernels it
    always ran. Gated, a Python float becomes a 0-d tensor in the compute precision of
    `like` (float32 for half types, as the foreach kernels use for Python scalars)."""
    if ok is None:
        return value
    if not isinstance(value, Tensor):
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        value = torch.full((), value, dtype=dtype, device=like.device)
    return torch.where(ok, value, identity)


def _grads(group: dict, params: list[Tensor], ok: Tensor | None, coupled_wd: bool = True) -> list[Tensor]:
    """The gradients the update uses: negated under `maximize`, plus wd * p for coupled
    weight decay, and zero where `ok` is False (a non-finite gradient must not reach state).
    `params` are the parameters themselves (their `.grad`), maybe DTensors; the result is local."""
    grads = local_shards([p.grad for p in params])
    params = local_shards(params)
    if group.get("maximize", False):
        grads = torch._foreach_neg(grads)
    wd = group["weight_decay"]
    if wd != 0 and coupled_wd:
        grads = torch._foreach_add(grads, params, alpha=wd)
    if ok is not None:
        # torch.where has no foreach form; one small kernel per tensor (fused under compile).
        grads = [torch.where(ok, g, 0.0) for g in grads]
    return grads


@torch.no_grad()
def _sgd(optimizer: torch.optim.Optimizer, group: dict, params: list[Tensor], step: Tensor,
         ok: Tensor | None) -> None:
    """SGD: g <- g + wd * p; b <- g at step 0 else momentum * b + (1 - dampening) * g;
    d <- g + momentum * b (Nesterov) or b; p <- p - lr * d.

    Gated (`ok` False): g = 0, the factor of b is 1, the added term is -0.0 (x + -0.0 is
    x for every x, signed zeros included) and d is multiplied by 0."""
    lr, momentum = group["lr"], group["momentum"]
    grads = _grads(group, params, ok)
    bufs = local_shards([optimizer.state[p]["momentum_buffer"] for p in params]) if momentum != 0 else []
    params = local_shards(params)
    if momentum != 0:
        started = (step > 0).to(params[0].dtype)
        # At step 0 torch sets the buffer to the gradient itself: momentum * 0-buffer would
        # give the same only without dampening, so both factors switch on `started`.
        torch._foreach_mul_(bufs, _gate(ok, started * momentum, 1.0, params[0]))
        grad_factor = _gate(ok, 1 - started * group["dampening"], -0.0, params[0])
        torch._foreach_add_(bufs, torch._foreach_mul(grads, grad_factor))
        if group["nesterov"]:
            grads = torch._foreach_add(grads, bufs, alpha=momentum)
        else:
            grads = bufs
        if ok is not None:
            # The buffer is finite and nonzero: the direction itself must be gated.
            grads = torch._foreach_mul(grads, ok.to(grads[0].dtype))
    torch._foreach_add_(params, grads, alpha=-lr)


@torch.no_grad()
def _adam(optimizer: torch.optim.Optimizer, group: dict, params: list[Tensor], step: Tensor,
          ok: Tensor | None, decoupled: bool = False) -> None:
    """Adam / AdamW with bias correction:
    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
    Adam adds wd * p to g; AdamW (decoupled) scales p by (1 - lr * wd) first.

    Gated (`ok` False): g = 0, t += 0, the lerp weight is -0.0 and the factors of p and v
    are 1, so m, v and max v keep their values; the step size is 0, so the denominator is
    inf and p + m / inf is p."""
    lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
    beta1, beta2 = group["betas"]
    decoupled = decoupled or group.get("decoupled_weight_decay", False)
    states = [optimizer.state[p] for p in params]
    grads = _grads(group, params, ok, coupled_wd=not decoupled)
    params = local_shards(params)
    steps = [s["step"] for s in states]
    exp_avgs = local_shards([s["exp_avg"] for s in states])
    exp_avg_sqs = local_shards([s["exp_avg_sq"] for s in states])
    p0 = params[0]

    if ok is None:
        torch._foreach_add_(steps, 1)
    else:
        # A step restored from a torch.optim state_dict may sit on the CPU (then a copy).
        torch._foreach_add_(steps, ok.to(steps[0].dtype).to(steps[0].device))
    if wd != 0 and decoupled:
        torch._foreach_mul_(params, _gate(ok, 1 - lr * wd, 1.0, p0))
    if ok is None:
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    else:
        # No foreach lerp takes a 0-d tensor weight (the Scalar overload would read it on the
        # host); the list overload with one shared 0-d weight does not.
        weight = _gate(ok, 1 - beta1, -0.0, p0)
        torch._foreach_lerp_(exp_avgs, grads, [weight] * len(grads))
    torch._foreach_mul_(exp_avg_sqs, _gate(ok, beta2, 1.0, p0))
    # The addcmul value must be a Python scalar; gated, g = 0 makes the term 0.
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

    # Every parameter of a group has taken the same number of steps: one scalar serves all.
    t = steps[0]
    if p0.dtype == torch.float64:
        # The step count is float32; its powers there are off by ~1e-5 relative, which float64
        # parameters would notice (torch.optim takes them in double precision).
        t = t.double()
    if torch.compiler.is_compiling():
        # Inductor fuses these 0-d values into the per-element update loop, where pow(beta, t)
        # with a tensor exponent keeps the loop scalar (measured 2x slower than eager on CPU);
        # exp(t log beta) is the same power and vectorises.
        bias_correction1 = 1 - torch.exp(t * math.log(beta1))
        bias_correction2_sqrt = torch.sqrt(1 - torch.exp(t * math.log(beta2)))
    else:
        bias_correction1 = 1 - torch.pow(beta1, t)
        bias_correction2_sqrt = torch.sqrt(1 - torch.pow(beta2, t))
    # Gated at t = 0 the corrections are 0: keep the denominator finite and positive.
    bias_correction2_sqrt = _gate(ok, bias_correction2_sqrt, 1.0, p0)
    neg_step_size = _gate(ok, -lr / bias_correction1, 0.0, p0)
    if group["amsgrad"]:
        max_sqs = local_shards([s["max_exp_avg_sq"] for s in states])
        torch._foreach_maximum_(max_sqs, exp_avg_sqs)
        denom = torch._foreach_sqrt(max_sqs)
    else:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_div_(denom, neg_step_size)
    torch._foreach_addcdiv_(params, exp_avgs, denom)


def _adamw(optimizer: torch.optim.Optimizer, group: dict, params: list[Tensor], step: Tensor,
           ok: Tensor | None) -> None:
    _adam(optimizer, group, params, step, ok, decoupled=True)


_UPDATES: dict[str, Callable[..., None]] = {"sgd": _sgd, "adam": _adam, "adamw": _adamw}
