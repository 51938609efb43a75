"""Shared pieces of the real-data builders (HICO-DET-format images, videos): quality filters and
the assembly of a :class:`~choi.data.schema.Sample` from a photo. The segmenters they use (MediaPipe
for the person, GrabCut or SAM for the object) live in :mod:`choi.data.segmenters`, shared with
the references of :func:`choi.data.segment.segment_reference`.

- Samples: the target is a square crop around the pair resized to ``resolution``; references are
  the person and the object cut out of a (possibly other) frame and centred on a plain background,
  like HOI-World's references.

Example:
    >>> check_person(person, box, QualityConfig())
    >>> sample = assemble_sample("k", target, ref, 128, interaction="ride_bicycle", ...)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from choi.data.schema import Sample
from choi.data.segmenters import PersonResult, PixelBox, clip_box, grow_box
from choi.world.palette import REF_BACKGROUND, REFERENCE_FILL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality filters; an item failing one is written to ``rejects.jsonl``."""

    min_box_px: int = 16  # boxes smaller than this carry too few pixels to segment
    min_mask_fill: float = 0.15  # mask area / box area: below it the segmenter missed the thing
    min_inside_box: float = 0.8  # fraction of mask pixels inside its (slightly enlarged) box
    min_pose_confidence: float = 0.5  # mean visibility of shoulders and hips
    min_track_confidence: float = 0.4  # video: appearance similarity of the tracked object box

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Rejected(Exception):
    """An item failed a check; ``reason`` is a short stable code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- image reading ------------------------------------------------------------------------------


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 of an image file, pixels as stored (no EXIF rotation: boxes refer to them).

    Raises :class:`Rejected` ``missing_file`` or ``unreadable_file``.
    """
    path = Path(path)
    if not path.is_file():
        raise Rejected("missing_file", f"{path.name} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB")).copy()
    except Exception as err:  # Pillow raises many types on corrupt data
        raise Rejected(
            "unreadable_file", f"{path.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err


# --- quality filters ----------------------------------------------------------------------------


def check_box(box: PixelBox, shape: tuple[int, ...], what: str, q: QualityConfig) -> None:
    x1, y1, x2, y2 = clip_box(box, shape)
    if min(x2 - x1, y2 - y1) < q.min_box_px:
        raise Rejected("box_too_small", f"{what} box {x2 - x1}x{y2 - y1} px inside the image, need {q.min_box_px}")


def check_mask(mask: np.ndarray, box: PixelBox, what: str, q: QualityConfig) -> None:
    """Reject a mask that fills too little of its box, or spills out of it."""
    x1, y1, x2, y2 = clip_box(box, mask.shape)
    area = int(mask.sum())
    box_area = max(1, (x2 - x1) * (y2 - y1))
    if area / box_area < q.min_mask_fill:
        raise Rejected(
            f"{what}_mask_too_small", f"mask covers {area / box_area:.2f} of its box, need {q.min_mask_fill}"
        )
    gx1, gy1, gx2, gy2 = grow_box(box, 0.05, mask.shape)  # annotators' boxes are a little tight
    inside = int(mask[gy1:gy2, gx1:gx2].sum()) / area
    if inside < q.min_inside_box:
        raise Rejected(
            f"{what}_mask_outside_box", f"{inside:.2f} of the mask is inside its box, need {q.min_inside_box}"
        )


def check_person(person: PersonResult | None, box: PixelBox, q: QualityConfig) -> PersonResult:
    if person is None:
        raise Rejected("no_pose", "MediaPipe found no person in the box")
    if person.confidence < q.min_pose_confidence:
        raise Rejected("low_pose_confidence", f"pose confidence {person.confidence:.2f} < {q.min_pose_confidence}")
    check_mask(person.mask, box, "person", q)
    return person


def pose_distance(a: np.ndarray, b: np.ndarray, box_a: PixelBox, box_b: PixelBox, min_visibility: float = 0.5) -> float:
    """Mean joint distance of two (14, 3) pixel poses, each normalised by its person box.

    Normalising by the box removes where the person is and how big, leaving the pose. Joints
    that either pose does not see are ignored; ``inf`` when none is seen by both.
    """

    def norm(points: np.ndarray, box: PixelBox) -> np.ndarray:
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1, 1e-6)
        return (points[:, :2] - np.array([(x1 + x2) / 2, (y1 + y2) / 2])) / side

    seen = (a[:, 2] >= min_visibility) & (b[:, 2] >= min_visibility)
    if not seen.any():
        return float("inf")
    return float(np.linalg.norm(norm(a, box_a) - norm(b, box_b), axis=1)[seen].mean())


# --- sample assembly ----------------------------------------------------------------------------


def _square_around(box: PixelBox, margin: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the square centred on ``box`` with ``margin`` of its longer side around it."""
    x1, y1, x2, y2 = box
    side = max(8, round(max(x2 - x1, y2 - y1) * (1 + 2 * margin)))
    return round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2), side


def _crop_square(array: np.ndarray, x0: int, y0: int, side: int, fill: Any) -> np.ndarray:
    """``array[y0:y0+side, x0:x0+side]``; where the square leaves the image, ``fill``."""
    out = np.empty((side, side, *array.shape[2:]), array.dtype)
    out[...] = fill
    h, w = array.shape[:2]
    sx1, sy1, sx2, sy2 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y0 : sy2 - y0, sx1 - x0 : sx2 - x0] = array[sy1:sy2, sx1:sx2]
    return out


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    if array.dtype == bool:
        return cv2.resize(array.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    interp = cv2.INTER_AREA if array.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(array, (size, size), interpolation=interp)


def reference(image: np.ndarray, mask: np.ndarray, resolution: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """The masked pixels of ``image`` centred on a plain background, ``fill`` of the square's side."""
    ys, xs = np.nonzero(mask)
    canvas = np.empty((resolution, resolution, 3), np.uint8)
    canvas[:] = REF_BACKGROUND
    if len(xs) == 0:
        return canvas, np.zeros((resolution, resolution), bool)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    crop, cmask = image[y1:y2, x1:x2], mask[y1:y2, x1:x2]
    scale = fill * resolution / max(x2 - x1, y2 - y1)
    w, h = max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interp)
    cmask = cv2.resize(cmask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    ox, oy = (resolution - w) // 2, (resolution - h) // 2
    ref_mask = np.zeros((resolution, resolution), bool)
    ref_mask[oy : oy + h, ox : ox + w] = cmask
    canvas[oy : oy + h, ox : ox + w][cmask] = crop[cmask]
    return canvas, ref_mask


@dataclass
class Observation:
    """The pair as seen in one image or frame: pixels, masks, pixel boxes and pixel keypoints."""

    image: np.ndarray
    human_mask: np.ndarray
    object_mask: np.ndarray
    human_box: PixelBox
    object_box: PixelBox
    keypoints: np.ndarray  # (14, 3): pixel x, y, visibility


def assemble_sample(
    key: str,
    target: Observation,
    ref: Observation,
    resolution: int,
    *,
    interaction: str,
    text: str,
    object_category: str,
    source: str,
    pair_source: str,
    meta: dict[str, Any],
    margin: float = 0.1,
) -> Sample:
    """A :class:`Sample`: ``target`` cropped square around the pair, references cut from ``ref``."""
    hb, ob = target.human_box, target.object_box
    union = (min(hb[0], ob[0]), min(hb[1], ob[1]), max(hb[2], ob[2]), max(hb[3], ob[3]))
    x0, y0, side = _square_around(union, margin)
    mean = tuple(int(v) for v in target.image.reshape(-1, 3).mean(0))  # neutral fill outside the photo
    image = _resize(_crop_square(target.image, x0, y0, side, mean), resolution)
    human_mask = _resize(_crop_square(target.human_mask, x0, y0, side, False), resolution)
    object_mask = _resize(_crop_square(target.object_mask, x0, y0, side, False), resolution)

    def norm_box(b: PixelBox) -> tuple[float, float, float, float]:
        return tuple(float(np.clip((v - o) / side, 0, 1)) for v, o in zip(b, (x0, y0, x0, y0), strict=True))

    kp = target.keypoints.astype(np.float32).copy()
    kp[:, 0] = (kp[:, 0] - x0) / side
    kp[:, 1] = (kp[:, 1] - y0) / side
    outside = (kp[:, 0] < 0) | (kp[:, 0] > 1) | (kp[:, 1] < 0) | (kp[:, 1] > 1)
    kp[outside, 2] = 0.0
    kp[:, :2] = kp[:, :2].clip(0, 1)
    human_ref, human_ref_mask = reference(
        ref.image, ref.human_mask & ~ref.object_mask, resolution, REFERENCE_FILL["human"]
    )
    object_ref, object_ref_mask = reference(ref.image, ref.object_mask, resolution, REFERENCE_FILL["object"])
    return Sample(
        key=key,
        image=image,
        human_mask=human_mask,
        object_mask=object_mask,
        human_box=norm_box(hb),
        object_box=norm_box(ob),
        keypoints=kp,
        interaction=interaction,
        text=text,
        object_category=object_category,
        human_ref=human_ref,
        object_ref=object_ref,
        human_ref_mask=human_ref_mask,
        object_ref_mask=object_ref_mask,
        background=None,
        source=source,
        pair_source=pair_source,
        meta={**meta, "crop": [x0, y0, side]},
    )
