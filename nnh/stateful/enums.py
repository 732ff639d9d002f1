"""Enumerations used by `NNHandler`."""

from __future__ import annotations

from enum import Enum

__all__ = ["ModelType", "LoggingMode"]


class _FromString(Enum):
    @classmethod
    def from_string(cls, s: "str | _FromString"):
        """Parse a member from its value or name, case-insensitively."""
        if isinstance(s, cls):
            return s
        if not isinstance(s, str):
            raise TypeError(
                f"{cls.__name__} expects a string or a {cls.__name__} member, got {s!r} "
                f"of type {type(s).__name__}."
            )
        key = s.strip().lower()
        for member in cls:
            if key in (member.value, member.name.lower()):
                return member
        valid = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"Unknown {cls.__name__} {s!r}; valid values are {valid}.")


class ModelType(_FromString):
    """The kind of task a model solves; it decides how batches reach the loss."""

    CLASSIFICATION = "classification"
    GENERATIVE = "generative"
    REGRESSION = "regression"
    SCORE_BASED = "score_based"


class LoggingMode(_FromString):
    """Where the handler's logger writes."""

    CONSOLE = "console"
    FILE = "file"
    BOTH = "both"
