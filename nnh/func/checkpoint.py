"""Checkpoint (de)serialization: tensors and plain Python values only, written atomically.

A checkpoint is a dict that `torch.load(path, weights_only=True)` reads: tensors, numbers,
strings, bools, None, and lists/tuples/dicts of them. Classes and functions are stored as
import paths (``"package.module:QualName"``) and imported again on load; nothing is ever
unpickled. `add_checksum` seals such a dict with a checksum of every tensor and of the rest,
which `read_checkpoint` verifies, so a file changed after saving is refused, not loaded.
"""

from __future__ import annotations

import os
import pickle
import secrets
import stat
import zipfile
from typing import IO, Any, Callable

import torch
from tensordict import TensorDict

from nnh.func._errors import CheckpointError
from nnh.func.encoding import Unrecorded, decode_value, encode_value, find_unrecorded, import_object, import_path
from nnh.func.checksum import (CHECKSUM_KEY, Unstorable, add_checksum, sealed_tensors, tensor_check_error,
                               tensor_checksum, verify_checksum)
from nnh.func.owned_copy import owned_copies

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "CHECKSUM_KEY",
    "add_checksum",
    "verify_checksum",
    "tensor_checksum",
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
    "Unstorable",
]

# Bumped when a checkpoint written by this version cannot be read by an older nnh. Format 2
# added the checksum (`add_checksum`): every file of format >= 2 carries one.
FORMAT_VERSION = 2


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
    If ``write`` raises, the temporary file is removed and `path` is untouched. The folder is
    created as needed.

    Permissions are those of a plain ``open(path, "w")``: a new file gets mode 0666 less the
    umask; a file that is replaced keeps its permission bits (0640 stays 0640); and a file
    that this user may not write (``open(path, "w")`` would be refused, e.g. mode 0444) is
    refused with `PermissionError` before anything is written, although the rename would
    succeed in a writable folder. As for ``open``, root may write any file, so root replaces
    a read-only file too (keeping its mode).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    mode = _mode_to_keep(path)
    fd, tmp = _create_temp(folder, os.path.basename(path))
    try:
        if mode is not None:
            os.chmod(tmp, mode)
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
    the previous file or the complete new one; permissions as `atomic_write` keeps them."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _mode_to_keep(path: str) -> int | None:
    """The permission bits of the file `path` replaces (None for a new file), after checking
    that this user may write it, as ``open(path, "w")`` would."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"atomic_write: {path!r} is a directory; pass the path of a file.")
    # The rename needs write access to the folder only; the check keeps the file's own mode
    # meaningful. os.access with the effective ids is what open() checks (root passes).
    effective = os.access in os.supports_effective_ids
    if not os.access(path, os.W_OK, effective_ids=effective):
        raise PermissionError(
            f"atomic_write: {path!r} is not writable by this user (mode {stat.filemode(st.st_mode)}), so it "
            "is not replaced: open(path, 'w') would be refused too. Make it writable (chmod u+w) or "
            "write to another path."
        )
    return stat.S_IMODE(st.st_mode) & 0o777


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


def _is_zip(path: str) -> bool:
    # is_zipfile raises BadZipFile itself for some damaged end records (e.g. a changed
    # "number of this disk" field) instead of answering False.
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:
        return False


def read_checkpoint(path: str | os.PathLike, map_location: Any = None, *, verify: bool = True) -> Any:
    """Read a file written by `atomic_save`/`torch.save` with `weights_only=True`.

    A dict sealed by `add_checksum` is verified against its checksum, unless `verify` is
    False. With ``map_location="cpu"`` the file is memory-mapped and every tensor copied out
    of it, each piece summed by the thread that copied it while it is still in cache
    (`nnh.func.owned_copy`; the cost is in benchmarks/RESULTS.md, "Checksums"); otherwise
    the tensors are checked after `torch.load` (`verify_checksum`).
    Every failure is a `CheckpointError` naming the path and what is wrong: a missing,
    empty, truncated, corrupt or foreign file, a folder, and a file that carries a pickled
    payload (an arbitrary object), which is refused rather than unpickled.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{path!r} is a directory, not a checkpoint file; pass the path of a file "
                              "inside it (the one NNHandler.save or auto_save wrote).")
    if not os.path.exists(path):
        raise CheckpointError(f"No checkpoint at {path!r}: the file does not exist.")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise CheckpointError(f"Cannot open the checkpoint {path!r}: {exc.strerror or exc}.") from None
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"The checkpoint {path!r} is empty (0 bytes); it was never written "
                              "completely. Load an earlier checkpoint.")
    if not _is_zip(path):
        raise CheckpointError(f"{path!r} is not a torch checkpoint: it is no zip archive (truncated, a file "
                              "of another format, or torch.save's legacy format, which nnh does not read).")
    to_cpu = isinstance(map_location, (str, torch.device)) and torch.device(map_location).type == "cpu"
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=to_cpu)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refusing to load {path!r}: it holds objects other than tensors and plain Python "
            f"values (a pickled payload), and nnh never unpickles arbitrary objects; or the file is "
            f"corrupt. ({exc})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged file fails anywhere in the unpickler
        # A changed byte surfaces as whatever the unpickler or the zip reader trips over first
        # (UnicodeDecodeError, OverflowError, RuntimeError, ...): all mean the same here.
        raise CheckpointError(f"Cannot read the checkpoint {path!r}: it is truncated or "
                              f"corrupt ({type(exc).__name__}: {exc}).") from None
    sealed = verify and isinstance(obj, dict) and CHECKSUM_KEY in obj
    if to_cpu:
        return _owned(obj, path, sealed)
    if sealed:
        verify_checksum(obj, path)
    return obj


def _owned(obj: Any, path: str, verify: bool) -> Any:
    """`obj` with every tensor copied out of the memory-mapped file, checked when `verify`."""
    tensors = _tensors_in(obj, ())  # the checksum record's own tensor included
    sums: dict[int, int] = {}
    if verify:
        sealed, expected = sealed_tensors(obj, path)
        sums = {id(t): s for (_, t), s in zip(sealed, expected.tolist())}
    try:
        copies, differ = owned_copies([t for _, t in tensors], [sums.get(id(t)) for _, t in tensors])
    except Exception as exc:  # noqa: BLE001 - a read error of the mapped file, or of the check
        raise tensor_check_error(path, tensors, [], exc) from exc
    error = tensor_check_error(path, tensors, differ)
    if error is not None:
        raise error
    return _replace_tensors(obj, {id(t): c for (_, t), c in zip(tensors, copies)})


def _tensors_in(value: Any, keys: tuple) -> list[tuple[tuple, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        return [(keys, value)]
    if isinstance(value, dict):
        return [kt for k, v in value.items() for kt in _tensors_in(v, keys + (k,))]
    if isinstance(value, (list, tuple)):
        return [kt for i, v in enumerate(value) for kt in _tensors_in(v, keys + (i,))]
    return []


def _replace_tensors(value: Any, copies: dict[int, torch.Tensor]) -> Any:
    """`value` rebuilt with each tensor replaced by ``copies[id(tensor)]``."""
    if isinstance(value, torch.Tensor):
        return copies[id(value)]
    if isinstance(value, dict):
        return type(value)((k, _replace_tensors(v, copies)) for k, v in value.items())
    if type(value) in (list, tuple):
        return type(value)(_replace_tensors(v, copies) for v in value)
    return value
