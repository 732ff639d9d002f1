"""Evaluation over explicit parts: validation sums, the validation logs, `predict`, and the
helpers the training loop shares with them (callback dispatch, metric values).

Under torch.distributed each rank evaluates its share; the sums of all ranks are added in one
all-reduce (`reduce_sums`) and `predict` gathers the outputs on rank 0 (`nnh.stateful.sharding`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from nnh.func.train import batch_size_of
from nnh.stateful._batches import EpochSums, to_device, unpack_batch
from nnh.stateful.parts import Parts
from nnh.stateful.runtime import Runtime
from nnh.stateful.sharding import gather_predictions, predict_loader

__all__ = ["validation_sums", "validate", "val_logs", "reduce_sums", "predict", "dispatch", "metric_values",
           "output_of"]


def reduce_sums(runtime: Runtime, *all_sums: EpochSums | None) -> None:
    """Replace each rank's sums by the sums over all ranks, in one all-reduce."""
    present = [s for s in all_sums if s is not None]
    if not runtime.distributed or not present:
        return
    layout = [len(s.totals()) for s in present]
    summed = runtime.sum([x for s in present for x in s.totals()])
    for s, width in zip(present, layout):
        s.set_totals(summed[:width])
        summed = summed[width:]


def val_logs(run: Any, val_sums: EpochSums | None) -> dict[str, float]:
    """The validation logs, after `on_val_end` has seen them (NaN when not validated)."""
    if val_sums is None:
        return {"val_loss": math.nan, **{f"val_{name}": math.nan for name in run.metrics}}
    logs = {"val_loss": val_sums.loss(), **{f"val_{name}": val_sums.metric(name) for name in run.metrics}}
    dispatch(run.callbacks, "on_val_end", logs)
    return logs


@torch.no_grad()
def validation_sums(parts: Parts, run: Any, amp_dtype: torch.dtype | None, apply_ema: bool,
                     bar: Any = None) -> EpochSums:
    """This rank's sample-weighted validation sums (flushed), from `on_val_begin` to the last
    `on_val_batch_end`."""
    model = parts.model
    dispatch(run.callbacks, "on_val_begin", {})
    sums = EpochSums(run.metrics)
    device = run.runtime.device
    with model.evaluating(parts.optimization.ema() if apply_ema else None):
        for i, batch in enumerate(run.val_loader):
            batch = to_device(batch, device)
            n = batch_size_of(batch)
            dispatch(run.callbacks, "on_val_batch_begin", i, {"size": n})
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss, output = run.objective.loss(model.eval_forward, batch)
            loss = loss.detach().float()
            values = []
            if run.metrics:
                target = run.objective.metric_target(batch)
                values = metric_values(run.metrics, output, target)
            sums.add(i, loss, n, None, values)
            dispatch(run.callbacks, "on_val_batch_end", i, {"val_loss": loss, "size": n})
            if bar is not None:
                bar.update(1)
    sums.flush()
    return sums


def validate(parts: Parts, run: Any, amp_dtype: torch.dtype | None, apply_ema: bool, bar: Any = None) -> dict[str, float]:
    """Sample-weighted validation loss and metrics (over all ranks under torch.distributed),
    with the EMA weights when `apply_ema` and an EMA exists."""
    sums = validation_sums(parts, run, amp_dtype, apply_ema, bar)
    reduce_sums(run.runtime, sums)
    return val_logs(run, sums)


@torch.no_grad()
def predict(parts: Parts, data_loader: Any, runtime: Runtime, apply_ema: bool = True) -> list[Any] | None:
    """Per-batch model outputs (detached) over `data_loader`, with the EMA weights when
    `apply_ema` and an EMA exists. Under torch.distributed each rank predicts its share and
    rank 0 returns them all in dataset order (`nnh.stateful.sharding`); other ranks get None."""
    model = parts.model
    loader, indices = predict_loader(data_loader, runtime)
    outputs = []
    with model.evaluating(parts.optimization.ema() if apply_ema else None):
        for batch in loader:
            inputs, _, args, kwargs = unpack_batch(to_device(batch, runtime.device))
            out = model.eval_forward(inputs, *args, **kwargs)
            outputs.append(out.detach() if isinstance(out, Tensor) else out)
    return gather_predictions(outputs, indices, runtime, getattr(data_loader, "batch_size", None), runtime.device)


def metric_values(metrics: dict[str, Callable], output: Any, target: Any) -> list[Any]:
    """Each metric's value for one batch; an error names the metric it came from."""
    values = []
    for name, fn in metrics.items():
        try:
            value = fn(output, target)
        except Exception as exc:
            raise _named(exc, f"metric {name!r} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(value, Tensor) and value.numel() != 1:
            raise ValueError(f"metric {name!r} returned a tensor of shape {tuple(value.shape)}; a metric "
                             "returns one number per batch (e.g. end with .mean()).")
        if not isinstance(value, (Tensor, int, float)) or isinstance(value, bool):
            raise TypeError(f"metric {name!r} returned {type(value).__name__}; a metric returns a number or "
                            "a one-element tensor.")
        values.append(value)
    return values


def _named(exc: Exception, message: str) -> Exception:
    """`exc`'s type with `message` (a RuntimeError when that type takes other arguments)."""
    try:
        return type(exc)(message)
    except Exception:
        return RuntimeError(message)


def output_of(metrics: Any) -> Any:
    """The model output `train_step` returned: a tensor, or a tuple/dict kept as non-tensor data."""
    if "output" not in metrics.keys():
        return None
    value = metrics.get("output")
    return value if isinstance(value, Tensor) else metrics.get_non_tensor("output")


def dispatch(callbacks: list[Any], hook: str, *args: Any) -> None:
    """Call `hook(*args)` on every callback that has it, in order."""
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)
