"""Batches and running means for the training loops: how a batch splits into inputs and
targets, how it reaches the device, and sample-weighted epoch means."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

_INPUT_KEYS = ("inputs", "input", "x")
_TARGET_KEYS = ("targets", "target", "y", "labels", "label")


def unpack_batch(batch: Any) -> tuple[Any, Any, tuple, dict]:
    """Split a batch into (inputs, targets or None, extra positional args, extra kwargs).

    A tensor is inputs alone; a tuple/list is (inputs, targets, *extra); a dict takes its
    inputs from "inputs"/"input"/"x", its targets from "targets"/"target"/"y"/"labels"/"label",
    and passes every other key to the model as a keyword argument.
    """
    if isinstance(batch, Tensor):
        return batch, None, (), {}
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError("NNHandler: got an empty batch; a batch is (inputs, targets, *extra) or a dict.")
        return batch[0], (batch[1] if len(batch) > 1 else None), tuple(batch[2:]), {}
    if isinstance(batch, dict):
        key_in = next((k for k in _INPUT_KEYS if k in batch), None)
        if key_in is None:
            raise KeyError(f"NNHandler: a dict batch needs an inputs key, one of {_INPUT_KEYS}; got {sorted(batch)}.")
        key_t = next((k for k in _TARGET_KEYS if k in batch), None)
        extra = {k: v for k, v in batch.items() if k not in (key_in, key_t)}
        return batch[key_in], (batch[key_t] if key_t else None), (), extra
    raise TypeError(f"NNHandler: unsupported batch type {type(batch).__name__}; use a tensor, tuple or dict.")


class Mean:
    """Sample-weighted running mean; tensor values stay on their device until `result`."""

    def __init__(self) -> None:
        self.total: Any = 0.0
        self.count = 0

    def add(self, value: Any, n: int) -> None:
        if isinstance(value, Tensor):
            value = value.detach().float()
        self.total = self.total + value * n
        self.count += n

    def state(self) -> dict[str, Any]:
        total = self.total.detach().clone() if isinstance(self.total, Tensor) else float(self.total)
        return {"total": total, "count": self.count}

    def load(self, state: dict[str, Any]) -> None:
        self.total, self.count = state["total"], state["count"]

    def result(self) -> float:
        if self.count == 0:
            return math.nan
        total = self.total.item() if isinstance(self.total, Tensor) else float(self.total)
        return total / self.count


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def len_or_none(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None
