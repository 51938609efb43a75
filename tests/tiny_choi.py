"""A real choi-tiny-family model folder with tiny, randomly initialised networks (seconds on a CPU).

The CLI, jobs and app tests run the real :class:`~choi.pipelines.choi.CHOIPipeline` on it, so they
catch regressions in the real pipeline instead of in a hand-written fake.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from choi.models.image_generator import ImageGenerator
from choi.models.mask_generator import MaskGenerator

COMMON = dict(
    sample_size=32,
    patch_size=4,
    block_out_channels=(32, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=16,
    ref_size=16,
    ref_grid=4,
)
IMAGE = dict(COMMON, warp_prior=True, warp_turns=(1, 4))
OPTIONS = {"layout_candidates": 2}  # the folder's own option defaults: model_index.json's "options"


def write_tiny_choi(folder: Path) -> Path:
    """``folder`` with ``model_index.json``, ``mask/`` and ``image/``: what `choi generate --model` loads."""
    torch.manual_seed(0)
    MaskGenerator(**COMMON).save_pretrained(folder / "mask")
    ImageGenerator(**IMAGE).save_pretrained(folder / "image")
    index = {"_class_name": "CHOIPipeline", "family": "choi-tiny", "components": {"mask": "mask", "image": "image"},
             "options": OPTIONS}  # fmt: skip
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
