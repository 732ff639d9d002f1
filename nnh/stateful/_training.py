"""The training, validation and prediction loops of `NNHandler`, over `nnh.func.train_step`."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from nnh.func.train import batch_size_of, train_step
from nnh.stateful._batches import Mean, len_or_none, to_device, unpack_batch
from nnh.stateful._train_args import amp_dtype_of, check_train_args
from nnh.stateful.enums import ModelType

if TYPE_CHECKING:
    from nnh.stateful.handler import NNHandler

_POSTFIX_EVERY_S = 0.5  # progress-bar refresh period: the only per-step host read of the loss


def train(handler: "NNHandler", epochs: int, validate_every: int = 1, gradient_accumulation_steps: int = 1,
          use_amp: bool | str | torch.dtype = False, gradient_clipping_norm: float | None = None,
          ema_decay: float = 0.0, seed: int | None = None, progress_bar: bool = True,
          debug_print_interval: int | None = None, save_on_last_epoch: bool = True,
          epoch_train_and_val_pbar: bool = False, max_nonfinite_steps: int = 10) -> None:
    """Train for `epochs` more epochs (a second call continues the epoch count).

    Args:
        epochs: epochs to run; 0 does nothing.
        validate_every: validate every this many epochs (0: never). Skipped epochs get NaN in
            the validation history, so every history has one entry per epoch.
        gradient_accumulation_steps: micro-batches per optimizer update; a short last
            window still updates. Gradients are sample-weighted (see `nnh.func.train_step`).
        use_amp: False, True (bf16 on CPU, fp16 with a loss scaler on CUDA), or "bf16"/"fp16"
            or a torch dtype.
        gradient_clipping_norm: clip the global gradient norm to this value.
        ema_decay: > 0 keeps an EMA of the weights (persisting across `train` calls), used for
            validation and `predict`; the raw weights are never overwritten.
        seed: seeds torch, CUDA, `random` and NumPy before training.
        progress_bar: a tqdm bar per epoch with the running loss.
        debug_print_interval: log the running loss every this many batches.
        save_on_last_epoch: auto-save at the last epoch of this call (see `auto_save`).
        epoch_train_and_val_pbar: one bar per epoch covering training and validation.
        max_nonfinite_steps: a non-finite loss skips its step (gradients zeroed, a warning
            naming the batch); this many in a row raise a RuntimeError.

    Hook order::

        on_train_begin({"epochs", "start_epoch"})
        for epoch in range(start_epoch, start_epoch + epochs):
            on_epoch_begin(epoch, {})
            for i, batch in enumerate(train_loader):
                on_train_batch_begin(i, {"size"})
                train_step(...)
                on_train_batch_end(i, {"loss", "size"})
                if handler.stop_training: break
            if validating this epoch:
                on_val_begin({})
                for i, batch in enumerate(val_loader):
                    on_val_batch_begin(i, {"size"}); forward; on_val_batch_end(i, {"val_loss", "size"})
                on_val_end({"val_loss", "val_<metric>"...})
            scheduler step (per epoch)
            on_epoch_end(epoch, logs)   # logs: epoch, loss, val_loss, <metric>, val_<metric>, lr
            auto-save / preemption save
            if handler.stop_training: break
        on_train_end(logs)

    A callback stops training by setting `handler.stop_training = True`; it is checked after
    every training batch and at the end of every epoch.
    """
    check_train_args(handler, epochs, validate_every, gradient_accumulation_steps,
                      gradient_clipping_norm, ema_decay, max_nonfinite_steps)
    if epochs == 0:
        return
    if seed is not None:
        handler.seed = seed
    amp_dtype = amp_dtype_of(use_amp, handler.device)
    state = handler._require_state()
    if amp_dtype == torch.float16 and "scaler" not in state.keys():
        from nnh.func.train import init_train_state

        state["scaler"] = init_train_state(handler.module, grad_scaler=True)["scaler"]
    if ema_decay > 0:
        handler.ensure_ema()

    handler.stop_training = False
    start = handler.epoch
    logs: dict[str, Any] = {"epochs": epochs, "start_epoch": start}
    _dispatch(handler, "on_train_begin", logs)
    with handler._preemption_guard():
        for epoch in range(start, start + epochs):
            last = epoch == start + epochs - 1
            epoch_logs = _run_epoch(handler, epoch, start + epochs, validate_every, gradient_accumulation_steps,
                                    amp_dtype, gradient_clipping_norm, ema_decay, progress_bar,
                                    debug_print_interval, epoch_train_and_val_pbar, max_nonfinite_steps)
            if epoch_logs is None:  # preempted in the middle of the epoch
                target = handler._preemption_target()
                handler.save(target)
                handler._mid_epoch = None
                handler._info(f"Preemption signal received: saved {target} mid-epoch and stopped.")
                break
            logs = epoch_logs
            handler._epoch = epoch + 1
            stopping = handler.stop_training or handler._preempted
            handler._after_epoch(epoch, logs, last=last or stopping, save_on_last_epoch=save_on_last_epoch)
            if stopping:
                break
    _dispatch(handler, "on_train_end", logs)


def _epoch_batches(handler: "NNHandler", epoch: int, loader: Any, loss_mean: "Mean",
                   metric_means: dict[str, "Mean"]) -> tuple[Iterator[Any], int]:
    """The epoch's batch iterator and the index of its first batch.

    The RNG state at the epoch's start is kept (a shuffling loader draws its order from it
    when iterated). A handler loaded from a mid-epoch preemption checkpoint replays that
    state to rebuild the same order, skips the batches already trained, and then goes on
    with the RNG state of the moment it stopped, so the run continues exactly.
    """
    from nnh.stateful._persistence import _rng_state, _set_rng_state

    resume, handler._resume = handler._resume, None
    if resume is not None and resume["epoch"] == epoch:
        now = _rng_state()
        _set_rng_state(resume["epoch_rng"])
        handler._epoch_rng = resume["epoch_rng"]
        it = iter(loader)
        for _ in range(resume["batches_done"]):
            next(it)
        _set_rng_state(now)
        loss_mean.load(resume["loss"])
        for name, mean in metric_means.items():
            if name in resume["metrics"]:
                mean.load(resume["metrics"][name])
        return it, resume["batches_done"]
    handler._epoch_rng = _rng_state()
    return iter(loader), 0


def _run_epoch(handler: "NNHandler", epoch: int, final_epoch: int, validate_every: int, k: int,
               amp_dtype: torch.dtype | None, clip: float | None, ema_decay: float, progress_bar: bool,
               debug_every: int | None, joint_bar: bool, max_nonfinite: int) -> dict[str, Any] | None:
    loader = handler.train_loader
    validating = validate_every > 0 and (epoch + 1) % validate_every == 0
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)
    n_train = len_or_none(loader)
    n_val = len_or_none(handler.val_loader) if validating else 0
    total = (n_train + n_val) if (joint_bar and n_train is not None and n_val is not None) else n_train
    bar = tqdm(total=total, desc=f"Epoch {epoch + 1}/{final_epoch}", disable=not progress_bar,
               leave=False, dynamic_ncols=True)
    _dispatch(handler, "on_epoch_begin", epoch, {})

    handler.module.train()
    handler._apply_keep_eval()
    compute_loss = _loss_closure(handler, epoch)
    forward = handler.model
    module, optimizer, state = handler.module, handler.optimizer, handler.train_state
    per_batch_scheduler = handler._scheduler is not None and handler._scheduler_spec[2] == "batch"
    loss_mean, metric_means = Mean(), {name: Mean() for name in handler.metrics}
    nonfinite_run, last_refresh = 0, time.monotonic()
    ema = ema_decay if ema_decay > 0 else None
    batches, first = _epoch_batches(handler, epoch, loader, loss_mean, metric_means)
    for i, batch in enumerate(batches, start=first):
        batch = to_device(batch, handler.device)
        n = batch_size_of(batch)
        _dispatch(handler, "on_train_batch_begin", i, {"size": n})
        micro = i % k
        update = micro == k - 1 or (n_train is not None and i == n_train - 1)
        _, m = train_step(state, batch, module=module, loss_fn=compute_loss, optimizer=optimizer,
                          forward=forward, micro_batch=micro, update=update, amp_dtype=amp_dtype,
                          max_grad_norm=clip, ema_decay=ema, skip_nonfinite=True)
        if "nonfinite" in m.keys():
            nonfinite_run += 1
            warnings.warn(f"NNHandler.train: non-finite loss at epoch {epoch}, batch {i}; the step "
                          "was skipped and its gradients zeroed.", RuntimeWarning, stacklevel=3)
            if nonfinite_run >= max_nonfinite:
                bar.close()
                raise RuntimeError(
                    f"NNHandler.train: {nonfinite_run} non-finite losses in a row (last at epoch "
                    f"{epoch}, batch {i}); lower the learning rate, clip gradients, or check the data."
                )
        else:
            nonfinite_run = 0
            loss = m["loss"]
            loss_mean.add(loss, n)
            if handler.metrics:
                _add_metrics(handler, metric_means, m.get("output"), batch, n)
            if per_batch_scheduler and update:
                handler._scheduler.step()
            _dispatch(handler, "on_train_batch_end", i, {"loss": loss, "size": n})
        bar.update(1)
        if progress_bar and time.monotonic() - last_refresh >= _POSTFIX_EVERY_S:
            bar.set_postfix(loss=f"{loss_mean.result():.4g}")  # host read, once per refresh
            last_refresh = time.monotonic()
        if debug_every and (i + 1) % debug_every == 0:
            handler._info(f"epoch {epoch + 1} batch {i + 1}: running loss {loss_mean.result():.6g}")
        if handler._preempted and update and (n_train is None or i < n_train - 1):
            # Stop at a closed accumulation window and keep what resuming needs.
            bar.close()
            handler._mid_epoch = {
                "epoch": epoch, "batches_done": i + 1, "epoch_rng": handler._epoch_rng,
                "loss": loss_mean.state(), "metrics": {k: v.state() for k, v in metric_means.items()},
            }
            return None
        if handler.stop_training:
            break

    logs: dict[str, Any] = {"epoch": epoch, "loss": loss_mean.result()}
    if progress_bar:
        bar.set_postfix(loss=f"{logs['loss']:.4g}")
    for name, mean in metric_means.items():
        logs[name] = mean.result()
    val_logs: dict[str, float] = {"val_loss": math.nan, **{f"val_{name}": math.nan for name in handler.metrics}}
    if validating:  # a preemption in the last batch still completes its epoch
        val_bar = bar if joint_bar else tqdm(total=n_val, desc=f"Validation {epoch + 1}", disable=not progress_bar,
                                             leave=False, dynamic_ncols=True)
        val_logs = validate(handler, compute_loss, amp_dtype, apply_ema=ema_decay > 0 or handler._has_ema(), bar=val_bar)
        if val_bar is not bar:
            val_bar.close()
    bar.close()
    logs.update(val_logs)
    if handler.optimizer is not None:
        logs["lr"] = float(handler.optimizer.param_groups[0]["lr"])
    _step_epoch_scheduler(handler, logs, validating, validate_every)
    _record_history(handler, logs)
    handler._info(
        f"Epoch {epoch + 1}/{final_epoch}: loss {logs['loss']:.6g}, val_loss {logs['val_loss']:.6g}"
        + "".join(f", {k} {logs[k]:.6g}" for k in handler.metrics)
    )
    # Counted before the hook, so a checkpoint a callback writes here resumes after this epoch.
    handler._epoch = epoch + 1
    _dispatch(handler, "on_epoch_end", epoch, logs)
    return logs


@torch.no_grad()
def validate(handler: "NNHandler", compute_loss: Callable, amp_dtype: torch.dtype | None,
             apply_ema: bool, bar: Any = None) -> dict[str, float]:
    """Sample-weighted validation loss and metrics, with the EMA weights when `apply_ema`."""
    loader = handler.val_loader
    _dispatch(handler, "on_val_begin", {})
    loss_mean, metric_means = Mean(), {name: Mean() for name in handler.metrics}
    was_training = handler.module.training
    handler.module.eval()
    device_type = handler.device.type
    with ema_weights(handler, apply_ema):
        for i, batch in enumerate(loader):
            batch = to_device(batch, handler.device)
            n = batch_size_of(batch)
            _dispatch(handler, "on_val_batch_begin", i, {"size": n})
            with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss, output = compute_loss(handler.model, batch)
            loss = loss.detach().float()
            loss_mean.add(loss, n)
            if handler.metrics:
                _add_metrics(handler, metric_means, output, batch, n)
            _dispatch(handler, "on_val_batch_end", i, {"val_loss": loss, "size": n})
            if bar is not None:
                bar.update(1)
    handler.module.train(was_training)
    handler._apply_keep_eval()
    logs = {"val_loss": loss_mean.result(), **{f"val_{k}": v.result() for k, v in metric_means.items()}}
    _dispatch(handler, "on_val_end", logs)
    return logs


@torch.no_grad()
def predict(handler: "NNHandler", data_loader: Any, apply_ema: bool = True) -> list[Any]:
    outputs = []
    was_training = handler.module.training
    handler.module.eval()
    with ema_weights(handler, apply_ema):
        for batch in data_loader:
            batch = to_device(batch, handler.device)
            inputs, _, args, kwargs = unpack_batch(batch)
            out = handler.model(inputs, *args, **kwargs)
            outputs.append(out.detach() if isinstance(out, Tensor) else out)
    handler.module.train(was_training)
    handler._apply_keep_eval()
    return outputs


@contextlib.contextmanager
def ema_weights(handler: "NNHandler", enabled: bool) -> Iterator[None]:
    """Swap the EMA weights into the module for the duration, then restore the raw ones."""
    state = handler.train_state
    if not enabled or state is None or "ema" not in state.keys():
        yield
        return
    ema = state["ema"]
    params, buffers = state["params"], state["buffers"]
    live = [params[k] if k in params.keys() else buffers[k] for k in ema.keys()]
    averaged = list(ema.values())
    with torch.no_grad():
        raw = [t.detach().clone() for t in live]
        torch._foreach_copy_(live, averaged)
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(live, raw)


def _loss_closure(handler: "NNHandler", epoch: int) -> Callable[[Callable, Any], tuple[Tensor, Any]]:
    loss_fn = handler.loss_fn
    kwargs = dict(handler.loss_fn_kwargs)
    if handler.pass_epoch_to_loss and handler._loss_accepts_epoch:
        kwargs["epoch"] = epoch
    generative = handler.model_type is ModelType.GENERATIVE

    def compute_loss(model: Callable, batch: Any) -> tuple[Tensor, Any]:
        inputs, targets, args, model_kwargs = unpack_batch(batch)
        output = model(inputs, *args, **model_kwargs)
        if targets is None:
            if not generative:
                raise ValueError(
                    f"NNHandler: a {handler.model_type.value} batch needs targets, (inputs, targets); "
                    "for models trained against their inputs use model_type='generative'."
                )
            targets = inputs
        result = loss_fn(output, targets, **kwargs)
        loss = result[0] if isinstance(result, (tuple, list)) else result
        return loss, output

    return compute_loss


def _add_metrics(handler: "NNHandler", means: dict[str, "Mean"], output: Any, batch: Any, n: int) -> None:
    inputs, targets, _, _ = unpack_batch(batch)
    target = inputs if targets is None else targets
    for name, fn in handler.metrics.items():
        means[name].add(fn(output, target), n)


def _step_epoch_scheduler(handler: "NNHandler", logs: dict, validated: bool, validate_every: int) -> None:
    sched = handler._scheduler
    if sched is None or handler._scheduler_spec[2] != "epoch":
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if validated:
            sched.step(logs["val_loss"])
        elif validate_every == 0:
            sched.step(logs["loss"])
    else:
        sched.step()


def _record_history(handler: "NNHandler", logs: dict) -> None:
    handler.train_losses.append(logs["loss"])
    handler.val_losses.append(logs["val_loss"])
    for name in handler.metrics:
        handler.train_metrics_history.setdefault(name, []).append(logs.get(name, math.nan))
        handler.val_metrics_history.setdefault(name, []).append(logs.get(f"val_{name}", math.nan))


def _dispatch(handler: "NNHandler", hook: str, *args: Any) -> None:
    for cb in handler.callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)
