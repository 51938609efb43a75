"""Reference photos → (RGB, silhouette): loading photos in every form, the plain-background rule,
and :func:`segment_reference`, which picks the first rule that applies (a user mask, the image's
alpha, a plain background, else MediaPipe for a person and GrabCut or SAM for an object).

Example:
    >>> ref = segment_reference("portrait.jpg", "human")
    >>> ref.rule, ref.rgb.shape, ref.silhouette.shape
    ('mediapipe', (830, 612, 3), (830, 612))
    >>> mask = silhouette(load_image("person.png"))  # (H, W) bool, plain backgrounds only
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from choi.data.segmenters import PersonSegmenter, SamSegmenter, centre_box, grabcut_mask, grow_box
from choi.errors import ChoiError, quote

MIN_THRESHOLD = 4  # least colour distance (max over channels, 0-255) from the background; noisy photos raise it
MAX_PIXELS = 40_000_000  # 40 MP: any phone photo; beyond that a file is a mistake or a decompression bomb
# Max-over-channels distance (95th percentile) of a plain border from its median colour: HOI-World's
# references measure 0, skimage's photos 85-164; JPEG noise and a soft studio gradient stay below.
PLAIN_BORDER_NOISE = 24
REFERENCE_SIDE = 1024  # references are segmented at most this long: MediaPipe works at 256, GrabCut at 200


def load_image(path: str | os.PathLike, what: str = "image", max_side: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB or, when it has transparency, (H, W, 4) RGBA uint8.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and float images are converted.
    With ``max_side``, a larger image is shrunk to that longer side (a JPEG is decoded at 1/2, 1/4
    or 1/8 scale first, so a phone photo never exists at full size). Missing files, folders,
    non-images, truncated files and images over :data:`MAX_PIXELS` raise :class:`ChoiError` with a
    one-line message.
    """
    path = Path(path)
    shown = quote(str(path), path=True)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _one_line(err)
        raise ChoiError(f"{what} path {shown} is invalid ({reason})") from err
    if is_dir:
        raise ChoiError(f"{what} {shown} is a folder, not an image file")
    if not is_file:
        raise ChoiError(f"{what} {shown} does not exist")
    try:
        # Pillow warns (and only errors at twice its own limit) on decompression bombs; an error is
        # what a bad input deserves, and it keeps the CLI's message to one line. (catch_warnings is
        # process-wide; a race between threads can at worst leave this one filter switched on.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im.size, f"{what} {shown}")  # from the header, before decoding anything
                if max_side is not None:
                    im.draft(None, (max_side, max_side))  # JPEG only; keeps both sides >= max_side
                im.load()
                arr = _to_array(im, what)
    except ChoiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        limit = f"{MAX_PIXELS / 1e6:.0f} megapixels"
        raise ChoiError(f"{what} {shown} is over {limit}: refused as a possible decompression bomb") from err
    except UnidentifiedImageError as err:
        raise ChoiError(f"cannot read {what} {shown}: not an image file Pillow can read") from err
    except Exception as err:  # Pillow's decoders raise many types on corrupt data (OSError, SyntaxError, ...)
        raise ChoiError(f"cannot read {what} {shown}: truncated or corrupt image ({_one_line(err)})") from err
    return arr if max_side is None else downscale(arr, max_side)


def image_size(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """(height, width) of an image file as :func:`load_image` would return it (EXIF turns applied), from its header."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # the orientation tag: a quarter turn
    except Exception:  # load_image says what is wrong with the file, in one line
        load_image(path, what)
        raise
    return (width, height) if turned else (height, width)


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` (H, W[, C]) shrunk so that its longer side is at most ``max_side`` (area averaging)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)


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


def _clean(mask: np.ndarray) -> np.ndarray:
    """Specks dropped and small holes filled, the same for every rule."""
    return _fill_small_holes(_drop_specks(mask, 0.01), 0.002)


def _border(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The median colour of the image's 2-pixel border, and the border's 95th-percentile distance from it."""
    border = np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3), rgb[:, :2].reshape(-1, 3),
                             rgb[:, -2:].reshape(-1, 3)])  # fmt: skip
    colour = np.median(border, axis=0)
    return colour, float(np.percentile(np.abs(border - colour).max(-1), 95))


def is_plain_background(rgb: np.ndarray) -> bool:
    """Whether the photo's border is one colour, so that :func:`silhouette` applies."""
    return _border(np.asarray(rgb).astype(np.int16))[1] <= PLAIN_BORDER_NOISE


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
        colour, noise = _border(rgb)
        distance = np.abs(rgb - colour).max(-1).astype(np.float32)
        mask = distance > max(MIN_THRESHOLD, 2 * noise + 3)
        # Anti-aliased edge pixels: keep those at least half as different as their strongest
        # neighbour, i.e. at least half covered by the subject (the convention of rendered masks).
        edge = mask & ~(cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        mask &= ~edge | (distance >= 0.5 * cv2.dilate(distance, np.ones((3, 3), np.uint8)))
    mask = _clean(mask)
    fraction = mask.mean()
    if fraction < min_area:
        raise ChoiError(f"found no subject in the {what}: it must show the subject on a plain background")
    if fraction > 0.97:
        raise ChoiError(f"the subject fills the whole {what}: it must show the subject on a plain background")
    return mask


# --- references: the first rule that applies ---------------------------------------------------

ROLES = ("human", "object")
Box = tuple[float, float, float, float]  # normalised x1, y1, x2, y2
RULES = ("user-mask", "alpha", "plain-background", "mediapipe", "grabcut-box", "grabcut-salient", "sam")
MIN_SUBJECT = 0.002  # a segment below this fraction of the photo found nothing (silhouette's min_area)
MAX_OBJECT = 0.9  # an object segment above this fraction of the photo is the whole scene, not an object
CROP_MARGIN = 0.05  # of the subject's longer side, kept around it when cropping: edges stay whole
# Users draw tight boxes; GrabCut drops a part that touches the box edge (skimage's motorcycle in a
# tight box: its wheels go, 15% of the box kept instead of 65%), so a box is widened this much first.
BOX_SLACK = 0.05

_OBJECT_HINT = "point at the object with --object-box x1,y1,x2,y2 or give --object-mask PATH"
_ImageInput = str | os.PathLike | Image.Image | np.ndarray


@dataclass(frozen=True)
class Reference:
    """A reference photo cut to its subject: the photo's pixels and the subject's silhouette.

    Pixels outside the silhouette are the photo's own; :meth:`rgba` gives the cut-out.
    """

    rgb: np.ndarray  # (H, W, 3) uint8, cropped to the silhouette's box plus CROP_MARGIN
    silhouette: np.ndarray  # (H, W) bool, True on the subject
    rule: str  # which rule made the silhouette, one of RULES

    def rgba(self) -> np.ndarray:
        """(H, W, 4) uint8 cut-out: alpha 255 on the subject, 0 elsewhere (``reference_human.png``)."""
        return rgba_cutout(self.rgb, self.silhouette)


def rgba_cutout(rgb: np.ndarray, sil: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8: ``rgb`` with alpha 255 on the silhouette, 0 elsewhere."""
    return np.dstack([rgb, sil.astype(np.uint8) * 255])


def same_aspect(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether two (height, width) sizes are one picture at two scales (within a pixel's rounding)."""
    return abs(a[0] * b[1] - a[1] * b[0]) <= max(a[0], a[1], b[0], b[1])


def segment_reference(
    image: _ImageInput,
    role: str,
    mask: _ImageInput | None = None,
    box: Sequence[float] | None = None,
    sam_checkpoint: str | os.PathLike | None = None,
    *,
    crop: bool = True,
) -> Reference:
    """Cut the person (``role="human"``) or the object (``role="object"``) out of a reference photo.

    The first rule that applies makes the silhouette: ``mask`` (white or non-zero = the subject, the
    photo's size), the image's alpha, a plain background (:func:`silhouette`), else a segmenter:
    MediaPipe for a person (inside ``box`` when given), SAM for an object when ``sam_checkpoint`` is
    given, else GrabCut from ``box`` or, without one, from the photo's central region. ``box`` is
    normalised ``x1, y1, x2, y2`` in [0, 1]. Photos are shrunk to :data:`REFERENCE_SIDE` first; with
    ``crop`` the result is cropped to the subject. Raises a one-line :class:`ChoiError` that says what
    to do when no person or object is found.

    Example:
        >>> ref = segment_reference("bike.jpg", "object", box=(0.1, 0.2, 0.9, 0.9))
        >>> ref.rule
        'grabcut-box'
    """
    if role not in ROLES:
        raise ChoiError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    what = f"{role} reference"
    box = None if box is None else parse_box(box, f"the {role} box")
    if mask is not None:
        arr = _read(image, what, REFERENCE_SIDE)
        sil = read_mask(mask, arr.shape[:2], role)
        if not sil.any():
            raise ChoiError(f"the {role} mask marks too few pixels to survive shrinking the photo: paint more")
        rule = "user-mask"
    else:
        arr = _read(image, what, REFERENCE_SIDE)
        sil, rule = _segment(arr, role, box, sam_checkpoint)
    ref = Reference(np.ascontiguousarray(arr[..., :3]), sil, rule)
    return crop_to_subject(ref) if crop else ref


def crop_to_subject(ref: Reference) -> Reference:
    """``ref`` cropped to its silhouette's box grown by :data:`CROP_MARGIN` of its longer side."""
    y1, y2, x1, x2 = _crop_box(ref.silhouette)
    return Reference(ref.rgb[y1:y2, x1:x2].copy(), ref.silhouette[y1:y2, x1:x2].copy(), ref.rule)


def _segment(arr: np.ndarray, role: str, box: tuple[float, ...] | None, sam_checkpoint) -> tuple[np.ndarray, str]:
    """Rules 2-4 on a loaded (H, W, 3|4) photo, ``box`` normalised and checked: (silhouette, rule)."""
    what = f"{role} reference"
    if arr.shape[-1] == 4:
        alpha = arr[..., 3] > 127
        if alpha.any() and not alpha.all():
            return _clean(alpha), "alpha"
    rgb = np.ascontiguousarray(arr[..., :3])
    if is_plain_background(rgb):
        try:
            return silhouette(rgb, what), "plain-background"
        except ChoiError:
            pass  # a plain photo with nothing on it: the segmenter below says what to do
    h, w = rgb.shape[:2]
    pixel_box = None if box is None else (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
    if role == "human":
        with PersonSegmenter(margin=BOX_SLACK) as people:
            found = people(rgb, pixel_box or (0, 0, w, h))
        sil = _clean(found.mask) if found is not None else np.zeros(rgb.shape[:2], bool)
        if sil.mean() < MIN_SUBJECT:
            raise ChoiError("found no person in the human reference: give --human-mask PATH (white = the person)")
        return sil, "mediapipe"
    if sam_checkpoint is not None:
        sil, rule = SamSegmenter(sam_checkpoint)(rgb, pixel_box or centre_box(rgb.shape)), "sam"
    elif pixel_box is not None:
        sil, rule = grabcut_mask(rgb, grow_box(pixel_box, BOX_SLACK, rgb.shape)), "grabcut-box"
    else:
        sil, rule = grabcut_mask(rgb, centre_box(rgb.shape)), "grabcut-salient"
    sil = _clean(sil)
    fraction = sil.mean()
    if fraction < MIN_SUBJECT:
        raise ChoiError(f"found no object in the object reference: {_OBJECT_HINT}")
    if fraction > MAX_OBJECT:
        raise ChoiError(f"the object segment covers {fraction:.0%} of the object reference: {_OBJECT_HINT}")
    return sil, rule


def _read(image: _ImageInput, what: str, max_side: int | None) -> np.ndarray:
    """A photo as (H, W, 3) RGB or, with transparency, (H, W, 4) RGBA uint8, shrunk to ``max_side``."""
    if isinstance(image, str | os.PathLike):
        return load_image(image, what, max_side)
    if isinstance(image, Image.Image):
        _check_pixels(image.size, what)
        arr = _to_array(image, what)
    else:
        arr = np.asarray(image)
        alpha = _to_uint8(arr[..., 3]) if arr.ndim == 3 and arr.shape[-1] == 4 else None
        arr = as_rgb(arr, what)
        if alpha is not None and (alpha < 255).any():
            arr = np.dstack([arr, alpha])
    as_rgb(arr, what)  # the size checks, with a clear message
    return arr if max_side is None else downscale(arr, max_side)


def read_mask(mask: _ImageInput, shape: tuple[int, ...], role: str) -> np.ndarray:
    """A user's mask of the ``role`` photo of ``shape`` as (H, W) bool: white/non-zero (or opaque, in a
    cut-out) is the subject. A mask at another scale of the photo (the photo may have been shrunk) is
    resized to it; another aspect ratio is refused."""
    what = f"{role} mask"
    if isinstance(mask, str | os.PathLike):
        values = load_image(mask, what)
    elif isinstance(mask, Image.Image):
        values = _to_array(mask, what)
    else:
        values = np.asarray(mask)
    if values.ndim == 3:
        has_alpha = values.shape[-1] == 4 and (values[..., 3] < values[..., 3].max()).any()
        values = values[..., 3] if has_alpha else values[..., :3].max(-1)
    if values.ndim != 2:
        raise ChoiError(f"the {what} must be an (H, W) image, got an array of shape {values.shape}")
    (mh, mw), (h, w) = values.shape, shape[:2]
    if not same_aspect((mh, mw), (h, w)):  # not the photo at another scale (the photo may be shrunk)
        raise ChoiError(f"the {what} is {mw}x{mh} pixels but the photo is {w}x{h}: give a mask the photo's size")
    sil = values.astype(bool) if values.dtype == bool else values > (0.5 if values.max() <= 1 else 127)
    if not sil.any():
        raise ChoiError(f"the {what} is empty: paint the {'person' if role == 'human' else 'object'} white")
    if sil.shape != (h, w):
        sil = cv2.resize(sil.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_AREA) > 127
    return sil


def parse_box(box: str | Sequence[float], what: str = "box") -> Box:
    """A normalised ``x1,y1,x2,y2`` box (string or 4 numbers), checked: in [0, 1], x1 < x2, y1 < y2."""
    shown = repr(box)[:60]
    try:
        values = [float(v) for v in (box.split(",") if isinstance(box, str) else box)]
    except (TypeError, ValueError):
        raise ChoiError(f"{what} must be four numbers x1,y1,x2,y2 in [0, 1], got {shown}") from None
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ChoiError(f"{what} must be four numbers x1,y1,x2,y2 in [0, 1], got {shown}")
    x1, y1, x2, y2 = values
    if not all(0.0 <= v <= 1.0 for v in values) or not (x1 < x2 and y1 < y2):
        raise ChoiError(f"{what} {shown} is invalid: need 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 (normalised)")
    return x1, y1, x2, y2


def _crop_box(sil: np.ndarray) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2): the silhouette's box grown by CROP_MARGIN of its longer side, inside the image."""
    ys, xs = np.nonzero(sil)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pad = max(2, round(CROP_MARGIN * max(y2 - y1, x2 - x1)))
    h, w = sil.shape
    return max(0, y1 - pad), min(h, y2 + pad), max(0, x1 - pad), min(w, x2 + pad)
