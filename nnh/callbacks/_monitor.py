"""Reading and comparing a monitored log value (shared by ModelCheckpoint and EarlyStopping)."""

from __future__ import annotations

import math
from typing import Any

_MODES = ("min", "max")


def check_mode(owner: str, mode: Any) -> str:
    """`mode` if it is 'min' or 'max', else a ValueError naming `owner`."""
    if mode not in _MODES:
        raise ValueError(f"{owner}: mode={mode!r}; use 'min' (lower is better, e.g. a loss) "
                         "or 'max' (higher is better, e.g. an accuracy).")
    return mode


def worst(mode: str) -> float:
    """The starting `best`: any finite value improves on it."""
    return math.inf if mode == "min" else -math.inf


def monitored_value(owner: str, monitor: str, logs: dict[str, Any]) -> float:
    """``float(logs[monitor])``; a missing key raises naming the keys the logs do have."""
    if monitor not in logs:
        raise KeyError(
            f"{owner}: monitor={monitor!r} is not in the epoch logs, whose keys are {sorted(logs)}; "
            "pick one of them (metrics appear as '<name>' and 'val_<name>' after handler.add_metric)."
        )
    return float(logs[monitor])  # one host read per epoch


def improves(current: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `current` beats `best` by more than `min_delta` (>= 0) in direction `mode`.

    NaN (an epoch without validation) never improves.
    """
    if math.isnan(current):
        return False
    if mode == "min":
        return current < best - min_delta
    return current > best + min_delta
