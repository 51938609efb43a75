"""The one sample schema shared by every data source (HOI-World, HICO-DET-format images, videos).

A :class:`Sample` is plain numpy + Python values; :func:`encode` / :func:`decode` turn it into the
WebDataset record stored in tar shards (PNGs for pixels, one JSON for everything else).

Conventions, the same everywhere in choi:
- images are ``(H, W, 3) uint8`` RGB; masks are ``(H, W) bool``;
- boxes are normalised ``(x1, y1, x2, y2)`` in [0, 1];
- keypoints are ``(K, 3) float32``: normalised x, y and a visibility/confidence in [0, 1], in the
  joint order of :data:`KEYPOINT_NAMES`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from choi.io import png_bytes

SCHEMA_VERSION = 1

KEYPOINT_NAMES: tuple[str, ...] = (
    "head", "neck",
    "right_shoulder", "right_elbow", "right_hand",
    "left_shoulder", "left_elbow", "left_hand",
    "right_hip", "right_knee", "right_foot",
    "left_hip", "left_knee", "left_foot",
)  # fmt: skip

# Pixel fields stored as PNG in a record; None-able ones may be absent.
IMAGE_FIELDS = ("image", "human_ref", "object_ref", "background")
MASK_FIELDS = ("human_mask", "object_mask", "human_ref_mask", "object_ref_mask")

Box = tuple[float, float, float, float]


@dataclass
class Sample:
    """One CHOI training/evaluation example: target, masks, references and labels."""

    key: str  # unique within a dataset, e.g. "train-00001234"; safe as a tar member prefix
    image: np.ndarray  # (H, W, 3) uint8 target: the pair interacting in the scene
    human_mask: np.ndarray  # (H, W) bool, visible human pixels in the target
    object_mask: np.ndarray  # (H, W) bool, visible object pixels in the target
    human_box: Box  # normalised box of the human in the target
    object_box: Box  # normalised box of the object in the target
    keypoints: np.ndarray  # (14, 3) float32, see KEYPOINT_NAMES
    interaction: str  # class name from choi.vocabulary, e.g. "ride_bicycle"
    text: str  # natural phrase, e.g. "a person riding a bicycle"
    object_category: str  # e.g. "bicycle" (also set for "no_interaction")
    human_ref: np.ndarray  # (H, W, 3) uint8: the same person alone, plain background, other pose
    object_ref: np.ndarray  # (H, W, 3) uint8: the same object alone, plain background, other view
    human_ref_mask: np.ndarray  # (H, W) bool silhouette of the person in human_ref
    object_ref_mask: np.ndarray  # (H, W) bool silhouette of the object in object_ref
    background: np.ndarray | None = None  # (H, W, 3) uint8 scene without the pair, when known
    human_id: int = -1  # identity ids; -1 when unknown (real data without identity labels)
    object_id: int = -1
    source: str = "hoi-world"  # "hoi-world" | "hico" | "video"
    pair_source: str = "render"  # how references relate to the target: "render" | "same_image" | "video"
    meta: dict[str, Any] = field(default_factory=dict)  # source-specific extras (scene type, facing, frame ids)

    @property
    def resolution(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    @property
    def union_box(self) -> Box:
        h, o = self.human_box, self.object_box
        return (min(h[0], o[0]), min(h[1], o[1]), max(h[2], o[2]), max(h[3], o[3]))


def mask_box(mask: np.ndarray) -> Box:
    """Normalised tight box of a boolean mask; (0, 0, 0, 0) for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    h, w = mask.shape
    return (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)


def _unpng(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy()


def encode(sample: Sample) -> dict[str, Any]:
    """A WebDataset record (``__key__`` + ``ext -> bytes``) for ``sample``."""
    record: dict[str, Any] = {"__key__": sample.key}
    for name in IMAGE_FIELDS:
        value = getattr(sample, name)
        if value is not None:
            record[f"{name}.png"] = png_bytes(np.ascontiguousarray(value, dtype=np.uint8))
    for name in MASK_FIELDS:
        record[f"{name}.png"] = png_bytes(np.asarray(getattr(sample, name), dtype=bool).astype(np.uint8) * 255)
    info = {
        "schema_version": SCHEMA_VERSION,
        "human_box": [float(v) for v in sample.human_box],
        "object_box": [float(v) for v in sample.object_box],
        "keypoints": np.asarray(sample.keypoints, dtype=np.float32).round(5).tolist(),
        "interaction": sample.interaction,
        "text": sample.text,
        "object_category": sample.object_category,
        "human_id": int(sample.human_id),
        "object_id": int(sample.object_id),
        "source": sample.source,
        "pair_source": sample.pair_source,
        "meta": sample.meta,
    }
    record["json"] = json.dumps(info, sort_keys=True).encode()
    return record


def decode(record: dict[str, Any]) -> Sample:
    """Inverse of :func:`encode`. Accepts keys with or without a leading dot (``".json"`` / ``"json"``)."""
    rec = {k.lstrip("."): v for k, v in record.items()}
    info = json.loads(rec["json"])
    pixels = {name: _unpng(rec[f"{name}.png"]) for name in IMAGE_FIELDS if f"{name}.png" in rec}
    masks = {name: _unpng(rec[f"{name}.png"]) > 127 for name in MASK_FIELDS}
    return Sample(
        key=rec["__key__"],
        image=pixels["image"],
        human_mask=masks["human_mask"],
        object_mask=masks["object_mask"],
        human_box=tuple(info["human_box"]),
        object_box=tuple(info["object_box"]),
        keypoints=np.asarray(info["keypoints"], dtype=np.float32).reshape(-1, 3),
        interaction=info["interaction"],
        text=info["text"],
        object_category=info["object_category"],
        human_ref=pixels["human_ref"],
        object_ref=pixels["object_ref"],
        human_ref_mask=masks["human_ref_mask"],
        object_ref_mask=masks["object_ref_mask"],
        background=pixels.get("background"),
        human_id=info["human_id"],
        object_id=info["object_id"],
        source=info["source"],
        pair_source=info["pair_source"],
        meta=info["meta"],
    )
