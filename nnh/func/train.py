"""The training step as a function of explicit state.

The state is one `TensorDict` (see `init_train_state`)::

    params      the module's parameters (the module's own tensors, not copies)
    buffers     the module's buffers (likewise)
    optim       the optimizer's per-parameter state (the optimizer's own tensors)
    ema         EMA copies of the floating params and buffers          (when enabled)
    scaler      {scale, growth_tracker} of the fp16 loss scaler         (when enabled)
    step        int64 scalar: optimizer updates applied
    acc_samples float32 scalar: samples in the open accumulation window

`train_step` updates these tensors in place, as `torch.optim`'s functional API does, and
returns the same state with a metrics TensorDict.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from tensordict import TensorDict
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from nnh.func.amp import unscale_grads, update_scale
from nnh.func.ema import init_ema
from nnh.func.optim import init_optimizer_state, optimizer_update

__all__ = ["init_train_state", "train_step", "clip_grad_norm", "batch_size_of", "LossFn"]

# loss_fn(model, batch) -> loss | (loss, aux): `model` is a callable with the module's
# signature, `aux` (e.g. the model's output) is returned in the metrics as "output".
LossFn = Callable[[Callable[..., Any], Any], "Tensor | tuple[Tensor, Any]"]


def init_train_state(
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    ema: bool = False,
    grad_scaler: bool = False,
    init_scale: float = 2.0**16,
) -> TensorDict:
    """Build the train state of `module` and `optimizer` (see the module docstring).

    `optimizer` must have been built over `module`'s parameters; SGD, Adam and AdamW get
    their state tensors created here (see `nnh.func.optim.init_optimizer_state`).
    `ema=True` adds EMA weights equal to the current ones; `grad_scaler=True` adds the fp16
    loss-scaler state, starting at `init_scale`.
    """
    device = next(iter(module.parameters()), torch.empty(0)).device
    state = TensorDict(
        {
            "params": TensorDict(dict(module.named_parameters()), batch_size=[]),
            "buffers": TensorDict(dict(module.named_buffers()), batch_size=[]),
            "step": torch.zeros((), dtype=torch.int64, device=device),
            "acc_samples": torch.zeros((), dtype=torch.float32, device=device),
        },
        batch_size=[],
    )
    if optimizer is not None:
        owned = {id(p) for p in module.parameters()}
        foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in owned]
        if foreign:
            raise ValueError(
                f"init_train_state: the optimizer holds {len(foreign)} tensor(s) that are not "
                "parameters of `module`; build the optimizer from module.parameters()."
            )
        init_optimizer_state(optimizer)
        state["optim"] = optimizer_state_view(module, optimizer)
    if ema:
        state["ema"] = init_ema(module)
    if grad_scaler:
        state["scaler"] = TensorDict(
            {
                "scale": torch.full((), init_scale, dtype=torch.float32, device=device),
                "growth_tracker": torch.zeros((), dtype=torch.int32, device=device),
            },
            batch_size=[],
        )
    return state


def optimizer_state_view(module: nn.Module, optimizer: torch.optim.Optimizer) -> TensorDict:
    """The optimizer's per-parameter state tensors, keyed by parameter name (no copies)."""
    view = {}
    for name, p in module.named_parameters():
        entries = {k: v for k, v in optimizer.state.get(p, {}).items() if isinstance(v, Tensor)}
        if entries:
            view[name] = TensorDict(entries, batch_size=[])
    return TensorDict(view, batch_size=[])


def batch_size_of(batch: Any) -> int:
    """The leading dimension of the first tensor found in `batch` (tensor, sequence or dict)."""
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() > 0 else 1
    items = batch.values() if isinstance(batch, dict) else batch
    if isinstance(items, (list, tuple)) or isinstance(batch, dict):
        for item in items:
            if isinstance(item, (Tensor, list, tuple, dict)):
                try:
                    return batch_size_of(item)
                except ValueError:
                    continue
    raise ValueError(
        f"batch_size_of: found no tensor in a batch of type {type(batch).__name__}; batches "
        "must be a tensor, a tuple/list (inputs, targets, ...) or a dict holding tensors."
    )


def clip_grad_norm(grads: list[Tensor], max_norm: float) -> Tensor:
    """Scale `grads` in place so their global L2 norm is at most `max_norm`; return the norm
    before clipping. coef = min(1, max_norm / (norm + 1e-6)); no host sync."""
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef.to(grads[0].dtype))
    return norm


def _split(out: Any) -> tuple[Tensor, Any]:
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def train_step(
    state: TensorDict,
    batch: Any,
    *,
    module: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    forward: Callable[..., Any] | None = None,
    micro_batch: int = 0,
    update: bool = True,
    amp_dtype: torch.dtype | None = None,
    max_grad_norm: float | None = None,
    ema_decay: float | None = None,
    skip_nonfinite: bool = False,
) -> tuple[TensorDict, TensorDict]:
    """One micro-batch of training: forward, loss, backward and, when `update`, the update.

    Order (the canonical loop)::

        with autocast(amp_dtype): loss, aux = loss_fn(model, batch)
        backward(loss * weight * scale)        # weight = n_i when accumulating, else 1
        if update:
            grads /= samples in window          # when accumulating
            unscale grads, find inf             # fp16 scaler
            clip grads to max_grad_norm         # global L2 norm
            optimizer update; step += 1         # skipped when the scaler found inf
            ema <- ema_decay * ema + (1 - ema_decay) * params
            zero grads (set to None)

    Gradient accumulation: call with `micro_batch = 0, 1, ..., k-1` and `update=True` on the
    last one. Each micro-batch's gradient is weighted by its sample count and the sum is
    divided by the window's total, so k micro-batches equal one step on their concatenation
    for a mean-reduced loss, and a short last window is averaged over what it holds.

    Args:
        state: the train state (updated in place and returned).
        batch: passed to `loss_fn` unchanged; its sample count comes from `batch_size_of`.
        module: the model whose parameters are `state["params"]`.
        loss_fn: `loss_fn(model, batch) -> loss | (loss, aux)`.
        optimizer: a `torch.optim` optimizer over `module`'s parameters. SGD, Adam and AdamW
            are applied by `nnh.func.optim`'s foreach updates; others by their `step()`.
        forward: the callable the eager forward runs (default `module`), e.g. a
            `torch.compile`d module sharing `module`'s parameters.
        micro_batch: index of this micro-batch in its accumulation window.
        update: whether this micro-batch closes the window.
        amp_dtype: `torch.bfloat16` or `torch.float16` to run the forward under autocast;
            float16 needs the `scaler` entry (`init_train_state(grad_scaler=True)`).
        max_grad_norm: clip the global gradient norm to this value.
        ema_decay: update `state["ema"]` with this decay after the optimizer update.
        skip_nonfinite: read the loss on the host (a sync point on accelerators) and, if it
            is not finite, drop this micro-batch's window without updating. Not usable under
            `torch.compile`.

    Under `torch.compile` the gradients come from `torch.func.grad_and_value` over a
    functional call of the module (which traces into one graph); in eager mode from
    `Tensor.backward` (cheaper per call). Both compute the same gradients.

    Returns:
        (state, metrics) with metrics `loss` (detached), `stepped` (bool: an update was
        applied), `grad_norm` when clipping, `output` when `loss_fn` returned an aux tensor.
    """
    compiling = torch.compiler.is_compiling()
    if skip_nonfinite and compiling:
        raise ValueError("train_step: skip_nonfinite=True reads the loss on the host and cannot "
                         "be compiled; pass skip_nonfinite=False under torch.compile.")
    scaler = state.get("scaler", None)
    if amp_dtype == torch.float16 and scaler is None:
        raise ValueError("train_step: amp_dtype=torch.float16 needs a loss scaler; build the "
                         "state with init_train_state(..., grad_scaler=True).")
    accumulating = not (micro_batch == 0 and update)
    n = batch_size_of(batch)
    device_type = state["step"].device.type

    def scaled_loss(model: Callable[..., Any]) -> tuple[Tensor, tuple[Tensor, Any]]:
        with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss, aux = _split(loss_fn(model, batch))
        loss = loss.float()
        scaled = loss * n if accumulating else loss
        if scaler is not None:
            scaled = scaled * scaler["scale"]
        return scaled, (loss.detach(), aux)

    params = state["params"]
    if compiling:
        buffers = dict(state["buffers"].items())

        def objective(p: dict[str, Tensor]) -> tuple[Tensor, tuple[Tensor, Any]]:
            return scaled_loss(lambda *a, **k: functional_call(module, (p, buffers), a, k))

        grads, (_, (loss, aux)) = grad_and_value(objective, has_aux=True)(
            {k: v.detach() for k, v in params.items()}
        )
        for name, p in params.items():
            g = grads[name]
            p.grad = g if p.grad is None else p.grad + g
    else:
        scaled, (loss, aux) = scaled_loss(forward if forward is not None else module)
        scaled.backward()

    metrics = {"loss": loss}
    if isinstance(aux, Tensor):
        metrics["output"] = aux.detach()

    if accumulating:
        acc = state["acc_samples"]
        if micro_batch == 0:
            acc.fill_(n)
        else:
            acc.add_(n)

    if skip_nonfinite and not bool(torch.isfinite(loss)):  # host read: see the docstring
        _zero_grads(params)
        metrics["stepped"] = torch.zeros((), dtype=torch.bool)
        metrics["nonfinite"] = torch.ones((), dtype=torch.bool)
        return state, TensorDict(metrics, batch_size=[])

    if update:
        stepped = _apply_update(state, optimizer, accumulating, max_grad_norm, ema_decay, metrics)
        metrics["stepped"] = stepped
    else:
        metrics["stepped"] = torch.zeros((), dtype=torch.bool)
    return state, TensorDict(metrics, batch_size=[])


def _zero_grads(params: TensorDict) -> None:
    for p in params.values():
        p.grad = None


@torch.no_grad()
def _apply_update(
    state: TensorDict,
    optimizer: torch.optim.Optimizer,
    accumulating: bool,
    max_grad_norm: float | None,
    ema_decay: float | None,
    metrics: dict[str, Tensor],
) -> Tensor:
    params = state["params"]
    grads = [p.grad for p in params.values() if p.grad is not None]
    if accumulating and grads:
        torch._foreach_div_(grads, state["acc_samples"])
    scaler = state.get("scaler", None)
    found_inf = None
    if scaler is not None:
        found_inf = unscale_grads(grads, scaler["scale"])
    if max_grad_norm is not None:
        metrics["grad_norm"] = clip_grad_norm(grads, max_grad_norm)
    step = state["step"]
    # The scaler's skip is a host read, as in every fp16 loop: the optimizer's Python code
    # must know whether to run. bf16 and fp32 training never reach it.
    if found_inf is None or not bool(found_inf):
        optimizer_update(optimizer, step)
        step.add_(1)
        stepped = torch.ones((), dtype=torch.bool)
        if ema_decay is not None and "ema" in state.keys():
            _ema_from_state(state, ema_decay)
    else:
        stepped = torch.zeros((), dtype=torch.bool)
    if scaler is not None:
        update_scale(scaler, found_inf)
    _zero_grads(params)
    return stepped


def _ema_from_state(state: TensorDict, decay: float) -> None:
    ema = state["ema"]
    params, buffers = state["params"], state["buffers"]
    targets, sources = [], []
    for name, e in ema.items():
        targets.append(e)
        sources.append(params[name] if name in params.keys() else buffers[name])
    torch._foreach_lerp_(targets, sources, 1.0 - decay)
