"""A whole handler as a checkpoint file and back.

`handler_checkpoint` gathers `{part: state}` (plus the encoded classes and functions) from a
handler's public surface and parts; `load_handler` builds a handler through its public
constructor and setters and loads each part. Neither touches private attributes."""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from typing import Any

import torch

from nnh._version import __version__
from nnh.func.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    Unstorable,
    add_checksum,
    decode_value,
    encode_value,
    find_unrecorded,
    read_checkpoint,
    state_to_dict,
)
from nnh.func.ema import init_ema
from nnh.func.train import init_train_state
from nnh.stateful.parts import deferred_init, materialize
from nnh.stateful.provided import check_provided, how_to_provide, provided_slots, raise_missing
from nnh.stateful.weights import MAGIC, check_header, load_weights
from nnh.stateful.rng import rng_state, set_rng_state
from nnh.stateful.sampler import call_sampler_load
from nnh.stateful.shard_state import shard_like, shard_like_module, shard_optimizer_state



def save_handler(handler: Any, path: str | os.PathLike) -> None:
    """`NNHandler.save`: one process writes `handler_checkpoint` atomically. Under DDP every
    rank calls it; rank 0 writes (with every rank's RNG state, so each resumes its own
    streams) and the others wait; an error on rank 0 is raised on every rank. Under FSDP
    the shards go to a folder instead (`nnh.stateful.sharded_checkpoint.save_sharded`)."""
    runtime = handler.runtime
    rngs = runtime.gather(rng_state())
    runtime.on_main(lambda: atomic_save(handler_checkpoint(handler, rngs), path))


def handler_checkpoint(handler: Any, rng_ranks: list[Any] | None = None, tensors: bool = True) -> dict[str, Any]:
    """The checkpoint dict of `handler` (what `NNHandler.save` writes), sealed with a checksum
    (`nnh.func.checkpoint.add_checksum`). `rng_ranks`: every rank's RNG state, kept when
    there is more than one. `tensors=False` leaves out the model weights, the optimizer's
    per-parameter state and the EMA (saved elsewhere, as shards).

    Raises TypeError, before anything is written, for a value a weights_only load would
    refuse: e.g. a module whose ``get_extra_state()`` returns an arbitrary object."""
    parts = handler.parts
    model, opt = parts.model, parts.optimization
    unrecorded: list[tuple[str, str]] = []
    bind = {id(model.module): "handler.module"}
    if model.forward is not model.module:
        bind[id(model.forward)] = "handler.module"

    def enc(value: Any, slot: str) -> Any:
        return encode_value(value, slot, bind, unrecorded)

    state = opt.require_state(model.module)
    extra = {k: v for k, v in state_to_dict(state).items() if k not in ("params", "buffers", "optim")}
    sharded = {"ema": extra.pop("ema", None) is not None} if not tensors else None
    ckpt: dict[str, Any] = {
        "format": MAGIC,
        "format_version": FORMAT_VERSION,
        "nnh_version": __version__,
        "torch_version": str(torch.__version__),
        "model": {
            "class": enc(model.model_class, "model_class"),
            "kwargs": enc(model.model_kwargs, "model_kwargs"),
            "type": handler.model_type.value,
            "code": _model_code(model.model_class) if model.save_code else None,
        },
        "model_state_dict": model.state_dict() if tensors else {},
        "train_state": extra,
        "optimizer": None,
        "scheduler": None,
        "loss": None,
        "metrics": {name: enc(fn, f"metrics.{name}") for name, fn in handler.metrics.items()},
        "history": parts.history.state_dict(),
        "callbacks": [enc(cb, f"callbacks[{i}]") for i, cb in enumerate(handler.callbacks)],
        "auto_saver": handler.autosaver.state_dict(),
        "preemption_path": handler.preemption.path,
        "sampler": None,
        "sde": enc(handler.sde, "sde"),
        "seed": parts.progress.seed,
        "epoch": parts.progress.epoch,
        "device": str(handler.device),
        # Loaders are set again after a load, never rebuilt from here: their kwargs are a
        # record only, and a lambda collate_fn in them is no reason to warn.
        "loaders": {which: {"kwargs": encode_value(spec, f"{which}_loader_kwargs", bind, []),
                            "sampler_epoch": getattr(getattr(loader, "sampler", None), "epoch", None)}
                    for which, (loader, spec) in handler.loader_specs.items()},
        "rng": rng_state(),
        "resume": parts.progress.mid_epoch,
        "strategy": handler.runtime.strategy,
    }
    if sharded is not None:
        ckpt["sharded"] = sharded  # which tensors the shards hold
    if rng_ranks is not None and len(rng_ranks) > 1:
        ckpt["rng_ranks"] = rng_ranks
    if opt.optimizer is not None:
        cls, kwargs = opt.optimizer_spec
        ckpt["optimizer"] = {"class": enc(cls, "optimizer_class"), "kwargs": enc(kwargs, "optimizer_kwargs"),
                             "state_dict": _optimizer_state_dict(opt.optimizer, tensors)}
    if opt.scheduler is not None:
        spec = opt.scheduler_spec
        ckpt["scheduler"] = {"class": enc(spec.scheduler_class, "scheduler_class"),
                             "kwargs": enc(spec.kwargs, "scheduler_kwargs"),
                             "interval": spec.interval, "state_dict": opt.scheduler.state_dict()}
    if handler.loss_fn is not None:
        ckpt["loss"] = {"fn": enc(handler.loss_fn, "loss_fn"), "kwargs": enc(handler.loss_fn_kwargs, "loss_fn_kwargs"),
                        "pass_epoch": handler.pass_epoch_to_loss}
    sampler = handler.sampler
    if sampler is not None:
        ckpt["sampler"] = {"class": enc(type(sampler), "sampler_class"),
                           "kwargs": enc(dict(sampler.init_kwargs), "sampler_kwargs"),
                           "state": enc(sampler.save(), "sampler_state")}
    if unrecorded:
        listed = ", ".join(f"{slot} ({name})" for slot, name in unrecorded)
        how = ", ".join(dict.fromkeys(how_to_provide(slot) for slot, _ in unrecorded))
        warnings.warn(
            f"NNHandler.save: {listed} cannot be imported again (a lambda, a local object, or "
            "something defined in __main__); the checkpoint records it by name only, and "
            f"NNHandler.load will need it passed in: NNHandler.load(path, {how}).",
            UserWarning, stacklevel=4,
        )
    try:
        return add_checksum(ckpt)
    except Unstorable as exc:
        raise _unstorable_error(exc, model.module) from None


def _optimizer_state_dict(optimizer: torch.optim.Optimizer, tensors: bool) -> dict[str, Any]:
    sd = optimizer.state_dict()
    return sd if tensors else {"state": {}, "param_groups": sd["param_groups"]}


def _unstorable_error(exc: Unstorable, module: torch.nn.Module) -> TypeError:
    """`exc` as a TypeError naming the module, when get_extra_state() returned the value."""
    keys = exc.keys
    suffix = torch.nn.modules.module._EXTRA_STATE_KEY_SUFFIX
    if len(keys) < 2 or keys[0] != "model_state_dict" or not str(keys[1]).endswith(suffix):
        return TypeError(f"NNHandler.save: {exc}")
    name = str(keys[1])[: -len(suffix)].rstrip(".")
    owner = module.get_submodule(name) if name else module
    return TypeError(
        f"NNHandler.save: module {name or '(the model itself)'!r} ({type(owner).__qualname__}) returns "
        f"a {exc.value_type.__module__}.{exc.value_type.__qualname__} from get_extra_state() (at "
        f"{''.join(f'[{k!r}]' for k in keys)}); a checkpoint holds tensors and plain Python values only "
        "(what torch.load(weights_only=True) reads), so NNHandler.load would refuse the file. Nothing was "
        "written. Return tensors, numbers, strings, and lists/dicts of them from get_extra_state()."
    )


def _model_code(model_class: type) -> str | None:
    try:
        return inspect.getsource(model_class)
    except (OSError, TypeError):
        warnings.warn(f"save_model_code: the source of {model_class.__qualname__} is not available.", stacklevel=5)
        return None


def load_handler(cls: type, path: str | os.PathLike, device: str | torch.device | None = None,
                 strict_load: bool = False, skip_optimizer: bool = False, skip_scheduler: bool = False,
                 skip_history: bool = False, skip_callbacks: bool = False, skip_sampler_sde: bool = False,
                 skip_ema: bool = False, strategy: str | None = None, **provided: Any) -> Any:
    """Rebuild a handler from a file written by `save`.

    Objects the checkpoint recorded by name only are passed in by keyword: `model_class`,
    `loss_fn`, `optimizer_class`, `scheduler_class`, `sampler_class`, `sde`, `sampler` (a
    ready instance), `metrics` ({name: fn}), `model_kwargs` / `optimizer_kwargs` /
    `scheduler_kwargs` / `loss_fn_kwargs` / `sampler_kwargs` ({name: value}, replacing or
    adding single constructor arguments), `callbacks` (a list, replacing the saved ones).
    Whatever is missing is reported, naming the keyword, before anything is built.

    With `strict_load=False`, missing or unexpected weight keys are listed in a warning
    (and the optimizer state then needs `skip_optimizer=True`); weights of another shape,
    or none that fit, always raise. `skip_optimizer` also skips the scheduler.

    Data loaders are not part of a checkpoint: set them again with `set_train_loader` /
    `set_val_loader`. Then `train(total - handler.epoch)` continues exactly, also from a
    mid-epoch preemption checkpoint (a `seed=` passed again is ignored: see `train`).

    Under torch.distributed every rank loads the file onto its own device, with the saved
    `strategy` unless another is given; each rank takes up its own RNG state when the file
    was saved by as many ranks. A folder saved under FSDP loads with any number of processes
    (`nnh.stateful.sharded_checkpoint.load_sharded`), and a file saved by one process loads under FSDP.
    """
    path = os.fspath(path)
    provided = check_provided(provided)
    flags = (strict_load, skip_optimizer, skip_scheduler, skip_history, skip_callbacks, skip_sampler_sde, skip_ema)
    # Verified while the tensors are copied out of the file (`nnh.func.owned_copy`).
    ckpt = read_checkpoint(path, map_location="cpu")
    check_header(ckpt, path)
    handler = build_handler(cls, ckpt, path, device, *flags, provided, strategy)
    set_handler_rng(handler, ckpt)
    return handler


def set_handler_rng(handler: Any, ckpt: dict[str, Any]) -> None:
    """The saved global RNG state: this rank's own when the file holds one per rank of a
    world this size, else the saving process's (rank 0's)."""
    runtime, rngs = handler.runtime, ckpt.get("rng_ranks")
    set_rng_state(rngs[runtime.rank] if rngs and len(rngs) == runtime.world_size else ckpt["rng"])


def build_handler(cls: type, ckpt: dict[str, Any], path: str, device: Any, strict_load: bool,
                   skip_optimizer: bool, skip_scheduler: bool, skip_history: bool, skip_callbacks: bool,
                   skip_sampler_sde: bool, skip_ema: bool, provided: dict[str, Any], strategy: str | None = None,
                   tensors: bool = True) -> Any:
    """The body of `load_handler`: everything but reading, verifying and the RNG state.
    `tensors=False`: the file holds no weights, optimizer state or EMA (they are loaded
    after, from shards); the model is built and initialised for real."""
    slots = provided_slots(provided)
    needs: list = []
    bindings: dict[str, Any] = {}

    def dec(value: Any) -> Any:
        out = decode_value(value, bindings, slots)
        needs.extend(find_unrecorded(out))
        return out

    def dec_kwargs(value: Any, group: str) -> dict[str, Any]:
        # A keyword passed in `<group>={name: value}` replaces the saved one whole (even
        # when only an item inside it, a lambda in a list, could not be recorded) or adds it.
        given = provided.get(group, {})
        return {**{k: dec(v) for k, v in value.items() if k not in given}, **given}

    def given_or_saved(name: str, saved: Any) -> Any:
        return provided[name] if provided.get(name) is not None else dec(saved)

    def check_missing() -> None:
        raise_missing(needs, path)

    # Everything that names a class or function is resolved before anything is built, so
    # a missing one is reported as such (naming what to pass), not as a confusing
    # TypeError from the constructor it would have gone to.
    model_class = given_or_saved("model_class", ckpt["model"]["class"])
    model_kwargs = dec_kwargs(ckpt["model"]["kwargs"], "model_kwargs")
    opt, sch, loss = ckpt["optimizer"], ckpt["scheduler"], ckpt["loss"]
    use_opt = opt is not None and not skip_optimizer
    use_sch = use_opt and sch is not None and not skip_scheduler
    if use_opt:
        opt_class, opt_kwargs = given_or_saved("optimizer_class", opt["class"]), dec_kwargs(opt["kwargs"], "optimizer_kwargs")
    if use_sch:
        sch_class = given_or_saved("scheduler_class", sch["class"])
    if loss is not None:
        loss_fn, loss_kwargs = given_or_saved("loss_fn", loss["fn"]), dec_kwargs(loss["kwargs"], "loss_fn_kwargs")
    metrics = {name: provided.get("metrics", {}).get(name) or dec(fn) for name, fn in ckpt["metrics"].items()}
    check_missing()

    if device is None:
        device = ckpt["device"] if (not ckpt["device"].startswith("cuda") or torch.cuda.is_available()) else "cpu"
    def build() -> Any:
        return cls(model_class, device=device, model_type=ckpt["model"]["type"],
                   save_model_code=ckpt["model"]["code"] is not None,
                   strategy=strategy or ckpt.get("strategy") or "ddp", **model_kwargs)

    # The model is built on the meta device and takes the file's tensors as they are: no
    # random initialisation, no copy (1.0x of torch.load in benchmarks/checkpoint.py). A
    # model those tensors do not define completely is built and loaded the ordinary way, and
    # so is one wrapped for torch.distributed (never on the meta device).
    with deferred_init() if tensors else contextlib.nullcontext():
        handler = build()
    weights = ckpt["model_state_dict"]
    materialized = tensors and materialize(handler.module, weights, handler.device)
    if tensors and not materialized and any(p.is_meta for p in handler.module.parameters()):
        handler = build()
    parts = handler.parts
    module, optimization = parts.model.module, parts.optimization
    bindings["handler.module"] = module
    weights = shard_like_module(module, weights)
    missing, unexpected = ([], []) if materialized or not tensors else load_weights(module, weights, strict_load, path)

    if use_opt and (missing or unexpected):
        # The optimizer state is matched to parameters by position: with other keys it
        # would land on the wrong tensors, or not fit at all.
        raise CheckpointError(
            f"{path!r}: the model was loaded with missing keys {missing} and unexpected keys "
            f"{unexpected}, so the saved optimizer state does not fit its parameters; pass "
            "skip_optimizer=True (and set a new optimizer) to load the weights alone."
        )
    if use_opt:
        optimization.build_optimizer(module, opt_class, opt_kwargs)
        if use_sch:
            # Kwargs that refer to the module (rare) are decoded now that it exists.
            optimization.set_scheduler(sch_class, dec_kwargs(sch["kwargs"], "scheduler_kwargs"), sch["interval"])
            check_missing()
        # The states load after the scheduler is built: building one sets the optimizer's
        # lr to its starting value (LinearLR, LambdaLR, OneCycleLR...), and the saved
        # param_groups put the lr of the moment of saving back.
        optimization.optimizer.load_state_dict(opt["state_dict"])
        shard_optimizer_state(optimization.optimizer)
        if use_sch:
            optimization.scheduler.load_state_dict(sch["state_dict"])
        # load_state_dict made new state tensors: rebuild the state's view of them.
        optimization.state = init_train_state(module, optimization.optimizer)
    _load_train_state(optimization, module, ckpt["train_state"], skip_ema)

    if loss is not None:
        handler.set_loss_fn(loss_fn, pass_epoch_to_loss=loss["pass_epoch"], **loss_kwargs)
    for name, fn in metrics.items():
        handler.add_metric(name, fn)
    if not skip_history:
        parts.history.load_state_dict(ckpt["history"])
    parts.progress.epoch = ckpt["epoch"]
    if not skip_callbacks:
        callbacks = provided.get("callbacks")
        if callbacks is None:
            callbacks = [dec(c) for c in ckpt["callbacks"]]
            check_missing()
        for cb in callbacks:
            handler.add_callback(cb)
    if not skip_sampler_sde:
        sde = given_or_saved("sde", ckpt["sde"])
        check_missing()  # before the setter, which would refuse a placeholder less clearly
        handler.sde = sde
        _load_sampler(handler, ckpt["sampler"], provided, dec, dec_kwargs, check_missing)
    handler.autosaver.load_state_dict(ckpt["auto_saver"])
    handler.autosaver.loaded_from = path
    handler.preemption.path = ckpt.get("preemption_path")
    parts.progress.seed = ckpt["seed"]
    parts.progress.resume = ckpt.get("resume")
    return handler


def load_model_code(path: str | os.PathLike) -> str | None:
    """The model class source stored by `save_model_code=True`, as text (never executed)."""
    path = os.fspath(path)
    ckpt = read_checkpoint(path, map_location="cpu")
    check_header(ckpt, path)
    return ckpt["model"]["code"]


def _load_train_state(optimization: Any, module: Any, extra: dict[str, Any], skip_ema: bool) -> None:
    state = optimization.require_state(module)
    for key in ("step", "acc_samples", "acc_nonfinite"):
        if key in extra and key in state.keys():
            state[key].copy_(extra[key])
    if "scaler" in extra:
        optimization.ensure_scaler(module)
        for key, value in extra["scaler"].items():
            state["scaler"][key].copy_(value)
    if "ema" in extra and not skip_ema:
        ema = init_ema(module)
        for key, value in extra["ema"].items():
            if key in ema.keys():
                ema[key].copy_(shard_like(value, ema[key]))
        state["ema"] = ema


def _load_sampler(handler: Any, saved: dict[str, Any] | None, provided: dict[str, Any], dec: Any,
                  dec_kwargs: Any, check_missing: Any) -> None:
    if provided.get("sampler") is not None:
        handler.sampler = provided["sampler"]
        return
    if saved is None:
        return
    sampler_cls = provided["sampler_class"] if provided.get("sampler_class") is not None else dec(saved["class"])
    kwargs = dec_kwargs(saved["kwargs"], "sampler_kwargs")
    state = dec(saved["state"])
    check_missing()
    handler.sampler = sampler_cls(**kwargs)
    call_sampler_load(handler.sampler, state)
