"""Checkpoint (de)serialization: tensors and plain Python values only, written atomically.

A checkpoint is a dict that `torch.load(path, weights_only=True)` reads: tensors, numbers,
strings, bools, None, and lists/tuples/dicts of them. Classes and functions are stored as
import paths (``"package.module:QualName"``) and imported again on load; nothing is ever
unpickled.
"""

from __future__ import annotations

import importlib
import os
import pickle
import tempfile
import zipfile
from typing import Any

import torch
from tensordict import TensorDict

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "atomic_save",
    "read_checkpoint",
    "state_to_dict",
    "load_state_from_dict",
    "import_path",
    "import_object",
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
    side only, or a shape that differs, raises `CheckpointError` listing all of them.
    """
    missing, unexpected, mismatched = [], [], []
    _copy_into(state, data, "", missing, unexpected, mismatched)
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


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path` atomically.

    The bytes go to a temporary file in the same folder, which is flushed and fsynced and
    then renamed over `path` (an atomic replace on POSIX and Windows). A process killed at
    any point leaves either the previous file or the new one, never a torn file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
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
        raise CheckpointError(f"{path!r} is not a torch checkpoint (no zip archive: truncated, "
                              "or a file of another format).")
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
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found = import_object(f"{module}:{qualname}")
    except (ImportError, AttributeError, ValueError):
        return None
    return f"{module}:{qualname}" if found is obj else None


def import_object(path: str) -> Any:
    """Import ``"module:QualName"`` and return the object."""
    if ":" not in path:
        raise ValueError(f"import_object: {path!r} is not of the form 'package.module:QualName'.")
    module_name, qualname = path.split(":", 1)
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
