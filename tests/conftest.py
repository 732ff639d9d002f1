import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """Run every test on one intra-op thread.

    The tests' tensors are tiny: a second thread only adds synchronisation, and on a busy
    2-core machine OpenMP's spinning threads make single ops up to 100x slower. Results stay
    bitwise reproducible either way; child processes get the same setting through
    `tests._models.CHILD_ENV`.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64_default():
    """`torch.set_default_dtype(torch.float64)` for one test, restored after it."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)
