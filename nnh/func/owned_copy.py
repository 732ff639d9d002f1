"""Tensors read through a memory map, copied into memory of their own while their checksums
are taken.

A load has to copy every tensor out of the file once, whatever reads it. `owned_copies` makes
that copy from tensors `torch.load(..., mmap=True)` mapped, in pieces of `_PIECE_BYTES`, on
`_WORKERS` threads; the thread that copies a piece sums it next, while the piece is still in
its cache (`nnh.func.checksum`), so the check reads no memory the copy did not. Large copies
are allocated on transparent huge pages where the system offers them (Linux, `madvise` mode):
most of a plain copy's time was page faults on the fresh memory. What is verified is the copy
that is returned, not the file's pages, which another process could still change.
Figures: benchmarks/RESULTS.md, "Checksums".
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os
import threading
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nnh.func.checksum import _blocksum_numpy, _to_int64, tensor_checksum

__all__ = ["owned_copies"]

# 4 MiB: a multiple of the checksum's 4 KiB block, small enough that the piece is still cached
# when the thread that copied it sums it, large enough that the Python per piece is
# negligible (1, 4, 8 and 16 MiB measured: 4 was the fastest).
_PIECE_BYTES = 4 << 20
_BLOCK_BYTES = 4096
_WORKERS = max(1, min(2, os.cpu_count() or 1))
_HUGE_PAGE = 2 << 20


def owned_copies(tensors: list[Tensor], expected: list[int | None] | None = None) -> tuple[list[Tensor], list[int]]:
    """CPU copies of `tensors` in freshly allocated memory, and the indices of those whose
    `tensor_checksum` differs from `expected[i]` (not checked where that is None, or for any
    when `expected` is None).

    Tensors that share a storage in the input (views, tied weights) share the copy of it;
    dtype, shape, strides, offset, `requires_grad` and the `nn.Parameter` type are kept.
    """
    checked = [False] * len(tensors) if expected is None else [e is not None for e in expected]
    copies: list[Tensor] = []
    storages: dict[tuple[int, int], torch.UntypedStorage] = {}
    pieces: list[tuple[int | None, np.ndarray, np.ndarray, int, int]] = []
    later: list[int] = []  # checked tensors that are not their whole storage: summed after the copy
    for i, t in enumerate(tensors):
        src = t.untyped_storage()
        key = (src.data_ptr(), src.nbytes())
        # The common case, a tensor that is its whole storage: summed piece by piece.
        whole = (checked[i] and key not in storages and t.is_contiguous()
                 and t.storage_offset() == 0 and t.numel() * t.element_size() == src.nbytes())
        if key not in storages:
            storages[key] = _new_storage(src.nbytes())
            pieces += _pieces(src, storages[key], i if whole else None)
        copy = torch.empty(0, dtype=t.dtype).set_(storages[key], t.storage_offset(), t.size(), t.stride())
        if isinstance(t, nn.Parameter):
            copy = nn.Parameter(copy, requires_grad=t.requires_grad)
        elif t.requires_grad:
            copy.requires_grad_(True)
        if checked[i] and not whole:
            later.append(i)
        copies.append(copy)
    sums = _copy_and_sum(pieces, len(tensors))
    for i in later:
        sums[i] = tensor_checksum(copies[i].detach())
    differ = [i for i, s in enumerate(sums) if checked[i] and _to_int64(s) != expected[i]]
    return copies, differ


def _pieces(src: torch.UntypedStorage, dst: torch.UntypedStorage,
            index: int | None) -> list[tuple[int | None, np.ndarray, np.ndarray, int, int]]:
    """The copy of `src` into `dst` as (index, source, target, start, stop) byte ranges of at most
    `_PIECE_BYTES`; `index` is the tensor the pieces are summed for (None: not summed). An empty
    storage that is summed still gets one (empty) piece: its checksum is that of the zero tail."""
    n = src.nbytes()
    source = torch.empty(0, dtype=torch.uint8).set_(src).numpy()
    target = torch.empty(0, dtype=torch.uint8).set_(dst).numpy()
    if n == 0:
        return [(index, source, target, 0, 0)] if index is not None else []
    return [(index, source, target, start, min(n, start + _PIECE_BYTES)) for start in range(0, n, _PIECE_BYTES)]


def _copy_and_sum(pieces: list, n_tensors: int) -> list[int]:
    """Copies every piece, on `_WORKERS` threads (the calling one among them), each piece summed
    by the thread that copied it; returns each tensor's sum of its pieces' block sums (0 for
    tensors without pieces). The first exception of any thread is raised here once all stop."""
    order = itertools.count()  # next() on it is atomic: each piece goes to one thread
    totals: list[list[int]] = []
    failed: list[BaseException] = []

    def work() -> None:
        sums = [0] * n_tensors
        totals.append(sums)
        try:
            while not failed and (k := next(order)) < len(pieces):
                index, source, target, start, stop = pieces[k]
                np.copyto(target[start:stop], source[start:stop])
                if index is not None:  # blocks [start, stop) / 4 KiB; the last piece takes the tail
                    last = stop == target.size
                    sums[index] += _blocksum_numpy(target, start // _BLOCK_BYTES, None if last else stop // _BLOCK_BYTES)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            failed.append(exc)

    helpers = [threading.Thread(target=work, name="nnh-copy-verify", daemon=True)
               for _ in range(min(_WORKERS, len(pieces)) - 1)]
    for thread in helpers:
        thread.start()
    try:
        work()
    finally:
        for thread in helpers:
            thread.join()
    if failed:
        raise failed[0]
    return [sum(column) for column in zip(*totals)] if totals else [0] * n_tensors


def _new_storage(nbytes: int) -> torch.UntypedStorage:
    """Uninitialised CPU memory of `nbytes`, advised onto huge pages when it spans one."""
    storage = torch.UntypedStorage(nbytes)
    if nbytes >= 2 * _HUGE_PAGE:
        _advise_huge_pages(storage.data_ptr(), nbytes)
    return storage


def _madvise() -> Any:
    advice = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux only
    if advice is None:
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    call.restype = ctypes.c_int
    return lambda start, length: call(start, length, advice)


_MADVISE = _madvise()


def _advise_huge_pages(address: int, nbytes: int) -> None:
    """Asks for transparent huge pages on the whole 2 MiB pages inside [address, address +
    nbytes), before anything touches them. Advice only: where the system refuses (THP off, not
    Linux) the memory stays on ordinary pages and nothing changes but the speed."""
    if _MADVISE is None:
        return
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    stop = (address + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if stop > start:
        _MADVISE(start, stop - start)
