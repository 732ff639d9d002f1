"""The AutoSaver and preemption saves of `NNHandler` (both write through `save`)."""

from __future__ import annotations

import contextlib
import os
import signal
import string
import threading
from typing import Any, Iterator

_PREEMPTION_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


class AutoSaveMixin:
    """`auto_save` and its properties, the end-of-epoch saves, and the preemption signals.

    The state (`_auto`, `_last_auto_saved`, `_loaded_from`, `_preempted`,
    `_preemption_path`) is set up by `PersistenceMixin._init_persistence`.
    """

    # ------------------------------------------------------------------ AutoSaver
    def auto_save(self, interval: int | None, save_path: str = ".", name: str = "model_epoch{epoch:02d}",
                  overwrite: bool = False) -> None:
        """Save the whole handler during `train`.

        It saves at every 1-based epoch that is a multiple of `interval`, and at the last
        epoch of each `train` call when `save_on_last_epoch` is set; `interval=-1` saves only
        at the end; None turns auto-saving off. `name` is formatted with `epoch` (1-based)
        and the epoch's logs (e.g. ``"ckpt_{epoch:03d}_{val_loss:.3f}"``); ``.pth`` is added
        when missing. `overwrite=True` keeps only the latest auto-save (the previous file is
        removed after the new one is safely written; the file the handler was loaded from
        is never removed).
        """
        if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)
                                     or interval == 0 or interval < -1):
            raise ValueError(f"auto_save: interval={interval!r} must be a positive int, -1 (only at the end) or None (off).")
        self._check_name_keys(name)
        self._auto = {"interval": interval, "save_path": os.fspath(save_path), "name": name, "overwrite": bool(overwrite)}

    def _log_keys(self) -> set[str]:
        keys = {"epoch", "loss", "val_loss", "lr"}
        for metric in self._metrics:
            keys |= {metric, f"val_{metric}"}
        for cb in self._callbacks:
            keys |= set(getattr(cb, "log_keys", ()))
        return keys

    def _check_name_keys(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"auto_save: name={name!r} must be a non-empty format string.")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(name) if f is not None]
        except ValueError as exc:
            raise ValueError(f"auto_save: name={name!r} is not a valid format string ({exc}).") from None
        keys = {f.split(".")[0].split("[")[0] for f in fields}
        if any(not k or k.isdigit() for k in keys):
            raise ValueError(f"auto_save: name={name!r} has a positional field ({{}} or {{0}}); name the "
                             "field after a log key, e.g. 'model_epoch{epoch:02d}'.")
        unknown = sorted(keys - self._log_keys())
        if unknown:
            raise ValueError(
                f"auto_save: name={name!r} uses {unknown}, which the epoch logs will never hold; "
                f"available keys: {sorted(self._log_keys())} (add metrics before calling auto_save)."
            )
        # A bad format spec ("{loss:d}") fails now rather than at the first save. Losses,
        # metrics and lr are floats; keys that callbacks add may be anything.
        floats = {"loss", "val_loss", "lr", *self._metrics, *(f"val_{m}" for m in self._metrics)}
        sample = {k: (0.0 if k in floats else _AnyFormat()) for k in self._log_keys()}
        try:
            name.format(**{**sample, "epoch": 1})
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"auto_save: name={name!r} cannot be formatted with the epoch logs "
                             f"(epoch is an int, the other keys floats): {exc}.") from None

    save_interval = property(lambda self: self._auto["interval"],
                             lambda self, v: self.auto_save(v, self._auto["save_path"], self._auto["name"], self._auto["overwrite"]))
    save_path = property(lambda self: self._auto["save_path"],
                         lambda self, v: self._auto.__setitem__("save_path", os.fspath(v)))
    save_model_name = property(lambda self: self._auto["name"],
                               lambda self, v: (self._check_name_keys(v), self._auto.__setitem__("name", v)))
    overwrite_last_saved = property(lambda self: self._auto["overwrite"],
                                    lambda self, v: self._auto.__setitem__("overwrite", bool(v)))

    def _after_epoch(self, epoch: int, logs: dict, last: bool, save_on_last_epoch: bool) -> None:
        interval = self._auto["interval"]
        if self._preempted:
            # An auto-save due by the interval still happens; the preemption checkpoint is the
            # one to resume from.
            if interval is not None and interval > 0 and (epoch + 1) % interval == 0:
                self._auto_save_now(epoch, logs)
            self.save(self._preemption_target())
            self._info(f"Preemption signal received: saved {self._preemption_target()} and stopped.")
            return
        if interval is None:
            return
        due = (interval > 0 and (epoch + 1) % interval == 0) or (last and (save_on_last_epoch or interval == -1))
        if due:
            self._auto_save_now(epoch, logs)

    def _auto_save_now(self, epoch: int, logs: dict) -> None:
        filename = self._auto["name"].format(**{**logs, "epoch": epoch + 1})
        if not filename.endswith(".pth"):
            filename += ".pth"
        path = os.path.join(self._auto["save_path"], filename)
        self.save(path)
        previous = self._last_auto_saved
        # The new file is complete (atomic_save) before the previous one goes.
        if (self._auto["overwrite"] and previous and os.path.abspath(previous) != os.path.abspath(path)
                and not (self._loaded_from and os.path.abspath(previous) == os.path.abspath(self._loaded_from))
                and os.path.exists(previous)):
            os.remove(previous)
        # Only files written with overwrite on are candidates for removal later: turning it on
        # mid-run must not delete an auto-save that was meant to stay.
        self._last_auto_saved = path if self._auto["overwrite"] else None

    # ------------------------------------------------------------------ preemption
    def set_preemption_checkpoint(self, path: str | None) -> None:
        """Where `train` saves when SIGTERM or SIGUSR1 arrives (default: `preempted.pth` in the
        auto-save folder). On such a signal, training finishes the current optimizer step,
        saves there, and `train` returns; `NNHandler.load` of that file resumes exactly,
        in the middle of the epoch."""
        self._preemption_path = None if path is None else os.fspath(path)

    def _preemption_target(self) -> str:
        return self._preemption_path or os.path.join(self._auto["save_path"], "preempted.pth")

    @contextlib.contextmanager
    def _preemption_guard(self) -> Iterator[None]:
        self._preempted = False
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return

        def on_signal(signum: int, frame: Any) -> None:
            self._preempted = True

        previous = {s: signal.signal(s, on_signal) for s in _PREEMPTION_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class _AnyFormat:
    """Stands in for a log value of unknown type when `auto_save` checks a name."""

    def __format__(self, spec: str) -> str:
        return ""

    def __getattr__(self, name: str) -> "_AnyFormat":
        return self

    def __getitem__(self, key: Any) -> "_AnyFormat":
        return self
