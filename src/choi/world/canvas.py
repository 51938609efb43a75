"""Shapes in world units and the one pass that rasterises them.

Everything HOI-World draws (body parts, object parts) is first collected into a :class:`Drawing`
as polygons and polylines in *world units* (1.0 = a standing person's height, y pointing down),
each with a depth and a label. Only when the whole pair is assembled is the world→pixel affine
known (it depends on the pair's bounds), so rasterisation is a single sorted pass that writes

- the RGB canvas, anti-aliased (cv2 ``LINE_AA`` with 4 bits of sub-pixel ``shift``), and
- an integer label map without anti-aliasing, so masks follow occlusion exactly.

Geometry helpers (:func:`capsule`, :func:`ellipse`, ...) are vectorised so a whole limb set is one
numpy call; the per-primitive cost is then dominated by the cv2 call itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate

import cv2
import numpy as np

SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = float(1 << SHIFT)

# Primitive kinds.
CONVEX, POLY, LINE, SEGMENTS, RING = 0, 1, 2, 3, 4

Color = tuple[int, int, int]

# Half-circle offsets, shared read-only; 7 points per half keeps limbs round up to 256 px.
_ARC_N = 7
_ARC = np.linspace(-math.pi / 2, math.pi / 2, _ARC_N)
_ARC_C, _ARC_S = np.cos(_ARC), np.sin(_ARC)


def _freeze(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


_UNIT_CIRCLES = {
    n: _freeze(np.stack([np.cos(t), np.sin(t)], 1))
    for n in (8, 12, 16, 20, 28, 40)
    for t in [np.linspace(0, 2 * math.pi, n, endpoint=False)]
}


@lru_cache(maxsize=8192)  # colours come from small palettes: nearly every call is a hit
def shade(color: Color, factor: float) -> Color:
    """``color`` scaled by ``factor`` (darker below 1, lighter above), clipped to [0, 255]."""
    return tuple(min(255, max(0, int(c * factor))) for c in color)  # type: ignore[return-value]


# A colour in a Drawing is RGB, a role name ("main") or (role, brightness factor); roles are
# resolved per identity by :meth:`Drawing.recolored`, so geometry can be cached across colourways.
ColorSpec = Color | str | tuple[str, float]


def shade_spec(spec: ColorSpec, factor: float) -> ColorSpec:
    """:func:`shade` for any colour spec; roles stay symbolic until :meth:`Drawing.recolored`."""
    if isinstance(spec, str):
        return (spec, factor)
    if isinstance(spec[0], str):
        return (spec[0], spec[1] * factor)
    return shade(spec, factor)  # type: ignore[arg-type]


def resolve(spec: ColorSpec, roles: dict[str, Color]) -> Color:
    if isinstance(spec, str):
        return roles[spec]
    if isinstance(spec[0], str):
        return shade(roles[spec[0]], spec[1])  # type: ignore[index]
    return spec  # type: ignore[return-value]


def mix(a: Color, b: Color, t: float) -> Color:
    """Linear blend ``(1 - t) * a + t * b``."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def capsules(a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Tapered capsules from ``a`` (radius ``ra``) to ``b`` (radius ``rb``): ``(m, 2 * 7, 2)`` polygons.

    The end caps are half circles around the axis; with unequal radii they are not exactly
    tangent to the sides, which is invisible at our sizes and keeps this one vectorised call.
    """
    d = b - a  # (m, 2)
    n = np.hypot(d[:, 0], d[:, 1])[:, None]
    u = np.where(n > 1e-9, d / np.maximum(n, 1e-9), np.array([0.0, 1.0]))
    ux, uy = u[:, :1], u[:, 1:]
    rot = np.stack([ux * _ARC_C - uy * _ARC_S, ux * _ARC_S + uy * _ARC_C], axis=2)  # (m, k, 2)
    head = b[:, None, :] + rb[:, None, None] * rot
    tail = a[:, None, :] - ra[:, None, None] * rot
    return np.concatenate([head, tail], axis=1)


def capsule(a, b, ra: float, rb: float | None = None) -> np.ndarray:
    """One tapered capsule polygon (see :func:`capsules`)."""
    a2 = np.asarray(a, dtype=np.float64).reshape(1, 2)
    b2 = np.asarray(b, dtype=np.float64).reshape(1, 2)
    return capsules(a2, b2, np.array([ra]), np.array([ra if rb is None else rb]))[0]


def ellipse(center, rx: float, ry: float, angle: float = 0.0, n: int = 20) -> np.ndarray:
    """Polygon of an ellipse rotated by ``angle`` radians; ``n`` is one of 8/12/16/20/28/40."""
    unit = _UNIT_CIRCLES[n]
    c, s = math.cos(angle), math.sin(angle)
    x, y = unit[:, 0] * rx, unit[:, 1] * ry
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=1)


def circle(center, r: float, n: int = 16) -> np.ndarray:
    return ellipse(center, r, r, 0.0, n)


def arc(center, rx: float, ry: float, t0: float, t1: float, n: int = 9, angle: float = 0.0) -> np.ndarray:
    """Points on an elliptical arc from parameter ``t0`` to ``t1`` (radians)."""
    t = np.linspace(t0, t1, n)
    x, y = np.cos(t) * rx, np.sin(t) * ry
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=1)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    """Axis-aligned rectangle with corner radius ``r`` (4 points per corner)."""
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    q = math.pi / 2
    corners = [((x1 - r, y1 - r), 0.0), ((x0 + r, y1 - r), q), ((x0 + r, y0 + r), 2 * q), ((x1 - r, y0 + r), 3 * q)]
    return np.concatenate([arc(c, r, r, t, t + q, 4) for c, t in corners])


def rotate(points: np.ndarray, angle: float, origin=(0.0, 0.0)) -> np.ndarray:
    """Points rotated by ``angle`` radians about ``origin`` (positive = clockwise on screen)."""
    c, s = math.cos(angle), math.sin(angle)
    p = np.asarray(points, dtype=np.float64) - origin
    return np.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1]], axis=-1) + origin


@dataclass
class Drawing:
    """An ordered list of primitives in world units; see the module docstring.

    ``label`` 0 means "decoration": drawn in RGB only, because it lies inside a labelled shape.
    """

    depth: list[float] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    pts: list[np.ndarray] = field(default_factory=list)
    color: list[Color] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    width: list[float] = field(default_factory=list)  # line width in world units (lines only)

    def _add(self, kind: int, pts: np.ndarray, color: Color, depth: float, label: int, width: float) -> None:
        self.kind.append(kind)
        self.pts.append(pts)
        self.color.append(color)
        self.depth.append(depth)
        self.label.append(label)
        self.width.append(width)

    def add_many(self, kind: int, pts: list[np.ndarray], colors: list, depths: list[float], labels: list[int]) -> None:
        """Append many primitives of one kind at once (the body's limbs): fewer Python calls."""
        n = len(pts)
        self.kind += [kind] * n
        self.pts += pts
        self.color += colors
        self.depth += depths
        self.label += labels
        self.width += [0.0] * n

    def convex(self, pts: np.ndarray, color: Color, depth: float, label: int = 0) -> None:
        self._add(CONVEX, pts, color, depth, label, 0.0)

    def poly(self, pts: np.ndarray, color: Color, depth: float, label: int = 0) -> None:
        self._add(POLY, pts, color, depth, label, 0.0)

    def line(self, pts: np.ndarray, color: Color, depth: float, width: float, label: int = 0) -> None:
        """An open polyline through ``pts``."""
        self._add(LINE, np.asarray(pts, dtype=np.float64), color, depth, label, width)

    def segments(self, pts: np.ndarray, color: Color, depth: float, width: float, label: int = 0) -> None:
        """Independent segments, ``pts`` of shape ``(2k, 2)``: one cv2 call for all of them."""
        self._add(SEGMENTS, np.asarray(pts, dtype=np.float64), color, depth, label, width)

    def outlined(self, pts: np.ndarray, fill: Color, outline: Color, depth: float, label: int, pad: float) -> None:
        """A convex shape with a dark rim: the rim is a ``pad``-grown copy drawn first (and labelled)."""
        center = pts.mean(axis=0)
        d = pts - center
        n = np.hypot(d[:, 0], d[:, 1])[:, None]
        grown = pts + d / np.maximum(n, 1e-9) * pad
        self._add(CONVEX, grown, outline, depth, label, 0.0)
        self._add(CONVEX, pts, fill, depth, 0, 0.0)

    def ring(
        self, center, r_out: float, r_in: float, color: ColorSpec, depth: float, label: int = 0, n: int = 28
    ) -> None:
        """An annulus (a tyre): one even-odd polygon with a hole, much cheaper than a thick polyline."""
        outer = ellipse(center, r_out, r_out, 0.0, n)
        inner = ellipse(center, r_in, r_in, 0.0, n)[::-1]
        self._add(RING, np.concatenate([outer, inner]), color, depth, label, 0.0)

    def rimmed(
        self,
        pts: np.ndarray,
        fill: Color,
        depth: float,
        label: int,
        rim: float,
        convex: bool = True,
        rim_color: Color | None = None,
    ) -> None:
        """A filled shape with a closed dark rim line of width ``rim`` (labelled too, so masks include it)."""
        (self.convex if convex else self.poly)(pts, fill, depth, label)
        closed = np.concatenate([pts, pts[:1]])
        self._add(LINE, closed, rim_color or shade_spec(fill, 0.5), depth + 1e-4, label, rim)

    def extend(self, other: Drawing) -> None:
        self.depth += other.depth
        self.kind += other.kind
        self.pts += other.pts
        self.color += other.color
        self.label += other.label
        self.width += other.width

    def recolored(self, roles: dict[str, Color]) -> Drawing:
        """A copy (sharing the point arrays) with colour roles replaced by ``roles``' RGB values."""
        return Drawing(
            list(self.depth),
            list(self.kind),
            list(self.pts),
            [resolve(c, roles) for c in self.color],
            list(self.label),
            list(self.width),
        )

    def transformed(self, matrix: np.ndarray, depth_offset: float = 0.0, scale: float = 1.0) -> Drawing:
        """A copy with every point mapped by the 2x3 affine ``matrix`` (line widths times ``scale``)."""
        if not self.pts:
            return Drawing()
        sizes = [len(p) for p in self.pts]
        allp = np.concatenate(self.pts) @ matrix[:, :2].T + matrix[:, 2]
        parts = np.split(allp, np.cumsum(sizes)[:-1])
        return Drawing(
            [d + depth_offset for d in self.depth],
            list(self.kind),
            parts,
            list(self.color),
            list(self.label),
            [w * scale for w in self.width],
        )

    def bounds(self, labelled_only: bool = True) -> tuple[float, float, float, float]:
        """World-unit bounding box ``(x0, y0, x1, y1)`` of the (labelled) primitives."""
        idx = [i for i, lab in enumerate(self.label) if lab or not labelled_only]
        allp = np.concatenate([self.pts[i] for i in idx])
        pad = max([self.width[i] / 2 for i in idx], default=0.0)
        lo, hi = allp.min(axis=0), allp.max(axis=0)
        return (lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad)

    def render(self, image: np.ndarray, labels: np.ndarray | None, matrix: np.ndarray, px_per_unit: float) -> None:
        """Rasterise back to front into ``image`` (RGB, in place) and ``labels`` (uint8, in place).

        ``matrix`` maps world units to pixels; ``px_per_unit`` converts line widths.
        """
        if not self.pts:
            return
        sizes = [len(p) for p in self.pts]
        ends = list(accumulate(sizes))
        allp = np.concatenate(self.pts) @ (matrix[:, :2].T * _ONE) + matrix[:, 2] * _ONE - _ONE / 2
        fixed = np.rint(allp).astype(np.int32)
        order = sorted(range(len(sizes)), key=self.depth.__getitem__)
        kinds, colors, marks, widths = self.kind, self.color, self.label, self.width
        aa, hard = cv2.LINE_AA, cv2.LINE_8
        fill_convex, fill_poly = cv2.fillConvexPoly, cv2.fillPoly
        for i in order:  # the hot loop of HOI-World: keep it free of allocations and lookups
            end = ends[i]
            p = fixed[end - sizes[i] : end]
            kind, color, label = kinds[i], colors[i], marks[i] if labels is not None else 0
            if kind == CONVEX:
                fill_convex(image, p, color, aa, SHIFT)
                if label:
                    fill_convex(labels, p, label, hard, SHIFT)
            elif kind == POLY:
                fill_poly(image, [p], color, aa, SHIFT)
                if label:
                    fill_poly(labels, [p], label, hard, SHIFT)
            elif kind == RING:
                half = len(p) // 2
                contours = [p[:half], p[half:]]
                fill_poly(image, contours, color, aa, SHIFT)
                if label:
                    fill_poly(labels, contours, label, hard, SHIFT)
            else:
                curves = [p] if kind == LINE else p.reshape(-1, 2, 2)
                thick = max(1, int(widths[i] * px_per_unit + 0.5))
                cv2.polylines(image, curves, False, color, thick, aa, SHIFT)
                if label:
                    cv2.polylines(labels, curves, False, label, thick, hard, SHIFT)
