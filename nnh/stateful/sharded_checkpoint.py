"""Handler checkpoints under FSDP: a folder of shards (`torch.distributed.checkpoint`).

`NNHandler.save(path)` under FSDP writes the folder `path`:
  - the tensors (model weights, optimizer state, EMA) through `torch.distributed.checkpoint`
    (DCP): every rank writes its own shards, in parallel, none gathers the whole model;
  - `handler.pth`: everything else, in the single-process format without those tensors
    (configuration, history, callbacks, RNG states, scheduler), written by rank 0.
The folder is written under a temporary name and renamed into place once complete; a folder
it replaces is moved aside first and removed only after the rename, so an interrupted save
leaves the previous checkpoint (possibly under its `.old` name), never a torn one.

`NNHandler.load(path)` of such a folder works with any number of processes: DCP reads each
tensor into whatever layout the loading handler has (resharding), whole tensors in one
process, other shards under FSDP with another world size, whole replicas under DDP.
"""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Any

import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from nnh.func.checkpoint import CheckpointError, atomic_save, read_checkpoint
from nnh.func.train import optimizer_state_view
from nnh.stateful.checkpoint import build_handler, handler_checkpoint, set_handler_rng
from nnh.stateful.provided import check_provided
from nnh.stateful.rng import rng_state
from nnh.stateful.weights import check_header

__all__ = ["META", "save_sharded", "load_sharded", "is_sharded_checkpoint"]

META = "handler.pth"


def is_sharded_checkpoint(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, META)) \
        and os.path.isfile(os.path.join(path, ".metadata"))


def _tensors(handler: Any, optim: bool, ema: bool) -> dict[str, Any]:
    """The tensors DCP writes or fills: references to the handler's own (or, for the optimizer,
    a name-keyed view of its state)."""
    module, optimizer = handler.module, handler.optimizer
    out: dict[str, Any] = {"model": get_model_state_dict(module)}
    if optim and optimizer is not None:
        out["optim"] = get_optimizer_state_dict(module, optimizer)
    if ema:
        out["ema"] = dict(handler.ensure_ema().items())
    return out


def save_sharded(handler: Any, path: str | os.PathLike) -> None:
    """Write the folder `path` (see the module docstring); every rank calls it."""
    runtime = handler.runtime
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    tmp = runtime.broadcast(os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp"))
    rngs = runtime.gather(rng_state())
    # Built (and checked for unstorable values) before any shard is written.
    meta = runtime.on_main(lambda: _check_target(path) or handler_checkpoint(handler, rngs, tensors=False))
    has_ema = handler.parts.optimization.ema() is not None
    try:
        dcp.save(_tensors(handler, optim=True, ema=has_ema), checkpoint_id=tmp)
        runtime.on_main(lambda: _publish(meta, tmp, path))
    except BaseException:
        if runtime.is_main and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_target(path: str) -> None:
    if os.path.exists(path) and not (os.path.isfile(path) or is_sharded_checkpoint(path)):
        raise FileExistsError(f"NNHandler.save: {path!r} is a folder that holds no nnh checkpoint; it is left as it "
                              "is. Save to another path, or remove it first.")


def _publish(meta: dict[str, Any], tmp: str, path: str) -> None:
    atomic_save(meta, os.path.join(tmp, META))
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    old = f"{tmp[:-4]}.old"
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)


def load_sharded(cls: type, path: str | os.PathLike, device: Any = None, strict_load: bool = False,
                 skip_optimizer: bool = False, skip_scheduler: bool = False, skip_history: bool = False,
                 skip_callbacks: bool = False, skip_sampler_sde: bool = False, skip_ema: bool = False,
                 strategy: str | None = None, **provided: Any) -> Any:
    """`NNHandler.load` of a folder written by `save_sharded`, with any number of processes;
    the arguments are those of `nnh.stateful.checkpoint.load_handler`."""
    path, provided = os.fspath(path), check_provided(provided)
    flags = (strict_load, skip_optimizer, skip_scheduler, skip_history, skip_callbacks, skip_sampler_sde, skip_ema)
    if not is_sharded_checkpoint(path):
        raise CheckpointError(f"{path!r} is a directory, not a checkpoint file; pass the path of a file inside "
                              f"it (the one NNHandler.save or auto_save wrote), or a folder that NNHandler.save "
                              f"wrote under FSDP (it holds {META} and .metadata).")
    meta = read_checkpoint(os.path.join(path, META), map_location="cpu")
    check_header(meta, path)
    handler = build_handler(cls, meta, path, device, *flags, provided, strategy, tensors=False)
    module, optimization = handler.module, handler.parts.optimization
    optim = optimization.optimizer is not None and not skip_optimizer
    tensors = _tensors(handler, optim=optim, ema=meta.get("sharded", {}).get("ema", False) and not skip_ema)
    dcp.load(tensors, checkpoint_id=path)
    set_model_state_dict(module, tensors["model"])
    if optim:
        set_optimizer_state_dict(module, optimization.optimizer, tensors["optim"])
        optimization.state["optim"] = optimizer_state_view(module, optimization.optimizer)
    set_handler_rng(handler, meta)
    return handler
