"""`NNHandler`: one object that owns a model's whole life."""

from __future__ import annotations

import inspect
import logging
import random
from typing import Any, Callable

import numpy as np
import torch
from tensordict import TensorDict
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nnh.func.ema import init_ema
from nnh.func.train import init_train_state
from nnh.stateful import _training
from nnh.stateful._logging import make_logger
from nnh.stateful._persistence import PersistenceMixin
from nnh.stateful._reporting import ReportingMixin
from nnh.stateful.enums import LoggingMode, ModelType
from nnh.stateful.sampler import Sampler

__all__ = ["NNHandler"]

_log = logging.getLogger("nnh")


class NNHandler(PersistenceMixin, ReportingMixin):
    """Owns a model with its optimizer, scheduler, loss, data, training loop and history.

    Every piece of state lives on the instance: two handlers in one process share nothing.
    """

    ModelType = ModelType
    LoggingMode = LoggingMode

    def __init__(
        self,
        model_class: type[nn.Module],
        device: torch.device | str = "cpu",
        logger_mode: LoggingMode | str | None = None,
        logger_filename: str = "NNHandler.log",
        logger_level: int = logging.INFO,
        save_model_code: bool = False,
        model_type: ModelType | str = ModelType.CLASSIFICATION,
        use_distributed: bool | None = None,
        **model_kwargs: Any,
    ) -> None:
        if use_distributed:
            raise NotImplementedError(
                "NNHandler(use_distributed=True): distributed training is not part of this "
                "nnh release; run without use_distributed (one process)."
            )
        self._device = torch.device(device)
        # One process: rank 0 of a world of 1 (the distributed issue extends this).
        self._rank = 0
        self._world_size = 1
        self._logger = make_logger(logger_mode, logger_filename, logger_level)
        self._seed: int | None = None
        self._model: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._optimizer_spec: tuple[type, dict] | None = None
        self._scheduler: Any = None
        self._scheduler_spec: tuple[type, dict, str] | None = None
        self._loss_fn: Callable | None = None
        self._loss_accepts_epoch = False
        self._pass_epoch_to_loss = False
        self._loss_fn_kwargs: dict[str, Any] = {}
        self._train_loader: DataLoader | None = None
        self._val_loader: DataLoader | None = None
        self._loader_specs: dict[str, dict] = {}
        self._metrics: dict[str, Callable] = {}
        self._callbacks: list[Any] = []
        self._sde: Any = None
        self._sampler: Sampler | None = None
        self._sampler_spec: tuple[type, dict] | None = None
        self._keep_eval: list[nn.Module] = []
        self._state: TensorDict | None = None
        self._epoch = 0
        self.stop_training = False
        self._init_persistence()
        self._reset_history()
        self.set_model(model_class, save_model_code=save_model_code, model_type=model_type, **model_kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def seed(self) -> int | None:
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        """Seed torch (CPU and CUDA), Python's `random` and NumPy."""
        if value is None:
            self._seed = None
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"seed={value!r} must be a non-negative int, e.g. handler.seed = 42.")
        self._seed = value
        torch.manual_seed(value)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(value)
        random.seed(value)
        np.random.seed(value % 2**32)

    @property
    def logger(self) -> logging.Logger | None:
        return self._logger

    @property
    def model(self) -> nn.Module | None:
        """The model as run (possibly a `torch.compile` wrapper); see `module`."""
        return self._model

    @property
    def module(self) -> nn.Module:
        """The plain `nn.Module`, unwrapped from `torch.compile`, DDP or DataParallel."""
        m = self._model
        while True:
            if hasattr(m, "_orig_mod"):
                m = m._orig_mod
            elif isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
                m = m.module
            else:
                return m

    @property
    def model_type(self) -> ModelType:
        return self._model_type

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self._optimizer

    @property
    def scheduler(self) -> Any:
        return self._scheduler

    @property
    def loss_fn(self) -> Callable | None:
        return self._loss_fn

    @property
    def pass_epoch_to_loss(self) -> bool:
        return self._pass_epoch_to_loss

    @pass_epoch_to_loss.setter
    def pass_epoch_to_loss(self, value: bool) -> None:
        self._pass_epoch_to_loss = bool(value)

    @property
    def loss_fn_kwargs(self) -> dict[str, Any]:
        return self._loss_fn_kwargs

    @loss_fn_kwargs.setter
    def loss_fn_kwargs(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"loss_fn_kwargs must be a dict, got {type(value).__name__}.")
        self._loss_fn_kwargs = dict(value)

    @property
    def train_loader(self) -> DataLoader | None:
        return self._train_loader

    @property
    def val_loader(self) -> DataLoader | None:
        return self._val_loader

    @property
    def metrics(self) -> dict[str, Callable]:
        return self._metrics

    @property
    def callbacks(self) -> list[Any]:
        return self._callbacks

    @property
    def sde(self) -> Any:
        return self._sde

    @sde.setter
    def sde(self, value: Any) -> None:
        self._sde = value

    @property
    def sampler(self) -> Sampler | None:
        return self._sampler

    @sampler.setter
    def sampler(self, value: Sampler | None) -> None:
        if value is not None and not isinstance(value, Sampler):
            raise TypeError(f"sampler must be an nnh.Sampler instance or None, got {type(value).__name__}.")
        self._sampler = value
        self._sampler_spec = None if value is None else (type(value), dict(value.init_kwargs))

    @property
    def train_losses(self) -> list[float]:
        return self._history["train_losses"]

    @property
    def val_losses(self) -> list[float]:
        return self._history["val_losses"]

    @property
    def train_metrics_history(self) -> dict[str, list[float]]:
        return self._history["train_metrics"]

    @property
    def val_metrics_history(self) -> dict[str, list[float]]:
        return self._history["val_metrics"]

    @property
    def epoch(self) -> int:
        """Epochs trained so far (a second `train` call continues from here)."""
        return self._epoch

    @property
    def train_state(self) -> TensorDict | None:
        """The `nnh.func` train state (params, buffers, optimizer state, EMA, counters)."""
        return self._state

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: say where the attribute may live instead.
        if name.startswith("__") or name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"'NNHandler' object has no attribute {name!r}. Attributes of the model itself are "
            f"on handler.module (e.g. handler.module.{name})."
        )

    # ------------------------------------------------------------------ configuration
    def set_model(
        self,
        model_class: type[nn.Module],
        save_model_code: bool = False,
        model_type: ModelType | str | None = None,
        **model_kwargs: Any,
    ) -> None:
        """Build `model_class(**model_kwargs)` on the handler's device. Replacing the model
        drops the optimizer state, scheduler, EMA and history that belonged to the old one."""
        if not (inspect.isclass(model_class) and issubclass(model_class, nn.Module)):
            raise TypeError(
                f"model_class must be an nn.Module subclass, got {model_class!r}; pass the class "
                "itself, e.g. NNHandler(MyNet, hidden=64)."
            )
        if model_type is not None or not hasattr(self, "_model_type"):
            self._model_type = ModelType.from_string(model_type or ModelType.CLASSIFICATION)
        if "model_kwargs" in model_kwargs and isinstance(model_kwargs["model_kwargs"], dict):
            # Accept NNHandler(Net, model_kwargs={...}) as well as NNHandler(Net, **kwargs).
            model_kwargs = {**model_kwargs.pop("model_kwargs"), **model_kwargs}
        self._model_class = model_class
        self._model_kwargs = dict(model_kwargs)
        self._save_model_code = bool(save_model_code)
        self._model = model_class(**model_kwargs).to(self._device)
        self._state = None
        self._keep_eval = []
        if self._optimizer_spec is not None:
            cls, kwargs = self._optimizer_spec
            self.set_optimizer(cls, **kwargs)
        self._reset_history()
        self._epoch = 0

    def set_optimizer(self, optimizer_class: type[torch.optim.Optimizer], **optimizer_kwargs: Any) -> None:
        """Build `optimizer_class(handler.module.parameters(), **optimizer_kwargs)`."""
        if not (inspect.isclass(optimizer_class) and issubclass(optimizer_class, torch.optim.Optimizer)):
            raise TypeError(
                f"optimizer_class must be a torch.optim.Optimizer subclass, got {optimizer_class!r}; "
                "e.g. handler.set_optimizer(torch.optim.AdamW, lr=1e-3)."
            )
        self._build_optimizer(optimizer_class, optimizer_kwargs)
        ema = self._state.get("ema", None) if self._state is not None else None
        self._state = init_train_state(self.module, self._optimizer)
        if ema is not None:
            self._state["ema"] = ema
        if self._scheduler_spec is not None:
            cls, kwargs, interval = self._scheduler_spec
            self.set_scheduler(cls, interval=interval, **kwargs)

    def _build_optimizer(self, optimizer_class: type[torch.optim.Optimizer], optimizer_kwargs: dict) -> None:
        # The optimizer alone, without its state tensors: `load` fills those from the file
        # (creating zeroed Adam state first would cost a full pass over memory for nothing).
        self._optimizer = optimizer_class(self.module.parameters(), **optimizer_kwargs)
        self._optimizer_spec = (optimizer_class, dict(optimizer_kwargs))

    def set_scheduler(self, scheduler_class: type | None, interval: str = "epoch", **scheduler_kwargs: Any) -> None:
        """Attach an LR scheduler to the optimizer, or remove it with None.

        It steps once per epoch (`ReduceLROnPlateau` on the epoch's validation loss, or the
        training loss when there is no validation), or after every optimizer update with
        `interval="batch"`.
        """
        if scheduler_class is None:
            self._scheduler = None
            self._scheduler_spec = None
            return
        if self._optimizer is None:
            raise RuntimeError(
                "set_scheduler needs an optimizer to act on; call handler.set_optimizer(...) first."
            )
        if interval not in ("epoch", "batch"):
            raise ValueError(f"set_scheduler: interval={interval!r} must be 'epoch' or 'batch'.")
        self._scheduler = scheduler_class(self._optimizer, **scheduler_kwargs)
        self._scheduler_spec = (scheduler_class, dict(scheduler_kwargs), interval)

    def set_loss_fn(self, loss_fn: Callable, pass_epoch_to_loss: bool = False, **kwargs: Any) -> None:
        """Set `loss_fn(output, targets, **kwargs)`; with `pass_epoch_to_loss`, the 0-based
        epoch is passed as `epoch=` when the loss accepts it. A tuple return back-propagates
        its first element."""
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {loss_fn!r}.")
        self._loss_fn = loss_fn
        self._pass_epoch_to_loss = bool(pass_epoch_to_loss)
        self._loss_fn_kwargs = dict(kwargs)
        self._loss_accepts_epoch = _accepts_kwarg(loss_fn, "epoch")

    def set_train_loader(self, dataset: Dataset | DataLoader, **loader_kwargs: Any) -> None:
        """Training data: a Dataset (wrapped in `DataLoader(dataset, **loader_kwargs)`) or a
        ready DataLoader."""
        self._train_loader = self._make_loader("train", dataset, loader_kwargs)

    def set_val_loader(self, dataset: Dataset | DataLoader, **loader_kwargs: Any) -> None:
        """Validation data, as `set_train_loader`."""
        self._val_loader = self._make_loader("val", dataset, loader_kwargs)

    def _make_loader(self, which: str, dataset: Any, loader_kwargs: dict) -> DataLoader:
        if isinstance(dataset, DataLoader):
            if loader_kwargs:
                raise ValueError(
                    f"set_{which}_loader got a ready DataLoader and loader kwargs {sorted(loader_kwargs)}; "
                    "pass either a Dataset with kwargs or the DataLoader alone."
                )
            self._loader_specs[which] = {}
            return dataset
        if not hasattr(dataset, "__getitem__") and not hasattr(dataset, "__iter__"):
            raise TypeError(f"set_{which}_loader expects a Dataset or DataLoader, got {type(dataset).__name__}.")
        self._loader_specs[which] = dict(loader_kwargs)
        return DataLoader(dataset, **loader_kwargs)

    def add_metric(self, name: str, metric_fn: Callable) -> None:
        """Track `metric_fn(output, targets) -> number` per epoch (sample-weighted mean)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"add_metric: name={name!r} must be a non-empty string.")
        if not callable(metric_fn):
            raise TypeError(f"add_metric: metric_fn for {name!r} must be callable.")
        self._metrics[name] = metric_fn
        self._history["train_metrics"].setdefault(name, [float("nan")] * len(self.train_losses))
        self._history["val_metrics"].setdefault(name, [float("nan")] * len(self.val_losses))

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
        self._sde = sde_class(**sde_kwargs)

    def set_sampler(self, sampler_class: type[Sampler] | Sampler, **sampler_kwargs: Any) -> None:
        """Use a custom `Sampler`: a class built with `sampler_kwargs`, or a ready instance."""
        if isinstance(sampler_class, Sampler):
            if sampler_kwargs:
                raise ValueError("set_sampler got an instance and kwargs; pass kwargs only with a class.")
            self.sampler = sampler_class
            return
        if not (inspect.isclass(sampler_class) and issubclass(sampler_class, Sampler)):
            raise TypeError(
                f"set_sampler expects an nnh.Sampler subclass or instance, got {sampler_class!r}."
            )
        self.sampler = sampler_class(**sampler_kwargs)

    def get_samples(self, N: int, device: torch.device | str | None = None) -> Any:
        """`N` samples from the custom sampler, on `device` (default: the handler's)."""
        if self._sampler is None:
            raise RuntimeError("get_samples needs a sampler; call handler.set_sampler(...) first.")
        if not isinstance(N, int) or isinstance(N, bool) or N <= 0:
            raise ValueError(f"get_samples: N={N!r} must be a positive int.")
        if self._rank != 0:
            return None  # sampling runs on rank 0 only
        return self._sampler.sample(N, torch.device(device) if device is not None else self._device)

    def sample(self, *args: Any, N: int | None = None, **kwargs: Any) -> Any:
        """`handler.sample(N=16)` draws from the custom sampler when no SDE is set."""
        if self._sde is None:
            if N is None and args and isinstance(args[0], int):
                N = args[0]
            if N is None:
                raise TypeError("sample: with no SDE set, call handler.sample(N=...) to use the custom sampler.")
            return self.get_samples(N, kwargs.get("device"))
        raise NotImplementedError("SDE sampling is not part of this nnh release.")

    # ------------------------------------------------------------------ training
    def train(self, epochs: int, validate_every: int = 1, gradient_accumulation_steps: int = 1,
              use_amp: bool | str | torch.dtype = False, gradient_clipping_norm: float | None = None,
              ema_decay: float = 0.0, seed: int | None = None, progress_bar: bool = True,
              debug_print_interval: int | None = None, save_on_last_epoch: bool = True,
              epoch_train_and_val_pbar: bool = False, max_nonfinite_steps: int = 10) -> None:
        return _training.train(**{k: v for k, v in locals().items() if k != "self"}, handler=self)

    train.__doc__ = _training.train.__doc__

    def eval(self, activate: bool = True, log: bool = True) -> None:
        """Put the model in eval mode (`activate=True`) or train mode; modules registered with
        `keep_eval_on_module` stay in eval mode either way."""
        self.module.train(not activate)
        self._apply_keep_eval()
        if log:
            self._info(f"Model set to {'eval' if activate else 'train'} mode.")

    def predict(self, data_loader: DataLoader, apply_ema: bool = True) -> list[Any]:
        """Per-batch model outputs (detached) over `data_loader`, with the EMA weights when
        `apply_ema` and an EMA exists. The raw weights are restored afterwards."""
        return _training.predict(self, data_loader, apply_ema)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._model(*args, **kwargs)

    def keep_eval_on_module(self, module: nn.Module, activate: bool = True) -> None:
        """Keep `module` in eval mode (e.g. frozen BatchNorm statistics) even during training;
        `activate=False` unregisters it."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"keep_eval_on_module expects an nn.Module, got {type(module).__name__}.")
        self._keep_eval = [m for m in self._keep_eval if m is not module]
        if activate:
            self._keep_eval.append(module)
            module.eval()

    def _apply_keep_eval(self) -> None:
        for m in self._keep_eval:
            m.eval()

    def freeze_module(self, module: nn.Module, verbose: bool = False) -> None:
        """Set `requires_grad=False` on every parameter of `module`."""
        n = 0
        for p in module.parameters():
            p.requires_grad_(False)
            n += p.numel()
        if verbose:
            self._info(f"Froze {n} parameters of {type(module).__name__}.")

    def count_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad or not trainable_only)

    def compile_model(self, **kwargs: Any) -> None:
        """Run the model through `torch.compile(**kwargs)`. `handler.module` and state_dict
        keys stay those of the plain module."""
        self._model = torch.compile(self.module, **kwargs)

    def ensure_ema(self) -> TensorDict:
        """The EMA weights, created from the current weights if there are none yet."""
        state = self._require_state()
        if "ema" not in state.keys():
            state["ema"] = init_ema(self.module)
        return state["ema"]

    def _require_state(self) -> TensorDict:
        if self._state is None:
            self._state = init_train_state(self.module, self._optimizer)
        return self._state

    def _reset_history(self) -> None:
        self._history: dict[str, Any] = {
            "train_losses": [], "val_losses": [],
            "train_metrics": {name: [] for name in getattr(self, "_metrics", {})},
            "val_metrics": {name: [] for name in getattr(self, "_metrics", {})},
        }

    def _info(self, msg: str) -> None:
        (self._logger or _log).info(msg)


def _accepts_kwarg(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)

