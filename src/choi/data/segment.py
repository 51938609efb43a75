"""Segment the subject of a reference photo taken on a plain background (HOI-World references,
product shots, studio portraits): a robust border-colour difference, then morphology.

Example:
    >>> mask = silhouette(load_rgb("person.png"))  # (H, W) bool
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from choi.errors import ChoiError

MIN_THRESHOLD = 4  # least colour distance (max over channels, 0-255) from the background; noisy photos raise it


def load_image(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image file as (H, W, 3) RGB or, when it has transparency, (H, W, 4) RGBA uint8."""
    path = Path(path)
    if not path.is_file():
        raise ChoiError(f"{what} {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            keep_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            return np.asarray(im.convert("RGBA" if keep_alpha else "RGB")).copy()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ChoiError(f"cannot read {what} {path}: not an image file ({err})") from err


def as_rgb(image: np.ndarray | Image.Image, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from a PIL image or an (H, W), (H, W, 3) or (H, W, 4) array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 8:
        raise ChoiError(f"{what} must be an RGB image of at least 8x8 pixels, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.min() >= 0 and arr.max() <= 1:
            arr = (arr * 255).round()
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def _fill_small_holes(mask: np.ndarray, max_fraction: float) -> np.ndarray:
    """Fill enclosed background regions smaller than ``max_fraction`` of the subject's area.

    Small holes are noise or a patch of clothing the colour of the wall; large ones are real gaps
    (a suitcase handle, the back of a chair, an arm on a hip) and stay open.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    h, w = mask.shape
    out = mask.copy()
    limit = max(4.0, max_fraction * mask.sum())
    for k in range(1, count):
        x, y, bw, bh, area = stats[k]
        touches_border = x == 0 or y == 0 or x + bw == w or y + bh == h
        if not touches_border and area <= limit:
            out[labels == k] = True
    return out


def _drop_specks(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Keep connected parts at least ``min_fraction`` of the largest (noise, dust, compression artefacts go)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(2, min_fraction * areas.max())) + 1
    return np.isin(labels, keep)


def silhouette(image: np.ndarray | Image.Image, what: str = "reference image", min_area: float = 0.002) -> np.ndarray:
    """The subject of a plain-background photo as an (H, W) bool mask.

    An RGBA image with transparency is segmented by its alpha. Otherwise the background colour is
    the median of the image border; pixels that differ from it by more than the border's own noise
    (and at least :data:`MIN_THRESHOLD`) are the subject, edge pixels when at least half covered.
    Specks are dropped and small holes filled; large holes (a suitcase handle) stay open. Thin parts
    (a kite string, a forearm at 64 px) survive because no opening is applied.

    Raises :class:`ChoiError` when no subject is found or the subject fills the frame.
    """
    arr = np.asarray(image.convert("RGBA") if isinstance(image, Image.Image) else image)
    if arr.ndim == 3 and arr.shape[-1] == 4 and (arr[..., 3] < 255).any():
        mask = arr[..., 3] > 127
    else:
        rgb = as_rgb(arr, what).astype(np.int16)
        border = np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3), rgb[:, :2].reshape(-1, 3),
                                 rgb[:, -2:].reshape(-1, 3)])  # fmt: skip
        colour = np.median(border, axis=0)
        distance = np.abs(rgb - colour).max(-1).astype(np.float32)
        noise = np.percentile(np.abs(border - colour).max(-1), 95)
        mask = distance > max(MIN_THRESHOLD, 2 * noise + 3)
        # Anti-aliased edge pixels: keep those at least half as different as their strongest
        # neighbour, i.e. at least half covered by the subject (the convention of rendered masks).
        edge = mask & ~(cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        mask &= ~edge | (distance >= 0.5 * cv2.dilate(distance, np.ones((3, 3), np.uint8)))
    mask = _fill_small_holes(_drop_specks(mask, 0.01), 0.002)
    fraction = mask.mean()
    if fraction < min_area:
        raise ChoiError(f"found no subject in the {what}: it must show the subject on a plain background")
    if fraction > 0.97:
        raise ChoiError(f"the subject fills the whole {what}: it must show the subject on a plain background")
    return mask
