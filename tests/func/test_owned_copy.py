"""nnh.func.owned_copy, through read_checkpoint(map_location="cpu"): tensors copied out of the
memory-mapped file into memory of their own, each copy checked while the next is made."""

from __future__ import annotations

import threading
import zipfile

import pytest
import torch
from torch import nn

import nnh.func.owned_copy as owned_copy
from nnh.func import CheckpointError, add_checksum, atomic_save, read_checkpoint
from nnh.func.checksum import tensor_checksum
from nnh.func.owned_copy import owned_copies


def _tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 30, generator=g)
    return {
        "big": torch.randn(3000, generator=g),  # several pieces once they are made small
        "base": base,
        "row": base[5],  # a view at an offset of the same storage
        "t": base.t(),  # not contiguous
        "param": nn.Parameter(torch.randn(4, generator=g)),
        "grad": torch.randn(3, generator=g).requires_grad_(True),
        "empty": torch.zeros(0),
        "ints": torch.arange(7, dtype=torch.int16),
    }


def _flip(path, member_suffix, at):
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member_suffix))
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + at] ^= 0x04
    path.write_bytes(bytes(data))


def test_copies_keep_values_layout_sharing_and_types(tmp_path, monkeypatch):
    monkeypatch.setattr(owned_copy, "_PIECE_BYTES", 4096)  # many pieces for "big"
    original = _tensors()
    atomic_save(add_checksum(dict(original)), tmp_path / "c.pth")
    got = read_checkpoint(tmp_path / "c.pth", map_location="cpu")
    for k, v in original.items():
        assert torch.equal(got[k], v) and got[k].stride() == v.stride() and got[k].dtype == v.dtype, k
    assert got["row"].untyped_storage().data_ptr() == got["base"].untyped_storage().data_ptr()
    assert got["t"].untyped_storage().data_ptr() == got["base"].untyped_storage().data_ptr()
    assert type(got["param"]) is nn.Parameter and got["grad"].requires_grad and not got["base"].requires_grad
    # The copies are the process's own memory: changing the file afterwards changes nothing.
    before = got["big"].clone()
    with open(tmp_path / "c.pth", "r+b") as f:
        f.write(b"\0" * (tmp_path / "c.pth").stat().st_size)
    assert torch.equal(got["big"], before)


@pytest.mark.parametrize("storage,at,named", [
    (0, 9000, r"1 tensor\(s\).*\['big'\]"),  # the third of "big"'s 4 KiB pieces
    (1, 40, r"2 tensor\(s\).*\['base', 't'\]"),  # a storage three tensors view; "row" is elsewhere in it
])
def test_a_changed_byte_is_found_in_the_copy(tmp_path, monkeypatch, storage, at, named):
    # torch.save numbers the storages as it first meets them: "big" 0, "base" 1.
    monkeypatch.setattr(owned_copy, "_PIECE_BYTES", 4096)
    atomic_save(add_checksum(_tensors()), tmp_path / "c.pth")
    _flip(tmp_path / "c.pth", f"/data/{storage}", at)
    with pytest.raises(CheckpointError, match=r"c\.pth.*corrupt.*" + named):
        read_checkpoint(tmp_path / "c.pth", map_location="cpu")
    assert isinstance(read_checkpoint(tmp_path / "c.pth", map_location="cpu", verify=False), dict)


def test_a_failure_while_checking_is_a_checkpoint_error(tmp_path, monkeypatch):
    atomic_save(add_checksum(_tensors()), tmp_path / "c.pth")

    def broken(*args):
        raise MemoryError("no room")

    monkeypatch.setattr(owned_copy, "_blocksum_numpy", broken)
    with pytest.raises(CheckpointError, match=r"Cannot verify.*c\.pth.*MemoryError: no room"):
        read_checkpoint(tmp_path / "c.pth", map_location="cpu")


def test_owned_copies_checks_only_what_has_a_sum():
    a, b = torch.ones(5), torch.arange(4.0)
    copies, differ = owned_copies([a, b], [tensor_checksum(a), None])
    assert differ == [] and torch.equal(copies[1], b) and copies[0].data_ptr() != a.data_ptr()
    _, differ = owned_copies([a, b], [tensor_checksum(a) + 1, tensor_checksum(b)])
    assert differ == [0]
    copies, differ = owned_copies([a], None)
    assert differ == [] and torch.equal(copies[0], a)


def test_tied_whole_tensors_are_each_checked_against_their_own_sum():
    # The second tensor of an already copied storage is summed as a tensor, not skipped.
    a = torch.arange(6.0)
    copies, differ = owned_copies([a, a], [tensor_checksum(a), tensor_checksum(a)])
    assert differ == [] and copies[0].data_ptr() == copies[1].data_ptr() and torch.equal(copies[1], a)
    _, differ = owned_copies([a, a], [tensor_checksum(a), tensor_checksum(a) + 1])
    assert differ == [1]


def test_a_view_into_a_larger_storage_is_checked_as_the_view():
    base = torch.arange(10.0)
    view = base[3:7]
    copies, differ = owned_copies([view], [tensor_checksum(view)])
    assert differ == [] and torch.equal(copies[0], view) and copies[0].untyped_storage().nbytes() == 40
    assert owned_copies([view], [tensor_checksum(base)])[1] == [0]


def test_a_parameter_without_grad_stays_without_grad():
    p = nn.Parameter(torch.ones(3), requires_grad=False)
    (copy,), _ = owned_copies([p])
    assert type(copy) is nn.Parameter and not copy.requires_grad


def test_one_byte_and_empty_tensors_are_checked_beside_others():
    one, empty, a = torch.tensor([7], dtype=torch.uint8), torch.zeros(0), torch.ones(3)
    assert tensor_checksum(one) != 0
    copies, differ = owned_copies([one, empty, a], [tensor_checksum(one), None, tensor_checksum(a)])
    assert differ == [] and torch.equal(copies[0], one) and copies[1].numel() == 0
    assert owned_copies([empty, a], [tensor_checksum(empty), tensor_checksum(a)])[1] == []


def test_a_failure_while_checking_the_last_piece_is_raised_not_hung(monkeypatch):
    def broken(*args):
        raise MemoryError("no room")

    monkeypatch.setattr(owned_copy, "_blocksum_numpy", broken)  # pieces of whole tensors
    monkeypatch.setattr(owned_copy, "tensor_checksum", broken)  # the others
    a = torch.ones(3)
    want = tensor_checksum(a)
    raised = []

    def run():
        try:
            owned_copies([a], [want])
        except MemoryError as exc:
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and len(raised) == 1


@pytest.mark.parametrize("workers", [1, 3])
def test_pieces_copied_and_summed_by_several_threads_add_up(monkeypatch, workers):
    # Each thread sums the pieces it copied; the per-thread sums of one tensor must add up to its
    # checksum whichever thread took which piece, and a changed expectation is still caught.
    monkeypatch.setattr(owned_copy, "_PIECE_BYTES", 8192)
    monkeypatch.setattr(owned_copy, "_WORKERS", workers)
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(50_000, generator=g), torch.randn(3, generator=g), torch.randn(12_345, generator=g)]
    want = [tensor_checksum(t) for t in tensors]
    copies, differ = owned_copies(tensors, want)
    assert differ == [] and all(torch.equal(c, t) for c, t in zip(copies, tensors))
    assert owned_copies(tensors, [want[0], want[1], want[2] ^ 1])[1] == [2]


def test_large_copies_ask_for_huge_pages_inside_their_own_memory(monkeypatch):
    # The advice covers only whole 2 MiB pages of the new storage, and is given before the copy.
    calls = []
    monkeypatch.setattr(owned_copy, "_MADVISE", lambda start, length: calls.append((start, length)))
    big, small = torch.randn(5 << 18), torch.randn(1000)  # 5 MiB and 4 KB
    (copy, small_copy), differ = owned_copies([big, small], [tensor_checksum(big), tensor_checksum(small)])
    assert differ == [] and torch.equal(copy, big) and torch.equal(small_copy, small)
    assert len(calls) == 1
    start, length = calls[0]
    lo, n = copy.data_ptr(), big.numel() * 4
    assert start % (2 << 20) == 0 and length % (2 << 20) == 0
    assert lo <= start and start + length <= lo + n and length >= n - 2 * (2 << 20) + 2
