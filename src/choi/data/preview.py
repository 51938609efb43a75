"""Contact sheet of a dataset: one row per sample, to check by eye what a builder produced.

Columns: target | human reference | object reference | masks (human red, object blue, over the
dimmed target) | interaction label. Works for any dataset in the shard format, whatever its
source or resolution (cells are letterboxed to one size).

Example:
    >>> write_contact_sheet("data/hoiw", "sheet.png", n=16)
"""

from __future__ import annotations

import io
import logging
import os
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from choi.data.schema import Sample
from choi.data.shards import iter_samples, read_manifest
from choi.errors import ChoiError
from choi.io import atomic_write_bytes

log = logging.getLogger(__name__)

CELL = 128  # px per image cell: 64-px datasets are upscaled (nearest) to stay legible
LABEL_WIDTH = 220
PAD = 4
HEADER = 18
SHEET_BG = (236, 236, 236)
HUMAN_RGB = np.array([235, 50, 50], dtype=np.float32)
OBJECT_RGB = np.array([40, 110, 245], dtype=np.float32)
COLUMNS = ("target", "human ref", "object ref", "masks:", "interaction")


def _font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
        return ImageFont.load_default()


def mask_overlay(image: np.ndarray, human_mask: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8``: the target dimmed, human pixels red, object pixels blue (both: magenta)."""
    out = image.astype(np.float32) * 0.3
    # Strong but not opaque tint: the pose stays readable through the colour.
    out[human_mask] = 0.25 * out[human_mask] + 0.75 * HUMAN_RGB
    out[object_mask] = 0.25 * out[object_mask] + 0.75 * OBJECT_RGB
    out[human_mask & object_mask] = (HUMAN_RGB + OBJECT_RGB) / 2
    return out.clip(0, 255).astype(np.uint8)


def _cell(array: np.ndarray) -> Image.Image:
    """``array`` fitted into a CELL x CELL square, aspect kept, centred on the sheet colour."""
    im = Image.fromarray(array)
    scale = CELL / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    im = im.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)
    cell = Image.new("RGB", (CELL, CELL), SHEET_BG)
    cell.paste(im, ((CELL - size[0]) // 2, (CELL - size[1]) // 2))
    return cell


def _label_lines(sample: Sample, rare: bool) -> list[str]:
    title = sample.interaction.replace("_", " ") + ("  [rare]" if rare else "")
    lines = [title, *textwrap.wrap(sample.text, 34)]
    # -1 means "unknown identity" (real data); do not show it as if it were an id.
    ids = [
        f"{role} #{i}" if i >= 0 else f"{role} id ?"
        for role, i in (("human", sample.human_id), ("object", sample.object_id))
    ]
    lines.append(f"{sample.object_category} | {' | '.join(ids)}")
    lines.append(sample.key)
    return lines


def render_contact_sheet(samples: list[Sample], rare_names: set[str] | frozenset[str] = frozenset()) -> Image.Image:
    """The contact sheet image for ``samples`` (see the module docstring for the layout)."""
    widths = [CELL] * 4 + [LABEL_WIDTH]
    xs = np.cumsum([PAD] + [w + PAD for w in widths[:-1]]).tolist()
    sheet_w = xs[-1] + widths[-1] + PAD
    sheet_h = HEADER + len(samples) * (CELL + PAD) + PAD
    sheet = Image.new("RGB", (sheet_w, sheet_h), SHEET_BG)
    draw = ImageDraw.Draw(sheet)
    font, bold = _font(11), _font(13)
    for x, title in zip(xs, COLUMNS, strict=True):
        draw.text((x, 3), title, fill=(60, 60, 60), font=font)
    # The mask column's header doubles as its colour legend.
    x = xs[3] + draw.textlength("masks: ", font=font)
    draw.text((x, 3), "human", fill=tuple(HUMAN_RGB.astype(int)), font=font)
    x += draw.textlength("human ", font=font)
    draw.text((x, 3), "object", fill=tuple(OBJECT_RGB.astype(int)), font=font)

    for row, s in enumerate(samples):
        y = HEADER + row * (CELL + PAD)
        masks = mask_overlay(s.image, s.human_mask, s.object_mask)
        for x, array in zip(xs, (s.image, s.human_ref, s.object_ref, masks), strict=False):
            sheet.paste(_cell(array), (x, y))
        lines = _label_lines(s, s.interaction in rare_names)
        draw.text((xs[4], y + 4), lines[0], fill=(0, 0, 0), font=bold)
        for i, line in enumerate(lines[1:]):
            draw.text((xs[4], y + 24 + 14 * i), line, fill=(70, 70, 70), font=font)
    return sheet


def write_contact_sheet(
    dataset: str | os.PathLike, out: str | os.PathLike, n: int = 16, split: str | None = None
) -> Path:
    """Write a contact sheet PNG of the first ``n`` samples of ``split`` (default: the first split).

    Raises :class:`ChoiError` for a missing or invalid dataset, an unknown split, ``n <= 0`` or an
    unwritable ``out``; the PNG is written atomically. Returns ``out`` as a Path.
    """
    if n <= 0:
        raise ChoiError(f"--n must be a positive number of samples, got {n}")
    out = Path(out)
    if out.is_dir():
        raise ChoiError(f"--out {out} is a folder; give a PNG file name")
    manifest = read_manifest(dataset)
    split, _ = manifest.split(split)
    samples = list(iter_samples(dataset, split=split, limit=n))
    if len(samples) < n:
        log.info("split '%s' has only %d samples", split, len(samples))
    rare = {c["name"] for c in manifest.classes if c.get("rare")}
    sheet = render_contact_sheet(samples, rare)

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, buf.getvalue())
    except OSError as err:
        raise ChoiError(f"cannot write {out}: {err.strerror or err}") from err
    log.info("wrote contact sheet of %d %s samples to %s", len(samples), split, out)
    return out
