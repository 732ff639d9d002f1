"""nnh.func.checksum: the cases the round-trip tests in test_checkpoint.py leave out."""

from __future__ import annotations

import warnings

import pytest
import torch

import nnh.func.checksum as checksum
from nnh.func import CheckpointError
from nnh.func.checksum import CHECKSUM_KEY, Unstorable, add_checksum, tensor_checksum, verify_checksum


def _sealed() -> dict:
    g = torch.Generator().manual_seed(0)
    return add_checksum({"w": torch.randn(300, 7, generator=g), "b": torch.randn(3, generator=g), "n": 4})


def test_sparse_and_quantized_tensors_are_summed_by_their_values():
    dense = torch.tensor([[0.0, 1.5], [2.0, 0.0]])
    assert tensor_checksum(dense.to_sparse()) == tensor_checksum(dense) != 0
    with warnings.catch_warnings():  # deprecated, but old modules still hold quantized tensors
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(dense, scale=0.5, zero_point=3, dtype=torch.quint8)
    assert tensor_checksum(q) == tensor_checksum(q.int_repr()) != 0


def test_meta_tensors_have_no_data_to_sum():
    values = checksum._checksums([torch.ones(3), torch.empty(5, device="meta"), torch.ones(2)])
    assert values.tolist() == [tensor_checksum(torch.ones(3)), 0, tensor_checksum(torch.ones(2))]


def test_the_record_holds_the_algorithm_the_meta_digest_and_one_sum_per_tensor():
    record = _sealed()[CHECKSUM_KEY]
    assert set(record) == {"algorithm", "meta", "tensors"}
    assert record["tensors"].dtype == torch.int64 and record["tensors"].shape == (2,)
    unknown = {**_sealed(), CHECKSUM_KEY: {**record, "algorithm": "crc32"}}
    with pytest.raises(CheckpointError, match="'crc32'.*newer nnh"):
        verify_checksum(unknown, "f.pth")


@pytest.mark.parametrize("damage", [
    lambda r: "not a record",
    lambda r: {k: v for k, v in r.items() if k != "meta"},
    lambda r: {**r, "meta": 5},
    lambda r: {**r, "tensors": r["tensors"].tolist()},
    lambda r: {**r, "tensors": r["tensors"].to(torch.int32)},
    lambda r: {**r, "tensors": r["tensors"].reshape(1, -1)},
], ids=["not-a-dict", "no-meta", "meta-not-str", "sums-not-a-tensor", "sums-not-int64", "sums-not-1d"])
def test_a_damaged_checksum_record_is_refused(damage):
    ckpt = _sealed()
    ckpt[CHECKSUM_KEY] = damage(ckpt[CHECKSUM_KEY])
    with pytest.raises(CheckpointError, match=r"'f\.pth' is corrupt.*checksum record is damaged"):
        verify_checksum(ckpt, "f.pth")


def test_checking_in_the_background_reports_at_the_wait():
    good, bad = _sealed(), _sealed()
    assert verify_checksum(good, "f.pth", wait=False)() is None
    bad["w"][0, 0] += 1
    finish = verify_checksum(bad, "f.pth", wait=False)  # keys and plain values are fine
    with pytest.raises(CheckpointError, match="1 tensor.*'w'"):
        finish()


@pytest.mark.parametrize("wait", [True, False])
def test_a_failure_while_summing_is_a_checkpoint_error_with_its_cause(monkeypatch, wait):
    def broken(tensors, workers=1):
        raise MemoryError("no room")

    sealed = _sealed()
    monkeypatch.setattr(checksum, "_checksums", broken)
    with pytest.raises(CheckpointError, match=r"Cannot verify.*'f\.pth'.*MemoryError: no room") as err:
        verify_checksum(sealed, "f.pth", wait=wait)()
    assert isinstance(err.value.__cause__, MemoryError)


def test_keys_and_set_members_must_be_plain_values():
    class Key:
        pass

    with pytest.raises(Unstorable, match=r"\['d'\]: a .*test_checksum\..*Key cannot be stored") as err:
        add_checksum({"d": {Key(): 1}})
    assert err.value.value_type is Key and err.value.keys == ("d",)
    with pytest.raises(Unstorable, match="the top level: a builtins.tuple"):
        add_checksum({(1, 2): 3})
    with pytest.raises(Unstorable, match=r"\['s'\]: a builtins.tuple"):
        add_checksum({"s": {(1, 2)}})


def test_strings_that_utf8_cannot_encode_are_still_sealed_and_checked():
    ckpt = add_checksum({"name": "half a pair: \ud800", "w": torch.ones(2)})
    verify_checksum(ckpt, "f.pth")
    with pytest.raises(CheckpointError, match="plain values"):
        verify_checksum({**ckpt, "name": "half a pair: \ud801"}, "f.pth")


def _reference_checksum(data: bytes) -> int:
    # The documented sum with Python integers: little-endian int64 words (the tail zero-padded),
    # block sums of 512 words, weights 2b + 1, taken mod 2^64 as a signed int64.
    data += bytes(-len(data) % 8)
    words = [int.from_bytes(data[i:i + 8], "little", signed=True) for i in range(0, len(data), 8)]
    total = sum((2 * b + 1) * sum(words[b * 512:(b + 1) * 512]) for b in range(len(words) // 512 + 1))
    return (total + 2**63) % 2**64 - 2**63


def test_the_checksum_is_the_weighted_block_sum_and_wraps_without_warnings():
    # Large words: every block sum and its weighted term wrap around 2^64. numpy warns when a
    # scalar (not an array) overflows; the sum must wrap silently, as documented.
    g = torch.Generator().manual_seed(3)
    words = torch.randint(-2**62, 2**62, (2 * 512 + 300,), dtype=torch.int64, generator=g)
    padded = torch.randint(0, 256, (8 * 700 + 5,), dtype=torch.uint8, generator=g)  # a 5-byte tail
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in (words, padded):
            assert tensor_checksum(t) == _reference_checksum(t.numpy().tobytes())
            assert checksum._checksums([t]).tolist() == [_reference_checksum(t.numpy().tobytes())]


def test_a_view_at_any_byte_offset_is_read_8_byte_aligned_on_every_path():
    # The device path reads int64 words from the bytes: an unaligned view must be copied first.
    buf = torch.arange(256, dtype=torch.uint8)
    for offset in range(72):
        t = buf[offset:offset + 100]
        raw = checksum._raw_bytes(t)
        assert raw.data_ptr() % 8 == 0, offset
        assert int(checksum._blocksum_torch(raw)) == _reference_checksum(t.numpy().tobytes()), offset


def test_the_error_counts_every_tensor_that_differs_and_names_the_first_five():
    tensors = [((f"t{i}",), torch.zeros(1)) for i in range(7)]
    error = checksum.tensor_check_error("f.pth", tensors, list(range(7)))
    assert "7 tensor(s)" in str(error)
    assert all(f"'t{i}'" in str(error) for i in range(5))
    assert "'t5'" not in str(error) and "'t6'" not in str(error)
    assert checksum.tensor_check_error("f.pth", tensors, []) is None


def test_checking_at_once_returns_a_wait_that_does_nothing():
    assert verify_checksum(_sealed(), "f.pth", wait=True)() is None
