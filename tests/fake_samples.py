"""Fake samples for tests without the HOI-World renderer: random arrays (the data format) and colour
blobs (a learnable stand-in for identities, :func:`blob_samples`)."""

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


def write_dataset(root, splits, resolution: int = 32):
    """``splits`` ({split: [Sample, ...]}) as a complete dataset (one shard per split) in ``root``; returns ``root``."""
    from choi.data.schema import encode
    from choi.data.shards import Manifest, ShardInfo, SplitInfo, file_sha256, shard_name, write_manifest, write_shard

    manifest = Manifest(generator="test", generator_version="0", resolution=resolution)
    for split, samples in splits.items():
        write_shard(root / shard_name(split, 0), (encode(s) for s in samples))
        info = ShardInfo(shard_name(split, 0), len(samples), file_sha256(root / shard_name(split, 0)))
        manifest.splits[split] = SplitInfo(count=len(samples), shards=[info], complete=True)
    write_manifest(root, manifest)
    return root


def write_tiny_dataset(root, counts=(("train", 8), ("test", 2)), resolution: int = 32):
    """A complete dataset of random samples (one shard per split) in ``root``; returns ``root``."""
    splits = {split: [random_sample(f"{split}-{i:04d}", [i, split == "train"], resolution) for i in range(count)]
              for split, count in counts}  # fmt: skip
    return write_dataset(root, splits, resolution)


# Colour-blob identities: a learnable stand-in for "the same person in another photo"
PALETTE = ((220, 40, 40), (40, 170, 60), (40, 70, 220), (235, 200, 40))  # red, green, blue, yellow
GREY = (120, 120, 120)  # the plain background
WHITE = 255  # around a reference's blob


def blob_layout(resolution: int, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """A tall person rectangle and a smaller object rectangle beside it, 4/32 of the side apart
    (``mirrored``: the person on the right)."""
    r = resolution
    human, obj = np.zeros((r, r), bool), np.zeros((r, r), bool)
    human[3 * r // 16 : 13 * r // 16, 2 * r // 16 : 7 * r // 16] = True
    obj[7 * r // 16 : 13 * r // 16, 9 * r // 16 : 14 * r // 16] = True
    return (human[:, ::-1].copy(), obj[:, ::-1].copy()) if mirrored else (human, obj)


def blob_reference(colour: tuple[int, int, int], resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference photo: a solid ``colour`` ellipse on white, and its silhouette."""
    r = resolution
    yy, xx = np.mgrid[:r, :r]
    silhouette = ((yy - r / 2) / (0.4 * r)) ** 2 + ((xx - r / 2) / (0.3 * r)) ** 2 <= 1
    rgb = np.where(silhouette[..., None], np.array(colour, np.uint8), np.uint8(WHITE)).astype(np.uint8)
    return rgb, silhouette


def paint_blobs(human: np.ndarray, obj: np.ndarray, human_colour, object_colour) -> np.ndarray:
    """The target: the grey background, the person region in its colour, the object region in its own."""
    image = np.empty((*human.shape, 3), np.uint8)
    image[:] = GREY
    image[human], image[obj] = human_colour, object_colour
    return image


def blob_sample(key: str, human_colour: int, object_colour: int, mirrored: bool, resolution: int = 32) -> Sample:
    """A sample whose identities are colours: the person reference is a blob of ``PALETTE[human_colour]``
    and the target paints the person region that colour; the object likewise; a plain grey background."""
    human, obj = blob_layout(resolution, mirrored)
    human_ref, human_ref_mask = blob_reference(PALETTE[human_colour], resolution)
    object_ref, object_ref_mask = blob_reference(PALETTE[object_colour], resolution)
    cls = next(c for c in CLASSES if c.name == "kick_ball")
    return Sample(
        key=key,
        image=paint_blobs(human, obj, PALETTE[human_colour], PALETTE[object_colour]),
        human_mask=human,
        object_mask=obj,
        human_box=mask_box(human),
        object_box=mask_box(obj),
        keypoints=np.zeros((len(KEYPOINT_NAMES), 3), np.float32),
        interaction=cls.name,
        text=cls.phrase(),  # the same for every sample: only the references tell the colours
        object_category=cls.object or "ball",
        human_ref=human_ref,
        object_ref=object_ref,
        human_ref_mask=human_ref_mask,
        object_ref_mask=object_ref_mask,
        background=paint_blobs(human & False, obj & False, GREY, GREY),
        human_id=human_colour,
        object_id=object_colour,
        meta={"scene": "colour-blobs"},
    )


def blob_samples(count: int = 8, resolution: int = 32) -> list[Sample]:
    """``count`` colour-blob samples: person colour k mod 4, object colour k + 1 (first four) or k + 2
    (next four) mod 4, so neither reference tells the other's colour; the two layouts alternate so
    that every colour is seen on both sides."""
    return [
        blob_sample(f"train-{k:04d}", k % 4, (k % 4 + 1 + (k // 4) % 2) % 4, bool(k % 2 ^ (k // 4) % 2), resolution)
        for k in range(count)
    ]


def write_blob_dataset(root, count: int = 8, resolution: int = 32):
    """A train split of :func:`blob_samples` in ``root``; returns ``root``."""
    return write_dataset(root, {"train": blob_samples(count, resolution)}, resolution)
