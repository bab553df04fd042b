"""A module-scoped autouse fixture that runs torch on one thread; import it into a test module.

The tensors in the numerics and bound tests are small: one thread is faster than two competing
ones (with other processes busy, two OpenMP threads can make each small op 100 times slower).
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
