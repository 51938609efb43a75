"""Segment the subject of a reference photo taken on a plain background (HOI-World references,
product shots, studio portraits): a robust border-colour difference, then morphology.

Example:
    >>> mask = silhouette(load_rgb("person.png"))  # (H, W) bool
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from choi.errors import ChoiError

MIN_THRESHOLD = 4  # least colour distance (max over channels, 0-255) from the background; noisy photos raise it
MAX_PIXELS = 40_000_000  # 40 MP: any phone photo; beyond that a file is a mistake or a decompression bomb


def load_image(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image file as (H, W, 3) RGB or, when it has transparency, (H, W, 4) RGBA uint8.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and float images are converted.
    Missing files, folders, non-images, truncated files and images over :data:`MAX_PIXELS` raise
    :class:`ChoiError` with a one-line message.
    """
    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _one_line(err)
        raise ChoiError(f"{what} path {str(path)[:80]!r}... is invalid ({reason})") from err
    if is_dir:
        raise ChoiError(f"{what} {path} is a folder, not an image file")
    if not is_file:
        raise ChoiError(f"{what} {path} does not exist")
    try:
        # Pillow warns (and only errors at twice its own limit) on decompression bombs; an error is
        # what a bad input deserves, and it keeps the CLI's message to one line. (catch_warnings is
        # process-wide; a race between threads can at worst leave this one filter switched on.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im.size, f"{what} {path}")  # from the header, before decoding anything
                im.load()
                return _to_array(im, what)
    except ChoiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        limit = f"{MAX_PIXELS / 1e6:.0f} megapixels"
        raise ChoiError(f"{what} {path} is over {limit}: refused as a possible decompression bomb") from err
    except UnidentifiedImageError as err:
        raise ChoiError(f"cannot read {what} {path}: not an image file Pillow can read") from err
    except Exception as err:  # Pillow's decoders raise many types on corrupt data (OSError, SyntaxError, ...)
        raise ChoiError(f"cannot read {what} {path}: truncated or corrupt image ({_one_line(err)})") from err


def as_rgb(image: np.ndarray | Image.Image, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from a PIL image (any mode) or an (H, W), (H, W, 1-4) array.

    uint16 arrays are scaled from 0-65535, float arrays in [0, 1] from 0-1 (others clipped to 0-255);
    a 2- or 4-channel array's alpha is dropped.
    """
    if isinstance(image, Image.Image):
        _check_pixels(image.size, what)
        image = _to_array(ImageOps.exif_transpose(image), what)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):
        arr = arr[..., :1]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 1):
        arr = np.repeat(arr.reshape(arr.shape[:2])[..., None], 3, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 8:
        raise ChoiError(f"{what} must be an RGB image of at least 8x8 pixels, got an array of shape {arr.shape}")
    _check_pixels((arr.shape[1], arr.shape[0]), what)
    return np.ascontiguousarray(_to_uint8(arr[..., :3]))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _check_pixels(size: tuple[int, int], what: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ChoiError(
            f"{what} is {width}x{height} pixels; at most {MAX_PIXELS / 1e6:.0f} megapixels are accepted (resize it)"
        )


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Any numeric array → uint8: bool as 0/255, uint16 scaled, floats in [0, 1] scaled, the rest clipped."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    floating = np.issubdtype(arr.dtype, np.floating)
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if floating and arr.size and arr.min() >= 0 and arr.max() <= 1:
        arr = arr * 255
    return np.clip(arr.round(), 0, 255).astype(np.uint8)


def _to_array(im: Image.Image, what: str) -> np.ndarray:
    """A decoded PIL image in any mode → (H, W, 3) RGB, or (H, W, 4) RGBA when it has transparency."""
    im = ImageOps.exif_transpose(im)  # a phone photo's pixels are stored sideways; the tag says how to turn them
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit/32-bit grayscale and float: Pillow's own convert("L") clips instead of scaling.
        values = np.asarray(im)
        if mode.startswith("I;16") or (mode == "I" and values.size and values.max() > 255):
            values = np.clip(values, 0, 65535).astype(np.uint16)
        gray = _to_uint8(values)
        return np.repeat(gray[..., None], 3, -1)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        try:  # 1, L, CMYK, YCbCr, RGBX, ...
            im = im.convert("RGB")
        except ValueError as err:
            raise ChoiError(f"{what} has image mode {mode}, which cannot be converted to RGB") from err
    arr = np.array(im)  # a writable copy (np.asarray of a PIL image is read-only)
    if arr.shape[-1] == 4 and (arr[..., 3] == 255).all():
        arr = arr[..., :3]  # an alpha channel without transparency is just RGB
    return np.ascontiguousarray(arr)


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
