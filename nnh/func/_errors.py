"""The error every failure to read or fit a checkpoint raises."""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or does not fit what it is loaded into."""
