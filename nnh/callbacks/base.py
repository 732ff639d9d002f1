"""The `Callback` base class: hooks that `NNHandler.train` calls, state that checkpoints keep."""

from __future__ import annotations

import logging
import os
from typing import Any

from nnh._init_record import RecordsInit

__all__ = ["Callback"]

_log = logging.getLogger("nnh.callbacks")


class Callback(RecordsInit):
    """Base class of every callback; each hook does nothing unless a subclass overrides it.

    `NNHandler.train` calls the hooks in the order written once, in the docstring of
    `nnh.stateful.loop.fit` (`epoch` is the 0-based global epoch, `batch` the 0-based index
    within the epoch; callbacks run in the order they were added).

    The epoch-end `logs` dict is the same object for every callback, so a callback may add
    keys that later callbacks and the history see; it lists them in `log_keys` so that
    `NNHandler.auto_save` accepts names that use them. A callback stops training by setting
    ``self.handler.stop_training = True``. An exception raised in a hook propagates out of
    `train`.

    Attributes:
        handler: the `NNHandler` this callback was added to (`set_handler`), None before.
        init_args, init_kwargs: the arguments the callback was constructed with. A handler
            checkpoint stores them with the class's import path and `state_dict()`, and
            `NNHandler.load` rebuilds the callback from them, so constructor arguments must be
            plain values (numbers, strings, bools, None, lists/dicts of them); path objects
            are recorded as strings. Recorded by `nnh._init_record.RecordsInit`, so a
            subclass need not call ``super().__init__``.
    """

    log_keys: tuple[str, ...] = ()

    handler: Any = None

    @classmethod
    def _recorded_value(cls, value: Any) -> Any:
        # Checkpoints store constructor arguments as plain values; a path object is kept as its str.
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    def set_handler(self, handler: Any) -> None:
        """Attach to `handler`; `NNHandler.add_callback` calls this."""
        self.handler = handler

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs: rank 0 under torch.distributed (every
        rank runs every hook, with the same epoch logs), always in one process."""
        runtime = getattr(self.handler, "runtime", None)
        return runtime is None or runtime.is_main

    def _on_main(self, fn: Any) -> Any:
        """`fn()` on rank 0 while the other ranks wait (a raise there is raised everywhere);
        simply `fn()` in one process."""
        runtime = getattr(self.handler, "runtime", None)
        return fn() if runtime is None else runtime.on_main(fn)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The callback's state: tensors and plain Python values only (a checkpoint is read with
        ``torch.load(weights_only=True)``). The base class has none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned. A subclass with state overrides both."""
        if state:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: got state with keys {sorted(state)}, but the "
                "class keeps no state; override load_state_dict next to state_dict."
            )

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        """Start of `train`; logs: ``{"epochs": epochs of this call, "start_epoch": first epoch}``."""

    def on_train_end(self, logs: dict[str, Any]) -> None:
        """End of `train`; logs: the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        """Start of epoch `epoch` (0-based, counting across `train` calls); logs: ``{}``."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """End of epoch `epoch`; logs: epoch, loss, val_loss (NaN without validation), metrics,
        val_metrics, lr, and whatever earlier callbacks added."""

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any]) -> None:
        """Before training batch `batch` (0-based within the epoch); logs: ``{"size": n}``."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        """After training batch `batch`; logs: ``{"loss": 0-d detached tensor, "size": n}``.
        Reading the loss (``float(loss)``) waits for the device; avoid it on every batch."""

    def on_val_begin(self, logs: dict[str, Any]) -> None:
        """Start of validation; logs: ``{}``."""

    def on_val_end(self, logs: dict[str, Any]) -> None:
        """End of validation; logs: ``{"val_loss": float, "val_<metric>": float, ...}``."""

    def on_val_batch_begin(self, batch: int, logs: dict[str, Any]) -> None:
        """Before validation batch `batch`; logs: ``{"size": n}``."""

    def on_val_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        """After validation batch `batch`; logs: ``{"val_loss": 0-d tensor, "size": n}``."""

    # ------------------------------------------------------------------ helpers
    def _info(self, msg: str) -> None:
        # The handler's logger when it has one, else the "nnh.callbacks" logger; never print.
        if self.is_main:
            (getattr(self.handler, "logger", None) or _log).info(msg)

    def __repr__(self) -> str:
        args = [repr(a) for a in self.init_args] + [f"{k}={v!r}" for k, v in self.init_kwargs.items()]
        return f"{type(self).__name__}({', '.join(args)})"
