"""`CSVLogger`: one CSV row per epoch with every key of the epoch logs."""

from __future__ import annotations

import csv
import os
from typing import Any

import torch

from nnh.callbacks.base import Callback
from nnh.func.checkpoint import atomic_write

__all__ = ["CSVLogger"]


class CSVLogger(Callback):
    """Write one row per epoch to the CSV file `path`, with a column for every epoch-log key.

    Columns follow the order in which keys first appear (``epoch`` first, 0-based as in the
    logs); floats are written with full precision, NaN as ``nan``. The row is written when
    this callback's `on_epoch_end` runs, so it holds the keys of the callbacks added before
    it (add `EpochTimer` and `LearningRateMonitor` first).

    How the file evolves:

    - A run that starts at epoch 0 begins a new file (an existing one is replaced when the
      first row is written).
    - A resumed run (`NNHandler.load`, or a second `train` call) appends to the file; rows of
      epochs at or after the resumed start epoch (written after the checkpoint that was
      loaded) are dropped first, so every epoch has exactly one row. The header is written
      once.
    - A key that appears in a later epoch widens the header: the file is rewritten
      (atomically) with the new column, left empty in the earlier rows. A key missing from a
      row leaves its cell empty. The file is thus always a valid CSV with one header.

    Under torch.distributed rank 0 writes the file (the logs are the same on every rank).

    Args:
        path: the CSV file; its folder is created as needed.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = os.fspath(path) if isinstance(path, os.PathLike) else path
        if not isinstance(path, str) or not path:
            raise ValueError(f"CSVLogger: path={path!r} must be a non-empty file path, e.g. 'logs/history.csv'.")
        self.path = path
        self._fieldnames: list[str] | None = None  # None: the next row starts a new file

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        start = int(logs.get("start_epoch", 0))
        self._fieldnames = None
        if not self.is_main or start == 0 or not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return
        fieldnames, rows = self._read()
        if "epoch" not in fieldnames:
            raise ValueError(f"CSVLogger: {self.path!r} has no 'epoch' column (header {fieldnames}), so "
                             "CSVLogger did not write it and cannot resume it; pass another path or move the file.")
        kept = [row for row in rows if not _epoch_at_or_after(row, start)]
        if len(kept) != len(rows):
            self._rewrite(fieldnames, kept)
        self._fieldnames = fieldnames

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if not self.is_main:
            return
        row = {key: _cell(value) for key, value in logs.items()}
        if self._fieldnames is None or not os.path.exists(self.path):
            self._fieldnames = list(row)
            self._rewrite(self._fieldnames, [row])
            return
        new_keys = [key for key in row if key not in self._fieldnames]
        if new_keys:
            _, rows = self._read()
            self._fieldnames = self._fieldnames + new_keys
            self._rewrite(self._fieldnames, rows + [row])
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fieldnames, restval="").writerow(row)

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows

    def _rewrite(self, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
        # Atomically, so a crash never leaves a half-written log.
        def write(f: Any) -> None:
            writer = csv.DictWriter(f, fieldnames=fieldnames, restval="")
            writer.writeheader()
            writer.writerows(rows)

        atomic_write(self.path, write, text=True)


def _cell(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _epoch_at_or_after(row: dict[str, str], start: int) -> bool:
    try:
        return int(float(row["epoch"])) >= start
    except (TypeError, ValueError):
        return False
