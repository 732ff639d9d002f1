"""The training step as a function of explicit state.

The state is one `TensorDict` (its layout: `nnh.func.train_state`, built by
`init_train_state`). `train_step` updates its tensors in place, as `torch.optim`'s functional
API does, and returns the same state with a metrics TensorDict.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from tensordict import TensorDict
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from nnh.func.amp import unscale_grads, update_scale
from nnh.func.ema import ema_update
from nnh.func.optim import has_functional_update, optimizer_update
from nnh.func.shards import is_sharded, local_shards, sum_over_shards
from nnh.func.train_state import init_train_state, optimizer_state_view  # noqa: F401 - re-exported

__all__ = ["init_train_state", "train_step", "clip_grad_norm", "batch_size_of", "LossFn"]

# Where a tensor leaf of a loss's aux sat (see the torch.func path of `train_step`).
_TENSOR = object()

# loss_fn(model, batch) -> loss | (loss, aux): `model` is a callable with the module's
# signature, `aux` (e.g. the model's output) is returned in the metrics as "output".
LossFn = Callable[[Callable[..., Any], Any], "Tensor | tuple[Tensor, Any]"]


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
    before clipping. coef = min(1, max_norm / (norm + 1e-6)); no host sync.

    Sharded gradients (DTensors, FSDP) are clipped to the norm of the whole gradient, over
    every process's shards (one all-reduce); each process scales its own shards."""
    if not grads:
        return torch.zeros(())
    sharded = next((g for g in grads if is_sharded(g)), None)
    local = local_shards(grads)
    if sharded is None:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(local)))
    else:
        norm = sum_over_shards(_squared_norm(local), sharded).sqrt().reshape(())
    _scale_to_norm(local, norm, max_norm)
    return norm


def _squared_norm(tensors: list[Tensor]) -> Tensor:
    """float32 (1,): the squared L2 norm of all `tensors` together."""
    return torch.stack(torch._foreach_norm(tensors)).float().square().sum().reshape(1)


def _scale_to_norm(grads: list[Tensor], norm: Tensor, max_norm: float) -> None:
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    # In the norm's dtype, as torch.nn.utils.clip_grad_norm_ applies it: each kernel casts it
    # to its gradients' dtype, so a narrower first gradient does not round it for the rest.
    torch._foreach_mul_(grads, coef)


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
    share_nonfinite: bool = False,
) -> tuple[TensorDict, TensorDict]:
    """One micro-batch of training: forward, loss, backward and, when `update`, the update.

    Order (the canonical loop)::

        with autocast(amp_dtype): loss, aux = loss_fn(model, batch)
        backward(loss * weight * scale)        # weight = n_i when accumulating, else 1
        acc_nonfinite = (or-ed with) not isfinite(loss)  # skip_nonfinite; set on micro_batch 0
        if update:
            grads /= samples in window          # when accumulating
            found = unscale grads, find inf     # fp16 scaler
            found |= any non-finite grad or acc_nonfinite    # skip_nonfinite
            clip grads to max_grad_norm         # global L2 norm
            optimizer update; step += 1         # all skipped when found
            ema <- ema_decay * ema + (1 - ema_decay) * params   # skipped when found
            update the scale from the scaler's found inf       # fp16 scaler
            zero grads (set to None)            # also after a skipped update

    The skip rule: an accumulation window with any non-finite micro-batch loss or any
    non-finite gradient is skipped as a whole, as the fp16 scaler skips an overflow: no
    parameter, optimizer state, `step` or EMA changes, and its gradients are dropped. For
    SGD, Adam and AdamW the skip is decided on the device (every update op is gated, no host
    read, so it compiles); for other optimizers `found` is read on the host once per update
    (a sync point) to decide whether to call `step()`.

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
        skip_nonfinite: skip windows with a non-finite loss or gradient (the rule above).
            Under `torch.compile` only with SGD, Adam or AdamW.
        share_nonfinite: with `skip_nonfinite`, a micro-batch whose loss is not finite
            back-propagates NaN (its loss is multiplied by NaN, by 1.0 otherwise), so that its
            gradients carry the flag: averaged over processes by DDP or reduce-scattered by
            FSDP, they make every process skip the same window. For torch.distributed.

    Under `torch.compile` the gradients come from `torch.func.grad_and_value` over a
    functional call of the module (which traces into one graph); in eager mode from
    `Tensor.backward` (cheaper per call). Both compute the same gradients.

    Returns:
        (state, metrics), all metrics 0-d device tensors (no host read made for them):
        `loss` (detached float32, may be NaN), `stepped` (bool: an update was applied),
        `nonfinite` (bool: this micro-batch's loss was not finite; with `skip_nonfinite`),
        `grad_norm` when clipping (taken before the skip), `output` when `loss_fn`
        returned an aux (a tensor; a tuple/dict is kept as non-tensor data: read it with
        `metrics.get_non_tensor("output")`).
    """
    compiling = torch.compiler.is_compiling()
    if skip_nonfinite and compiling and not has_functional_update(optimizer):
        raise ValueError(f"train_step: skip_nonfinite=True with {type(optimizer).__name__} reads "
                         "found_inf on the host to decide whether to call step(), which cannot be "
                         "compiled; use SGD, Adam or AdamW, or pass skip_nonfinite=False.")
    if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
        # Checked here: the update may pass it on gated, as a tensor ema_update cannot check.
        raise ValueError(f"train_step: ema_decay={ema_decay!r} must lie in [0, 1], e.g. 0.999.")
    scaler = state.get("scaler", None)
    if amp_dtype == torch.float16 and scaler is None:
        raise ValueError("train_step: amp_dtype=torch.float16 needs a loss scaler; build the "
                         "state with init_train_state(..., grad_scaler=True).")
    accumulating = not (micro_batch == 0 and update)
    n = batch_size_of(batch)
    device = state["step"].device

    def scaled_loss(model: Callable[..., Any]) -> tuple[Tensor, tuple[Tensor, Any]]:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss, aux = _split(loss_fn(model, batch))
        loss = loss.float()
        scaled = loss * n if accumulating else loss
        if scaler is not None:
            scaled = scaled * scaler["scale"]
        if skip_nonfinite and share_nonfinite:
            # x * 1.0 is x: only a non-finite loss changes the gradients (to NaN).
            scaled = scaled * torch.where(torch.isfinite(loss), 1.0, float("nan"))
        return scaled, (loss.detach(), aux)

    params = state["params"]
    if compiling:
        plain: list[Any] = []  # the aux's non-tensor leaves, which torch.func's aux cannot carry

        def objective(p: dict[str, Tensor], b: dict[str, Tensor]) -> tuple[Tensor, tuple[Tensor, list[Tensor]]]:
            scaled, (loss, aux) = scaled_loss(lambda *a, **k: functional_call(module, (p, b), a, k))
            leaves, spec = tree_flatten(aux)
            plain[:] = [spec, [_TENSOR if isinstance(v, Tensor) else v for v in leaves]]
            return scaled, (loss, [v for v in leaves if isinstance(v, Tensor)])

        # The buffers are an input, not captured: a forward that updates them in place
        # (BatchNorm's running statistics) is allowed to only then.
        grads, (_, (loss, tensors)) = grad_and_value(objective, has_aux=True)(
            {k: v.detach() for k, v in params.items()}, dict(state["buffers"].items())
        )
        for name, p in params.items():
            g = grads[name]
            p.grad = g if p.grad is None else p.grad + g
        spec, leaves = plain
        it = iter(tensors)
        aux = tree_unflatten([next(it) if v is _TENSOR else v for v in leaves], spec)
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

    if skip_nonfinite:
        nonfinite = ~torch.isfinite(loss)
        metrics["nonfinite"] = nonfinite
        acc_nonfinite = state.get("acc_nonfinite", None)
        if acc_nonfinite is None:  # a state built before the key existed
            acc_nonfinite = torch.zeros((), dtype=torch.bool, device=device)
            state["acc_nonfinite"] = acc_nonfinite
        if micro_batch == 0:
            acc_nonfinite.copy_(nonfinite)
        else:
            acc_nonfinite.logical_or_(nonfinite)

    if update:
        metrics["stepped"] = _apply_update(state, optimizer, accumulating, max_grad_norm, ema_decay,
                                           skip_nonfinite, metrics)
    else:
        metrics["stepped"] = torch.zeros((), dtype=torch.bool, device=device)
    out = TensorDict(metrics, batch_size=[])
    if aux is not None and not isinstance(aux, Tensor):
        # A tuple or dict output (e.g. logits and features) is kept as it is, detached.
        out.set_non_tensor("output", tree_map(
            lambda t: t.detach() if isinstance(t, Tensor) else t, aux))
    return state, out


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
    skip_nonfinite: bool,
    metrics: dict[str, Tensor],
) -> Tensor:
    params = state["params"]
    all_grads = [p.grad for p in params.values() if p.grad is not None]
    # FSDP: each process works on its shards; the flags and the norm are summed over them.
    sharded = next((g for g in all_grads if is_sharded(g)), None)
    grads = local_shards(all_grads)
    if accumulating and grads:
        torch._foreach_div_(grads, state["acc_samples"])
    scaler, step = state.get("scaler", None), state["step"]
    scaler_inf = found_inf = None  # float32 (1,): 1 skips the update (scaler_inf: grads only)
    if scaler is not None:
        scaler_inf = found_inf = unscale_grads(grads, scaler["scale"])
    host = step.device.type == "cpu" and sharded is None and not torch.compiler.is_compiling()
    if skip_nonfinite and host and scaler is None and max_grad_norm is None:
        # On the CPU nothing runs ahead of the host: read the window's flag first, and check
        # the gradients only when it is clear (two small ops fewer per update).
        if bool(state["acc_nonfinite"]) or bool(_nonfinite_grads(grads, step.device)):
            _zero_grads(params)
            return torch.zeros((), dtype=torch.bool)
        skip_nonfinite = False
    if skip_nonfinite:
        if found_inf is None:
            found_inf = _nonfinite_grads(grads, step.device)
        found_inf = torch.maximum(found_inf, state["acc_nonfinite"].to(found_inf.dtype))
    if sharded is not None:
        scaler_inf, found_inf, squared = _over_shards(sharded, scaler_inf, found_inf,
                                                      _squared_norm(grads) if max_grad_norm is not None else None)
        if max_grad_norm is not None:
            metrics["grad_norm"] = squared.sqrt().reshape(())
            _scale_to_norm(grads, metrics["grad_norm"], max_grad_norm)
    elif max_grad_norm is not None:
        metrics["grad_norm"] = clip_grad_norm(grads, max_grad_norm)
    if found_inf is not None and host:
        # On the CPU nothing runs ahead of the host, so reading the flag costs nothing, and
        # the plain update is cheaper than the gated one (benchmarks/train_overhead.py). The
        # two give bitwise the same result (tests/func/test_optim.py).
        if bool(found_inf):
            if scaler is not None:
                update_scale(scaler, scaler_inf)
            _zero_grads(params)
            return torch.zeros((), dtype=torch.bool)
        found_inf = None
    if found_inf is None:
        optimizer_update(optimizer, step)
        step.add_(1)
        stepped = torch.ones((), dtype=torch.bool, device=step.device)
        decay: float | Tensor | None = ema_decay
    else:
        # Gated on the device for SGD/Adam/AdamW; other optimizers read found_inf once here.
        optimizer_update(optimizer, step, found_inf)
        stepped = found_inf.reshape(()) == 0
        step.add_(stepped.to(step.dtype))
        decay = None
        if ema_decay is not None:
            # decay 1 after a skip: the EMA does not move. float64 keeps 1 - decay as exact
            # as the float path's (MPS has no float64).
            dtype = torch.float32 if step.device.type == "mps" else torch.float64
            decay = torch.where(stepped, torch.full((), ema_decay, dtype=dtype, device=step.device), 1.0)
    if decay is not None and "ema" in state.keys():
        ema, buffers = state["ema"], state["buffers"]
        sources = {k: params[k] if k in params.keys() else buffers[k] for k in ema.keys()}
        ema_update(ema, sources, decay)
    if scaler is not None:
        update_scale(scaler, scaler_inf)
    _zero_grads(params)
    return stepped


def _over_shards(like: Tensor, *values: Tensor | None) -> list[Tensor | None]:
    """The skip flags (1 where any process's shards found one) and the squared norm, summed
    over the processes holding the shards of `like`, in one all-reduce."""
    present = [v.reshape(1).float() for v in values if v is not None]
    total = iter(sum_over_shards(torch.cat(present), like).unbind())
    out = [None if v is None else next(total).reshape(1) for v in values]
    flags = len(values) - 1  # the last value is the norm; the others are flags
    return [None if v is None else (v if j == flags else (v > 0).float()) for j, v in enumerate(out)]


def _nonfinite_grads(grads: list[Tensor], device: torch.device) -> Tensor:
    """float32 (1,): 1 when any of `grads` holds an inf or NaN (the scaler's kernel, scale 1)."""
    found = torch.zeros(1, dtype=torch.float32, device=device)
    if grads:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones(1, dtype=torch.float32, device=device))
    return found
