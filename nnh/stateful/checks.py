"""Early checks of the handler's constructor and setter arguments: each names the argument,
the value and the fix, before anything is built or changed."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["check_device", "check_logger_level", "check_flag", "build_optimizer_checked",
           "check_scheduler_class", "check_loss_fn", "check_dataset", "check_path", "check_module"]


def check_device(device: Any, owner: str = "NNHandler") -> torch.device:
    """`device` as a torch.device that this machine has; errors start with `owner`."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise TypeError(f"{owner}: device={device!r} must be a str, a torch.device or a CUDA index, e.g. 'cpu' or "
                        "'cuda:0'.")
    if isinstance(device, int) and device < 0:
        raise ValueError(f"{owner}: device={device} is not a CUDA index; use an int >= 0, 'cpu' or 'cuda:0'.")
    try:
        dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"{owner}: device={device!r} is not a device name ({exc}); use 'cpu', 'cuda' or "
                         "'cuda:0'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{owner}: device={device!r} but CUDA is not available on this machine; use "
                         "device='cpu'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{owner}: device={device!r} but this machine has {torch.cuda.device_count()} CUDA "
                         "device(s).")
    return dev


def check_logger_level(level: Any) -> int:
    """A logging level: an int, or a level name such as "INFO"."""
    if isinstance(level, str) and isinstance(logging.getLevelName(level.upper()), int):
        return logging.getLevelName(level.upper())
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    raise ValueError(f"NNHandler: logger_level={level!r} is not a logging level; use logging.INFO, logging.DEBUG "
                     "or a name such as 'INFO'.")


def check_flag(owner: str, name: str, value: Any, allow_none: bool = False) -> None:
    """A bool (a truthy string such as "no" would otherwise count as True)."""
    if not (isinstance(value, bool) or (allow_none and value is None)):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{owner}: {name}={value!r} must be {allowed}.")


def build_optimizer_checked(optimizer_class: Any, build: Callable[[], None], kwargs: dict[str, Any]) -> None:
    """Run `build` (which constructs the optimizer); a constructor error names the class and kwargs."""
    if not (inspect.isclass(optimizer_class) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise TypeError(f"optimizer_class must be a torch.optim.Optimizer subclass, got {optimizer_class!r}; "
                        "e.g. handler.set_optimizer(torch.optim.AdamW, lr=1e-3).")
    try:
        build()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"set_optimizer: {optimizer_class.__name__}(params, **{kwargs!r}) was refused: {exc}. "
                         "Check the keyword names and values (e.g. lr=1e-3).") from exc


def check_scheduler_class(scheduler_class: Any) -> None:
    """An LR scheduler class (`torch.optim.lr_scheduler.*`), not a name or an instance."""
    if scheduler_class is None:
        return
    bases = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if not (inspect.isclass(scheduler_class) and issubclass(scheduler_class, bases)):
        hint = " (an instance: pass its class and kwargs)" if isinstance(scheduler_class, bases) else ""
        raise TypeError(f"set_scheduler: scheduler_class={scheduler_class!r} must be an LR scheduler class{hint}, "
                        "e.g. handler.set_scheduler(torch.optim.lr_scheduler.StepLR, step_size=10).")


def check_loss_fn(loss_fn: Any, kwargs: dict[str, Any]) -> None:
    """A callable `loss_fn(output, targets, **kwargs)` that accepts `kwargs`."""
    if inspect.isclass(loss_fn) and issubclass(loss_fn, nn.Module):
        raise TypeError(f"set_loss_fn: got the class {loss_fn.__name__}; pass an instance, "
                        f"e.g. handler.set_loss_fn({loss_fn.__name__}()).")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}.")
    try:
        signature = inspect.signature(loss_fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: checked at the first batch
    try:
        signature.bind_partial(None, None, **kwargs)
    except TypeError as exc:
        raise TypeError(f"set_loss_fn: {getattr(loss_fn, '__name__', loss_fn)!r} does not accept the keyword "
                        f"arguments {sorted(kwargs)} ({exc}); pass only arguments of loss_fn(output, targets, ...).") from None


def check_dataset(which: str, dataset: Any) -> None:
    """A Dataset or DataLoader, not a plain list, string or dict."""
    if isinstance(dataset, (str, bytes, dict, list, tuple)):
        raise TypeError(f"set_{which}_loader: got a {type(dataset).__name__}; pass a torch Dataset or DataLoader, "
                        "e.g. torch.utils.data.TensorDataset(x, y).")


def check_path(owner: str, name: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{owner}: {name}={value!r} must be a path (str or os.PathLike), e.g. 'checkpoints'.")
    return os.fspath(value)


def check_module(owner: str, module: Any) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{owner} expects an nn.Module (e.g. handler.module.encoder), got {module!r}.")
