"""Fixtures shared by the test modules (``fake_samples`` and ``fake_pipeline`` hold the fake data)."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Shared CI machines: two OpenMP threads on an oversubscribed CPU can be 30x slower than one.

    Modules that run models use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
