"""How a posed person becomes filled, shaded, outlined body parts (a :class:`~choi.world.canvas.Drawing`).

Limbs are tapered capsules computed for the whole body in one vectorised call; the shirt and the
head are rigid part sets cached per (proportions, style) with colour *roles*, so a new identity
only costs a recolouring and a pose only a rotation. Far-side limbs are shaded darker, every part
has a dark rim, and the larger parts carry a light highlight band.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from choi.world import palette
from choi.world.bodies import HumanIdentity
from choi.world.canvas import CONVEX, LINE, POLY, Color, Drawing, arc, capsule, capsules, ellipse, mix, shade
from choi.world.skeleton import (
    FAR_ELBOW,
    FAR_FOOT,
    FAR_HAND,
    FAR_HIP,
    FAR_KNEE,
    FAR_SHOULDER,
    HEAD,
    NEAR_ELBOW,
    NEAR_FOOT,
    NEAR_HAND,
    NEAR_HIP,
    NEAR_KNEE,
    NEAR_SHOULDER,
    NECK,
    BodyDims,
    Pose,
)

# Body part labels in the label map (objects use OBJECT_LABEL and above).
(
    P_HEAD,
    P_HAIR,
    P_NECK,
    P_TORSO,
    P_PELVIS,
    P_NEAR_UPPER,
    P_NEAR_FORE,
    P_NEAR_HAND,
    P_FAR_UPPER,
    P_FAR_FORE,
    P_FAR_HAND,
    P_NEAR_THIGH,
    P_NEAR_SHIN,
    P_NEAR_SHOE,
    P_FAR_THIGH,
    P_FAR_SHIN,
    P_FAR_SHOE,
) = range(1, 18)
OBJECT_LABEL = 100

# Default depth of each body group; pose programmes override some to interleave an object.
DEFAULT_DEPTHS = {
    "far_leg": 10.0, "far_arm": 12.0, "far_hand": 12.5, "near_leg": 17.0, "pelvis": 18.0,
    "neck": 19.0, "torso": 20.0, "hair_back": 21.0, "head": 24.0, "near_arm": 30.0, "near_hand": 30.5,
}  # fmt: skip

_OUTLINE = 0.006  # rim width in world units (~0.5 px at 128 px for a 70 px tall person)
_LIGHT = np.array([-0.45, -0.9])  # highlights sit towards the upper left


Shades = tuple[Color, Color, Color]  # fill, outline, highlight


@lru_cache(maxsize=4096)
def _shades(ident: HumanIdentity) -> dict[tuple[str, bool], Shades]:
    """Fill/outline/highlight colours of each garment, for the near and the (shadowed) far side."""
    out = {}
    for name, base in (("skin", ident.skin), ("shirt", ident.shirt), ("cloth", ident.trousers), ("shoe", ident.shoes)):
        for near in (True, False):
            fill = base if near else shade(base, palette.FAR_FACTOR)
            out[name, near] = (fill, shade(fill, palette.OUTLINE_FACTOR), shade(fill, palette.HIGHLIGHT_FACTOR))
    return out


class _Limbs:
    """Collects capsule pieces so all of them become polygons in one vectorised call.

    Pieces marked ``merged`` (thigh + shin of one trouser leg, ...) draw all their outlines before
    all their fills, so a limb reads as one shape without seams at the joints; the others (sleeve
    ends, shorts, shoes, hands) stack on top with their own rims.
    """

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(
        self,
        a,
        b,
        ra: float,
        rb: float,
        colors: Shades,
        depth: float,
        label: int,
        highlight: bool = False,
        merged: bool = True,
    ) -> None:
        self.rows.append((a, b, ra, rb, colors, depth, label, highlight, merged))

    def emit(self, out: Drawing) -> None:
        rows = self.rows
        a = np.array([r[0] for r in rows], dtype=np.float64)
        b = np.array([r[1] for r in rows], dtype=np.float64)
        ra = np.array([r[2] for r in rows])
        rb = np.array([r[3] for r in rows])
        hl = np.array([r[7] for r in rows])
        shift = _LIGHT * 0.4
        polys = capsules(
            np.concatenate([a, a, a[hl] + shift * ra[hl, None]]),
            np.concatenate([b, b, b[hl] + shift * rb[hl, None]]),
            np.concatenate([ra + _OUTLINE, ra, ra[hl] * 0.38]),
            np.concatenate([rb + _OUTLINE, rb, rb[hl] * 0.38]),
        )
        m = len(rows)
        polys = list(polys)
        # Merged pieces: all rims, then all fills, so a limb has no seams; the others stack on top.
        zo = [r[5] + i * 1e-5 if r[8] else r[5] + 0.006 + i * 1e-4 for i, r in enumerate(rows)]
        zf = [z + 0.004 if r[8] else z + 5e-5 for z, r in zip(zo, rows, strict=True)]
        out.add_many(CONVEX, polys[:m], [r[4][1] for r in rows], zo, [r[6] for r in rows])
        out.add_many(CONVEX, polys[m : 2 * m], [r[4][0] for r in rows], zf, [0] * m)
        lit = [i for i, r in enumerate(rows) if r[7]]
        out.add_many(
            CONVEX, polys[2 * m :], [rows[i][4][2] for i in lit], [zf[i] + 0.0005 for i in lit], [0] * len(lit)
        )


def draw_human(ident: HumanIdentity, pose: Pose, depths: dict[str, float] | None = None) -> Drawing:
    """The person ``ident`` in ``pose`` as a :class:`Drawing` in world units (facing +x)."""
    dep = DEFAULT_DEPTHS if not depths else {**DEFAULT_DEPTHS, **depths}
    shades = _shades(ident)
    out = Drawing()
    limbs = _Limbs()
    for near in (False, True):
        _arm(limbs, ident, shades, pose.joints, near, dep)
        _leg(limbs, ident, shades, pose, near, dep)
    _trunk(limbs, out, ident, shades, pose.joints, dep)
    limbs.emit(out)
    _head(out, ident, pose.joints[HEAD], pose.head_tilt, dep)
    return out


def _arm(limbs: _Limbs, ident: HumanIdentity, shades, j: np.ndarray, near: bool, dep: dict[str, float]) -> None:
    d = ident.dims
    sh, el, hd = (NEAR_SHOULDER, NEAR_ELBOW, NEAR_HAND) if near else (FAR_SHOULDER, FAR_ELBOW, FAR_HAND)
    side = "near" if near else "far"
    skin, shirt = shades["skin", near], shades["shirt", near]
    lab_u, lab_f, lab_h = (P_NEAR_UPPER, P_NEAR_FORE, P_NEAR_HAND) if near else (P_FAR_UPPER, P_FAR_FORE, P_FAR_HAND)
    z = dep[f"{side}_arm"]
    ru, rf, rh = d.radius("upper_arm"), d.radius("forearm"), d.radius("hand")
    long_sleeve = ident.sleeves == "long"
    # Only near limbs get a highlight band: the far side of the body is in shadow.
    limbs.add(j[sh], j[el], ru, rf * 1.05, shirt if long_sleeve else skin, z, lab_u, near)
    limbs.add(j[el], j[hd], rf * 1.05, rf * 0.85, shirt if long_sleeve else skin, z, lab_f, near)
    if not long_sleeve:  # a short sleeve over the upper half of the upper arm
        mid = j[sh] + (j[el] - j[sh]) * 0.5
        limbs.add(j[sh], mid, ru * 1.25, ru * 1.2, shirt, z, lab_u, merged=False)
    hand_dir = j[hd] - j[el]
    tip = j[hd] + hand_dir / max(float(np.hypot(*hand_dir)), 1e-9) * rh * 0.35
    limbs.add(j[hd], tip, rh, rh * 0.9, skin, dep[f"{side}_hand"] + 0.03, lab_h, merged=False)


def _leg(limbs: _Limbs, ident: HumanIdentity, shades, pose: Pose, near: bool, dep: dict[str, float]) -> None:
    d, j = ident.dims, pose.joints
    hp, kn, ft = (NEAR_HIP, NEAR_KNEE, NEAR_FOOT) if near else (FAR_HIP, FAR_KNEE, FAR_FOOT)
    skin, cloth = shades["skin", near], shades["cloth", near]
    lab_t, lab_s, lab_f = (P_NEAR_THIGH, P_NEAR_SHIN, P_NEAR_SHOE) if near else (P_FAR_THIGH, P_FAR_SHIN, P_FAR_SHOE)
    z = dep["near_leg" if near else "far_leg"]
    rt, rk, ra = d.radius("thigh"), d.radius("knee"), d.radius("ankle")
    shorts = ident.leg_wear == "shorts"
    limbs.add(j[hp], j[kn], rt, rk, skin if shorts else cloth, z, lab_t, near)
    limbs.add(j[kn], j[ft], rk, ra, skin if shorts else cloth, z, lab_s, near)
    if shorts:  # shorts end above the knee
        limbs.add(j[hp], j[hp] + (j[kn] - j[hp]) * 0.6, rt * 1.12, rk * 1.15, cloth, z, lab_t, merged=False)
    # The sole is perpendicular to the shin unless the pose says otherwise (flat on a pedal, ...).
    shin = j[ft] - j[kn]
    angle = pose.foot_angles.get(ft, math.atan2(-shin[0], shin[1]))
    fwd = np.array([math.cos(angle), math.sin(angle)])
    down = np.array([-fwd[1], fwd[0]])
    heel = j[ft] - fwd * 0.018 * d.height + down * 0.012 * d.height
    toe = j[ft] + fwd * 0.058 * d.height + down * 0.016 * d.height
    limbs.add(heel, toe, 0.019 * d.height, 0.015 * d.height, shades["shoe", near], z + 0.001, lab_f, merged=False)


# Torso profile along the spine (t = 0 at the hips, 1 at the shoulders): front and back offsets in
# units of height x girth; the chest is fuller than the waist so the side view reads as a body.
_TORSO_T = np.array([0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
_TORSO_FRONT = np.array([0.066, 0.062, 0.066, 0.075, 0.068, 0.044])
_TORSO_BACK = np.array([0.068, 0.062, 0.06, 0.068, 0.066, 0.044])
_CAP = np.linspace(0.0, math.pi, 6)[1:-1]


Part = tuple[int, np.ndarray, str, float, int, str]  # kind, local points, colour role, dz, label, depth group


def _emit(
    out: Drawing,
    parts: tuple[Part, ...],
    roles: dict[str, Color],
    rot: np.ndarray,
    origin: np.ndarray,
    dep: dict[str, float],
    line_width: float,
) -> None:
    """Rigid cached parts -> world: one matrix product for all their points, then one primitive each."""
    sizes = [len(p[1]) for p in parts]
    pts = np.concatenate([p[1] for p in parts]) @ rot.T + origin
    start = 0
    for (kind, _, color, dz, label, group), n in zip(parts, sizes, strict=True):
        p = pts[start : start + n]
        start += n
        z = dep[group] + dz
        color = roles[color]
        if kind == LINE:
            out.line(p, color, z, line_width, label)
        elif kind == CONVEX:
            out.convex(p, color, z, label)
        else:
            out.poly(p, color, z, label)


def _trunk(limbs: _Limbs, out: Drawing, ident: HumanIdentity, shades, j: np.ndarray, dep: dict[str, float]) -> None:
    d = ident.dims
    pelvis = (j[NEAR_HIP] + j[FAR_HIP]) / 2
    up = j[NECK] - pelvis
    up = up / max(float(np.hypot(*up)), 1e-9)
    # Trousers: a block at the hips so the legs join the trunk.
    limbs.add(
        pelvis + up * 0.02,
        pelvis - up * 0.01,
        d.radius("torso_bottom") * 0.95,
        d.radius("thigh") * 1.05,
        shades["cloth", True],
        dep["pelvis"],
        P_PELVIS,
    )
    limbs.add(
        j[NECK] - up * 0.02,
        j[HEAD] - up * 0.04 * d.height,
        d.radius("neck"),
        d.radius("neck"),
        shades["skin", True],
        dep["neck"],
        P_NECK,
    )
    # The shirt is rigid: cached upright, then turned so that its "up" follows the spine.
    rot = np.array([[-up[1], -up[0]], [up[0], -up[1]]])
    _emit(
        out,
        _torso_parts(d.height, d.girth, ident.pattern),
        _roles(ident),
        rot,
        pelvis + up * 0.005 * d.height,
        dep,
        0.0,
    )


def _torso_outline(length: float, width: float, pad: float, t0: float = 0.0, t1: float = 1.0) -> np.ndarray:
    """Upright torso polygon (hips at the origin, facing +x) between ``t0`` and ``t1`` of its length."""
    t = np.linspace(t0, t1, 6)
    front = np.interp(t, _TORSO_T, _TORSO_FRONT) * width + pad
    back = np.interp(t, _TORSO_T, _TORSO_BACK) * width + pad
    y = -t * length
    front_pts = np.stack([front, y], 1)
    back_pts = np.stack([-back, y], 1)
    cap_r = (front[-1] + back[-1]) / 2
    top = np.stack([(front[-1] - back[-1]) / 2 + np.cos(_CAP) * cap_r, y[-1] - np.sin(_CAP) * cap_r * 0.7], 1)
    bot_r = (front[0] + back[0]) / 2
    bot = np.stack([(front[0] - back[0]) / 2 - np.cos(_CAP) * bot_r, y[0] + np.sin(_CAP) * bot_r * 0.35], 1)
    if t1 < 1.0:
        top = top[:0]
    return np.concatenate([front_pts, top, back_pts[::-1], bot])


@lru_cache(maxsize=4096)
def _roles(ident: HumanIdentity) -> dict[str, Color]:
    """The colours behind the role names of the cached torso and head geometry."""
    fill, rim, light = _shades(ident)["shirt", True]
    skin = ident.skin
    return {
        "shirt": fill, "shirt_rim": rim, "shirt_light": light, "second": ident.shirt_second, "skin": skin,
        "skin_rim": shade(skin, palette.OUTLINE_FACTOR), "cheek": shade(skin, 1.08), "nose": shade(skin, 0.93),
        "ear": shade(skin, 0.85), "lips": mix(skin, (120, 30, 30), 0.6), "hair": ident.hair_color,
        "hair_dark": shade(ident.hair_color, 0.7), "curls": shade(ident.hair_color, 0.6), "eye": (30, 24, 22),
    }  # fmt: skip


@lru_cache(maxsize=64)
def _torso_parts(height: float, girth: float, pattern: str) -> tuple[Part, ...]:
    """The shirt (rim, fill, highlight band, pattern) upright with the hem centre at the origin."""
    d = BodyDims(height, girth)
    length = d.spine - 0.025 * d.height  # hem (just above the pelvis) to the collar (just below the neck)
    width = d.height * d.girth
    fill, rim, light = "shirt", "shirt_rim", "shirt_light"
    parts: list[Part] = [
        (POLY, _torso_outline(length, width, _OUTLINE), rim, 0.0, P_TORSO, "torso"),
        (POLY, _torso_outline(length, width, 0.0), fill, 0.001, 0, "torso"),
        (CONVEX, capsule((-0.03 * width, -0.2 * length), (-0.03 * width, -0.8 * length), 0.011 * width), light,
         0.002, 0, "torso"),
    ]  # fmt: skip
    color = "second"

    def at(t: float, side: float) -> np.ndarray:
        off = np.interp(t, _TORSO_T, _TORSO_FRONT if side > 0 else _TORSO_BACK) * width * 0.97
        return np.array([off * side, -t * length])

    if pattern == "stripes":
        for t0 in (0.08, 0.36, 0.64):
            t1 = t0 + 0.14
            parts.append((CONVEX, np.array([at(t0, -1), at(t0, 1), at(t1, 1), at(t1, -1)]), color, 0.003, 0, "torso"))
    elif pattern == "dots":
        r = 0.011 * d.height
        for t, s in ((0.2, -0.5), (0.2, 0.45), (0.5, 0.0), (0.78, -0.5), (0.78, 0.45)):
            parts.append((CONVEX, ellipse(at(t, s), r, r, 0.0, 8), color, 0.003, 0, "torso"))
    elif pattern == "two_tone":  # the lower half of the shirt in the second colour
        parts.append((POLY, _torso_outline(length, width * 0.97, 0.0, 0.0, 0.5), color, 0.003, 0, "torso"))
    return tuple(parts)


@lru_cache(maxsize=64)
def _head_parts(s: float, style: str) -> tuple[Part, ...]:
    """Head, face hints and hair in the head frame (centre at the origin, facing +x), for height ``s``.

    Cached per (height, hair style): a pose only rotates and moves these points.
    """
    rx, ry = 0.056 * s, 0.066 * s
    hair, hair_dark = "hair", "hair_dark"
    parts: list[Part] = []

    def add(kind, pts, color, dz, label=0, group="head"):
        parts.append((kind, np.asarray(pts, dtype=np.float64), color, dz, label, group))

    if style == "curly":  # a mass of curls behind the head
        add(CONVEX, ellipse((-0.012 * s, -0.016 * s), 0.082 * s, 0.08 * s, 0, 20), "curls", -0.02, P_HAIR)
        add(CONVEX, ellipse((-0.012 * s, -0.016 * s), 0.076 * s, 0.074 * s, 0, 20), hair, -0.019)
    elif style == "long":
        curtain = np.array([[-0.02, -0.06], [-0.07, -0.02], [-0.075, 0.09], [-0.03, 0.11], [0.0, 0.03]]) * s
        add(POLY, curtain, hair_dark, 0.0, P_HAIR, "hair_back")
    elif style == "ponytail":
        tail = ellipse((-0.07 * s, 0.01 * s), 0.022 * s, 0.045 * s, 0.5, 12)
        add(CONVEX, tail + (tail - tail.mean(0)) * 0.15, hair_dark, -0.02, P_HAIR)
        add(CONVEX, tail, hair, -0.019)
    add(CONVEX, ellipse((0, 0), rx + _OUTLINE, ry + _OUTLINE, 0, 20), "skin_rim", 0.0, P_HEAD)
    add(CONVEX, ellipse((0, 0), rx, ry, 0, 20), "skin", 0.0005)
    add(CONVEX, ellipse((0.035 * s, -0.02 * s), 0.02 * s, 0.018 * s, 0, 12), "cheek", 0.001)
    add(CONVEX, np.array([[0.046, -0.012], [0.071, 0.01], [0.048, 0.016]]) * s, "nose", 0.002)
    add(CONVEX, ellipse((0.03 * s, -0.008 * s), 0.0075 * s, 0.009 * s, 0, 8), "eye", 0.003)
    add(LINE, np.array([[0.028, 0.034], [0.048, 0.03]]) * s, "lips", 0.003)
    if style not in ("long", "bob"):
        add(CONVEX, ellipse((-0.008 * s, 0.004 * s), 0.012 * s, 0.017 * s, 0, 8), "ear", 0.004)
    cap = _hair_cap(style, rx, ry, s)
    if cap is not None:
        add(POLY, cap, hair, 0.005, P_HAIR)
    return tuple(parts)


def _head(out: Drawing, ident: HumanIdentity, center: np.ndarray, tilt: float, dep: dict[str, float]) -> None:
    """The cached head parts turned by ``tilt`` (looking up turns the face counter-clockwise)."""
    c, s = math.cos(-tilt), math.sin(-tilt)
    rot = np.array([[c, -s], [s, c]])
    _emit(
        out,
        _head_parts(ident.dims.height, ident.hair_style),
        _roles(ident),
        rot,
        center,
        dep,
        0.006 * ident.dims.height,
    )


def _hair_cap(style: str, rx: float, ry: float, s: float) -> np.ndarray | None:
    """The hair polygon over the skull for ``style`` (head frame, facing +x)."""
    deg = math.pi / 180
    if style == "buzz":
        outer = arc((0, 0), rx + 0.004 * s, ry + 0.004 * s, -60 * deg, -200 * deg, 12)
        inner = arc((0, 0), rx - 0.01 * s, ry - 0.012 * s, -190 * deg, -70 * deg, 8)
        return np.concatenate([outer, inner])
    if style in ("short", "ponytail", "long"):
        outer = arc((0, 0), rx + 0.01 * s, ry + 0.01 * s, -40 * deg, -205 * deg, 14)
        inner = np.array([[-0.03, 0.01], [-0.012, -0.03], [0.02, -0.04]]) * s
        return np.concatenate([outer, inner])
    if style == "bob":
        outer = arc((0, 0), rx + 0.014 * s, ry + 0.012 * s, -35 * deg, -250 * deg, 16)
        inner = np.array([[-0.02, 0.05], [-0.015, -0.02], [0.025, -0.038]]) * s
        return np.concatenate([outer, inner])
    if style == "curly":  # a fringe of curls over the forehead
        return arc((-0.005 * s, -0.01 * s), rx + 0.012 * s, ry + 0.006 * s, -30 * deg, -170 * deg, 10)
    return None
