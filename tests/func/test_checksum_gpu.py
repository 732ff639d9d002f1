"""CUDA-only: checksums of device tensors are summed on the device and equal the CPU's.
Skipped on machines without a GPU (CI runs on CPU)."""

import pytest
import torch

import nnh.func.checksum as checksum
from nnh.func.checksum import add_checksum, tensor_checksum, verify_checksum

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_device_checksums_equal_the_cpu_ones():
    g = torch.Generator().manual_seed(0)
    cpu = [torch.randn(1000, 517, generator=g), torch.randn(7, dtype=torch.bfloat16, generator=g),
           torch.arange(10, dtype=torch.int64)]
    cuda = [t.cuda() for t in cpu]
    assert [tensor_checksum(t) for t in cuda] == [tensor_checksum(t) for t in cpu]
    mixed = [cuda[0], cpu[1], cuda[2]]
    assert checksum._checksums(mixed).tolist() == [tensor_checksum(t) for t in cpu]
    sealed = add_checksum({"a": cuda[0], "b": cpu[1]})
    verify_checksum({**sealed, "a": cuda[0].cpu()}, "f.pth")  # where the tensor sits does not matter
