"""choi.io: atomic writes and the one PNG encoder every output and dataset shard goes through."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from choi.io import atomic_write_bytes, atomic_writer, png_bytes


@pytest.mark.parametrize(("shape", "mode"), [((9, 13), "L"), ((9, 13, 3), "RGB"), ((9, 13, 4), "RGBA")])
def test_png_bytes_round_trip_in_every_mode(shape, mode):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = png_bytes(array)
    image = Image.open(io.BytesIO(data))
    assert image.mode == mode and np.array_equal(np.asarray(image), array)  # channels in RGB(A) order, lossless
    assert png_bytes(array) == data  # the same bytes every time


def test_a_failed_write_leaves_nothing_and_a_finished_one_everything(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]
