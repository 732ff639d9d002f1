"""The parts a handler is made of, each owning its state and its `state_dict`.

`ModelPart` (the module, how it is run, the modules kept in eval mode), `Optimization`
(optimizer, scheduler and the `nnh.func` train state), `Progress` (epochs done, the
mid-epoch resume point, the stop flag) and `History` (per-epoch losses and metrics). The
loop (`nnh.stateful.loop`) works on these, never on the handler.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

import torch
from tensordict import TensorDict
from torch import nn

from nnh.func.ema import ema_source, init_ema
from nnh.func.shards import local_shards
from nnh.func.train import init_train_state

__all__ = ["build_module", "deferred_init", "ModelPart", "Optimization", "SchedulerSpec", "Progress", "History", "Parts"]


# Set by `deferred_init` for the duration of a checkpoint load (a context variable, so
# threads and async tasks do not see each other's loads).
_DEFER_INIT: contextvars.ContextVar[bool] = contextvars.ContextVar("nnh_defer_init", default=False)


@contextlib.contextmanager
def deferred_init() -> Iterator[None]:
    """Within it, `build_module` builds modules on the meta device (no memory, no random
    initialisation): a checkpoint load then gives them the file's tensors (`materialize`)."""
    token = _DEFER_INIT.set(True)
    try:
        yield
    finally:
        _DEFER_INIT.reset(token)


def build_module(model_class: type, kwargs: dict[str, Any], device: torch.device, allow_meta: bool = True) -> nn.Module:
    """`model_class(**kwargs)` on `device`; on the meta device inside `deferred_init` when
    `allow_meta` (a module to be wrapped for torch.distributed is built for real)."""
    if _DEFER_INIT.get() and allow_meta:
        with torch.device("meta"):
            return model_class(**kwargs)
    return model_class(**kwargs).to(device)


def materialize(module: nn.Module, weights: dict[str, torch.Tensor], device: torch.device) -> bool:
    """Give a meta-device `module` the tensors of `weights` (`load_state_dict(assign=True)`,
    no copy) and move it to `device`. Only for a module on the meta device (a real one, e.g.
    wrapped for torch.distributed, keeps its tensors), and only when that leaves nothing undefined: every
    parameter and buffer has a weight of its shape, no buffer is non-persistent, and no
    parameter is shared between two names (assign would untie it). Returns False, with the
    module untouched, otherwise."""
    if not all(p.is_meta for p in module.parameters()):
        return False
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return False  # extra state (get_extra_state) is no tensor to take over
    named = dict(module.named_parameters(remove_duplicate=False))
    if len(named) != len(dict(module.named_parameters())):
        return False
    own = module.state_dict()
    persistent = set(own)
    if any(name not in persistent for name, _ in module.named_buffers()):
        return False
    if set(weights) != persistent or any(weights[k].shape != v.shape or weights[k].dtype != v.dtype
                                         for k, v in own.items()):
        return False
    module.load_state_dict(weights, assign=True)
    module.to(device)
    return True


class ModelPart:
    """The plain module, the callables the forward runs and the modules kept in eval mode.

    `forward` trains (the module itself, a DDP wrapper, or a `torch.compile` wrapper of either,
    sharing the module's parameters); `eval_forward` evaluates (the same, minus DDP, whose
    forward exists for the gradients' all-reduce). `no_sync`, when set, is a context in which
    backward leaves the gradients local (the micro-batches of a window before the last)."""

    def __init__(self, module: nn.Module, model_class: type, model_kwargs: dict[str, Any],
                 save_code: bool = False) -> None:
        self.module = module
        self.save_code = save_code  # store the class source in checkpoints
        self.forward: Callable[..., Any] = module
        self.eval_forward: Callable[..., Any] = module
        self.no_sync: Callable[[], Any] | None = None
        self.wrapper: nn.Module | None = None  # the DDP wrapper, when there is one
        # FSDP: drop the gathered copies of sharded parameters, so that the next forward
        # gathers the shards as they are now (after an EMA swap, say).
        self.reshard: Callable[[], None] = lambda: None
        self.model_class = model_class
        self.model_kwargs = dict(model_kwargs)
        self.keep_eval: list[nn.Module] = []

    def set_forward(self, forward: Callable[..., Any], eval_forward: Callable[..., Any] | None = None) -> None:
        self.forward = forward
        self.eval_forward = forward if eval_forward is None else eval_forward

    def compile(self, **kwargs: Any) -> None:
        """Run the forwards through `torch.compile(**kwargs)` (under DDP: the wrapper for
        training, the module for evaluation)."""
        base = self.wrapper if self.wrapper is not None else self.module
        self.set_forward(torch.compile(base, **kwargs),
                         torch.compile(self.module, **kwargs) if self.wrapper is not None else None)

    def keep_in_eval(self, module: nn.Module, activate: bool) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"keep_eval_on_module expects an nn.Module, got {type(module).__name__}.")
        self.keep_eval = [m for m in self.keep_eval if m is not module] + ([module] if activate else [])
        if activate:
            module.eval()

    def gradient_sync(self, enabled: bool) -> Any:
        """A context for one backward: the gradients are synchronised over the processes when
        `enabled` (the micro-batch that closes a window), else kept local."""
        return contextlib.nullcontext() if enabled or self.no_sync is None else self.no_sync()

    def set_mode(self, training: bool) -> None:
        """Train or eval mode; the keep-eval modules stay in eval mode either way."""
        self.module.train(training)
        for m in self.keep_eval:
            m.eval()

    @contextlib.contextmanager
    def evaluating(self, ema: TensorDict | None = None) -> Iterator[None]:
        """Eval mode, with the `ema` weights swapped in when given; both undone on exit."""
        was_training = self.module.training
        self.module.eval()
        try:
            with self.ema_weights(ema):
                yield
        finally:
            self.reshard()
            self.set_mode(was_training)

    @contextlib.contextmanager
    def ema_weights(self, ema: TensorDict | None) -> Iterator[None]:
        """Copy the EMA weights into the module for the duration, then the raw ones back."""
        if ema is None:
            yield
            return
        # The same keys, in order, as init_ema; sharded (FSDP) tensors shard by shard.
        live = local_shards(list(ema_source(self.module).values()))
        self.reshard()
        with torch.no_grad():
            raw = [t.detach().clone() for t in live]
            torch._foreach_copy_(live, local_shards(list(ema.values())))
        try:
            yield
        finally:
            self.reshard()
            with torch.no_grad():
                torch._foreach_copy_(live, raw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()


class SchedulerSpec(NamedTuple):
    """How the scheduler was built, and whether it steps per "epoch" or per "batch"."""

    scheduler_class: type
    kwargs: dict[str, Any]
    interval: str


class Optimization:
    """Optimizer, LR scheduler and the `nnh.func` train state of one module."""

    def __init__(self) -> None:
        self.optimizer: torch.optim.Optimizer | None = None
        self.optimizer_spec: tuple[type, dict[str, Any]] | None = None
        self.scheduler: Any = None
        self.scheduler_spec: SchedulerSpec | None = None
        self.state: TensorDict | None = None

    def build_optimizer(self, module: nn.Module, optimizer_class: type, kwargs: dict[str, Any]) -> None:
        """The optimizer alone, without its state tensors: a checkpoint load fills those
        (creating zeroed Adam state first would cost a full pass over memory for nothing)."""
        self.optimizer = optimizer_class(module.parameters(), **kwargs)
        self.optimizer_spec = (optimizer_class, dict(kwargs))

    def set_optimizer(self, module: nn.Module, optimizer_class: type, kwargs: dict[str, Any]) -> None:
        """A new optimizer with fresh state; the EMA and the scheduler's spec carry over."""
        self.build_optimizer(module, optimizer_class, kwargs)
        ema = self.state.get("ema", None) if self.state is not None else None
        self.state = init_train_state(module, self.optimizer)
        if ema is not None:
            self.state["ema"] = ema
        if self.scheduler_spec is not None:
            self.set_scheduler(*self.scheduler_spec)

    def set_scheduler(self, scheduler_class: type | None, kwargs: dict[str, Any], interval: str) -> None:
        if scheduler_class is None:
            self.scheduler, self.scheduler_spec = None, None
            return
        if self.optimizer is None:
            raise RuntimeError("set_scheduler needs an optimizer to act on; call handler.set_optimizer(...) first.")
        if interval not in ("epoch", "batch"):
            raise ValueError(f"set_scheduler: interval={interval!r} must be 'epoch' or 'batch'.")
        self.scheduler = scheduler_class(self.optimizer, **kwargs)
        self.scheduler_spec = SchedulerSpec(scheduler_class, dict(kwargs), interval)

    @property
    def steps_per_batch(self) -> bool:
        return self.scheduler is not None and self.scheduler_spec.interval == "batch"

    def step_epoch_scheduler(self, logs: dict[str, Any], validated: bool, validate_every: int) -> None:
        """Step a per-epoch scheduler; `ReduceLROnPlateau` on the validation loss, or on the
        training loss when training never validates."""
        if self.scheduler is None or self.scheduler_spec.interval != "epoch":
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if validated:
                self.scheduler.step(logs["val_loss"])
            elif validate_every == 0:
                self.scheduler.step(logs["loss"])
        else:
            self.scheduler.step()

    def require_state(self, module: nn.Module) -> TensorDict:
        if self.state is None:
            self.state = init_train_state(module, self.optimizer)
        return self.state

    def ema(self) -> TensorDict | None:
        return self.state["ema"] if self.state is not None and "ema" in self.state.keys() else None

    def ensure_ema(self, module: nn.Module) -> TensorDict:
        state = self.require_state(module)
        if "ema" not in state.keys():
            state["ema"] = init_ema(module)
        return state["ema"]

    def ensure_scaler(self, module: nn.Module) -> None:
        state = self.require_state(module)
        if "scaler" not in state.keys():
            state["scaler"] = init_train_state(module, grad_scaler=True)["scaler"]

    def lr(self) -> float | None:
        return None if self.optimizer is None else float(self.optimizer.param_groups[0]["lr"])


@dataclass
class Progress:
    """Epochs done, the stop flag a callback sets, and the mid-epoch points: `resume` (read
    from a checkpoint, consumed by the next epoch) and `mid_epoch` (to write on preemption).
    `epoch_rng` is the global RNG state at the start of the running epoch."""

    epoch: int = 0
    stop_training: bool = False
    seed: int | None = None
    resume: dict[str, Any] | None = None
    mid_epoch: dict[str, Any] | None = None
    epoch_rng: dict[str, Any] | None = None

    def starts_with_seed(self, seed: int | None) -> bool:
        """Whether a `train(seed=seed)` call seeds: only a run that starts (epoch 0, no resume
        point). A resumed run keeps its RNG streams; a seed other than its own is ignored
        with a warning (a job script passes the same seed on every start)."""
        if seed is None:
            return False
        if self.epoch == 0 and self.resume is None:
            return True
        if seed != self.seed:
            warnings.warn(f"train: seed={seed} ignored; this run resumes at epoch {self.epoch} and keeps its RNG "
                          f"streams (started with seed {self.seed}), so it continues exactly. Pass the seed the "
                          "run started with, or none.", UserWarning, stacklevel=3)
        return False


@dataclass
class History:
    """One entry per epoch in every series (NaN where a value was not measured)."""

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    train_metrics: dict[str, list[float]] = field(default_factory=dict)
    val_metrics: dict[str, list[float]] = field(default_factory=dict)

    def reset(self, metric_names: Any = ()) -> None:
        self.train_losses, self.val_losses = [], []
        self.train_metrics = {name: [] for name in metric_names}
        self.val_metrics = {name: [] for name in metric_names}

    def add_metric(self, name: str) -> None:
        """A series for `name`, NaN for the epochs before it (kept if it exists already)."""
        for series, length in ((self.train_metrics, len(self.train_losses)), (self.val_metrics, len(self.val_losses))):
            values = series.setdefault(name, [])
            values.extend([math.nan] * (length - len(values)))

    def record(self, logs: dict[str, Any], metric_names: Any) -> None:
        """Append one epoch to every series: NaN for a metric not measured this epoch."""
        for name in metric_names:
            self.add_metric(name)
        self.train_losses.append(logs["loss"])
        self.val_losses.append(logs["val_loss"])
        for name, values in self.train_metrics.items():
            values.append(logs.get(name, math.nan))
        for name, values in self.val_metrics.items():
            values.append(logs.get(f"val_{name}", math.nan))

    def state_dict(self) -> dict[str, Any]:
        return {"train_losses": list(self.train_losses), "val_losses": list(self.val_losses),
                "train_metrics": {k: list(v) for k, v in self.train_metrics.items()},
                "val_metrics": {k: list(v) for k, v in self.val_metrics.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_losses, self.val_losses = list(state["train_losses"]), list(state["val_losses"])
        self.train_metrics = {k: list(v) for k, v in state["train_metrics"].items()}
        self.val_metrics = {k: list(v) for k, v in state["val_metrics"].items()}


@dataclass
class Parts:
    """Everything the loop and the checkpoint work on, by name."""

    model: ModelPart
    optimization: Optimization
    progress: Progress
    history: History
