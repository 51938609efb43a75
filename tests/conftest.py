"""Fixtures shared by the test modules (``fake_samples`` holds fake data, ``tiny_choi`` a tiny real model)."""

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A real choi-tiny-family model folder with tiny random weights (tests/tiny_choi.py)."""
    from tiny_choi import write_tiny_choi

    return write_tiny_choi(tmp_path_factory.mktemp("tiny-choi"))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir):
    from choi.pipelines.choi import CHOIPipeline

    return CHOIPipeline.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def sd_train_parts(tmp_path_factory):
    """Tiny SD parts, choi-sd model folders and a dataset for training (sd_components.write_training_parts)."""
    from sd_components import write_training_parts

    return write_training_parts(tmp_path_factory.mktemp("sd-train"))


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process; this test needs another, then gives it back."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()
