"""Checks of `NNHandler.train`'s arguments, run before any work starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nnh.stateful.enums import ModelType

if TYPE_CHECKING:
    from nnh.stateful.handler import NNHandler


def amp_dtype_of(use_amp: bool | str | torch.dtype, device: torch.device) -> torch.dtype | None:
    if use_amp is False or use_amp is None:
        return None
    if use_amp is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    dtype = names.get(use_amp, use_amp) if isinstance(use_amp, str) else use_amp
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"train: use_amp={use_amp!r}; use True, False, 'bf16' or 'fp16'.")
    return dtype


def check_train_args(handler: "NNHandler", epochs: Any, validate_every: Any, k: Any, clip: Any,
                      ema_decay: Any, max_nonfinite: Any) -> None:
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"train: epochs={epochs!r} must be a non-negative int (0 does nothing).")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"train: gradient_accumulation_steps={k!r} must be an int >= 1 (1 = no accumulation).")
    if not isinstance(validate_every, int) or validate_every < 0:
        raise ValueError(f"train: validate_every={validate_every!r} must be an int >= 0 (0 = never validate).")
    if clip is not None and not clip > 0:
        raise ValueError(f"train: gradient_clipping_norm={clip!r} must be > 0, or None for no clipping.")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"train: ema_decay={ema_decay!r} must lie in [0, 1); 0 disables the EMA, e.g. 0.999.")
    if not isinstance(max_nonfinite, int) or max_nonfinite < 1:
        raise ValueError(f"train: max_nonfinite_steps={max_nonfinite!r} must be an int >= 1.")
    if epochs == 0:
        return
    if handler.optimizer is None:
        raise RuntimeError("train needs an optimizer: call handler.set_optimizer(torch.optim.Adam, lr=1e-3) first.")
    if handler.loss_fn is None:
        raise RuntimeError("train needs a loss: call handler.set_loss_fn(torch.nn.functional.cross_entropy) first.")
    if handler.train_loader is None:
        raise RuntimeError("train needs training data: call handler.set_train_loader(dataset, batch_size=...) first.")
    if validate_every > 0 and handler.val_loader is None:
        raise RuntimeError(
            f"train: validate_every={validate_every} but no validation data; call "
            "handler.set_val_loader(dataset, ...) or pass validate_every=0."
        )
    if handler.model_type is ModelType.SCORE_BASED:
        raise NotImplementedError("train: score-based training (model_type='score_based') is not part of this nnh release.")
