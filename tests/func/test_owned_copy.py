"""nnh.func.owned_copy, through read_checkpoint(map_location="cpu"): tensors copied out of the
memory-mapped file into memory of their own, each copy checked while the next is made."""

from __future__ import annotations

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
