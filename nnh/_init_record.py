"""`RecordsInit`: objects that remember the arguments they were constructed with.

A checkpoint stores such an object as its class's import path, these arguments and its
``state_dict()``, and rebuilds it on load (`nnh.func.checkpoint.encode_value`). Samplers,
callbacks and MCMC schedulers inherit it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RecordsInit", "recorded_init"]


class RecordsInit:
    """Records the constructor arguments of every instance in ``init_args`` and ``init_kwargs``.

    They are recorded in ``__new__``, so a subclass need not call ``super().__init__``. A
    subclass may convert each recorded value by overriding the class method
    `_recorded_value` (callbacks keep a path object as its ``str``).
    """

    init_args: tuple
    init_kwargs: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__new__(cls)
        obj.init_args = tuple(cls._recorded_value(a) for a in args)
        obj.init_kwargs = {k: cls._recorded_value(v) for k, v in kwargs.items()}
        return obj

    @classmethod
    def _recorded_value(cls, value: Any) -> Any:
        """How a constructor argument is recorded; by default as it is."""
        return value


def recorded_init(obj: Any) -> tuple[tuple, dict[str, Any]] | None:
    """``(args, kwargs)`` that rebuild ``obj`` with its class, or None if it records none.

    Besides `RecordsInit` instances this accepts any object with a dict ``init_kwargs``
    attribute (and optional ``init_args``) set by hand.
    """
    if isinstance(obj, type):
        return None
    if isinstance(obj, RecordsInit):
        return obj.init_args, obj.init_kwargs
    kwargs = getattr(obj, "init_kwargs", None)
    if isinstance(kwargs, dict):
        return tuple(getattr(obj, "init_args", ())), kwargs
    return None
