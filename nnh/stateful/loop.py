"""The training, validation and prediction loops, as functions over explicit parts.

They receive what they use (`Parts`, an objective, a `TrainConfig`, the data, the callbacks,
the `Runtime`, the savers) and never see `NNHandler`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from nnh.func.train import batch_size_of, train_step
from nnh.stateful._batches import EpochSums, len_or_none, to_device
from nnh.stateful.autosave import AutoSaver
from nnh.stateful.config import TrainConfig
from nnh.stateful.evaluation import (dispatch, metric_values, output_of, predict, reduce_sums, validate,
                                     val_logs, validation_sums)
from nnh.stateful.objective import Objective
from nnh.stateful.parts import Parts
from nnh.stateful.preemption import Preemption
from nnh.stateful.rng import rng_state, set_rng_state
from nnh.stateful.runtime import FlagExchange, Runtime
from nnh.stateful.sharding import start_epoch

__all__ = ["Fit", "fit", "validate", "predict", "dispatch"]

_REFRESH_EVERY_S = 0.5  # progress-bar refresh period: the only host read of the loss


@dataclass
class Fit:
    """What one `fit` call works with, besides the parts and the config."""

    objective: Objective
    train_loader: Any
    val_loader: Any = None
    metrics: dict[str, Callable] = field(default_factory=dict)
    callbacks: list[Any] = field(default_factory=list)
    runtime: Runtime = field(default_factory=lambda: Runtime(torch.device("cpu")))
    autosaver: AutoSaver = field(default_factory=AutoSaver)
    preemption: Preemption = field(default_factory=Preemption)
    save: Callable[[str], None] = lambda path: None
    log: Callable[[str], None] = lambda msg: None
    step: Callable[..., Any] = train_step


def fit(parts: Parts, config: TrainConfig, run: Fit) -> None:
    """Train for `config.epochs` more epochs, continuing `parts.progress.epoch`.

    This docstring is the one statement of the hook order (`nnh.callbacks.Callback` points
    here; callbacks run in the order they were added)::

        on_train_begin({"epochs", "start_epoch"})
        for epoch in range(start_epoch, start_epoch + epochs):
            on_epoch_begin(epoch, {})
            for i, batch in enumerate(train data):       # i: 0-based within the epoch
                on_train_batch_begin(i, {"size"})
                train_step(...)                          # a micro-batch; every k-th updates
                on_train_batch_end(i, {"loss", "size"})  # loss: 0-d detached tensor, maybe NaN
                if stop_training: break
                if preempted at a closed window: save the mid-epoch checkpoint, return
            if validating this epoch:
                on_val_begin({})
                for i, batch in enumerate(validation data):
                    on_val_batch_begin(i, {"size"}); forward; on_val_batch_end(i, {"val_loss", "size"})
                (sums of every rank added: one all-reduce per epoch under torch.distributed)
                on_val_end({"val_loss", "val_<metric>", ...})
            scheduler step (per-epoch schedulers)
            history += logs; epochs done = epoch + 1
            on_epoch_end(epoch, logs)   # epoch, loss, val_loss, <metric>, val_<metric>, lr
            preemption save, or auto-save when due
            if stop_training or preempted: break
        on_train_end(last epoch's logs)

    A callback stops training by setting `handler.stop_training = True`; it is checked after
    every training batch and at the end of every epoch. The epochs-done counter advances
    before `on_epoch_end`, so a checkpoint written there resumes after its epoch.

    A micro-batch whose loss is not finite is flagged on the device; its window's update is
    skipped by `train_step` without a host read. The flags are read with the running loss
    (once per refresh and at the epoch's end): each flagged batch gets a warning, and
    `max_nonfinite_steps` flagged batches in a row raise a RuntimeError.

    Under torch.distributed (`run.runtime`) every rank runs this function and all of them take
    each decision at the same point: the epoch logs are the sums of all ranks (one all-reduce
    per epoch), so callbacks see the same values everywhere; a stop or a preemption signal on
    any rank is agreed at closed accumulation windows (within about 0.2 s of training, see
    `FlagExchange`) and at every epoch end; the non-finite skip is the same on every
    rank (`train_step`), and the warnings and the raise count skipped updates, read at the
    epoch end. Bars, logs and warnings are rank 0's; saves are collective (`run.save`).
    """
    progress, runtime = parts.progress, run.runtime
    progress.stop_training = False
    start = progress.epoch
    final = start + config.epochs
    logs: dict[str, Any] = {"epochs": config.epochs, "start_epoch": start}
    dispatch(run.callbacks, "on_train_begin", logs)
    nonfinite_run = [0]
    flags = runtime.flag_exchange()
    with run.preemption.guard(), _no_partial_window(parts):
        for epoch in range(start, final):
            epoch_logs = _train_epoch(parts, config, run, epoch, final, nonfinite_run, flags)
            if epoch_logs is None:  # preempted in the middle of the epoch
                run.preemption.save(run.save, run.autosaver.save_path, run.log, " mid-epoch")
                progress.mid_epoch = None
                break
            logs = epoch_logs
            # A stop or a signal seen by any rank (until now) ends every rank's run here.
            progress.stop_training, run.preemption.requested = runtime.agree(progress.stop_training,
                                                                              run.preemption.requested)
            stopping = progress.stop_training or run.preemption.requested
            if run.preemption.requested:
                # An auto-save due by the interval still happens; the preemption checkpoint is
                # the one to resume from.
                if run.autosaver.due(epoch, last=False, save_on_last_epoch=False):
                    run.autosaver.save_now(epoch, logs, run.save, runtime.is_main)
                run.preemption.save(run.save, run.autosaver.save_path, run.log, "")
            elif run.autosaver.due(epoch, last=epoch == final - 1 or stopping,
                                   save_on_last_epoch=config.save_on_last_epoch):
                run.autosaver.save_now(epoch, logs, run.save, runtime.is_main)
            if stopping:
                break
    dispatch(run.callbacks, "on_train_end", logs)


@contextlib.contextmanager
def _no_partial_window(parts: Parts) -> Iterator[None]:
    """An exception anywhere in `fit` (a loss, a metric, a callback, Ctrl-C) leaves no part of
    an open accumulation window behind: its gradients and sample count are dropped, so the
    next `train` starts from a clean window."""
    try:
        yield
    except BaseException:
        module, state = parts.model.module, parts.optimization.state
        for p in module.parameters():
            p.grad = None
        if state is not None:
            state["acc_samples"].zero_()
            if "acc_nonfinite" in state.keys():
                state["acc_nonfinite"].zero_()
        raise


def _epoch_batches(parts: Parts, run: Fit, epoch: int, loader: Any, sums: EpochSums) -> tuple[Iterator[Any], int]:
    """The epoch's batch iterator and the index of its first batch.

    The RNG state at the epoch's start is kept (a shuffling loader draws its order from it
    when iterated). Resuming a mid-epoch checkpoint replays that state to rebuild the same
    order, skips the batches already trained, and then goes on with the RNG state of the
    moment it stopped, so the run continues exactly. The resume point is dropped once the
    skip is done: an exception after that (the weights have moved) restarts the epoch, as in
    any interrupted epoch. (A `DistributedSampler` orders by its
    seed and `set_epoch` instead; the replay keeps the rest of the RNG streams exact.) The
    saved sums are those of all ranks, so rank 0 alone takes them up.
    """
    progress = parts.progress
    resume = progress.resume
    if resume is not None and resume["epoch"] == epoch:
        now = rng_state()
        try:
            set_rng_state(resume["epoch_rng"])
            it = iter(loader)
            for _ in range(resume["batches_done"]):
                next(it)
        finally:
            # An exception while skipping (the loader, Ctrl-C) has trained nothing: the resume
            # point and the RNG streams stay as they were, and the next `train` replays again.
            set_rng_state(now)
        progress.resume, progress.epoch_rng = None, resume["epoch_rng"]
        if run.runtime.is_main:
            sums.load({"loss": resume["loss"], "metrics": resume["metrics"]})
        return it, resume["batches_done"]
    progress.resume, progress.epoch_rng = None, rng_state()
    return iter(loader), 0


def _train_epoch(parts: Parts, config: TrainConfig, run: Fit, epoch: int, final: int,
                 nonfinite_run: list[int], flags: FlagExchange) -> dict[str, Any] | None:
    model, opt, progress, runtime = parts.model, parts.optimization, parts.progress, run.runtime
    loader, device = run.train_loader, runtime.device
    validating = config.validates(epoch)
    start_epoch(loader, epoch, progress.seed)
    n_train = len_or_none(loader)
    n_val = len_or_none(run.val_loader) if validating else 0
    joint = config.epoch_train_and_val_pbar and n_train is not None and n_val is not None
    shown = config.progress_bar and runtime.is_main
    bar = tqdm(total=(n_train + n_val) if joint else n_train, desc=f"Epoch {epoch + 1}/{final}",
               disable=not shown, leave=False, dynamic_ncols=True)
    dispatch(run.callbacks, "on_epoch_begin", epoch, {})

    model.set_mode(True)
    run.objective.epoch = epoch
    k, amp_dtype = config.gradient_accumulation_steps, config.amp_dtype(device)
    ema = config.ema_decay if config.ema_decay > 0 else None
    state = opt.require_state(model.module)
    sums = EpochSums(run.metrics)
    last_refresh = time.monotonic()
    unchecked: list[tuple[int, bool]] = []

    def read(decide: bool = True) -> None:
        # The host read of the epoch so far; then a warning per non-finite batch, and the raise.
        # Under torch.distributed the flags (skipped updates, the same on every rank) are
        # decided on at points every rank reaches together, never at a rank's bar refresh.
        unchecked.extend(sums.flush())
        if not decide:
            return
        for i, bad in unchecked:
            nonfinite_run[0] = nonfinite_run[0] + 1 if bad else 0
            if not bad:
                continue
            if runtime.is_main:
                warnings.warn(f"NNHandler.train: non-finite loss at epoch {epoch}, batch {i}; the update of its "
                              "accumulation window was skipped and its gradients dropped"
                              + (" on every rank." if runtime.distributed else "."), RuntimeWarning, stacklevel=4)
            if nonfinite_run[0] >= config.max_nonfinite_steps:
                bar.close()
                raise RuntimeError(
                    f"NNHandler.train: {nonfinite_run[0]} non-finite losses in a row (last at epoch {epoch}, "
                    f"batch {i}); lower the learning rate, clip gradients, or check the data.")
        unchecked.clear()

    batches, first = _epoch_batches(parts, run, epoch, loader, sums)
    for i, batch in enumerate(batches, start=first):
        batch = to_device(batch, device)
        n = batch_size_of(batch)
        dispatch(run.callbacks, "on_train_batch_begin", i, {"size": n})
        last = n_train is not None and i == n_train - 1
        update = i % k == k - 1 or last
        with model.gradient_sync(update):
            _, m = run.step(state, batch, module=model.module, loss_fn=run.objective.loss, optimizer=opt.optimizer,
                            forward=model.forward, micro_batch=i % k, update=update, amp_dtype=amp_dtype,
                            max_grad_norm=config.gradient_clipping_norm, ema_decay=ema, skip_nonfinite=True,
                            share_nonfinite=runtime.distributed)
        loss = m["loss"]
        nonfinite = m["nonfinite"] if "nonfinite" in m.keys() else None
        values = []
        if run.metrics:
            output, target = output_of(m), run.objective.metric_target(batch)
            values = metric_values(run.metrics, output, target)
        # One process reports each non-finite micro-batch; under torch.distributed each
        # skipped update, which every rank knows alike (a micro-batch's flag is its rank's).
        report = True if not runtime.distributed else (~m["stepped"] if update else None)
        sums.add(i, loss, n, nonfinite, values, report)
        if update and opt.steps_per_batch:
            opt.scheduler.step()  # per window closed, skipped or not (the skip is on the device)
        dispatch(run.callbacks, "on_train_batch_end", i, {"loss": loss, "size": n})
        bar.update(1)
        refresh = shown and time.monotonic() - last_refresh >= _REFRESH_EVERY_S
        debug = config.debug_print_interval and (i + 1) % config.debug_print_interval == 0
        if refresh or debug:
            read(decide=bool(debug) or not runtime.distributed)
            if refresh:
                bar.set_postfix(loss=f"{sums.loss():.4g}")
                last_refresh = time.monotonic()
            if debug:
                run.log(f"epoch {epoch + 1} batch {i + 1}: running loss {sums.loss():.6g}")
        if update:
            stop, preempted = flags.exchange(progress.stop_training, run.preemption.requested, post=not last)
            progress.stop_training |= stop
            run.preemption.requested |= preempted
        else:  # between windows only one process stops (a rank cannot leave its window alone)
            stop, preempted = progress.stop_training and not runtime.distributed, False
        if preempted and not last:
            # Stop at a closed accumulation window and keep what resuming needs: the sums of
            # every rank, written by rank 0.
            read()
            bar.close()
            _agree_buffers(parts, runtime)
            sums.set_totals(runtime.sum(sums.totals()))
            progress.mid_epoch = {"epoch": epoch, "batches_done": i + 1, "epoch_rng": progress.epoch_rng,
                                  "world_size": runtime.world_size, **sums.state()}
            return None
        if stop:
            break
    flags.drain(2)
    read()
    _agree_buffers(parts, runtime)

    val_sums = None
    if validating:  # a preemption in the last batch still completes its epoch
        val_bar = bar if joint else tqdm(total=n_val, desc=f"Validation {epoch + 1}", leave=False, dynamic_ncols=True,
                                         disable=not shown)
        val_sums = validation_sums(parts, run, amp_dtype, apply_ema=True, bar=val_bar)
        if val_bar is not bar:
            val_bar.close()
    reduce_sums(runtime, sums, val_sums)  # the epoch's one all-reduce
    logs: dict[str, Any] = {"epoch": epoch, "loss": sums.loss(), **{name: sums.metric(name) for name in run.metrics}}
    if shown:
        bar.set_postfix(loss=f"{logs['loss']:.4g}")
    bar.close()
    logs.update(val_logs(run, val_sums))
    if opt.optimizer is not None:
        logs["lr"] = opt.lr()
    opt.step_epoch_scheduler(logs, validating, config.validate_every)
    parts.history.record(logs, run.metrics)
    run.log(f"Epoch {epoch + 1}/{final}: loss {logs['loss']:.6g}, val_loss {logs['val_loss']:.6g}"
            + "".join(f", {name} {logs[name]:.6g}" for name in run.metrics))
    progress.epoch = epoch + 1
    dispatch(run.callbacks, "on_epoch_end", epoch, logs)
    return logs


def _agree_buffers(parts: Parts, runtime: Runtime) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics) and their EMA. Each rank's last
    forward updated its own, while DDP broadcasts rank 0's before every forward anyway: taken
    at the epoch's end (and before a mid-epoch checkpoint), they make validation, the EMA and
    the checkpoint the same on every rank."""
    if not runtime.distributed:
        return
    buffers = dict(parts.model.module.named_buffers())
    ema = parts.optimization.ema()
    averaged = [ema[n] for n in buffers if n in ema.keys()] if ema is not None else []
    runtime.broadcast_tensors(list(buffers.values()) + averaged)
