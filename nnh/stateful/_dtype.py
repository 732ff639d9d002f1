"""The dtype of a sampler's chains or a loss's computation when the constructor is given none."""

from __future__ import annotations

from itertools import chain
from typing import Any

import torch
from torch import nn

__all__ = ["resolve_dtype"]


def resolve_dtype(owner: str, dtype: torch.dtype | None, model: Any) -> torch.dtype:
    """``dtype`` when given, else the model's: ``model.dtype`` when it is a floating torch.dtype
    (`nnh.BaseModel` has one), else that of the first floating parameter or buffer of an
    ``nn.Module``, else ``torch.get_default_dtype()`` (a plain callable, a module without tensors).

    Read once, at construction: a float64 module gets float64 chains whatever the default dtype,
    and a float32 model gets float32 ones, as before. A non-floating ``dtype`` raises ValueError.
    """
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(
                f"{owner}: dtype must be a floating torch.dtype, or None for the model's, got {dtype!r}."
            )
        return dtype
    own = getattr(model, "dtype", None)
    if isinstance(own, torch.dtype) and own.is_floating_point:
        return own
    if isinstance(model, nn.Module):
        for tensor in chain(model.parameters(), model.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.get_default_dtype()
