"""Samples made of random arrays, for testing the data format without the HOI-World renderer."""

from __future__ import annotations

import numpy as np

from choi.data.schema import KEYPOINT_NAMES, Sample, mask_box
from choi.vocabulary import CLASSES

FAKE_WORLD_VERSION = "fake-1"


def random_sample(key: str, seed: int | list[int] = 0, resolution: int = 32, background: bool = True) -> Sample:
    rng = np.random.default_rng(seed)
    r = resolution

    def image() -> np.ndarray:
        return rng.integers(0, 256, (r, r, 3), dtype=np.uint8)

    def mask() -> np.ndarray:
        return rng.random((r, r)) < 0.3

    human_mask, object_mask = mask(), mask()
    cls = CLASSES[int(rng.integers(len(CLASSES) - 1))]
    return Sample(
        key=key,
        image=image(),
        human_mask=human_mask,
        object_mask=object_mask & ~human_mask,
        human_box=mask_box(human_mask),
        object_box=mask_box(object_mask),
        keypoints=rng.random((len(KEYPOINT_NAMES), 3)).astype(np.float32),
        interaction=cls.name,
        text=cls.phrase(),
        object_category=cls.object or "ball",
        human_ref=image(),
        object_ref=image(),
        human_ref_mask=mask(),
        object_ref_mask=mask(),
        background=image() if background else None,
        human_id=int(rng.integers(1000)),
        object_id=int(rng.integers(1000)),
        meta={"scene": "test", "facing": "left"},
    )


def fake_render(split: str, index: int, seed: int, resolution: int = 128) -> Sample:
    """Same contract as choi.world.render_sample: deterministic from its arguments."""
    # Not hash(): string hashes differ between processes, and builds use worker processes.
    return random_sample(f"{split}-{index:08d}", seed=[seed, index, split == "train"], resolution=resolution)


def failing_render(split: str, index: int, seed: int, resolution: int = 128) -> Sample:
    """fake_render that breaks at sample 5, as a renderer bug would (picklable for worker processes)."""
    if index == 5:
        raise RuntimeError("renderer bug at sample 5")
    return fake_render(split, index, seed, resolution)


def write_tiny_dataset(root, counts=(("train", 8), ("test", 2)), resolution: int = 32):
    """A complete dataset of random samples (one shard per split) in ``root``; returns ``root``."""
    from choi.data.schema import encode
    from choi.data.shards import Manifest, ShardInfo, SplitInfo, file_sha256, shard_name, write_manifest, write_shard

    manifest = Manifest(generator="test", generator_version="0", resolution=resolution)
    for split, count in counts:
        samples = [random_sample(f"{split}-{i:04d}", [i, split == "train"], resolution) for i in range(count)]
        write_shard(root / shard_name(split, 0), (encode(s) for s in samples))
        info = ShardInfo(shard_name(split, 0), count, file_sha256(root / shard_name(split, 0)))
        manifest.splits[split] = SplitInfo(count=count, shards=[info], complete=True)
    write_manifest(root, manifest)
    return root
