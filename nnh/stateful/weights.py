"""A model's weights from a checkpoint: shape and key checks, wrapper prefixes, and a handler
built from the weights alone (`NNHandler.initialize_from_checkpoint`)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from nnh._version import __version__
from nnh.func.checkpoint import CHECKSUM_KEY, FORMAT_VERSION, CheckpointError, read_checkpoint
from nnh.stateful.shard_state import shard_like_module

__all__ = ["MAGIC", "check_header", "load_weights", "strip_prefixes", "weights_handler"]

MAGIC = "nnh-checkpoint"
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def weights_handler(cls: type, checkpoint_path: str | os.PathLike, model_class: type, model_type: Any = None,
                    device: str | torch.device | None = None, strict_load: bool = True, **model_kwargs: Any) -> Any:
    """A new handler with only the model weights of a checkpoint (see
    `NNHandler.initialize_from_checkpoint`)."""
    path = os.fspath(checkpoint_path)
    ckpt = read_checkpoint(path, map_location="cpu")
    if isinstance(ckpt, dict) and ckpt.get("format") == MAGIC:
        check_header(ckpt, path)
        weights = ckpt["model_state_dict"]
        model_type = model_type or ckpt["model"]["type"]
    elif isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        weights = ckpt
    elif isinstance(ckpt, dict) and any(isinstance(ckpt.get(k), dict) for k in _STATE_DICT_KEYS):
        # Common layouts of hand-written checkpoints: {"state_dict": ...}, {"model": ...}.
        weights = next(ckpt[k] for k in _STATE_DICT_KEYS if isinstance(ckpt.get(k), dict))
    else:
        raise CheckpointError(f"{path!r} holds neither an nnh checkpoint nor a state_dict of tensors.")
    handler = cls(model_class, device=device or "cpu", model_type=model_type or "classification", **model_kwargs)
    module = handler.module
    # Under FSDP each rank keeps its shard of every whole tensor of the file.
    load_weights(module, shard_like_module(module, strip_prefixes(weights, set(module.state_dict()))), strict_load, path)
    return handler


def strip_prefixes(weights: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """`weights` with the wrapper prefixes removed: `_orig_mod.` (torch.compile, also on a
    submodule) wherever it occurs, and leading `module.` (DDP / DataParallel) when the model
    itself has no such keys, i.e. only where stripping makes the keys fit."""
    out = {}
    for key, value in weights.items():
        if key not in own:
            key = ".".join(p for p in key.split(".") if p != "_orig_mod")
            while key.startswith("module.") and key not in own:
                key = key[len("module."):]
        out[key] = value
    return out


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], strict: bool,
                  path: str) -> tuple[list[str], list[str]]:
    """Load `weights` into `module`; return the (missing, unexpected) keys that were tolerated."""
    own = module.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in weights.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if mismatched:
        raise CheckpointError(f"The weights in {path!r} do not fit {type(module).__name__}: shape mismatches "
                              f"{mismatched}; missing {missing}; unexpected {unexpected}.")
    if own and weights and not set(own) & set(weights):
        # Nothing would load: another model's weights, which strict_load=False must not hide.
        raise CheckpointError(f"None of the weights in {path!r} fit {type(module).__name__}: missing keys "
                              f"{missing}, unexpected keys {unexpected}. Is it a checkpoint of another model?")
    if strict and (missing or unexpected):
        raise CheckpointError(f"The weights in {path!r} do not fit {type(module).__name__}: missing keys "
                              f"{missing}, unexpected keys {unexpected}. Pass strict_load=False to load the rest.")
    if missing or unexpected:
        warnings.warn(f"Loading {path!r} into {type(module).__name__}: missing keys {missing}, unexpected keys "
                      f"{unexpected}; these were left as they are.", UserWarning, stacklevel=3)
    module.load_state_dict(weights, strict=False)
    return missing, unexpected


def check_header(ckpt: Any, path: str) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != MAGIC:
        raise CheckpointError(f"{path!r} is not an NNHandler checkpoint (no nnh header); for a plain "
                              "state_dict use NNHandler.initialize_from_checkpoint.")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} has checkpoint format {version!r} (written by nnh {ckpt.get('nnh_version')}); this nnh "
            f"{__version__} reads formats up to {FORMAT_VERSION}. Upgrade nnh to load it."
        )
    # read_checkpoint verified the checksum of a file that has one; from format 2 on every file
    # has one, so a missing one means the record itself was damaged.
    if version >= 2 and CHECKSUM_KEY not in ckpt:
        raise CheckpointError(f"The checkpoint {path!r} is corrupt: it has format {version}, written with a "
                              "checksum, but its checksum record is missing. Load an earlier checkpoint.")
