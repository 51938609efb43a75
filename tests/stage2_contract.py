"""The contract every stage-2 family must pass, run through the real CHOIPipeline.

``check_stage2_contract(pipe, human, object, interaction)`` is reused by each family's tests (choi-tiny
here; choi-sd with its own tiny components): same seed → same images; image k of a batch equals a
run of one with seed + k; output shapes; the ``choi.json`` fields; the background kept outside the
painted region.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation

REQUIRED_RECORD = ("request", "interaction", "seeds", "num_images", "family", "options", "model", "stage1", "stage2",
                   "choi_version", "references", "images")  # fmt: skip


def layout(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A user layout: the person left of centre, the object right of it."""
    human = np.zeros((height, width), bool)
    obj = np.zeros((height, width), bool)
    human[height // 4 : 7 * height // 8, width // 4 : width // 2] = True
    obj[height // 2 : 7 * height // 8, width // 2 : 3 * width // 4] = True
    return human, obj


def check_stage2_contract(pipe, human, obj, interaction: str, out_dir: Path, grow: int = 2) -> None:
    request = dict(human=human, object=obj, interaction=interaction)

    # Same seed, same images; image k of a batch is the run of one with seed + k.
    a = pipe(**request, seed=3, num_images=2)
    b = pipe(**request, seed=3, num_images=2)
    single = pipe(**request, seed=4, num_images=1)
    assert len(a.images) == 2 and all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    np.testing.assert_array_equal(a.images[1], single.images[0])
    size = pipe.image_stage.default_size
    assert a.images[0].shape == (size, size, 3) and a.images[0].dtype == np.uint8
    assert a.human_masks.shape == (2, size, size) and a.human_masks.dtype == bool
    assert not (a.human_masks & a.object_masks).any()

    # With a background: its size, and its own pixels outside the (slightly grown) layout.
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    hm, om = layout(48, 80)
    out = pipe(**request, background=background, mask=(hm, om), seed=0)
    assert out.images[0].shape == (48, 80, 3)
    outside = ~binary_dilation(hm | om, iterations=grow)
    np.testing.assert_array_equal(out.images[0][outside], background[outside])
    assert not np.array_equal(out.images[0], background)  # something was painted

    # Everything needed to reproduce it, written last.
    files = out.save(out_dir)
    record = json.loads((out_dir / "choi.json").read_text())
    assert files[-1].name == "choi.json" and all(f.is_file() for f in files)
    assert all(key in record for key in REQUIRED_RECORD), sorted(set(REQUIRED_RECORD) - set(record))
    assert record["seeds"] == [0] and record["stage1"]["source"] == "user"
    assert record["images"][0]["image"] == "image_0.png" and record["references"]["files"]["human"]
    for role in ("human", "object"):
        assert (out_dir / f"reference_{role}.png").is_file()
