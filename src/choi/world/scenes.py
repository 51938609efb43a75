"""Procedural backgrounds: park, street, beach, room, snow and court.

Each scene type has a few variants, each a panorama twice as wide as it is tall, drawn once per
(scene, variant, resolution) and cached: a sample then only crops a random window, maybe mirrors
it and applies a colour gain, which costs microseconds instead of milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from choi.errors import ChoiError

SCENES: tuple[str, ...] = ("park", "street", "beach", "room", "snow", "court")
N_VARIANTS = 8  # panoramas per scene type and resolution
_SCENE_SEED = 20240611
_SHIFT = 4
_AA = cv2.LINE_AA


@dataclass(frozen=True)
class Backdrop:
    """A background image and the image row (fraction of height) where the ground begins."""

    image: np.ndarray
    horizon: float
    name: str


def _fx(v: float) -> int:
    return int(round(v * (1 << _SHIFT)))


def _poly(img: np.ndarray, pts, color) -> None:
    p = np.rint(np.asarray(pts, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(img, [p], tuple(int(c) for c in color), _AA, _SHIFT)


def _disc(img: np.ndarray, c, r: float, color) -> None:
    cv2.circle(img, (_fx(c[0]), _fx(c[1])), _fx(max(r, 0.5)), tuple(int(v) for v in color), -1, _AA, _SHIFT)


def _rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color) -> None:
    _poly(img, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], color)


def _gradient(h: int, w: int, top, bottom) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    col = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return np.repeat(col, w, axis=1)


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise in about [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _ground(img: np.ndarray, rng: np.random.Generator, y0: int, color, amp: float, cell: int) -> None:
    """Fill rows ``y0:`` with ``color`` plus noise, a little lighter towards the viewer."""
    h, w = img.shape[0] - y0, img.shape[1]
    if h <= 0:
        return
    base = _gradient(h, w, np.asarray(color) * 0.9, np.asarray(color) * 1.05)
    tex = _noise(rng, h, w, cell)[..., None] * amp + _noise(rng, h, w, max(2, cell // 4))[..., None] * amp * 0.5
    img[y0:] = np.clip(base + tex, 0, 255).astype(np.uint8)


def _sky(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    top = np.array([90, 150, 225]) + rng.uniform(-20, 20, 3)
    bottom = np.array([185, 215, 240]) + rng.uniform(-10, 10, 3)
    img = np.clip(_gradient(h, w, top, bottom), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 5))):  # clouds
        cx, cy = rng.uniform(0, w), rng.uniform(0.05, 0.3) * h
        s = rng.uniform(0.04, 0.08) * h
        for k in range(4):
            _disc(img, (cx + (k - 1.5) * s * 0.9, cy + (k % 2) * s * 0.3), s * rng.uniform(0.7, 1.1), (248, 248, 250))
    return img


def _tree(img: np.ndarray, rng: np.random.Generator, x: float, base: float, size: float) -> None:
    _rect(img, x - size * 0.08, base - size * 0.6, x + size * 0.08, base, (100, 70, 45))
    green = np.array([50, 120, 50]) + rng.uniform(-20, 20, 3)
    for dx, dy, r in ((0, -0.75, 0.38), (-0.25, -0.6, 0.3), (0.25, -0.6, 0.3), (0, -1.0, 0.3)):
        _disc(img, (x + dx * size, base + dy * size), r * size, green * rng.uniform(0.85, 1.1))


def park(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    hor = rng.uniform(0.42, 0.55)
    y = int(hor * h)
    img = _sky(rng, h, w, y)
    xs = np.linspace(0, w, 24)
    hills = y - h * (0.06 + 0.04 * np.sin(xs / w * rng.uniform(4, 9) + rng.uniform(0, 6)))
    _poly(img, np.concatenate([np.stack([xs, hills], 1), [[w, y + 2], [0, y + 2]]]), (110, 160, 100))
    _ground(img, rng, y, np.array([88, 160, 62]) + rng.uniform(-15, 15, 3), 14, max(4, h // 10))
    for x in np.sort(rng.uniform(0, w, int(rng.integers(2, 6)))):
        _tree(img, rng, x, y + rng.uniform(0, 0.04) * h, rng.uniform(0.15, 0.3) * h)
    for _ in range(int(rng.integers(10, 30))):  # flowers
        _disc(
            img,
            (rng.uniform(0, w), rng.uniform(y + 0.05 * h, h)),
            0.008 * h,
            ((250, 240, 90), (250, 250, 250), (240, 120, 160))[int(rng.integers(3))],
        )
    return img, hor


def street(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    hor = rng.uniform(0.5, 0.62)
    y = int(hor * h)
    img = _sky(rng, h, w, y)
    x = rng.uniform(-0.2, 0) * h
    while x < w:
        bw, bh = rng.uniform(0.25, 0.5) * h, rng.uniform(0.25, 0.5) * h
        col = np.array(
            [(180, 120, 100), (200, 190, 170), (150, 150, 160), (210, 170, 120), (120, 110, 100)][int(rng.integers(5))]
        ) + rng.uniform(-15, 15, 3)
        _rect(img, x, y - bh, x + bw, y, col)
        win = col * 0.55 + np.array([30, 50, 80])
        for wy in np.arange(y - bh + 0.05 * h, y - 0.1 * h, 0.09 * h):
            for wx in np.arange(x + 0.04 * h, x + bw - 0.06 * h, 0.08 * h):
                _rect(img, wx, wy, wx + 0.04 * h, wy + 0.05 * h, win)
        x += bw
    _ground(img, rng, y, (172, 170, 165), 8, max(4, h // 8))
    for gy in np.arange(y + 0.06 * h, h, 0.08 * h):  # paving joints
        cv2.line(img, (0, _fx(gy)), (_fx(w), _fx(gy)), (150, 148, 144), 1, _AA, _SHIFT)
    road = y + (h - y) * rng.uniform(0.7, 0.85)
    _rect(img, 0, road, w, h, (70, 70, 74))
    for dx in np.arange(rng.uniform(0, 0.2) * h, w, 0.3 * h):
        _rect(img, dx, road + (h - road) * 0.45, dx + 0.12 * h, road + (h - road) * 0.45 + 0.012 * h, (235, 235, 235))
    return img, hor


def beach(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    hor = rng.uniform(0.38, 0.48)
    y = int(hor * h)
    img = _sky(rng, h, w, y)
    _disc(img, (rng.uniform(0, w), rng.uniform(0.08, 0.22) * h), 0.06 * h, (255, 240, 150))
    shore = int((hor + rng.uniform(0.1, 0.16)) * h)
    img[y:shore] = np.clip(_gradient(shore - y, w, (30, 90, 160), (70, 160, 200)), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(6, 14))):
        wy, wx = rng.uniform(y + 2, shore - 1), rng.uniform(0, w)
        cv2.line(img, (_fx(wx), _fx(wy)), (_fx(wx + 0.08 * h), _fx(wy)), (220, 235, 245), 1, _AA, _SHIFT)
    _ground(img, rng, shore, np.array([226, 205, 160]) + rng.uniform(-10, 10, 3), 10, max(3, h // 12))
    return img, float(shore) / h


def room(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    hor = rng.uniform(0.58, 0.7)
    y = int(hor * h)
    wall = np.array(
        [(225, 215, 190), (190, 210, 220), (215, 190, 190), (200, 220, 190), (235, 235, 230)][int(rng.integers(5))]
    ) + rng.uniform(-10, 10, 3)
    img = np.clip(_gradient(h, w, wall * 0.92, wall), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # striped wallpaper
        for x in np.arange(0, w, 0.08 * h):
            _rect(img, x, 0, x + 0.03 * h, y, wall * 0.9)
    for _ in range(int(rng.integers(1, 3))):  # windows and pictures
        x0, y0 = rng.uniform(0, w - 0.3 * h), rng.uniform(0.08, 0.2) * h
        ww, wh = rng.uniform(0.18, 0.3) * h, rng.uniform(0.2, 0.3) * h
        _rect(img, x0 - 0.015 * h, y0 - 0.015 * h, x0 + ww + 0.015 * h, y0 + wh + 0.015 * h, (250, 250, 250))
        _rect(img, x0, y0, x0 + ww, y0 + wh, (150, 200, 240) if rng.random() < 0.6 else (180, 120, 80))
        _rect(img, x0 + ww / 2 - 0.008 * h, y0, x0 + ww / 2 + 0.008 * h, y0 + wh, (250, 250, 250))
    wood = np.array([(170, 120, 75), (140, 95, 60), (200, 160, 110)][int(rng.integers(3))], np.float64)
    _ground(img, rng, y, wood, 10, max(4, h // 10))
    for k, gy in enumerate(np.arange(y, h, 0.05 * h)):  # planks
        cv2.line(img, (0, _fx(gy)), (_fx(w), _fx(gy)), tuple(int(v) for v in wood * 0.7), 1, _AA, _SHIFT)
        for gx in np.arange((k % 2) * 0.2 * h, w, 0.4 * h):
            cv2.line(
                img,
                (_fx(gx), _fx(gy)),
                (_fx(gx), _fx(gy + 0.05 * h)),
                tuple(int(v) for v in wood * 0.75),
                1,
                _AA,
                _SHIFT,
            )
    _rect(img, 0, y - 0.025 * h, w, y, (245, 245, 240))  # skirting board
    return img, hor


def snow(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    hor = rng.uniform(0.45, 0.58)
    y = int(hor * h)
    img = _sky(rng, h, w, y)
    for layer, col in enumerate(((150, 160, 185), (120, 130, 160))):
        x = rng.uniform(-0.3, 0) * h
        while x < w:
            mw, mh = rng.uniform(0.3, 0.6) * h, rng.uniform(0.15, 0.35) * h * (1 - 0.3 * layer)
            peak = (x + mw / 2, y - mh)
            _poly(img, [[x, y + 1], peak, [x + mw, y + 1]], col)
            _poly(
                img,
                [peak, [peak[0] - mw * 0.14, peak[1] + mh * 0.3], [peak[0] + mw * 0.14, peak[1] + mh * 0.3]],
                (245, 248, 252),
            )
            x += mw * rng.uniform(0.5, 0.9)
    _ground(img, rng, y, (232, 238, 248), 6, max(4, h // 8))
    for x in rng.uniform(0, w, int(rng.integers(2, 6))):  # pines
        s, base = rng.uniform(0.1, 0.2) * h, y + rng.uniform(0, 0.05) * h
        _rect(img, x - s * 0.05, base - s * 0.2, x + s * 0.05, base, (90, 60, 40))
        for k in range(3):
            top = base - s * (0.5 + 0.35 * k)
            _poly(
                img,
                [
                    [x, top - s * 0.4],
                    [x - s * (0.4 - 0.08 * k), top + s * 0.2],
                    [x + s * (0.4 - 0.08 * k), top + s * 0.2],
                ],
                (30, 90, 60),
            )
    return img, hor


def court(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    hor = rng.uniform(0.45, 0.55)
    y = int(hor * h)
    img = _sky(rng, h, w, y)
    fence_top = y - rng.uniform(0.15, 0.25) * h
    grey = (120, 125, 130)
    for x in np.arange(0, w, 0.05 * h):
        cv2.line(img, (_fx(x), _fx(fence_top)), (_fx(x + 0.05 * h), _fx(y)), grey, 1, _AA, _SHIFT)
        cv2.line(img, (_fx(x + 0.05 * h), _fx(fence_top)), (_fx(x), _fx(y)), grey, 1, _AA, _SHIFT)
    for x in np.arange(0, w, 0.3 * h):
        _rect(img, x, fence_top - 0.01 * h, x + 0.012 * h, y, (90, 95, 100))
    floor = np.array([(190, 90, 60), (60, 130, 90), (60, 100, 170)][int(rng.integers(3))], np.float64)
    _ground(img, rng, y, floor, 6, max(4, h // 8))
    for fy in (y + (h - y) * rng.uniform(0.2, 0.35), y + (h - y) * rng.uniform(0.7, 0.85)):
        _rect(img, 0, fy, w, fy + 0.012 * h, (245, 245, 245))
    return img, hor


_DRAW: dict[str, Callable[[np.random.Generator, int, int], tuple[np.ndarray, float]]] = {
    "park": park, "street": street, "beach": beach, "room": room, "snow": snow, "court": court,
}  # fmt: skip


@lru_cache(maxsize=3 * len(SCENES) * N_VARIANTS)
def _panorama(name: str, variant: int, resolution: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(panorama, its mirror image, horizon) of one scene variant; read-only, shared by all samples."""
    rng = np.random.default_rng([_SCENE_SEED, SCENES.index(name), variant, resolution])
    img, horizon = _DRAW[name](rng, resolution, 2 * resolution)
    mirrored = np.ascontiguousarray(img[:, ::-1])
    img.setflags(write=False)
    mirrored.setflags(write=False)
    return img, mirrored, horizon


def backdrop(rng: np.random.Generator, name: str, resolution: int) -> Backdrop:
    """A fresh background of scene type ``name``: a random crop of a cached panorama, recoloured."""
    if name not in _DRAW:
        raise ChoiError(f"unknown scene '{name}'; allowed: {', '.join(SCENES)}")
    pano, mirrored, horizon = _panorama(name, int(rng.integers(N_VARIANTS)), resolution)
    x0 = int(rng.integers(0, resolution + 1))
    source = mirrored if rng.random() < 0.5 else pano
    gain = rng.uniform(0.85, 1.08) * rng.uniform(0.95, 1.05, 3)
    # cv2 reads the column window in place (row stride > width) and writes a new contiguous image.
    image = cv2.multiply(source[:, x0 : x0 + resolution], (*gain.tolist(), 0.0))
    return Backdrop(image, horizon, name)


__all__ = ["SCENES", "Backdrop", "backdrop"]
