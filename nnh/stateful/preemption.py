"""Preemption: SIGTERM or SIGUSR1 during `train` ends it at a safe point with a checkpoint."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Callable, Iterator

__all__ = ["Preemption"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


class Preemption:
    """The signal flag, and where the preemption checkpoint goes (`path`, default
    ``preempted.pth`` in the auto-save folder)."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.requested = False

    def target(self, save_folder: str) -> str:
        return self.path or os.path.join(save_folder, "preempted.pth")

    def save(self, save: Callable[[str], None], save_folder: str, log: Callable[[str], None], where: str) -> None:
        """Write the preemption checkpoint (the one place it is written)."""
        target = self.target(save_folder)
        save(target)
        log(f"Preemption signal received: saved {target}{where} and stopped.")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Catch the preemption signals for the duration (the previous handlers come back)."""
        self.requested = False
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return

        def on_signal(signum: int, frame: Any) -> None:
            self.requested = True

        previous = {s: signal.signal(s, on_signal) for s in _SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
