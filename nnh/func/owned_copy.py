"""Tensors read through a memory map, copied into memory of their own while their checksums
are taken.

A load has to copy every tensor out of the file once, whatever reads it. `owned_copies` makes
that copy from tensors `torch.load(..., mmap=True)` mapped, in pieces of `_PIECE_BYTES`, and
hands each piece, already copied and still in cache, to a second thread that sums it
(`nnh.func.checksum`). The copy and the verification overlap: verifying costs about 1% of a
load on two cores (benchmarks/checkpoint.py), where summing after `torch.load` cost 10%.
What is verified is the copy that is returned, not the file's pages, which another process
could still change.
"""

from __future__ import annotations

import queue
import threading

import torch
from torch import Tensor, nn

from nnh.func.checksum import _blocksum_numpy, _to_int64, tensor_checksum

__all__ = ["owned_copies"]

# 8 MiB: a multiple of the checksum's 4 KiB block, small enough that the summing thread
# reads a piece from cache right after it is copied, large enough that the Python per piece
# is negligible.
_PIECE_BYTES = 8 << 20
_BLOCK_BYTES = 4096


def owned_copies(tensors: list[Tensor], expected: list[int | None] | None = None) -> tuple[list[Tensor], list[int]]:
    """CPU copies of `tensors` in freshly allocated memory, and the indices of those whose
    `tensor_checksum` differs from `expected[i]` (not checked where that is None, or for any
    when `expected` is None).

    Tensors that share a storage in the input (views, tied weights) share the copy of it;
    dtype, shape, strides, offset, `requires_grad` and the `nn.Parameter` type are kept.
    """
    copies: list[Tensor] = []
    storages: dict[tuple[int, int], torch.UntypedStorage] = {}
    sums = [0] * len(tensors)
    pieces: queue.SimpleQueue = queue.SimpleQueue()
    failed: list[BaseException] = []

    def check() -> None:
        try:
            while (item := pieces.get()) is not None:
                i, data, first, stop = item
                sums[i] += tensor_checksum(data) if first is None else _blocksum_numpy(data, first, stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            failed.append(exc)
            while pieces.get() is not None:  # let the copier finish
                pass

    checked = [False] * len(tensors) if expected is None else [e is not None for e in expected]
    checker = threading.Thread(target=check, name="nnh-verify-copy", daemon=True) if any(checked) else None
    if checker is not None:
        checker.start()
    try:
        for i, t in enumerate(tensors):
            src = t.untyped_storage()
            key = (src.data_ptr(), src.nbytes())
            # The common case, a tensor that is its whole storage: summed piece by piece.
            whole = (checked[i] and key not in storages and t.is_contiguous()
                     and t.storage_offset() == 0 and t.numel() * t.element_size() == src.nbytes())
            if key not in storages:
                storages[key] = _copy_storage(src, i if whole else None, pieces)
            copy = torch.empty(0, dtype=t.dtype).set_(storages[key], t.storage_offset(), t.size(), t.stride())
            if isinstance(t, nn.Parameter):
                copy = nn.Parameter(copy, requires_grad=t.requires_grad)
            elif t.requires_grad:
                copy.requires_grad_(True)
            if checked[i] and not whole:
                pieces.put((i, copy.detach(), None, None))
            copies.append(copy)
    finally:
        if checker is not None:
            pieces.put(None)
            checker.join()
    if failed:
        raise failed[0]
    differ = [i for i, s in enumerate(sums) if checked[i] and _to_int64(s) != expected[i]]
    return copies, differ


def _copy_storage(src: torch.UntypedStorage, index: int | None, pieces: queue.SimpleQueue) -> torch.UntypedStorage:
    """A new storage with the bytes of `src`, copied in pieces; with `index`, each piece is
    queued for summing as tensor `index` (one that is its whole storage)."""
    n = src.nbytes()
    dst = torch.UntypedStorage(n)
    source = torch.empty(0, dtype=torch.uint8).set_(src)
    target = torch.empty(0, dtype=torch.uint8).set_(dst)
    data = target.numpy() if index is not None else None
    for start in range(0, n, _PIECE_BYTES):
        stop = min(n, start + _PIECE_BYTES)
        target[start:stop].copy_(source[start:stop])
        if data is not None:
            # Blocks [start, stop) / 4 KiB; the last piece also takes the partial last block.
            pieces.put((index, data, start // _BLOCK_BYTES, None if stop == n else stop // _BLOCK_BYTES))
    if n == 0 and data is not None:
        pieces.put((index, data, 0, None))
    return dst
