"""Checksums of a checkpoint dict: one per tensor and a digest of everything else.

`add_checksum` seals a dict before it is written; `verify_checksum` (called by
`nnh.func.read_checkpoint`) refuses a file whose bytes changed after saving, naming the
tensors that differ.
"""

from __future__ import annotations

import collections
import hashlib
import os
import threading
from typing import Any, Callable

import numpy as np
import torch

from nnh.func._errors import CheckpointError

__all__ = ["CHECKSUM_KEY", "Unstorable", "add_checksum", "verify_checksum", "tensor_checksum", "sealed_tensors",
           "tensor_check_error"]

CHECKSUM_KEY = "nnh_checksum"
_CHECKSUM_ALGORITHM = "blocksum64-v1"
# 512 int64 words: one 4 KiB page per block, so a page written in the wrong place (or swapped
# with another) changes the sum of both blocks under different weights.
_BLOCK = 512
# Blocks per piece of work when several threads sum (8 MiB), and how many threads sum.
_PIECE = 2048
_WORKERS = max(1, min(4, os.cpu_count() or 1))


def tensor_checksum(tensor: torch.Tensor) -> int:
    """A 64-bit checksum of the bytes of `tensor` (in its logical, row-major order).

    The bytes are read as little-endian int64 words ``w_i`` (the last 1-7 bytes zero-padded
    into one more word) and summed per 4 KiB block, ``s_b = sum_{i in block b} w_i``, then
    ``checksum = sum_b (2b + 1) s_b  mod 2^64`` (as a signed int64). Any change of one word is
    detected (the odd weights are invertible mod 2^64), and so is a block moved to another
    place. Integer sums are exact in any order, so every device gives the same value.

    Chosen by measurement (benchmarks/checkpoint.py, 600 MB of state on 2 CPU cores): the
    block sums run at memory bandwidth (~25 GB/s, ~23 ms), where ``zlib.crc32`` reads
    ~2.5 GB/s (~240 ms, half of `NNHandler.load`) and a per-word weight costs a second pass.
    """
    raw = _raw_bytes(tensor)
    if raw.device.type == "cpu":
        return _blocksum_numpy(raw.numpy())
    return int(_blocksum_torch(raw))


def _raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The bytes of `tensor` as a flat uint8 tensor, 8-byte aligned (a view when possible)."""
    t = tensor.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.int_repr()
    raw = t.reshape(-1).view(torch.uint8)  # reshape copies only a non-contiguous tensor
    if raw.numel() and raw.data_ptr() % 8:
        raw = raw.clone()
    return raw


def _blocksum_numpy(raw: np.ndarray, first: int = 0, stop: int | None = None) -> int:
    """The part of the checksum of `raw` from blocks `first` to `stop` (all blocks by default;
    the zero-padded tail is the last block), ``sum_{first <= b < stop} (2b + 1) s_b mod 2^64``
    as a signed int. The parts of a partition of the blocks add up to the whole (mod 2^64)."""
    # numpy rather than torch on the CPU: its row sums read ~2x faster here (measured), and
    # array arithmetic wraps mod 2^64 without warnings.
    n = raw.size // 8
    full = n // _BLOCK  # full blocks; block `full` holds the rest and the tail
    stop = full + 1 if stop is None else min(stop, full + 1)
    words = raw[: n * 8].view(np.int64)
    total = np.zeros(1, dtype=np.int64)
    upto = min(stop, full)
    if upto > first:
        sums = words[first * _BLOCK: upto * _BLOCK].reshape(-1, _BLOCK).sum(axis=1)
        total += (sums * np.arange(2 * first + 1, 2 * upto, 2, dtype=np.int64)).sum()
    if stop == full + 1 and first <= full:
        tail = np.zeros(8, dtype=np.uint8)
        tail[: raw.size - n * 8] = raw[n * 8:]
        last = np.concatenate([words[full * _BLOCK:], tail.view(np.int64)]).sum(keepdims=True)
        total += last * (2 * full + 1)
    return int(total[0])


def _blocks(raw: np.ndarray) -> int:
    """How many blocks `_blocksum_numpy` sums for `raw` (the last one maybe partial)."""
    return raw.size // 8 // _BLOCK + 1


def _blocksum_torch(raw: torch.Tensor) -> torch.Tensor:
    """`_blocksum_numpy` on any device, as a 0-dim int64 tensor there (no host sync)."""
    n = raw.numel() // 8
    words = raw[: n * 8].view(torch.int64)
    full = n // _BLOCK * _BLOCK
    tail = torch.cat([raw[n * 8:], raw.new_zeros(8 - (raw.numel() - n * 8))]).view(torch.int64)
    last = torch.cat([words[full:], tail]).sum().reshape(1)
    sums = torch.cat([words[:full].view(-1, _BLOCK).sum(dim=1), last])
    return (sums * torch.arange(1, 2 * sums.numel(), 2, dtype=torch.int64, device=raw.device)).sum()


def _to_int64(value: int) -> int:
    return (value + 2**63) % 2**64 - 2**63


def _checksums(tensors: list[torch.Tensor], workers: int = 1) -> torch.Tensor:
    """`tensor_checksum` of each, as an int64 tensor; one device-to-host copy per device.

    The CPU tensors are cut into pieces of `_PIECE` blocks, summed by `workers` threads (the
    calling one among them): one thread reads ~25 GB/s here, below what memory gives two
    (benchmarks/checkpoint.py), and numpy's sums release the GIL.
    """
    out: list[Any] = [0] * len(tensors)
    on_device: dict[torch.device, list[int]] = {}
    pieces: collections.deque[tuple[int, np.ndarray, int, int]] = collections.deque()
    for i, t in enumerate(tensors):
        if t.device.type == "cpu":
            raw = _raw_bytes(t).numpy()
            pieces.extend((i, raw, b, b + _PIECE) for b in range(0, _blocks(raw), _PIECE))
        elif t.device.type != "meta":  # no data to check
            on_device.setdefault(t.device, []).append(i)

    def work() -> None:
        while True:
            try:
                i, raw, first, stop = pieces.popleft()  # atomic under the GIL
            except IndexError:
                return
            part = _blocksum_numpy(raw, first, stop)
            with lock:
                out[i] += part

    lock = threading.Lock()
    helpers = [threading.Thread(target=work, name="nnh-checksum", daemon=True)
               for _ in range(min(workers, len(pieces)) - 1)]
    for thread in helpers:
        thread.start()
    work()
    for thread in helpers:
        thread.join()
    for indices in on_device.values():
        values = torch.stack([_blocksum_torch(_raw_bytes(tensors[i])) for i in indices]).tolist()
        for i, v in zip(indices, values):
            out[i] = v
    return torch.tensor([_to_int64(v) for v in out], dtype=torch.int64)


class Unstorable(TypeError):
    """A value that `torch.load(weights_only=True)` would refuse, found at `keys` (the keys
    and indices leading to it from the top of the checkpoint)."""

    def __init__(self, keys: tuple, value: Any) -> None:
        self.keys, self.value_type = keys, type(value)
        where = "".join(f"[{k!r}]" for k in keys) or "the top level"
        super().__init__(
            f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored in a checkpoint, "
            "which holds tensors and plain Python values only (what torch.load(weights_only=True) reads); "
            "the file could not be loaded again, so it is not written."
        )


# Exactly these types come back from a weights_only load as they were saved (subclasses would
# be pickled by class, and refused).
_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def _contents(value: Any) -> tuple[list[str], list[tuple[tuple, torch.Tensor]]]:
    """The structure of `value` as text tokens (every key, leaf and tensor dtype/shape, in
    order) and its tensors with their keys; raises `Unstorable` for anything else."""
    tokens: list[str] = []
    tensors: list[tuple[tuple, torch.Tensor]] = []

    def walk(v: Any, keys: tuple) -> None:
        kind = type(v)
        if kind in _TENSOR_TYPES:
            tokens.append(f"tensor {v.dtype} {tuple(v.shape)} {v.requires_grad}")
            tensors.append((keys, v))
        elif kind in _LEAF_TYPES:
            tokens.append(f"{kind.__name__} {v!r}")
        elif kind in (dict, collections.OrderedDict):
            tokens.append(f"dict {len(v)}")
            for k, item in v.items():
                if type(k) not in _LEAF_TYPES:
                    raise Unstorable(keys, k)
                tokens.append(f"key {type(k).__name__} {k!r}")
                walk(item, keys + (k,))
        elif kind in (list, tuple, torch.Size):
            tokens.append(f"{kind.__name__} {len(v)}")
            for i, item in enumerate(v):
                walk(item, keys + (i,))
        elif kind is set:
            for item in v:
                if type(item) not in _LEAF_TYPES:
                    raise Unstorable(keys, item)
            # Set order changes from process to process (string hashing is salted).
            tokens.append(f"set {sorted(f'{type(i).__name__} {i!r}' for i in v)}")
        else:
            raise Unstorable(keys, v)

    walk(value, ())
    return tokens, tensors


def _meta_digest(tokens: list[str]) -> str:
    return hashlib.blake2b("\n".join(tokens).encode("utf-8", "backslashreplace"), digest_size=16).hexdigest()


def add_checksum(ckpt: dict[str, Any]) -> dict[str, Any]:
    """`ckpt` with a checksum under `CHECKSUM_KEY`: `tensor_checksum` of every tensor, and a
    hash (BLAKE2b) of everything else, keys, order and tensor dtypes and shapes included.

    Raises `Unstorable` (a TypeError) naming where a value sits that a weights_only load
    would refuse, so such a file is never written.
    """
    body = {k: v for k, v in ckpt.items() if k != CHECKSUM_KEY}
    tokens, tensors = _contents(body)
    return {**body, CHECKSUM_KEY: {"algorithm": _CHECKSUM_ALGORITHM, "meta": _meta_digest(tokens),
                                   "tensors": _checksums([t for _, t in tensors], _WORKERS)}}


def sealed_tensors(ckpt: dict[str, Any], path: str) -> tuple[list[tuple[tuple, torch.Tensor]], torch.Tensor]:
    """The tensors of a sealed `ckpt` with their keys, in the order of its checksum record, and
    the sums recorded for them; a `CheckpointError` when the record is damaged or of an unknown
    kind, or when the keys and plain values differ from those sealed (everything but the
    tensor data is checked here)."""
    stored = ckpt.get(CHECKSUM_KEY)
    if isinstance(stored, dict) and isinstance(stored.get("algorithm"), str) \
            and stored["algorithm"] != _CHECKSUM_ALGORITHM:
        raise CheckpointError(f"The checkpoint {path!r} has a checksum of kind {stored['algorithm']!r}, which "
                              f"this nnh does not know (it writes {_CHECKSUM_ALGORITHM!r}): the file was written "
                              "by a newer nnh (upgrade nnh to load it), or the record is damaged.")
    if not (isinstance(stored, dict) and isinstance(stored.get("meta"), str)
            and isinstance(stored.get("tensors"), torch.Tensor)
            and stored["tensors"].dtype == torch.int64 and stored["tensors"].dim() == 1):
        raise CheckpointError(f"{_corrupt(path)}: its checksum record is damaged. Load an earlier checkpoint.")
    try:
        tokens, tensors = _contents({k: v for k, v in ckpt.items() if k != CHECKSUM_KEY})
    except Unstorable as exc:
        raise CheckpointError(f"{_corrupt(path)}: {exc}") from None
    if _meta_digest(tokens) != stored["meta"] or len(tensors) != stored["tensors"].numel():
        raise CheckpointError(f"{_corrupt(path)}: its keys or plain values (everything but the tensor data) do "
                              "not match the checksum stored with them. Load an earlier checkpoint.")
    return tensors, stored["tensors"].cpu()


def _corrupt(path: str) -> str:
    return f"The checkpoint {path!r} is corrupt (changed after it was saved: a disk, copy or transfer error)"


def tensor_check_error(path: str, tensors: list[tuple[tuple, torch.Tensor]], differ: list[int],
                       failure: BaseException | None = None) -> CheckpointError | None:
    """The error for tensors whose data does not match their sums (indices `differ`), or for a
    `failure` while summing them; None when neither."""
    if failure is not None:
        error = CheckpointError(f"Cannot verify the checkpoint {path!r}: checking its tensors failed "
                                f"({type(failure).__name__}: {failure}).")
        error.__cause__ = failure
        return error
    if differ:
        names = [".".join(map(str, tensors[i][0])) for i in differ]
        return CheckpointError(f"{_corrupt(path)}: the data of {len(names)} tensor(s) does not match the checksum "
                               f"stored with it: {names[:5]}. Load an earlier checkpoint.")
    return None


def verify_checksum(ckpt: dict[str, Any], path: str, *, wait: bool = True) -> Callable[[], None]:
    """Check `ckpt` (as read from `path`) against the checksum `add_checksum` stored in it;
    raise `CheckpointError` naming the path and the first part that differs.

    The keys and plain values are checked before it returns. With ``wait=False`` the tensor
    data (the bulk: one read of every byte) is checked by background threads while the caller
    goes on, and the function returned waits for it and raises then; the caller must not write
    to the tensors or let them out before calling it. With ``wait=True`` it is checked at once
    and the function returned does nothing. (`nnh.func.read_checkpoint` checks the tensors
    while it copies them out of the file instead: see `nnh.func.owned_copy`.)
    """
    tensors, expected = sealed_tensors(ckpt, path)
    differ: list[int] = []
    failed: list[BaseException] = []

    def check_tensors() -> None:
        try:
            differ.extend((_checksums([t for _, t in tensors], _WORKERS) != expected).nonzero().flatten().tolist())
        except BaseException as exc:  # noqa: BLE001 - re-raised by raise_if_changed, in the caller's thread
            failed.append(exc)

    def raise_if_changed() -> None:
        error = tensor_check_error(path, tensors, differ, failed[0] if failed else None)
        if error is not None:
            raise error

    if wait:
        check_tensors()
        raise_if_changed()
        return lambda: None
    # numpy's sums release the GIL: the check runs beside what the caller builds meanwhile.
    thread = threading.Thread(target=check_tensors, name="nnh-verify-checksum", daemon=True)
    thread.start()

    def finish() -> None:
        thread.join()
        raise_if_changed()

    return finish
