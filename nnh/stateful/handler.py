"""`NNHandler`: one object that owns a model's whole life.

The handler is the seed API (constructor, `set_*`, properties) over explicit parts
(`nnh.stateful.parts`); `train` checks its arguments once (`TrainConfig`) and calls the loop
(`nnh.stateful.loop.fit`), which works on the parts and never on the handler.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
from typing import Any, Callable

import torch
from matplotlib.figure import Figure
from tensordict import TensorDict
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nnh.stateful import checkpoint, loop, reporting, score_based, sharded_checkpoint, weights
from nnh.stateful._logging import make_logger
from nnh.stateful.checks import (build_optimizer_checked, check_dataset, check_device, check_flag,
                                 check_logger_level, check_loss_fn, check_module, check_scheduler_class)
from nnh.stateful.autosave import AutoSaver, check_name, log_keys
from nnh.stateful.compiled import StepRunner
from nnh.stateful.config import TrainConfig, check_metric, check_ready
from nnh.stateful.data import make_loader
from nnh.stateful.enums import LoggingMode, ModelType
from nnh.stateful.launch import check_strategy, check_timeout, setup_runtime
from nnh.stateful.objective import LossSpec
from nnh.stateful.parts import build_module, History, ModelPart, Optimization, Parts, Progress
from nnh.stateful.preemption import Preemption
from nnh.stateful.rng import seed_everything
from nnh.stateful.sampler import Sampler, check_sampler, make_sampler
from nnh.stateful.strategy import check_options, distribute, rewrapped

__all__ = ["NNHandler"]

_log = logging.getLogger("nnh")


class NNHandler:
    """Owns a model with its optimizer, scheduler, loss, data, training loop and history.

    Every piece of state lives on the instance, in its parts (`handler.parts`): two handlers
    in one process share nothing.
    """

    ModelType = ModelType
    LoggingMode = LoggingMode

    def __init__(self, model_class: type[nn.Module], device: torch.device | str = "cpu",
                 logger_mode: LoggingMode | str | None = None, logger_filename: str = "NNHandler.log",
                 logger_level: int = logging.INFO, save_model_code: bool = False,
                 model_type: ModelType | str = ModelType.CLASSIFICATION, use_distributed: bool | None = None,
                 strategy: str = "ddp", strategy_options: dict[str, Any] | None = None,
                 process_group_timeout: float | datetime.timedelta | None = None, **model_kwargs: Any) -> None:
        check_flag("NNHandler", "use_distributed", use_distributed, allow_none=True)
        self._strategy_options = check_options(check_strategy(strategy), strategy_options)
        level, timeout = check_logger_level(logger_level), check_timeout(process_group_timeout)
        self._runtime = setup_runtime(use_distributed, check_device(device), strategy, timeout)  # docs/distributed.md
        self._logger = make_logger(logger_mode, logger_filename, level) if self._runtime.is_main else None
        self._model_type = ModelType.from_string(model_type)
        self._parts: Parts | None = None
        self._optimization = Optimization()
        self._progress = Progress()
        self._history = History()
        self._loss = LossSpec()
        self._loaders: dict[str, tuple[Any, dict]] = {}
        self._metrics: dict[str, Callable] = {}
        self._callbacks: list[Any] = []
        self._sde: Any = None
        self._sampler: Sampler | None = None
        self._autosaver = AutoSaver()
        self._preemption = Preemption()
        self._steps = StepRunner()
        self.set_model(model_class, save_model_code=save_model_code, **model_kwargs)

    # ------------------------------------------------------------------ properties
    device = property(lambda self: self._runtime.device)
    runtime = property(lambda self: self._runtime, doc="Device, rank, world size and collectives of this process.")
    _rank = property(lambda self: self._runtime.rank)
    parts = property(lambda self: self._parts, doc="The model, optimization, progress and history parts.")
    logger = property(lambda self: self._logger)
    model = property(lambda self: self._parts.model.forward, doc="The model as trained (maybe a DDP or torch.compile wrapper).")
    model_type = property(lambda self: self._model_type)
    optimizer = property(lambda self: self._optimization.optimizer)
    scheduler = property(lambda self: self._optimization.scheduler)
    loss_fn = property(lambda self: self._loss.fn)
    train_loader = property(lambda self: self._loaders.get("train", (None,))[0])
    val_loader = property(lambda self: self._loaders.get("val", (None,))[0])
    loader_specs = property(lambda self: dict(self._loaders), doc="{which: (loader, the kwargs it was built with)}.")
    metrics = property(lambda self: self._metrics)
    callbacks = property(lambda self: self._callbacks)
    autosaver = property(lambda self: self._autosaver)
    preemption = property(lambda self: self._preemption)
    train_losses = property(lambda self: self._history.train_losses)
    val_losses = property(lambda self: self._history.val_losses)
    train_metrics_history = property(lambda self: self._history.train_metrics)
    val_metrics_history = property(lambda self: self._history.val_metrics)
    epoch = property(lambda self: self._progress.epoch, doc="Epochs trained so far (a second `train` continues here).")
    train_state = property(lambda self: self._optimization.state,
                           doc="The `nnh.func` train state (params, buffers, optimizer state, EMA, counters).")

    @property
    def module(self) -> nn.Module:
        """The plain `nn.Module`, unwrapped from `torch.compile`, DDP or DataParallel."""
        return self._parts.model.module

    @property
    def seed(self) -> int | None:
        return self._progress.seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        """Seed torch (CPU and CUDA), Python's `random` and NumPy."""
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"seed={value!r} must be a non-negative int, e.g. handler.seed = 42.")
            seed_everything(value)
        self._progress.seed = value

    stop_training = property(lambda self: self._progress.stop_training,
                             lambda self, v: setattr(self._progress, "stop_training", bool(v)),
                             doc="Set True (e.g. from a callback) to end `train` after this batch or epoch.")

    pass_epoch_to_loss = property(lambda self: self._loss.pass_epoch, lambda self, v: self._loss.update(pass_epoch=v))
    loss_fn_kwargs = property(lambda self: self._loss.kwargs, lambda self, v: self._loss.update(kwargs=v))
    sampler = property(lambda self: self._sampler, lambda self, v: setattr(self, "_sampler", check_sampler(v)))

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: say where the attribute may live instead.
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"'NNHandler' object has no attribute {name!r}. Attributes of the model itself are "
                             f"on handler.module (e.g. handler.module.{name}).")

    # ------------------------------------------------------------------ configuration
    def set_model(self, model_class: type[nn.Module], save_model_code: bool = False,
                  model_type: ModelType | str | None = None, **model_kwargs: Any) -> None:
        """Build `model_class(**model_kwargs)` on the handler's device. Replacing the model
        drops the optimizer state, scheduler, EMA and history that belonged to the old one."""
        if not (inspect.isclass(model_class) and issubclass(model_class, nn.Module)):
            raise TypeError(f"model_class must be an nn.Module subclass, got {model_class!r}; pass the class "
                            "itself, e.g. NNHandler(MyNet, hidden=64).")
        if "model_kwargs" in model_kwargs and isinstance(model_kwargs["model_kwargs"], dict):
            # Accept NNHandler(Net, model_kwargs={...}) as well as NNHandler(Net, **kwargs).
            model_kwargs = {**model_kwargs.pop("model_kwargs"), **model_kwargs}
        module = build_module(model_class, model_kwargs, self.device, allow_meta=not self._runtime.distributed)
        if model_type is not None:
            self._model_type = ModelType.from_string(model_type)
        part = ModelPart(module, model_class, model_kwargs, bool(save_model_code))
        distribute(part, self._runtime, self._strategy_options)
        self._parts = Parts(part, self._optimization, self._progress, self._history)
        self._optimization.state = None
        self._steps = StepRunner()
        if self._optimization.optimizer_spec is not None:
            self.set_optimizer(*self._optimization.optimizer_spec[:1], **self._optimization.optimizer_spec[1])
        self._history.reset(self._metrics)
        self._progress.epoch = 0

    def set_optimizer(self, optimizer_class: type[torch.optim.Optimizer], **optimizer_kwargs: Any) -> None:
        """Build `optimizer_class(handler.module.parameters(), **optimizer_kwargs)`."""
        build_optimizer_checked(optimizer_class, lambda: self._optimization.set_optimizer(
            self.module, optimizer_class, optimizer_kwargs), optimizer_kwargs)

    def set_scheduler(self, scheduler_class: type | None, interval: str = "epoch", **scheduler_kwargs: Any) -> None:
        """Attach an LR scheduler to the optimizer, or remove it with None.

        It steps once per epoch (`ReduceLROnPlateau` on the epoch's validation loss, or the
        training loss when there is no validation), or after every accumulation window
        (skipped or not) with `interval="batch"`.
        """
        check_scheduler_class(scheduler_class)
        self._optimization.set_scheduler(scheduler_class, scheduler_kwargs, interval)

    def set_loss_fn(self, loss_fn: Callable, pass_epoch_to_loss: bool = False, **kwargs: Any) -> None:
        """Set `loss_fn(output, targets, **kwargs)`; with `pass_epoch_to_loss`, the 0-based
        epoch is passed as `epoch=` when the loss accepts it. A tuple return back-propagates
        its first element."""
        check_loss_fn(loss_fn, kwargs)
        self._loss.update(loss_fn, kwargs, pass_epoch_to_loss)

    def set_train_loader(self, dataset: Dataset | DataLoader, **loader_kwargs: Any) -> None:
        """Training data: a Dataset (wrapped in `DataLoader(dataset, **loader_kwargs)`, fetching
        whole batches at once where the dataset allows, see `nnh.stateful.data`) or a ready
        DataLoader."""
        check_dataset("train", dataset)
        self._loaders["train"] = (make_loader("train", dataset, loader_kwargs, self._runtime), dict(loader_kwargs))

    def set_val_loader(self, dataset: Dataset | DataLoader, **loader_kwargs: Any) -> None:
        """Validation data, as `set_train_loader`."""
        check_dataset("val", dataset)
        self._loaders["val"] = (make_loader("val", dataset, loader_kwargs, self._runtime), dict(loader_kwargs))

    def add_metric(self, name: str, metric_fn: Callable) -> None:
        """Track `metric_fn(output, targets) -> number` per epoch (sample-weighted mean)."""
        check_metric(name, metric_fn, self._metrics)
        self._metrics[name] = metric_fn
        self._history.add_metric(name)

    def clear_metrics(self) -> None:
        self._metrics.clear()

    def add_callback(self, callback: Any) -> None:
        """Register a callback (see `nnh.callbacks`); hooks run in the order added."""
        for hook in ("on_epoch_end", "on_train_begin"):
            if not callable(getattr(callback, hook, None)):
                raise TypeError(f"add_callback: {callback!r} has no {hook} method; subclass nnh.callbacks.Callback.")
        if hasattr(callback, "set_handler"):
            callback.set_handler(self)
        else:
            callback.handler = self
        self._callbacks.append(callback)

    def set_sde(self, sde_class: type, **sde_kwargs: Any) -> None:
        """Use `sde_class(**sde_kwargs)` (e.g. `nnh.VPSDE`), checked at once; as `handler.sde = ...`."""
        self.sde = score_based.build_sde(sde_class, sde_kwargs)

    def _set_sde(self, sde: Any) -> None:
        self._sde = score_based.check_sde(sde)  # duck-typed; a refused SDE changes nothing
        self._model_type = ModelType.SCORE_BASED if sde is not None else self._model_type
    sde = property(lambda self: self._sde, _set_sde, doc="The SDE of a score-based model; setting one sets "
                   "model_type SCORE_BASED (None removes it).")

    def set_sampler(self, sampler_class: type[Sampler] | Sampler, **sampler_kwargs: Any) -> None:
        """Use a custom `Sampler`: a class built with `sampler_kwargs`, or a ready instance."""
        self._sampler = make_sampler(sampler_class, sampler_kwargs)

    def get_samples(self, N: int, device: torch.device | str | None = None) -> Any:
        """`N` samples from the custom sampler, on `device` (default: the handler's)."""
        if self._sampler is None:
            raise RuntimeError("get_samples needs a sampler; call handler.set_sampler(...) first.")
        if not isinstance(N, int) or isinstance(N, bool) or N <= 0:
            raise ValueError(f"get_samples: N={N!r} must be a positive int.")
        return self._runtime.main_result(lambda: self._sampler.sample(N, torch.device(device or self.device)))

    # Score-based models (`nnh.stateful.score_based`); sample(N=...) reaches the custom sampler.
    score = score_based.score
    sample = score_based.sample
    log_likelihood = score_based.log_likelihood

    # ------------------------------------------------------------------ training
    def train(self, epochs: int, validate_every: int = 1, gradient_accumulation_steps: int = 1,
              use_amp: bool | str | torch.dtype = False, gradient_clipping_norm: float | None = None,
              ema_decay: float = 0.0, seed: int | None = None, progress_bar: bool = True,
              debug_print_interval: int | None = None, save_on_last_epoch: bool = True,
              epoch_train_and_val_pbar: bool = False, max_nonfinite_steps: int = 10,
              compile: bool = False) -> None:
        """Train for `epochs` more epochs (a second call continues the epoch count).

        The arguments are those of `nnh.stateful.config.TrainConfig` (documented there), checked
        before any work starts; the hook order is spelled out in `nnh.stateful.loop.fit`.
        """
        config = TrainConfig(epochs, validate_every, gradient_accumulation_steps, use_amp, gradient_clipping_norm,
                             ema_decay, seed, progress_bar, debug_print_interval, save_on_last_epoch,
                             epoch_train_and_val_pbar, max_nonfinite_steps, compile)
        amp_dtype = config.amp_dtype(self.device)
        if epochs == 0:
            return
        check_ready(config, self.optimizer, self._loss.fn, self.train_loader, self.val_loader, self._runtime,
                    self._progress.resume)
        objective = self._loss.objective(self._model_type, self._sde, self.device)
        if self._progress.starts_with_seed(seed):
            self.seed = seed
        opt, module = self._optimization, self.module
        opt.require_state(module)
        if amp_dtype == torch.float16:
            opt.ensure_scaler(module)
        if ema_decay > 0:
            opt.ensure_ema(module)
        run = loop.Fit(objective=objective, train_loader=self.train_loader, val_loader=self.val_loader,
                       metrics=self._metrics, callbacks=self._callbacks, runtime=self._runtime,
                       autosaver=self._autosaver, preemption=self._preemption, save=self.save, log=self._info,
                       step=self._steps.step_fn(compile, opt.optimizer))
        loop.fit(self._parts, config, run)

    def eval(self, activate: bool = True, log: bool = True) -> None:
        """Put the model in eval mode (`activate=True`) or train mode; modules registered with
        `keep_eval_on_module` stay in eval mode either way."""
        self._parts.model.set_mode(not activate)
        if log:
            self._info(f"Model set to {'eval' if activate else 'train'} mode.")

    def predict(self, data_loader: DataLoader, apply_ema: bool = True) -> list[Any] | None:
        """Per-batch model outputs (detached) over `data_loader`, with the EMA weights when
        `apply_ema` and an EMA exists. Under torch.distributed rank 0 returns every rank's, in
        dataset order (`nnh.stateful.sharding`), the others None."""
        return loop.predict(self._parts, data_loader, self._runtime, apply_ema)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def keep_eval_on_module(self, module: nn.Module, activate: bool = True) -> None:
        """Keep `module` in eval mode (e.g. frozen BatchNorm statistics) even during training;
        `activate=False` unregisters it."""
        self._parts.model.keep_in_eval(module, activate)

    def freeze_module(self, module: nn.Module, verbose: bool = False) -> None:
        """Set `requires_grad=False` on every parameter of `module` (under DDP the model is
        wrapped again, for the gradients it now synchronises)."""
        check_module("freeze_module", module)
        with rewrapped(self._parts.model, self._runtime, self._strategy_options):
            n = sum(p.requires_grad_(False).numel() for p in module.parameters())
        if verbose:
            self._info(f"Froze {n} parameters of {type(module).__name__}.")

    def count_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad or not trainable_only)

    def compile_model(self, **kwargs: Any) -> None:
        """Run the model's forward through `torch.compile(**kwargs)`. `handler.module` and
        state_dict keys stay those of the plain module. `train(compile=True)` compiles the
        whole step instead. Under DDP the wrapper is compiled for training."""
        self._parts.model.compile(**kwargs)

    def ensure_ema(self) -> TensorDict:
        """The EMA weights, created from the current weights if there are none yet."""
        return self._optimization.ensure_ema(self.module)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the complete handler state to `path`, atomically (see `nnh.func.atomic_save`).

        The file holds tensors and plain values only (`torch.load(weights_only=True)` reads
        it). Classes and functions are stored as import paths; one that cannot be imported
        again (a lambda, a class from ``__main__``) is recorded by name with a warning, and
        `NNHandler.load` then needs it passed in. Under torch.distributed every rank calls it
        (rank 0 writes; under FSDP `path` is a folder of shards: docs/distributed.md).
        """
        (sharded_checkpoint.save_sharded if self._runtime.sharded else checkpoint.save_handler)(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None, strict_load: bool = False,
             skip_optimizer: bool = False, skip_scheduler: bool = False, skip_history: bool = False,
             skip_callbacks: bool = False, skip_sampler_sde: bool = False, skip_ema: bool = False,
             strategy: str | None = None, **provided: Any) -> "NNHandler":
        """Rebuild a handler from a file written by `save`; see `nnh.stateful.checkpoint.load_handler`
        for the keywords that supply objects recorded by name, `strict_load` and the `skip_*`
        flags. Set the data loaders again, then `train(total - handler.epoch)` continues exactly.
        Under torch.distributed every rank loads (`strategy`: the saved one by default)."""
        read = sharded_checkpoint.load_sharded if os.path.isdir(path) else checkpoint.load_handler
        return read(cls, path, device, strict_load, skip_optimizer, skip_scheduler, skip_history, skip_callbacks,
                    skip_sampler_sde, skip_ema, strategy, **provided)

    @classmethod
    def initialize_from_checkpoint(cls, checkpoint_path: str | os.PathLike, model_class: type, model_type: Any = None,
                                   device: str | torch.device | None = None, strict_load: bool = True,
                                   **model_kwargs: Any) -> "NNHandler":
        """A new handler with only the model weights of a checkpoint: a full handler
        checkpoint or a plain state_dict, also one saved from a DDP-wrapped or
        `torch.compile`d model (the `module.` and `_orig_mod.` prefixes are stripped)."""
        return weights.weights_handler(cls, checkpoint_path, model_class, model_type, device, strict_load,
                                          **model_kwargs)

    def auto_save(self, interval: int | None, save_path: str = ".", name: str = "model_epoch{epoch:02d}",
                  overwrite: bool = False) -> None:
        """Save the whole handler during `train`: see `nnh.stateful.autosave.AutoSaver`
        (e.g. ``name="ckpt_{epoch:03d}_{val_loss:.3f}"``)."""
        self._autosaver.configure(interval, save_path, name, overwrite, *log_keys(self._metrics, self._callbacks))

    def _set_name(self, name: str) -> None:
        check_name(name, *log_keys(self._metrics, self._callbacks))
        self._autosaver.name = name

    save_interval = property(lambda self: self._autosaver.interval,
                             lambda self, v: self.auto_save(v, self.save_path, self.save_model_name, self.overwrite_last_saved))
    save_path = property(lambda self: self._autosaver.save_path,
                         lambda self, v: setattr(self._autosaver, "save_path", os.fspath(v)))
    save_model_name = property(lambda self: self._autosaver.name, _set_name)
    overwrite_last_saved = property(lambda self: self._autosaver.overwrite,
                                    lambda self, v: setattr(self._autosaver, "overwrite", bool(v)))

    def set_preemption_checkpoint(self, path: str | None) -> None:
        """Where `train` saves when SIGTERM or SIGUSR1 arrives (default: `preempted.pth` in the
        auto-save folder). On such a signal, training finishes the current optimizer step,
        saves there, and `train` returns; `NNHandler.load` of that file resumes exactly,
        in the middle of the epoch."""
        self._preemption.path = None if path is None else os.fspath(path)

    # ------------------------------------------------------------------ reporting
    def plot_losses(self, log_y_scale: bool = False, save_path: str | None = None) -> Figure:
        """Training and validation loss per epoch (PNG at `save_path`); returns the Figure (None
        on ranks other than 0)."""
        return reporting.plot_losses(self._history, log_y_scale, save_path) if self._runtime.is_main else None

    def plot_metrics(self, log_y_scale: bool = False, save_path_prefix: str | None = None) -> dict[str, Figure]:
        """One figure per metric; with `save_path_prefix`, saved as `{prefix}_{name}.png` (rank 0)."""
        return (reporting.plot_metrics(self._history, list(self._metrics), log_y_scale, save_path_prefix)
                if self._runtime.is_main else None)

    def print(self, show_model_structure: bool = False) -> str:
        """A summary of the handler's configuration and history."""
        return reporting.summary(self, show_model_structure)

    def _info(self, msg: str) -> None:
        if self._runtime.is_main:
            (self._logger or _log).info(msg)
