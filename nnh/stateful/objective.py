"""How a batch becomes a loss: one small protocol instead of model-type branches in the loop.

An objective has `loss(model, batch) -> (loss, output)` (the `nnh.func.train_step` loss
convention) and `metric_target(batch)`, what metrics compare the output with.
"""

from __future__ import annotations

import inspect

from typing import Any, Callable, Protocol

from torch import Tensor

from nnh.stateful._batches import unpack_batch
from nnh.stateful.enums import ModelType

__all__ = ["Objective", "SupervisedObjective", "GenerativeObjective", "ScoreObjective", "make_objective", "LossSpec"]


class Objective(Protocol):
    epoch: int

    def loss(self, model: Callable[..., Any], batch: Any) -> tuple[Tensor, Any]: ...

    def metric_target(self, batch: Any) -> Any: ...


def inputs_as_targets(inputs: Any, targets: Any) -> Any:
    """The targets of a batch, or its inputs when it has none (the one place of that rule)."""
    return inputs if targets is None else targets


class SupervisedObjective:
    """`loss_fn(model(inputs, *extra, **kwargs), targets, **loss_kwargs)`; a tuple returned by
    the loss back-propagates its first element. With `pass_epoch`, the 0-based `epoch`
    attribute (set by the loop) is passed as `epoch=`."""

    needs_targets = True

    def __init__(self, loss_fn: Callable, loss_kwargs: dict[str, Any], pass_epoch: bool, model_type: ModelType) -> None:
        self.loss_fn = loss_fn
        self.loss_kwargs = dict(loss_kwargs)
        self.pass_epoch = pass_epoch
        self.model_type = model_type
        self.epoch = 0

    def targets(self, inputs: Any, targets: Any) -> Any:
        if targets is None:
            raise ValueError(
                f"NNHandler: a {self.model_type.value} batch needs targets, (inputs, targets); "
                "for models trained against their inputs use model_type='generative'."
            )
        return targets

    def loss(self, model: Callable[..., Any], batch: Any) -> tuple[Tensor, Any]:
        inputs, targets, args, model_kwargs = unpack_batch(batch)
        output = model(inputs, *args, **model_kwargs)
        kwargs = {**self.loss_kwargs, "epoch": self.epoch} if self.pass_epoch else self.loss_kwargs
        result = self.loss_fn(output, self.targets(inputs, targets), **kwargs)
        loss = result[0] if isinstance(result, (tuple, list)) else result
        return loss, output

    def metric_target(self, batch: Any) -> Any:
        inputs, targets, _, _ = unpack_batch(batch)
        return inputs_as_targets(inputs, targets)


class GenerativeObjective(SupervisedObjective):
    """As `SupervisedObjective`, with the inputs as targets when a batch has none."""

    def targets(self, inputs: Any, targets: Any) -> Any:
        return inputs_as_targets(inputs, targets)


class ScoreObjective:
    """Score-based training: `loss_fn(inputs, sde, model, device, **loss_kwargs)`, the handler's
    convention (e.g. `nnh.func.denoising_score_matching`). The batch's other items are
    conditioning: a tuple's items after the inputs and a dict's other keys reach the network
    as ``model(t, x, *items, **keys)``, bound into the `model` the loss receives, so a loss
    written for unconditional models works unchanged. A tuple returned by the loss
    back-propagates its first element."""

    model_type = ModelType.SCORE_BASED

    def __init__(self, loss_fn: Callable, loss_kwargs: dict[str, Any], pass_epoch: bool, sde: Any,
                 device: Any) -> None:
        self.loss_fn = loss_fn
        self.loss_kwargs = dict(loss_kwargs)
        self.pass_epoch = pass_epoch
        self.sde = sde
        self.device = device
        self.epoch = 0

    def loss(self, model: Callable[..., Any], batch: Any) -> tuple[Tensor, Any]:
        inputs, targets, args, kwargs = unpack_batch(batch)
        if isinstance(batch, dict):  # every key but the inputs' is conditioning
            kwargs = {k: v for k, v in batch.items() if v is not inputs}
        elif targets is not None:
            args = (targets, *args)
        net = (lambda t, x: model(t, x, *args, **kwargs)) if (args or kwargs) else model
        loss_kwargs = {**self.loss_kwargs, "epoch": self.epoch} if self.pass_epoch else self.loss_kwargs
        result = self.loss_fn(inputs, self.sde, net, self.device, **loss_kwargs)
        return (result[0] if isinstance(result, (tuple, list)) else result), None

    def metric_target(self, batch: Any) -> Any:
        return unpack_batch(batch)[0]


def make_objective(model_type: ModelType, loss_fn: Callable, loss_kwargs: dict[str, Any],
                   pass_epoch: bool, sde: Any = None, device: Any = None) -> Objective:
    """The objective for `model_type` (`pass_epoch`: the loss accepts and wants `epoch=`);
    SCORE_BASED needs the handler's `sde` and `device`."""
    if model_type is ModelType.SCORE_BASED:
        if sde is None:
            raise RuntimeError("train: model_type='score_based' needs an SDE; call handler.set_sde(nnh.VPSDE) "
                               "(or assign handler.sde) first.")
        return ScoreObjective(loss_fn, loss_kwargs, pass_epoch, sde, device)
    cls = GenerativeObjective if model_type is ModelType.GENERATIVE else SupervisedObjective
    return cls(loss_fn, loss_kwargs, pass_epoch, model_type)


class LossSpec:
    """The user's loss as set on a handler (`fn`, `kwargs`, `pass_epoch`) and the objective
    built from it, kept while nothing changes (a compiled step stays valid)."""

    def __init__(self) -> None:
        self.fn: Callable | None = None
        self.kwargs: dict[str, Any] = {}
        self.pass_epoch = False
        self._objective: Objective | None = None

    def update(self, fn: Any = None, kwargs: Any = None, pass_epoch: Any = None) -> None:
        if fn is not None:
            if not callable(fn):
                raise TypeError(f"loss_fn must be callable, got {fn!r}.")
            self.fn = fn
        if kwargs is not None:
            if not isinstance(kwargs, dict):
                raise TypeError(f"loss_fn_kwargs must be a dict, got {type(kwargs).__name__}.")
            self.kwargs = dict(kwargs)
        if pass_epoch is not None:
            self.pass_epoch = bool(pass_epoch)
        self._objective = None

    def objective(self, model_type: ModelType, sde: Any = None, device: Any = None) -> Objective:
        """The objective for `model_type`, rebuilt when it or (for SCORE_BASED) the SDE changed."""
        current = self._objective
        if current is None or current.model_type is not model_type or getattr(current, "sde", sde) is not sde:
            pass_epoch = self.pass_epoch and _accepts_kwarg(self.fn, "epoch")
            self._objective = make_objective(model_type, self.fn, self.kwargs, pass_epoch, sde, device)
        return self._objective


def _accepts_kwarg(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)
