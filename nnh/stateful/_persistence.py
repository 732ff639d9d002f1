"""Saving and loading a whole `NNHandler`, the AutoSaver, and preemption saves."""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import signal
import string
import threading
import warnings
from typing import Any, Iterator

import numpy as np
import torch

from nnh._version import __version__
from nnh.func.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    decode_value,
    encode_value,
    find_unrecorded,
    read_checkpoint,
    state_to_dict,
)
from nnh.func.ema import init_ema
from nnh.func.train import init_train_state
from nnh.stateful.sampler import call_sampler_load

_MAGIC = "nnh-checkpoint"
_PREEMPTION_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


class PersistenceMixin:
    """`save`, `load`, `initialize_from_checkpoint`, `auto_save` and preemption handling."""

    def _init_persistence(self) -> None:
        self._auto = {"interval": None, "save_path": ".", "name": "model_epoch{epoch:02d}", "overwrite": False}
        self._last_auto_saved: str | None = None
        self._loaded_from: str | None = None
        self._preempted = False
        self._preemption_path: str | None = None
        self._resume: dict[str, Any] | None = None  # mid-epoch point read from a checkpoint
        self._mid_epoch: dict[str, Any] | None = None  # mid-epoch point to write on preemption
        self._epoch_rng: dict[str, Any] | None = None

    # ------------------------------------------------------------------ AutoSaver
    def auto_save(self, interval: int | None, save_path: str = ".", name: str = "model_epoch{epoch:02d}",
                  overwrite: bool = False) -> None:
        """Save the whole handler during `train`.

        It saves at every 1-based epoch that is a multiple of `interval`, and at the last
        epoch of each `train` call when `save_on_last_epoch` is set; `interval=-1` saves only
        at the end; None turns auto-saving off. `name` is formatted with `epoch` (1-based)
        and the epoch's logs (e.g. ``"ckpt_{epoch:03d}_{val_loss:.3f}"``); ``.pth`` is added
        when missing. `overwrite=True` keeps only the latest auto-save (the previous file is
        removed after the new one is safely written; the file the handler was loaded from
        is never removed).
        """
        if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)
                                     or interval == 0 or interval < -1):
            raise ValueError(f"auto_save: interval={interval!r} must be a positive int, -1 (only at the end) or None (off).")
        self._check_name_keys(name)
        self._auto = {"interval": interval, "save_path": os.fspath(save_path), "name": name, "overwrite": bool(overwrite)}

    def _log_keys(self) -> set[str]:
        keys = {"epoch", "loss", "val_loss", "lr"}
        for metric in self._metrics:
            keys |= {metric, f"val_{metric}"}
        for cb in self._callbacks:
            keys |= set(getattr(cb, "log_keys", ()))
        return keys

    def _check_name_keys(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"auto_save: name={name!r} must be a non-empty format string.")
        try:
            fields = {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(name) if f}
        except ValueError as exc:
            raise ValueError(f"auto_save: name={name!r} is not a valid format string ({exc}).") from None
        unknown = sorted(fields - self._log_keys())
        if unknown:
            raise ValueError(
                f"auto_save: name={name!r} uses {unknown}, which the epoch logs will never hold; "
                f"available keys: {sorted(self._log_keys())} (add metrics before calling auto_save)."
            )

    save_interval = property(lambda self: self._auto["interval"],
                             lambda self, v: self.auto_save(v, self._auto["save_path"], self._auto["name"], self._auto["overwrite"]))
    save_path = property(lambda self: self._auto["save_path"],
                         lambda self, v: self._auto.__setitem__("save_path", os.fspath(v)))
    save_model_name = property(lambda self: self._auto["name"],
                               lambda self, v: (self._check_name_keys(v), self._auto.__setitem__("name", v)))
    overwrite_last_saved = property(lambda self: self._auto["overwrite"],
                                    lambda self, v: self._auto.__setitem__("overwrite", bool(v)))

    def _after_epoch(self, epoch: int, logs: dict, last: bool, save_on_last_epoch: bool) -> None:
        if self._preempted:
            self.save(self._preemption_target())
            self._info(f"Preemption signal received: saved {self._preemption_target()} and stopped.")
            return
        interval = self._auto["interval"]
        if interval is None:
            return
        due = (interval > 0 and (epoch + 1) % interval == 0) or (last and (save_on_last_epoch or interval == -1))
        if not due:
            return
        filename = self._auto["name"].format(**{**logs, "epoch": epoch + 1})
        if not filename.endswith(".pth"):
            filename += ".pth"
        path = os.path.join(self._auto["save_path"], filename)
        self.save(path)
        previous = self._last_auto_saved
        if (self._auto["overwrite"] and previous and os.path.abspath(previous) != os.path.abspath(path)
                and not (self._loaded_from and os.path.abspath(previous) == os.path.abspath(self._loaded_from))
                and os.path.exists(previous)):
            os.remove(previous)
        self._last_auto_saved = path

    # ------------------------------------------------------------------ preemption
    def set_preemption_checkpoint(self, path: str | None) -> None:
        """Where `train` saves when SIGTERM or SIGUSR1 arrives (default: `preempted.pth` in the
        auto-save folder). On such a signal, training finishes the current optimizer step,
        saves there, and `train` returns; `NNHandler.load` of that file resumes exactly,
        in the middle of the epoch."""
        self._preemption_path = None if path is None else os.fspath(path)

    def _preemption_target(self) -> str:
        return self._preemption_path or os.path.join(self._auto["save_path"], "preempted.pth")

    @contextlib.contextmanager
    def _preemption_guard(self) -> Iterator[None]:
        self._preempted = False
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return

        def on_signal(signum: int, frame: Any) -> None:
            self._preempted = True

        previous = {s: signal.signal(s, on_signal) for s in _PREEMPTION_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    # ------------------------------------------------------------------ save
    def _bindings(self) -> dict[int, str]:
        b = {id(self.module): "handler.module"}
        if self._model is not self.module:
            b[id(self._model)] = "handler.module"
        return b

    def save(self, path: str | os.PathLike) -> None:
        """Write the complete handler state to `path`, atomically (see `nnh.func.atomic_save`).

        The file holds tensors and plain values only (`torch.load(weights_only=True)` reads
        it). Classes and functions are stored as import paths; one that cannot be imported
        again (a lambda, a class from ``__main__``) is recorded by name with a warning, and
        `NNHandler.load` then needs it passed in.
        """
        atomic_save(self._checkpoint(), path)

    def _checkpoint(self) -> dict[str, Any]:
        unrecorded: list[tuple[str, str]] = []
        bind = self._bindings()

        def enc(value: Any, slot: str) -> Any:
            return encode_value(value, slot, bind, unrecorded)

        state = self._require_state()
        extra = {k: v for k, v in state_to_dict(state).items() if k not in ("params", "buffers", "optim")}
        ckpt: dict[str, Any] = {
            "format": _MAGIC,
            "format_version": FORMAT_VERSION,
            "nnh_version": __version__,
            "torch_version": str(torch.__version__),
            "model": {
                "class": enc(self._model_class, "model_class"),
                "kwargs": enc(self._model_kwargs, "model_kwargs"),
                "type": self._model_type.value,
                "code": self._model_code() if self._save_model_code else None,
            },
            "model_state_dict": self.module.state_dict(),
            "train_state": extra,
            "optimizer": None,
            "scheduler": None,
            "loss": None,
            "metrics": {name: enc(fn, f"metrics.{name}") for name, fn in self._metrics.items()},
            "history": {"train_losses": list(self.train_losses), "val_losses": list(self.val_losses),
                        "train_metrics": {k: list(v) for k, v in self.train_metrics_history.items()},
                        "val_metrics": {k: list(v) for k, v in self.val_metrics_history.items()}},
            "callbacks": [enc(cb, f"callbacks[{i}]") for i, cb in enumerate(self._callbacks)],
            "auto_saver": dict(self._auto),
            "sampler": None,
            "sde": enc(self._sde, "sde"),
            "seed": self._seed,
            "epoch": self._epoch,
            "device": str(self._device),
            "loaders": {which: {"kwargs": enc(spec, f"{which}_loader_kwargs"),
                                "sampler_epoch": getattr(getattr(getattr(self, f"_{which}_loader"), "sampler", None), "epoch", None)}
                        for which, spec in self._loader_specs.items()},
            "rng": _rng_state(),
            "resume": self._resume_point(),
        }
        if self._optimizer is not None:
            cls, kwargs = self._optimizer_spec
            ckpt["optimizer"] = {"class": enc(cls, "optimizer_class"), "kwargs": enc(kwargs, "optimizer_kwargs"),
                                 "state_dict": self._optimizer.state_dict()}
        if self._scheduler is not None:
            cls, kwargs, interval = self._scheduler_spec
            ckpt["scheduler"] = {"class": enc(cls, "scheduler_class"), "kwargs": enc(kwargs, "scheduler_kwargs"),
                                 "interval": interval, "state_dict": self._scheduler.state_dict()}
        if self._loss_fn is not None:
            ckpt["loss"] = {"fn": enc(self._loss_fn, "loss_fn"), "kwargs": enc(self._loss_fn_kwargs, "loss_fn_kwargs"),
                            "pass_epoch": self._pass_epoch_to_loss}
        if self._sampler is not None:
            cls, kwargs = self._sampler_spec
            ckpt["sampler"] = {"class": enc(cls, "sampler_class"), "kwargs": enc(kwargs, "sampler_kwargs"),
                               "state": enc(self._sampler.save(), "sampler_state")}
        if unrecorded:
            listed = ", ".join(f"{slot} ({name})" for slot, name in unrecorded)
            warnings.warn(
                f"NNHandler.save: {listed} cannot be imported again (a lambda, a local object, or "
                "something defined in __main__); the checkpoint records it by name only, and "
                "NNHandler.load will need it passed in, e.g. NNHandler.load(path, loss_fn=...).",
                UserWarning, stacklevel=3,
            )
        return ckpt

    def _resume_point(self) -> dict[str, Any] | None:
        return self._mid_epoch

    def _model_code(self) -> str | None:
        try:
            return inspect.getsource(self._model_class)
        except (OSError, TypeError):
            warnings.warn(f"save_model_code: the source of {self._model_class.__qualname__} is not available.", stacklevel=4)
            return None

    def _has_ema(self) -> bool:
        return self._state is not None and "ema" in self._state.keys()

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None, strict_load: bool = False,
             skip_optimizer: bool = False, skip_scheduler: bool = False, skip_history: bool = False,
             skip_callbacks: bool = False, skip_sampler_sde: bool = False, skip_ema: bool = False,
             **provided: Any):
        """Rebuild a handler from a file written by `save`.

        Objects the checkpoint recorded by name only are passed in by keyword: `model_class`,
        `loss_fn`, `optimizer_class`, `scheduler_class`, `sde`, `sampler` (an instance),
        `metrics` ({name: fn}), `model_kwargs` / `sampler_kwargs` ({name: value} for single
        constructor arguments), `callbacks` (a list, replacing the saved ones). Data loaders
        are not part of a checkpoint: set them again with `set_train_loader`/`set_val_loader`.
        With `strict_load=False`, missing or unexpected weight keys are listed in a warning;
        weights of another shape always raise.
        """
        path = os.fspath(path)
        ckpt = read_checkpoint(path, map_location="cpu")
        _check_header(ckpt, path)
        slots = _provided_slots(provided)
        needs = []

        def dec(value: Any) -> Any:
            out = decode_value(value, {"handler.module": handler.module} if handler_ready else {}, slots)
            needs.extend(find_unrecorded(out))
            return out

        handler_ready = False
        model_class = provided.get("model_class") or dec(ckpt["model"]["class"])
        model_kwargs = dec(ckpt["model"]["kwargs"])
        _raise_missing(needs, path)
        if device is None:
            device = ckpt["device"] if (not ckpt["device"].startswith("cuda") or torch.cuda.is_available()) else "cpu"
        handler = cls(model_class, device=device, model_type=ckpt["model"]["type"],
                      save_model_code=ckpt["model"]["code"] is not None, **model_kwargs)
        handler_ready = True
        handler._loaded_from = path
        _load_weights(handler.module, ckpt["model_state_dict"], strict_load, path)

        opt = ckpt["optimizer"]
        if opt is not None and not skip_optimizer:
            handler.set_optimizer(provided.get("optimizer_class") or dec(opt["class"]), **dec(opt["kwargs"]))
            _raise_missing(needs, path)
            handler.optimizer.load_state_dict(opt["state_dict"])
            # load_state_dict made new state tensors: rebuild the state's view of them.
            handler._state = init_train_state(handler.module, handler.optimizer)
        sch = ckpt["scheduler"]
        if sch is not None and not skip_scheduler and handler.optimizer is not None:
            handler.set_scheduler(provided.get("scheduler_class") or dec(sch["class"]), interval=sch["interval"], **dec(sch["kwargs"]))
            _raise_missing(needs, path)
            handler.scheduler.load_state_dict(sch["state_dict"])
        _load_train_state(handler, ckpt["train_state"], skip_ema)

        if ckpt["loss"] is not None:
            loss_fn = provided.get("loss_fn") or dec(ckpt["loss"]["fn"])
            handler.set_loss_fn(loss_fn, pass_epoch_to_loss=ckpt["loss"]["pass_epoch"], **dec(ckpt["loss"]["kwargs"]))
        saved_metrics = {name: provided.get("metrics", {}).get(name) or dec(fn) for name, fn in ckpt["metrics"].items()}
        _raise_missing(needs, path)
        for name, fn in saved_metrics.items():
            handler.add_metric(name, fn)
        if not skip_history:
            h = ckpt["history"]
            handler._history = {"train_losses": list(h["train_losses"]), "val_losses": list(h["val_losses"]),
                                "train_metrics": {k: list(v) for k, v in h["train_metrics"].items()},
                                "val_metrics": {k: list(v) for k, v in h["val_metrics"].items()}}
        handler._epoch = ckpt["epoch"]
        if not skip_callbacks:
            callbacks = provided.get("callbacks")
            if callbacks is None:
                callbacks = [dec(c) for c in ckpt["callbacks"]]
                _raise_missing(needs, path)
            for cb in callbacks:
                handler.add_callback(cb)
        if not skip_sampler_sde:
            handler._sde = provided.get("sde") or dec(ckpt["sde"])
            _load_sampler(handler, ckpt["sampler"], provided, dec)
            _raise_missing(needs, path)
        handler._auto = dict(ckpt["auto_saver"])
        handler._seed = ckpt["seed"]
        handler._resume = ckpt.get("resume")
        _set_rng_state(ckpt["rng"])
        return handler

    @classmethod
    def initialize_from_checkpoint(cls, checkpoint_path: str | os.PathLike, model_class: type, model_type: Any = None,
                                   device: str | torch.device | None = None, strict_load: bool = True, **model_kwargs: Any):
        """A new handler with only the model weights of a checkpoint: a full handler
        checkpoint or a plain state_dict, also one saved from a DDP-wrapped or
        `torch.compile`d model (the `module.` and `_orig_mod.` prefixes are stripped)."""
        path = os.fspath(checkpoint_path)
        ckpt = read_checkpoint(path, map_location="cpu")
        if isinstance(ckpt, dict) and ckpt.get("format") == _MAGIC:
            _check_header(ckpt, path)
            weights = ckpt["model_state_dict"]
            model_type = model_type or ckpt["model"]["type"]
        elif isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            weights = ckpt
        elif isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
            weights = ckpt["state_dict"]
        else:
            raise CheckpointError(f"{path!r} holds neither an nnh checkpoint nor a state_dict of tensors.")
        handler = cls(model_class, device=device or "cpu", model_type=model_type or "classification", **model_kwargs)
        _load_weights(handler.module, _strip_prefixes(weights), strict_load, path)
        return handler


def load_model_code(path: str | os.PathLike) -> str | None:
    """The model class source stored by `save_model_code=True`, as text (never executed)."""
    path = os.fspath(path)
    ckpt = read_checkpoint(path, map_location="cpu")
    _check_header(ckpt, path)
    return ckpt["model"]["code"]


def _check_header(ckpt: Any, path: str) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != _MAGIC:
        raise CheckpointError(f"{path!r} is not an NNHandler checkpoint (no nnh header); for a plain "
                              "state_dict use NNHandler.initialize_from_checkpoint.")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} has checkpoint format {version!r} (written by nnh {ckpt.get('nnh_version')}); this nnh "
            f"{__version__} reads formats up to {FORMAT_VERSION}. Upgrade nnh to load it."
        )


def _provided_slots(provided: dict[str, Any]) -> dict[str, Any]:
    slots = {k: v for k, v in provided.items() if k in ("model_class", "loss_fn", "optimizer_class", "scheduler_class", "sde", "sampler_class")}
    for group in ("model_kwargs", "sampler_kwargs", "optimizer_kwargs", "scheduler_kwargs", "loss_fn_kwargs"):
        for name, value in provided.get(group, {}).items():
            slots[f"{group}.{name}"] = value
    for name, fn in provided.get("metrics", {}).items():
        slots[f"metrics.{name}"] = fn
    unknown = set(provided) - {"model_class", "loss_fn", "optimizer_class", "scheduler_class", "sde", "sampler",
                               "sampler_class", "metrics", "model_kwargs", "sampler_kwargs", "optimizer_kwargs",
                               "scheduler_kwargs", "loss_fn_kwargs", "callbacks"}
    if unknown:
        raise TypeError(f"NNHandler.load got unexpected keyword arguments {sorted(unknown)}.")
    return slots


def _raise_missing(needs: list, path: str) -> None:
    if needs:
        listed = ", ".join(f"{u.slot} ({u.name})" for u in needs)
        first = needs[0].slot.split(".")[0].split("[")[0]
        raise CheckpointError(
            f"{path!r} recorded {listed} by name only (not importable when saved); pass them to "
            f"NNHandler.load, e.g. NNHandler.load(path, {first}=...)."
        )


def _strip_prefixes(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in weights.items():
        parts = [p for p in key.split(".") if p not in ("module", "_orig_mod")] if key.startswith(("module.", "_orig_mod.")) else key.split(".")
        out[".".join(parts)] = value
    return out


def _load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], strict: bool, path: str) -> None:
    own = module.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in weights.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if mismatched:
        raise CheckpointError(f"The weights in {path!r} do not fit {type(module).__name__}: shape mismatches "
                              f"{mismatched}; missing {missing}; unexpected {unexpected}.")
    if strict and (missing or unexpected):
        raise CheckpointError(f"The weights in {path!r} do not fit {type(module).__name__}: missing keys "
                              f"{missing}, unexpected keys {unexpected}. Pass strict_load=False to load the rest.")
    if missing or unexpected:
        warnings.warn(f"Loading {path!r} into {type(module).__name__}: missing keys {missing}, unexpected keys "
                      f"{unexpected}; these were left as they are.", UserWarning, stacklevel=3)
    module.load_state_dict(weights, strict=False)


def _load_train_state(handler: Any, extra: dict[str, Any], skip_ema: bool) -> None:
    state = handler._require_state()
    for key in ("step", "acc_samples"):
        if key in extra:
            state[key].copy_(extra[key])
    if "scaler" in extra:
        state["scaler"] = init_train_state(handler.module, grad_scaler=True)["scaler"]
        for key, value in extra["scaler"].items():
            state["scaler"][key].copy_(value)
    if "ema" in extra and not skip_ema:
        ema = init_ema(handler.module)
        for key, value in extra["ema"].items():
            if key in ema.keys():
                ema[key].copy_(value)
        state["ema"] = ema


def _load_sampler(handler: Any, saved: dict[str, Any] | None, provided: dict[str, Any], dec: Any) -> None:
    if provided.get("sampler") is not None:
        handler.sampler = provided["sampler"]
        return
    if saved is None:
        return
    sampler_cls = provided.get("sampler_class") or dec(saved["class"])
    kwargs = dec(saved["kwargs"])
    state = dec(saved["state"])
    unresolved = find_unrecorded(kwargs)
    if unresolved:
        return  # `_raise_missing` reports them, naming sampler_kwargs
    handler.sampler = sampler_cls(**kwargs)
    call_sampler_load(handler.sampler, state)


def _rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    py = rng["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npr = rng["numpy"]
    np.random.set_state(("MT19937", npr["keys"].numpy().astype(np.uint32), npr["pos"], npr["has_gauss"], npr["cached"]))
