"""`AutoSaver`: the end-of-epoch saves of `NNHandler.train` (they write through `save`)."""

from __future__ import annotations

import os
import shutil
import string
from typing import Any, Callable, Iterable

__all__ = ["AutoSaver"]


class AutoSaver:
    """Saves at every 1-based epoch that is a multiple of `interval`, and at the last epoch
    of each `train` call when `save_on_last_epoch` is set; `interval=-1` saves only at the
    end; None is off. `name` is formatted with `epoch` (1-based) and the epoch's logs;
    ``.pth`` is added when missing. `overwrite=True` keeps only the latest auto-save (the
    previous file is removed after the new one is safely written; the file the handler was
    loaded from, `loaded_from`, is never removed)."""

    def __init__(self) -> None:
        self.interval: int | None = None
        self.save_path = "."
        self.name = "model_epoch{epoch:02d}"
        self.overwrite = False
        self.last_saved: str | None = None
        self.loaded_from: str | None = None

    def configure(self, interval: int | None, save_path: Any, name: str, overwrite: bool,
                  log_keys: set[str], float_keys: Iterable[str]) -> None:
        if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)
                                     or interval == 0 or interval < -1):
            raise ValueError(f"auto_save: interval={interval!r} must be a positive int, -1 (only at the end) or None (off).")
        if not isinstance(save_path, (str, os.PathLike)):
            raise TypeError(f"auto_save: save_path={save_path!r} must be a folder path (str or os.PathLike).")
        check_name(name, log_keys, float_keys)
        self.interval, self.save_path, self.name, self.overwrite = interval, os.fspath(save_path), name, bool(overwrite)

    def state_dict(self) -> dict[str, Any]:
        return {"interval": self.interval, "save_path": self.save_path, "name": self.name, "overwrite": self.overwrite}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.interval, self.save_path = state["interval"], state["save_path"]
        self.name, self.overwrite = state["name"], state["overwrite"]

    def due(self, epoch: int, last: bool, save_on_last_epoch: bool) -> bool:
        """Whether epoch `epoch` (0-based) ends with an auto-save."""
        if self.interval is None:
            return False
        return (self.interval > 0 and (epoch + 1) % self.interval == 0) or (
            last and (save_on_last_epoch or self.interval == -1))

    def save_now(self, epoch: int, logs: dict[str, Any], save: Callable[[str], None], main: bool = True) -> None:
        """Save through `save` (under torch.distributed every rank calls this: `save` is
        collective); only the `main` process removes the previous auto-save."""
        filename = self.name.format(**{**logs, "epoch": epoch + 1})
        if not filename.endswith(".pth"):
            filename += ".pth"
        path = os.path.join(self.save_path, filename)
        save(path)
        previous = self.last_saved
        # The new file is complete (atomic_save) before the previous one goes.
        if (main and self.overwrite and previous and os.path.abspath(previous) != os.path.abspath(path)
                and not (self.loaded_from and os.path.abspath(previous) == os.path.abspath(self.loaded_from))
                and os.path.exists(previous)):
            shutil.rmtree(previous) if os.path.isdir(previous) else os.remove(previous)  # FSDP: a folder
        # Only files written with overwrite on are candidates for removal later: turning it on
        # mid-run must not delete an auto-save that was meant to stay.
        self.last_saved = path if self.overwrite else None


def log_keys(metrics: Iterable[str], callbacks: Iterable[Any]) -> tuple[set[str], set[str]]:
    """(every key the epoch logs can hold, the keys that are floats) for these metrics and
    callbacks (a callback lists the keys it adds in `log_keys`)."""
    floats = {"loss", "val_loss", "lr", *metrics, *(f"val_{m}" for m in metrics)}
    keys = {"epoch", *floats}
    for cb in callbacks:
        keys |= set(getattr(cb, "log_keys", ()))
    return keys, floats


def check_name(name: Any, log_keys: set[str], float_keys: Iterable[str]) -> None:
    """Refuse an auto-save name that the epoch logs can never format."""
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
    unknown = sorted(keys - log_keys)
    if unknown:
        raise ValueError(
            f"auto_save: name={name!r} uses {unknown}, which the epoch logs will never hold; "
            f"available keys: {sorted(log_keys)} (add metrics before calling auto_save)."
        )
    # A bad format spec ("{loss:d}") fails now rather than at the first save. Losses,
    # metrics and lr are floats; keys that callbacks add may be anything.
    floats = set(float_keys)
    sample = {k: (0.0 if k in floats else _AnyFormat()) for k in log_keys}
    try:
        name.format(**{**sample, "epoch": 1})
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"auto_save: name={name!r} cannot be formatted with the epoch logs "
                         f"(epoch is an int, the other keys floats): {exc}.") from None


class _AnyFormat:
    """Stands in for a log value of unknown type when `auto_save` checks a name."""

    def __format__(self, spec: str) -> str:
        return ""

    def __getattr__(self, name: str) -> "_AnyFormat":
        return self

    def __getitem__(self, key: Any) -> "_AnyFormat":
        return self
