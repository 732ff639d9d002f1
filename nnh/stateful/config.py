"""`TrainConfig`: the arguments of one `NNHandler.train` call, checked once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import warnings

import torch

__all__ = ["TrainConfig", "MissingValidationDataError", "check_ready", "check_metric"]

# Keys of the epoch logs that a metric of the same name would overwrite.
RESERVED_LOG_KEYS = ("loss", "val_loss", "lr", "epoch")


class MissingValidationDataError(ValueError, RuntimeError):
    """`train(validate_every > 0)` without validation data. Both a ValueError and a
    RuntimeError, so code written for either kind keeps working."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """One `NNHandler.train` call's settings, checked when built.

    Args:
        epochs: epochs to run; 0 does nothing.
        validate_every: validate every this many epochs (0: never); skipped epochs get NaN.
        gradient_accumulation_steps: micro-batches per update; a short last window still
            updates. Gradients are sample-weighted (see `nnh.func.train_step`).
        use_amp: False, True (bf16 on CPU, fp16 with a loss scaler on CUDA), "bf16"/"fp16".
        gradient_clipping_norm: clip the global gradient norm to this value.
        ema_decay: > 0 keeps an EMA of the weights (across `train` calls), used for
            validation and `predict`; the raw weights are never overwritten.
        seed: seeds torch, CUDA, `random` and NumPy when the run starts (epoch 0 with no
            resume point). A resumed run (a loaded checkpoint, a later `train` call)
            keeps its RNG streams, so a job script may pass the same seed on every start;
            a different seed there is ignored with a warning.
        progress_bar: a tqdm bar per epoch with the running loss.
        debug_print_interval: log the running loss every this many batches.
        save_on_last_epoch: auto-save at the last epoch of this call (see `auto_save`).
        epoch_train_and_val_pbar: one bar per epoch covering training and validation.
        max_nonfinite_steps: a non-finite loss skips its window's update (a warning names
            the batch); this many in a row raise a RuntimeError. Under torch.distributed
            skipped updates are counted, at each epoch's end, on every rank alike.
        compile: run the whole step (forward, backward, optimizer update, EMA) as one
            `torch.compile(fullgraph=True)` graph, compiled once per handler and reused
            across epochs and calls; see `nnh.stateful.compiled`.
    """

    epochs: int
    validate_every: int = 1
    gradient_accumulation_steps: int = 1
    use_amp: bool | str | torch.dtype = False
    gradient_clipping_norm: float | None = None
    ema_decay: float = 0.0
    seed: int | None = None
    progress_bar: bool = True
    debug_print_interval: int | None = None
    save_on_last_epoch: bool = True
    epoch_train_and_val_pbar: bool = False
    max_nonfinite_steps: int = 10
    compile: bool = False

    def __post_init__(self) -> None:
        if not _is_int(self.epochs) or self.epochs < 0:
            raise ValueError(f"train: epochs={self.epochs!r} must be a non-negative int (0 does nothing).")
        k = self.gradient_accumulation_steps
        if not _is_int(k) or k < 1:
            raise ValueError(f"train: gradient_accumulation_steps={k!r} must be an int >= 1 (1 = no accumulation).")
        if not isinstance(self.validate_every, int) or self.validate_every < 0:
            raise ValueError(f"train: validate_every={self.validate_every!r} must be an int >= 0 (0 = never validate).")
        for name in ("gradient_clipping_norm", "ema_decay"):
            value = getattr(self, name)
            if not (_is_number(value) or (value is None and name == "gradient_clipping_norm")):
                raise TypeError(f"train: {name}={value!r} must be a number"
                                + (" or None" if name == "gradient_clipping_norm" else " (0 disables the EMA)") + ".")
        for name in ("validate_every", "max_nonfinite_steps"):
            if isinstance(getattr(self, name), bool):
                raise TypeError(f"train: {name}={getattr(self, name)!r} must be an int, not a bool.")
        interval = self.debug_print_interval
        if interval is not None and (not _is_int(interval) or interval < 1):
            raise ValueError(f"train: debug_print_interval={interval!r} must be an int >= 1, or None (no debug logs).")
        for name in ("progress_bar", "save_on_last_epoch", "epoch_train_and_val_pbar"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"train: {name}={getattr(self, name)!r} must be True or False.")
        clip = self.gradient_clipping_norm
        if clip is not None and not clip > 0:
            raise ValueError(f"train: gradient_clipping_norm={clip!r} must be > 0, or None for no clipping.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train: ema_decay={self.ema_decay!r} must lie in [0, 1); 0 disables the EMA, e.g. 0.999.")
        if not isinstance(self.max_nonfinite_steps, int) or self.max_nonfinite_steps < 1:
            raise ValueError(f"train: max_nonfinite_steps={self.max_nonfinite_steps!r} must be an int >= 1.")
        if not isinstance(self.compile, bool):
            raise ValueError(f"train: compile={self.compile!r} must be True or False.")

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype: None, bf16, or fp16 (True means fp16 on CUDA, bf16 elsewhere)."""
        use_amp = self.use_amp
        if use_amp is False or use_amp is None:
            return None
        if use_amp is True:
            return torch.float16 if device.type == "cuda" else torch.bfloat16
        names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
        dtype = names.get(use_amp, use_amp) if isinstance(use_amp, str) else use_amp
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"train: use_amp={use_amp!r}; use True, False, 'bf16' or 'fp16'.")
        return dtype

    def validates(self, epoch: int) -> bool:
        """Whether epoch `epoch` (0-based) ends with validation."""
        return self.validate_every > 0 and (epoch + 1) % self.validate_every == 0


def check_ready(config: TrainConfig, optimizer: Any, loss_fn: Any, train_loader: Any, val_loader: Any,
                runtime: Any = None, resume: dict[str, Any] | None = None) -> None:
    """Refuse a `train` call that lacks a part it needs, naming the setter to call, or that
    cannot run under this torch.distributed world."""
    world = 1 if runtime is None else runtime.world_size
    if runtime is not None and runtime.distributed and config.compile:
        raise ValueError("train(compile=True) compiles the step around the plain module, which would bypass the "
                         f"{runtime.strategy.upper()} gradient synchronisation; under torch.distributed use "
                         "handler.compile_model() (compiles the forward) and train(compile=False).")
    if resume is not None and resume.get("world_size", 1) != world:
        raise ValueError(f"train: this handler resumes a checkpoint saved in the middle of an epoch by "
                         f"{resume.get('world_size', 1)} process(es), whose batch order belongs to that world size; "
                         f"it is running with {world}. Relaunch with {resume.get('world_size', 1)} process(es) to "
                         "finish that epoch exactly.")
    if optimizer is None:
        raise RuntimeError("train needs an optimizer: call handler.set_optimizer(torch.optim.Adam, lr=1e-3) first.")
    if loss_fn is None:
        raise RuntimeError("train needs a loss: call handler.set_loss_fn(torch.nn.functional.cross_entropy) first.")
    if train_loader is None:
        raise RuntimeError("train needs training data: call handler.set_train_loader(dataset, batch_size=...) first.")
    if config.validate_every > 0 and val_loader is None:
        raise MissingValidationDataError(
            f"train: validate_every={config.validate_every} but no validation data; call "
            "handler.set_val_loader(dataset, ...) or pass validate_every=0.")
    for which, loader, used in (("train", train_loader, True), ("val", val_loader, config.validate_every > 0)):
        if used and _length(loader) == 0:
            raise ValueError(
                f"train: the {which} loader yields no batches (an empty dataset, or drop_last=True with fewer "
                f"samples than batch_size); give set_{which}_loader a dataset with samples.")


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def check_metric(name: Any, metric_fn: Any, existing: dict[str, Any]) -> None:
    """Refuse a metric name the epoch logs already use, or a non-callable; warn on replacing."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"add_metric: name={name!r} must be a non-empty string.")
    if name in RESERVED_LOG_KEYS:
        raise ValueError(f"add_metric: name={name!r} is a key of the epoch logs ({', '.join(RESERVED_LOG_KEYS)}); "
                         f"choose another name, e.g. 'train_{name}_metric'.")
    if not callable(metric_fn):
        raise TypeError(f"add_metric: metric_fn for {name!r} must be callable, got {metric_fn!r}.")
    if name in existing and existing[name] is not metric_fn:
        warnings.warn(f"add_metric: {name!r} was already tracked; the new function replaces the old one "
                      "(its history continues).", UserWarning, stacklevel=3)
