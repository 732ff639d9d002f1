"""`GarbageCollector`: run Python's garbage collector (and free cached CUDA memory) every n epochs."""

from __future__ import annotations

import gc
from typing import Any

import torch

from nnh.callbacks.base import Callback

__all__ = ["GarbageCollector"]


class GarbageCollector(Callback):
    """At the end of every `every_n_epochs`-th epoch (1-based count), call `gc.collect()`, and
    `torch.cuda.empty_cache()` when CUDA is available.

    Useful when reference cycles (e.g. in custom losses or samplers) keep tensors alive
    between epochs, or when another process shares the GPU: `empty_cache` returns memory that
    PyTorch's caching allocator holds but no tensor uses. It does not make more memory
    available to this process, and each call costs time, so keep `every_n_epochs` moderate.

    Args:
        every_n_epochs: collect at epochs whose 1-based number is a multiple of this.
    """

    def __init__(self, every_n_epochs: int) -> None:
        if not isinstance(every_n_epochs, int) or isinstance(every_n_epochs, bool) or every_n_epochs < 1:
            raise ValueError(f"GarbageCollector: every_n_epochs={every_n_epochs!r} must be an int >= 1, "
                             "e.g. GarbageCollector(every_n_epochs=5).")
        self.every_n_epochs = every_n_epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
