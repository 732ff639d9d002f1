"""Batches for the training loops: how a batch splits into inputs and targets, how it reaches
the device, and the epoch sums that are read on the host once per progress-bar refresh."""

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


class EpochSums:
    """Sample-weighted sums of the loss and the metrics over an epoch.

    `add` only keeps the batch's device tensors; `flush` reads everything added since the
    last flush in one host transfer (the loop's only host read of the loss: once per
    progress-bar refresh and at the epoch's end). A batch flagged non-finite counts in
    neither the loss nor the metrics. `flush` returns, for each batch added with a `report`
    flag (by default its non-finite flag), whether that flag was set.

    Under torch.distributed each rank sums its own batches; `totals` and `set_totals` carry
    the sums through the epoch's one all-reduce.
    """

    def __init__(self, metric_names: Any = ()) -> None:
        self.names = list(metric_names)
        self.total = 0.0
        self.count = 0
        self.metric_totals = {name: 0.0 for name in self.names}
        self.metric_counts = {name: 0 for name in self.names}
        self._pending: list[tuple[int, int, Tensor, Tensor | None, Tensor | None, list[Any]]] = []

    def add(self, index: int, loss: Tensor, n: int, nonfinite: Tensor | None, metric_values: list[Any],
            report: Tensor | None | bool = True) -> None:
        """`report`: True reports `nonfinite`, None reports nothing, a tensor reports itself."""
        self._pending.append((index, n, loss, nonfinite, nonfinite if report is True else report, metric_values))

    def flush(self) -> list[tuple[int, bool]]:
        """Fold the pending batches into the sums; return (index, flag) per reporting batch, in order."""
        if not self._pending:
            return []
        values = []
        zero = torch.zeros((), dtype=torch.float32, device=self._pending[0][2].device)
        for _, _, loss, flag, report, metrics in self._pending:
            values.append(loss.detach().float().reshape(()))
            values.append(flag.float().reshape(()) if flag is not None else zero)
            values.append(values[-1] if report is flag else report.float().reshape(()) if report is not None else zero)
            values.extend(torch.as_tensor(v, dtype=torch.float32, device=loss.device).detach().reshape(())
                          for v in metrics)
        read = torch.stack(values).tolist()  # the host read
        width = 3 + len(self.names)
        flags = []
        for j, (index, n, _, _, report, metrics) in enumerate(self._pending):
            row = read[j * width:(j + 1) * width]
            if report is not None:
                flags.append((index, bool(row[2])))
            if row[1]:
                continue
            self.total += row[0] * n
            self.count += n
            for name, v in zip(self.names, row[3:3 + len(metrics)]):
                self.metric_totals[name] += v * n
                self.metric_counts[name] += n
        self._pending = []
        return flags

    def loss(self) -> float:
        return self.total / self.count if self.count else math.nan

    def metric(self, name: str) -> float:
        count = self.metric_counts[name]
        return self.metric_totals[name] / count if count else math.nan

    def state(self) -> dict[str, Any]:
        """The flushed sums, as plain values (a mid-epoch checkpoint keeps them)."""
        return {"loss": {"total": self.total, "count": self.count},
                "metrics": {name: {"total": self.metric_totals[name], "count": self.metric_counts[name]}
                            for name in self.names}}

    def totals(self) -> list[float]:
        """The flushed sums as one list (loss total and count, then each metric's)."""
        return [self.total, self.count, *(x for name in self.names
                                          for x in (self.metric_totals[name], self.metric_counts[name]))]

    def set_totals(self, values: list[float]) -> None:
        """Set the sums from a list laid out as `totals` returns it (e.g. summed over ranks)."""
        self.total, self.count = values[0], int(values[1])
        for j, name in enumerate(self.names):
            self.metric_totals[name], self.metric_counts[name] = values[2 + 2 * j], int(values[3 + 2 * j])

    def load(self, state: dict[str, Any]) -> None:
        self.total, self.count = float(state["loss"]["total"]), int(state["loss"]["count"])
        for name, saved in state["metrics"].items():
            if name in self.metric_totals:
                self.metric_totals[name], self.metric_counts[name] = float(saved["total"]), int(saved["count"])


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
