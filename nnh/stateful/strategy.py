"""How a handler's module is spread over the processes: DDP replicas or FSDP2 shards.

`distribute` wraps a `ModelPart`'s module for its `Runtime`:
  - "ddp": `DistributedDataParallel` (the part's `forward` is the wrapper, `module` the plain
    model). Each process holds a full replica; gradients are all-reduced during `backward`.
  - "fsdp": `torch.distributed.fsdp.fully_shard`, applied in place to the modules named by
    `shard_modules` (classes, or a predicate on modules) and then to the model itself.
    Parameters, gradients and optimizer state are sharded (DTensors); every forward gathers
    the parameters it needs, so all ranks run every forward together.
Options: for "ddp", keyword arguments of `DistributedDataParallel` (e.g.
`find_unused_parameters=True`); for "fsdp", `shard_modules` and keyword arguments of
`fully_shard` (e.g. `mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16)`,
`reshard_after_forward=False`).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from nnh.stateful.runtime import Runtime

__all__ = ["distribute", "check_options", "rewrapped"]


def check_options(strategy: str, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise TypeError(f"NNHandler: strategy_options={options!r} must be a dict of keyword arguments "
                        f"for the {strategy!r} strategy (see nnh.stateful.strategy).")
    if "shard_modules" in options and strategy != "fsdp":
        raise ValueError(f"NNHandler: strategy_options has 'shard_modules', which only strategy='fsdp' uses "
                         f"(strategy={strategy!r}).")
    return dict(options)


def distribute(part: Any, runtime: Runtime, options: dict[str, Any]) -> None:
    """Wrap `part.module` for `runtime` in place (nothing in one process)."""
    if not runtime.distributed:
        return
    module = part.module
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError(f"NNHandler: {type(module).__name__} has no trainable parameters, so there is nothing to "
                         "distribute; pass use_distributed=False.")
    if runtime.strategy == "ddp":
        ddp = nn.parallel.DistributedDataParallel(
            module, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None, **options)
        part.set_forward(ddp, module)
        part.wrapper, part.no_sync = ddp, ddp.no_sync
        return
    from torch.distributed.fsdp import FSDPModule, fully_shard

    kwargs = dict(options)
    chosen = _selector(kwargs.pop("shard_modules", ()))
    # Every rank starts from rank 0's initialisation, as DDP does (then each keeps its shard).
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t, src=0)
    # Inner modules first: each `fully_shard` call takes the parameters not yet sharded below it.
    for sub in reversed(list(module.modules())):
        if sub is not module and chosen(sub):
            fully_shard(sub, **kwargs)
    fully_shard(module, **kwargs)
    part.set_forward(module, module)
    part.no_sync = lambda: _fsdp_no_sync(module)
    part.reshard = lambda: _reshard(module, FSDPModule)


@contextlib.contextmanager
def rewrapped(part: Any, runtime: Runtime, options: dict[str, Any]) -> Iterator[None]:
    """For a change of `requires_grad` inside it. DDP reduces the gradients of the parameters
    that required one when it was built, so it is built again after; FSDP cannot follow, which
    is refused before anything changes."""
    if runtime.strategy == "fsdp":
        raise ValueError("freeze_module under strategy='fsdp': FSDP shards the parameters in the handler's "
                         "constructor and cannot take a change of requires_grad after; freeze them in the "
                         "model's __init__ instead.")
    yield
    if runtime.strategy == "ddp":
        compiled = part.forward is not part.wrapper
        distribute(part, runtime, options)
        if compiled:
            warnings.warn("freeze_module under DDP wraps the model again; call compile_model() again to compile "
                          "the new wrapper.", UserWarning, stacklevel=4)


def _selector(shard_modules: Any) -> Callable[[nn.Module], bool]:
    if callable(shard_modules) and not isinstance(shard_modules, type):
        return shard_modules
    classes = (shard_modules,) if isinstance(shard_modules, type) else tuple(shard_modules)
    if not all(isinstance(c, type) and issubclass(c, nn.Module) for c in classes):
        raise TypeError(f"NNHandler: strategy_options['shard_modules']={shard_modules!r} must be nn.Module classes "
                        "(e.g. (TransformerBlock,)) or a function module -> bool.")
    return lambda m: isinstance(m, classes) if classes else False


def _reshard(module: nn.Module, fsdp_module: type) -> None:
    for m in module.modules():
        if isinstance(m, fsdp_module):
            m.reshard()


@contextlib.contextmanager
def _fsdp_no_sync(module: Any) -> Iterator[None]:
    # Gradients of the micro-batches before the last stay unsharded and local; the last one
    # reduce-scatters their sum.
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)
