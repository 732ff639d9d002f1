"""Checkpoint (de)serialization: tensors and plain Python values only, written atomically.

A checkpoint is a dict that `torch.load(path, weights_only=True)` reads: tensors, numbers,
strings, bools, None, and lists/tuples/dicts of them. Classes and functions are stored as
import paths (``"package.module:QualName"``) and imported again on load; nothing is ever
unpickled.
"""

from __future__ import annotations

import importlib
import os
import enum
import pickle
import secrets
import zipfile
from typing import IO, Any, Callable

import numpy as np
import torch
from tensordict import TensorDict

from nnh._init_record import recorded_init

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "atomic_save",
    "atomic_write",
    "read_checkpoint",
    "state_to_dict",
    "load_state_from_dict",
    "import_path",
    "import_object",
    "encode_value",
    "decode_value",
    "find_unrecorded",
    "Unrecorded",
]

# Bumped when a checkpoint written by this version cannot be read by an older nnh.
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or does not fit what it is loaded into."""


def state_to_dict(state: TensorDict) -> dict[str, Any]:
    """A train state as nested plain dicts of tensors (detached; devices unchanged)."""
    return {k: (state_to_dict(v) if isinstance(v, TensorDict) else v.detach())
            for k, v in state.items()}


@torch.no_grad()
def load_state_from_dict(state: TensorDict, data: dict[str, Any], *, strict: bool = True) -> TensorDict:
    """Copy the tensors of `data` (as `state_to_dict` made it) into `state`, in place.

    In-place copies keep every reference valid: the state's params are the module's own
    parameters, so loading the state loads the module. With `strict`, a key present on one
    side only, or a shape that differs, raises `CheckpointError` listing all of them. A
    state written before `acc_nonfinite` existed loads with that flag cleared.
    """
    missing, unexpected, mismatched = [], [], []
    _copy_into(state, data, "", missing, unexpected, mismatched)
    if "acc_nonfinite" in missing and "acc_nonfinite" in state.keys():
        missing.remove("acc_nonfinite")
        state["acc_nonfinite"].zero_()
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(
            "load_state_from_dict: the checkpoint does not fit the state; "
            f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {mismatched}."
        )
    return state


def _copy_into(state: TensorDict, data: dict, prefix: str, missing: list, unexpected: list, mismatched: list) -> None:
    for key in data:
        if key not in state.keys():
            unexpected.append(prefix + key)
    for key, target in state.items():
        if key not in data:
            missing.append(prefix + key)
            continue
        value = data[key]
        if isinstance(target, TensorDict):
            if isinstance(value, dict):
                _copy_into(target, value, f"{prefix}{key}.", missing, unexpected, mismatched)
            else:
                mismatched.append(f"{prefix}{key}: expected a dict")
        elif not isinstance(value, torch.Tensor) or value.shape != target.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            mismatched.append(f"{prefix}{key}: checkpoint {shape} vs state {tuple(target.shape)}")
        else:
            target.copy_(value)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], *, text: bool = False) -> None:
    """Create or replace the file `path` atomically with what ``write(f)`` writes to ``f``.

    ``f`` is a binary file object, or with ``text=True`` a text one opened as
    ``open(path, "w", newline="")`` opens it (default encoding, newlines written as given, as
    the csv module wants). The bytes go to a temporary file in the same folder
    (``.<name>.<random>.tmp``), which is flushed and fsynced and then renamed over `path` (an
    atomic replace on POSIX and Windows); the folder is fsynced after, so the rename survives
    a power cut. A process killed at any point leaves either the previous file or the new one,
    never a torn file; a kill before the rename may leave the hidden temporary file behind.
    If ``write`` raises, the temporary file is removed and `path` is untouched. The file gets
    the permissions a plain `open(path, "w")` would give (the umask applies); the folder is
    created as needed.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _create_temp(folder, os.path.basename(path))
    try:
        with (os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path` atomically, through `atomic_write`: a reader sees either
    the previous file or the complete new one, with the permissions ``open(path, "wb")``
    would give."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _create_temp(folder: str, name: str) -> tuple[int, str]:
    # Not tempfile.mkstemp: it creates mode 0600 files, and the rename would carry that mode
    # to the checkpoint, unreadable by the group on a shared cluster. Mode 0666 goes through
    # the umask as for any new file; O_EXCL keeps the name private to this writer.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"atomic_write: could not create a temporary file next to {name!r} in {folder!r}.")


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike, map_location: Any = None) -> Any:
    """Read a file written by `atomic_save`/`torch.save` with `weights_only=True`.

    Raises `CheckpointError` naming the path for a missing, empty, truncated or foreign
    file, and for one that carries a pickled payload (an arbitrary object), which is refused
    rather than unpickled.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"No checkpoint at {path!r}: the file does not exist.")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"The checkpoint {path!r} is empty (0 bytes); it was never written "
                              "completely. Load an earlier checkpoint.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path!r} is not a torch checkpoint: it is no zip archive (truncated, a file "
                              "of another format, or torch.save's legacy format, which nnh does not read).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refusing to load {path!r}: it holds objects other than tensors and plain Python "
            f"values (a pickled payload), and nnh never unpickles arbitrary objects. ({exc})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"Cannot read the checkpoint {path!r}: it is truncated or "
                              f"corrupt ({type(exc).__name__}: {exc}).") from None


def import_path(obj: Any) -> str | None:
    """``"module:QualName"`` for a class or function that can be imported again, else None
    (lambdas, local objects, anything defined in ``__main__`` or a notebook)."""
    module = getattr(obj, "__module__", None)
    if not module or module == "__main__":
        return None
    # Builtins such as torch.relu have a qualname ("_VariableFunctionsClass.relu") that is not
    # importable, while their plain name is: try both.
    for name in dict.fromkeys((getattr(obj, "__qualname__", None), getattr(obj, "__name__", None))):
        if not isinstance(name, str) or "<" in name:
            continue
        try:
            if import_object(f"{module}:{name}") is obj:
                return f"{module}:{name}"
        except (ImportError, AttributeError, ValueError):
            continue
    return None


def import_object(path: str) -> Any:
    """Import ``"module:QualName"`` and return the object."""
    if ":" not in path:
        raise ValueError(f"import_object: {path!r} is not of the form 'package.module:QualName'.")
    module_name, qualname = path.split(":", 1)
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------- objects as import paths
_TAG = "__nnh__"


class Unrecorded:
    """Placeholder for a value that a checkpoint recorded by name only (see `encode_value`)."""

    def __init__(self, slot: str, name: str) -> None:
        self.slot, self.name = slot, name

    def __repr__(self) -> str:
        return f"Unrecorded({self.slot!r}, {self.name!r})"


def encode_value(value: Any, slot: str, bindings: dict[int, str] | None = None,
                 unrecorded: list[tuple[str, str]] | None = None) -> Any:
    """Encode `value` as tensors and plain values that `torch.load(weights_only=True)` reads.

    - None, bool, int, float, str and tensors stay as they are (subclasses and NumPy scalars
      become the plain type); lists, tuples and dicts with string keys are encoded item by
      item; dtypes and devices become tagged strings; members of importable Enums become
      their class path and name.
    - An object whose identity is in `bindings` becomes a reference by name (e.g. the
      handler's own module, bound again to the loaded handler's module).
    - Importable classes and functions become ``{"__nnh__": "import", "path": ...}``.
    - Objects that record their constructor arguments (`init_args`/`init_kwargs`, as
      `nnh.Sampler`, callbacks and MCMC schedulers do through `nnh._init_record.RecordsInit`;
      see `recorded_init`) become their class path, encoded arguments and `state_dict()`.
    - Anything else (a lambda, a class from ``__main__``) is recorded by name only, and
      `(slot, name)` is appended to `unrecorded` so the caller can warn.
    """
    bindings = bindings or {}
    if unrecorded is None:
        unrecorded = []
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, enum.Enum):
        path = import_path(type(value))
        if path is not None:
            return {_TAG: "enum", "path": path, "name": value.name}
    elif isinstance(value, (bool, np.bool_)):
        return bool(value)
    elif isinstance(value, (int, np.integer)):
        # Subclasses and NumPy scalars would be pickled by class, and a weights_only load
        # refuses them: store the plain value.
        return int(value)
    elif isinstance(value, (float, np.floating)):
        return float(value)
    elif isinstance(value, str):
        return str.__str__(value)
    if id(value) in bindings:
        return {_TAG: "bound", "name": bindings[id(value)]}
    if isinstance(value, torch.dtype):
        return {_TAG: "dtype", "name": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {_TAG: "device", "name": str(value)}
    if isinstance(value, (list, tuple)):
        items = [encode_value(v, f"{slot}[{i}]", bindings, unrecorded) for i, v in enumerate(value)]
        return items if isinstance(value, list) else {_TAG: "tuple", "items": items}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: encode_value(v, f"{slot}.{k}", bindings, unrecorded) for k, v in value.items()}
    recorded = recorded_init(value)
    if recorded is None and callable(value):  # classes, and functions
        path = import_path(value)
        if path is not None:
            return {_TAG: "import", "path": path}
    elif recorded is not None:
        path = import_path(type(value))
        if path is not None:
            args, kwargs = recorded
            state = value.state_dict() if callable(getattr(value, "state_dict", None)) else None
            return {
                _TAG: "object",
                "path": path,
                "args": encode_value(list(args), f"{slot}.args", bindings, unrecorded),
                "kwargs": encode_value(dict(kwargs), f"{slot}.kwargs", bindings, unrecorded),
                "state": encode_value(state, f"{slot}.state", bindings, unrecorded),
            }
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    unrecorded.append((slot, name))
    return {_TAG: "unrecorded", "slot": slot, "name": name}


def decode_value(data: Any, bindings: dict[str, Any] | None = None, provided: dict[str, Any] | None = None) -> Any:
    """Invert `encode_value`. References by name are looked up in `bindings`; values that were
    recorded by name only are taken from `provided[slot]`, or left as `Unrecorded`."""
    bindings, provided = bindings or {}, provided or {}
    if isinstance(data, list):
        return [decode_value(v, bindings, provided) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(_TAG)
    if tag is None:
        return {k: decode_value(v, bindings, provided) for k, v in data.items()}
    if tag == "tuple":
        return tuple(decode_value(v, bindings, provided) for v in data["items"])
    if tag == "dtype":
        return getattr(torch, data["name"])
    if tag == "device":
        return torch.device(data["name"])
    if tag == "bound":
        if data["name"] not in bindings:
            raise CheckpointError(f"The checkpoint refers to {data['name']!r}, which this load does not provide.")
        return bindings[data["name"]]
    if tag == "import":
        return import_object(data["path"])
    if tag == "enum":
        return import_object(data["path"])[data["name"]]
    if tag == "object":
        cls = import_object(data["path"])
        obj = cls(*decode_value(data["args"], bindings, provided), **decode_value(data["kwargs"], bindings, provided))
        state = decode_value(data["state"], bindings, provided)
        if state is not None and callable(getattr(obj, "load_state_dict", None)):
            obj.load_state_dict(state)
        return obj
    if tag == "unrecorded":
        if data["slot"] in provided:
            return provided[data["slot"]]
        return Unrecorded(data["slot"], data["name"])
    raise CheckpointError(f"Unknown entry {tag!r} in a checkpoint; it was written by a newer nnh.")


def find_unrecorded(value: Any) -> list[Unrecorded]:
    """Every `Unrecorded` placeholder left inside a decoded value."""
    if isinstance(value, Unrecorded):
        return [value]
    if isinstance(value, (list, tuple)):
        return [u for v in value for u in find_unrecorded(v)]
    if isinstance(value, dict):
        return [u for v in value.values() for u in find_unrecorded(v)]
    return []
