"""The segmenters behind choi's references and real-data builders: one implementation of each.

- Person: MediaPipe pose with segmentation. Its wheel ships the model (``pose_landmark_full``), so
  nothing is downloaded; only ``model_complexity=1`` is used because the lite and heavy variants
  are *not* in the wheel.
- Object: OpenCV GrabCut initialised by a box (the user's, an annotation's, or the centred prior of
  :func:`centre_box`), or SAM (``segment-anything``) when the user gives a checkpoint.

Boxes here are in pixels (``x1, y1, x2, y2``); normalised boxes are converted by the callers.

Example:
    >>> with PersonSegmenter() as people:
    ...     person = people(image, (40, 10, 300, 500))  # pixel box
    >>> obj = grabcut_mask(image, (280, 300, 500, 510), exclude=person.mask)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from choi.errors import ChoiError
from choi.quiet import quiet_native_stderr

PixelBox = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels

# MediaPipe's 33 pose landmarks → choi's 14 joints (KEYPOINT_NAMES order). "head" is the nose and
# "neck" the midpoint of the shoulders (-1); hands are wrists, feet are ankles.
_MP_JOINTS = (0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27)
_MP_TORSO = (11, 12, 23, 24)  # shoulders and hips: their visibility is the pose confidence


@dataclass
class PersonResult:
    mask: np.ndarray  # (H, W) bool over the whole image
    keypoints: np.ndarray  # (14, 3) float32: pixel x, y and visibility
    confidence: float  # mean visibility of the torso landmarks


def clip_box(box: PixelBox, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Integer pixel box clipped to an image of ``shape`` (H, W, ...)."""
    h, w = shape[:2]
    x1, y1, x2, y2 = box
    return (
        int(np.clip(np.floor(x1), 0, w)),
        int(np.clip(np.floor(y1), 0, h)),
        int(np.clip(np.ceil(x2), 0, w)),
        int(np.clip(np.ceil(y2), 0, h)),
    )


def grow_box(box: PixelBox, frac: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``box`` enlarged by ``frac`` of its size on every side, clipped to the image."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * frac, (y2 - y1) * frac
    return clip_box((x1 - dx, y1 - dy, x2 + dx, y2 + dy), shape)


# --- person: MediaPipe --------------------------------------------------------------------------


class PersonSegmenter:
    """MediaPipe pose + segmentation on a person box crop. One instance per process; close it."""

    def __init__(self, margin: float = 0.1):
        try:
            import mediapipe as mp
        except ImportError as err:  # pragma: no cover - a dependency of choi
            raise ChoiError(f"person segmentation needs mediapipe ({err}); reinstall choi") from err
        self.margin = margin
        with quiet_native_stderr():  # TensorFlow Lite and absl log lines from native code
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True)

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pose.close()

    def __call__(self, image: np.ndarray, box: PixelBox) -> PersonResult | None:
        """The person in pixel ``box`` of ``image``; None when MediaPipe finds no pose there."""
        x1, y1, x2, y2 = grow_box(box, self.margin, image.shape)
        crop = np.ascontiguousarray(image[y1:y2, x1:x2])
        with quiet_native_stderr():
            result = self._pose.process(crop)
        if result.pose_landmarks is None:
            return None
        lm = np.array([[p.x, p.y, p.visibility] for p in result.pose_landmarks.landmark], dtype=np.float32)
        points = np.empty((len(_MP_JOINTS), 3), np.float32)
        for j, m in enumerate(_MP_JOINTS):
            points[j] = (lm[11] + lm[12]) / 2 if m < 0 else lm[m]
        points[:, 0] = x1 + points[:, 0] * (x2 - x1)
        points[:, 1] = y1 + points[:, 1] * (y2 - y1)
        points[:, 2] = points[:, 2].clip(0, 1)
        mask = np.zeros(image.shape[:2], bool)
        if result.segmentation_mask is not None:
            mask[y1:y2, x1:x2] = result.segmentation_mask > 0.5
        return PersonResult(mask, points, float(lm[list(_MP_TORSO), 2].mean()))


# --- object: GrabCut or SAM ---------------------------------------------------------------------


class ObjectSegmenter(Protocol):
    def __call__(self, image: np.ndarray, box: PixelBox, exclude: np.ndarray | None = None) -> np.ndarray: ...


GRABCUT_SIDE = 200  # GrabCut runs on the box region scaled to this size: cost stays flat per object


def grabcut_mask(
    image: np.ndarray, box: PixelBox, exclude: np.ndarray | None = None, iterations: int = 4
) -> np.ndarray:
    """(H, W) bool object mask from GrabCut initialised by pixel ``box``.

    Outside the box is background; inside it is probable foreground, except ``exclude`` pixels
    (the person, who often overlaps a held or ridden object), which start as probable background.
    """
    bx1, by1, bx2, by2 = clip_box(box, image.shape)
    full = np.zeros(image.shape[:2], bool)
    if bx2 - bx1 < 2 or by2 - by1 < 2:
        return full
    # A border of real background around the box gives GrabCut its background colours.
    x1, y1, x2, y2 = grow_box(box, 0.2, image.shape)
    crop = image[y1:y2, x1:x2]
    scale = min(1.0, GRABCUT_SIDE / max(crop.shape[:2]))
    size = (max(2, round(crop.shape[1] * scale)), max(2, round(crop.shape[0] * scale)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA) if scale < 1 else crop
    init = np.full(small.shape[:2], cv2.GC_BGD, np.uint8)
    ix1, iy1 = round((bx1 - x1) * scale), round((by1 - y1) * scale)
    ix2, iy2 = max(ix1 + 1, round((bx2 - x1) * scale)), max(iy1 + 1, round((by2 - y1) * scale))
    init[iy1:iy2, ix1:ix2] = cv2.GC_PR_FGD
    if exclude is not None:
        ex = cv2.resize(exclude[y1:y2, x1:x2].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        init[ex & (init == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    if not (init == cv2.GC_BGD).any():
        # The box is the whole image: keep a 1-pixel frame as background so GrabCut has some.
        init[[0, -1], :] = cv2.GC_BGD
        init[:, [0, -1]] = cv2.GC_BGD
    if not ((init == cv2.GC_PR_FGD) | (init == cv2.GC_FGD)).any():
        return full
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation is random: same input, same mask
    try:
        cv2.grabCut(np.ascontiguousarray(small), init, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return full  # degenerate colour models (a flat box): an empty mask, caught by the filters
    fg = ((init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)).astype(np.uint8) * 255
    if scale < 1:  # bilinear, then half-way: smooth edges instead of GRABCUT_SIDE-sized steps
        fg = cv2.resize(fg, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    full[y1:y2, x1:x2] = fg > 127
    return full


CENTRE_MARGIN = 0.1  # the centred prior leaves this much of each side as background; see centre_box


def centre_box(shape: tuple[int, ...], margin: float = CENTRE_MARGIN) -> PixelBox:
    """The photo's central region as a pixel box: where a photographer puts the subject.

    Used to start GrabCut (or prompt SAM) when the user does not point at the object. On
    skimage's coffee and motorcycle photos GrabCut from this prior keeps the cup with its saucer and
    the whole motorcycle; saliency maps tried instead (spectral residual, colour contrast with the
    border) lit up highlights and missed the wheels.
    """
    h, w = shape[:2]
    return (margin * w, margin * h, (1 - margin) * w, (1 - margin) * h)


class SamSegmenter:
    """Segment Anything, prompted with the object box; needs ``pip install 'choi[sam]'``."""

    def __init__(self, checkpoint: str | os.PathLike, model_type: str | None = None):
        self.model = _load_sam(checkpoint, model_type)

    def __call__(self, image: np.ndarray, box: PixelBox, exclude: np.ndarray | None = None) -> np.ndarray:
        from segment_anything import SamPredictor

        predictor = SamPredictor(self.model)
        predictor.set_image(np.ascontiguousarray(image))
        masks, scores, _ = predictor.predict(box=np.asarray(box, dtype=np.float32), multimask_output=True)
        return np.asarray(masks[int(np.argmax(scores))], dtype=bool)


SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")


def check_sam(checkpoint: str | os.PathLike, model_type: str | None = None) -> str:
    """Validate a SAM request up front (package, file, model type); returns the model type."""
    try:
        import segment_anything  # noqa: F401
    except ImportError as err:
        raise ChoiError(
            "--sam-checkpoint needs the segment-anything package, which is not installed; "
            "install it with: pip install 'choi[sam]' (or drop --sam-checkpoint to use GrabCut)"
        ) from err
    path = Path(checkpoint)
    if not path.is_file():
        raise ChoiError(f"--sam-checkpoint {path} does not exist")
    if model_type is None:
        found = [t for t in SAM_MODEL_TYPES if t in path.name]
        if not found:
            raise ChoiError(f"cannot tell the SAM model type from {path.name}; pass --sam-model-type {SAM_MODEL_TYPES}")
        model_type = found[0]
    if model_type not in SAM_MODEL_TYPES:
        raise ChoiError(f"--sam-model-type must be one of {', '.join(SAM_MODEL_TYPES)}, got '{model_type}'")
    return model_type


def _load_sam(checkpoint: str | os.PathLike, model_type: str | None) -> Any:
    model_type = check_sam(checkpoint, model_type)  # a clear error before the import can fail
    from segment_anything import sam_model_registry

    return sam_model_registry[model_type](checkpoint=str(checkpoint)).eval()


def object_segmenter(sam_checkpoint: str | None, sam_model_type: str | None = None) -> ObjectSegmenter:
    return grabcut_mask if sam_checkpoint is None else SamSegmenter(sam_checkpoint, sam_model_type)
