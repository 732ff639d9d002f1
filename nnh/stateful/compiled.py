"""`StepRunner`: the training step as one `torch.compile(fullgraph=True)` graph.

`nnh.func.train_step` traces into a single graph (forward, backward through
`torch.func.grad_and_value`, clipping, the foreach optimizer update, EMA). A handler keeps one
compiled step for its model and reuses it across epochs and `train` calls. Recompiles are
bounded: the accumulation index and the update flag are Python values (one graph per value,
k + 1 at most), and the batch dimension is left to torch's automatic dynamic shapes, so a
short last batch compiles one graph with a dynamic batch size the first time it is seen and
every later epoch reuses it (no padding: padded rows would change batch statistics).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from nnh.func.optim import has_functional_update
from nnh.func.train import train_step

__all__ = ["StepRunner"]


class StepRunner:
    """Chooses and keeps the step function of one handler: `train_step`, or its compiled graph."""

    def __init__(self) -> None:
        self._compiled: Callable[..., Any] | None = None
        self.fallback_reason: str | None = None

    def step_fn(self, compile: bool, optimizer: torch.optim.Optimizer) -> Callable[..., Any]:
        if not compile:
            return train_step
        if not has_functional_update(optimizer):
            self._fall_back(f"{type(optimizer).__name__} has no traceable update (SGD, Adam and AdamW without "
                            "fused/differentiable options have one)")
        if self.fallback_reason is not None:
            return train_step
        if self._compiled is None:
            self._compiled = torch.compile(train_step, fullgraph=True)
        return self._run

    def _run(self, state: Any, batch: Any, **kwargs: Any) -> Any:
        if self.fallback_reason is not None:
            return train_step(state, batch, **kwargs)
        try:
            out = self._compiled(state, batch, **kwargs)
        except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.BackendCompilerFailed) as exc:
            # Tracing fails before the graph runs, so nothing of this step was applied yet.
            self._fall_back(f"the step cannot be traced: {str(exc).splitlines()[0]}")
            return train_step(state, batch, **kwargs)
        # LR schedulers check this flag, which `Optimizer.step` sets, to warn about a step
        # before any update; the compiled graph cannot set a Python attribute.
        kwargs["optimizer"]._opt_called = True
        return out

    def _fall_back(self, reason: str) -> None:
        if self.fallback_reason is None:
            warnings.warn(f"NNHandler.train(compile=True): {reason}; training runs the eager step instead.",
                          RuntimeWarning, stacklevel=4)
        self.fallback_reason = reason
