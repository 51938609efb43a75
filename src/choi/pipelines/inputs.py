"""Reading and checking what a request brings: reference photos, backgrounds, boxes and layout masks.

One module for every model family and every front end (Python, CLI, jobs, app), so a file means the
same thing wherever it is given. Everything here raises :class:`~choi.errors.ChoiError` with a
one-line message on bad input.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from choi.data.segment import (  # noqa: F401  (parse_box, Box: re-exported for the pipelines)
    Box,
    Reference,
    as_rgb,
    crop_to_subject,
    downscale,
    image_size,
    load_image,
    parse_box,
    read_mask,
    segment_reference,
    silhouette,
)
from choi.errors import ChoiError

ImageInput = str | os.PathLike | np.ndarray | Image.Image

HUMAN_COLOUR, OBJECT_COLOUR = (230, 40, 40), (40, 90, 230)  # choi's mask previews: red person, blue object
# A layout mask may also use a paint program's pure red and blue; brush edges blend, so colours within
# this channel distance count. The dimmed background of a preview never gets this close.
MASK_COLOURS = {"human": (HUMAN_COLOUR, (255, 0, 0)), "object": (OBJECT_COLOUR, (0, 0, 255))}
MASK_COLOUR_TOLERANCE = 90
STRIP_ROWS = 256  # the full-size composite is blended this many rows at a time: bounded float memory


def read_image(image: ImageInput, what: str) -> np.ndarray:
    """A path, PIL image or array → (H, W, 3|4) uint8, with a one-line error for anything else."""
    if isinstance(image, str | os.PathLike):
        return load_image(image, what)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGBA"))  # keeps transparency for the silhouette
    arr = np.asarray(image)
    as_rgb(arr, what)  # shape and dtype check
    return arr


def read_background(background: ImageInput | None, max_side: int | None = None) -> np.ndarray | None:
    """The background as (H, W, 3) uint8, its longer side at most ``max_side``.

    A file is decoded once, already reduced (a JPEG at 1/2, 1/4 or 1/8 scale), so a phone photo is
    never held at full size next to its scaled copy.
    """
    if background is None:
        return None
    if isinstance(background, str | os.PathLike):
        return as_rgb(load_image(background, "background image", max_side), "background image")
    arr = as_rgb(read_image(background, "background image"), "background image")
    return arr if max_side is None else downscale(arr, max_side)


def given_size(image: ImageInput) -> tuple[int, int]:
    """(height, width) of an image as given (a file's from its header), before any scaling."""
    if isinstance(image, str | os.PathLike):
        return image_size(image, "image")
    return (image.height, image.width) if isinstance(image, Image.Image) else np.shape(image)[:2]


def fit_side(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) scaled down, aspect kept, so that the longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, h, w) bool masks → (K, height, width) bool (nearest: a mask stays a mask)."""
    if masks.shape[-2:] == (height, width):
        return masks
    return np.stack([cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
                     for m in masks])  # fmt: skip


def upscale_onto(image: np.ndarray, drawn_on: np.ndarray | None, background: np.ndarray | None) -> np.ndarray:
    """An image made at a working size → the output size, over the full-size ``background``.

    ``image`` (h, w, 3) was painted over ``drawn_on``, the background at (h, w): wherever it kept
    those pixels, the output has ``background``'s own; where it painted, the painting upscaled, its
    edge feathered over one working pixel. Without a background the image is upscaled alone. uint8
    throughout; the blend runs in strips of :data:`STRIP_ROWS` rows, so memory stays a few copies
    of the output image.
    """
    if background is None or drawn_on is None:
        return image
    height, width = background.shape[:2]
    if image.shape[:2] == (height, width):
        return image
    painted = np.any(image != drawn_on, axis=-1).view(np.uint8) * np.uint8(255)  # (h, w)
    alpha = cv2.resize(painted, (width, height), interpolation=cv2.INTER_LINEAR)  # (H, W) uint8
    big = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)  # (H, W, 3) uint8
    out = background.copy()
    rows = np.flatnonzero(alpha.any(1))
    if rows.size == 0:
        return out
    for top in range(rows[0], rows[-1] + 1, STRIP_ROWS):
        band = slice(top, min(top + STRIP_ROWS, rows[-1] + 1))
        a = alpha[band, :, None].astype(np.uint16)
        out[band] = ((big[band] * a + background[band] * (255 - a) + 127) // 255).astype(np.uint8)
    return out


def segment(
    image: ImageInput, role: str, mask: Any = None, box: Box | None = None, sam_checkpoint: Any = None
) -> Reference:
    """A reference photo → its subject (:class:`~choi.data.segment.Reference`: RGB, silhouette, rule).

    The first rule that applies: the user's ``mask``, the image's alpha, a plain background, else a
    segmenter (:func:`~choi.data.segment.segment_reference`). A plain-background photo is kept whole
    (it is already framed as choi-tiny's references are); any other is cropped to its subject.
    """
    ref = segment_reference(image, role, mask, box, sam_checkpoint, crop=False)
    return ref if ref.rule == "plain-background" else crop_to_subject(ref)


def read_reference(image: ImageInput, mask: Any, role: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``role`` reference on a plain background (or with its silhouette ``mask``, white = the subject) →
    (RGB (H, W, 3) uint8, silhouette (H, W) bool). Photos of every kind go through :func:`segment`."""
    what = f"{role} reference image"
    arr = read_image(image, what)
    rgb = as_rgb(arr, what)
    return rgb, silhouette(arr, what) if mask is None else read_mask(mask, rgb.shape, role)


def read_layout_mask(mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """A layout → (human, object) (H, W) bool: the one decoder of choi's mask colours.

    Accepts a ``(human, object)`` pair of arrays, or a colour-coded image (red person, blue object,
    anything else nothing: an edited ``mask_K_preview.png``, a paint program's pure red and blue) as
    an array, PIL image or path.
    """
    if isinstance(mask, tuple | list) and len(mask) == 2:
        human, obj = (np.asarray(m).astype(bool) for m in mask)
        if human.ndim != 2 or human.shape != obj.shape:
            raise ChoiError(f"a mask pair must be two (H, W) arrays of one size, got {human.shape} and {obj.shape}")
        obj = obj & ~human
    else:
        px = as_rgb(read_image(mask, "mask image"), "mask image").astype(np.int16)

        def near(role: str) -> np.ndarray:
            return np.any([np.abs(px - c).max(-1) <= MASK_COLOUR_TOLERANCE for c in MASK_COLOURS[role]], axis=0)

        human = near("human")
        obj = near("object") & ~human
    if not human.any() or not obj.any():
        raise ChoiError(
            f"the mask must contain both the person (red, RGB {HUMAN_COLOUR} or pure red) "
            f"and the object (blue, RGB {OBJECT_COLOUR} or pure blue)"
        )
    return human, obj


def mask_preview(
    human: np.ndarray, obj: np.ndarray, background: np.ndarray | None = None, max_side: int | None = None
) -> np.ndarray:
    """Colour-coded masks, (H, W, 3) uint8: human red, object blue, over a dimmed background (or black).

    With ``max_side`` a larger layout is shown shrunk to fit it (the masks by area, so thin parts stay):
    a preview is for the eye and for editing, and a layout of any size with the output's aspect is read back.
    """
    h, w = human.shape
    if max_side is not None and max(h, w) > max_side:
        h, w = fit_side(h, w, max_side)
        human, obj = (cv2.resize(m.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_AREA) > 127
                      for m in (human, obj))  # fmt: skip
    if background is None:
        out = np.zeros((h, w, 3), np.uint8)
    else:
        bg = as_rgb(background)
        if bg.shape[:2] != (h, w):
            shrink = bg.shape[0] > h
            bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out = cv2.convertScaleAbs(bg, alpha=0.35)  # uint8 at once: a 16 MP preview needs no float copy
    out[obj] = OBJECT_COLOUR
    out[human] = HUMAN_COLOUR
    return out


def pad_square(array: np.ndarray, size: int, resample: int = Image.BILINEAR) -> np.ndarray:
    """Pad an (H, W[, C]) uint8 array to a centred square with zeros and resize it to ``size``."""
    h, w = array.shape[:2]
    side = max(h, w)
    canvas = np.zeros((side, side, *array.shape[2:]), array.dtype)
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = array
    return np.asarray(Image.fromarray(canvas).resize((size, size), resample)) if side != size else canvas


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 → (1, C, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
