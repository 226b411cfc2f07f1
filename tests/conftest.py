"""Fixtures shared by the test files."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the test (the machine is shared; two threads per process oversubscribe it)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
