"""Shapes of the outdoor objects: bicycle, ball, umbrella, skateboard and kite (see object_shapes)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from choi.world.canvas import Drawing, arc, capsule, circle, ellipse, rounded_rect, shade_spec
from choi.world.object_shapes import LABEL, RIM, Anchors, pt

if TYPE_CHECKING:
    from choi.world.objects import ObjectIdentity


def _wheel(out: Drawing, center: np.ndarray, r: float, tyre, rim, depth: float) -> None:
    out.ring(center, r, r - 0.018, tyre, depth, LABEL)
    out.ring(center, r - 0.018, r - 0.024, rim, depth + 0.01, LABEL)
    ang = np.linspace(0, math.pi, 5, endpoint=False)
    d = np.stack([np.cos(ang), np.sin(ang)], 1) * (r - 0.02)
    spokes = np.stack([center - d, center + d], 1).reshape(-1, 2)
    out.segments(spokes, shade_spec(rim, 0.85), depth + 0.005, 0.003, LABEL)
    out.convex(circle(center, 0.012, 8), shade_spec(rim, 0.7), depth + 0.02, LABEL)


def bicycle(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    s = ident.size
    out = Drawing()
    r = 0.19 * s
    rear, front = pt(-0.31, -r) * [s, 1], pt(0.31, -r) * [s, 1]
    bb = pt(-0.05, -0.15) * s
    seat_top, head_top, head_bot = pt(-0.14, -0.45) * s, pt(0.24, -0.45) * s, pt(0.26, -0.39) * s
    saddle = pt(-0.15, -0.485) * s
    grip = pt(0.19, -0.53) * s
    frame, accent, tyre, rim = "main", "second", "tyre", "rim"
    _wheel(out, rear, r, tyre, rim, -0.4)
    _wheel(out, front, r, tyre, rim, -0.3)
    low_top = ident.style == "step_through"
    top_start = bb + (seat_top - bb) * 0.45 if low_top else seat_top
    tubes = [
        (bb, rear, accent),
        (seat_top, rear, accent),
        (bb, seat_top, frame),
        (bb, head_bot, frame),
        (top_start, head_bot if low_top else head_top, frame),
        (head_bot, front, accent),
        (head_bot, head_top, frame),
    ]
    for k, (a, b, c) in enumerate(tubes):
        out.convex(capsule(a, b, 0.013), shade_spec(c, 0.55), 0.0 + k * 0.001, LABEL)
        out.convex(capsule(a, b, 0.009), c, 0.0005 + k * 0.001)
    if ident.pattern == "striped_tubes":
        for t in (0.3, 0.55):
            p = bb + (head_bot - bb) * t
            out.convex(capsule(p, p + (head_bot - bb) * 0.1, 0.0095), accent, 0.02)
    out.line(np.array([seat_top, saddle + pt(0, 0.01)]), (150, 150, 155), 0.03, 0.008, LABEL)
    out.convex(capsule(saddle - pt(0.035, 0.003), saddle + pt(0.03, 0.004), 0.012), (40, 34, 30), 0.04, LABEL)
    out.line(np.array([head_top, head_top + pt(-0.01, -0.06) * s, grip]), (70, 70, 76), 0.05, 0.011, LABEL)
    out.convex(capsule(grip - pt(0.012, 0), grip + pt(0.012, 0.004), 0.011), (30, 30, 30), 0.06, LABEL)
    out.convex(circle(bb, 0.035 * s, 12), (120, 120, 126), 0.1, LABEL)
    anchors = {
        "saddle": saddle + pt(0, -0.012),
        "grip": grip,
        "bb": bb,
        "top_tube": (seat_top + head_top) / 2,
        "rear": rear,
        "front": front,
        "seat_top": seat_top,
        "head_top": head_top,
    }
    return out, anchors


def bicycle_cranks(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    """The pedals, which turn with ``state["crank"]``: kept apart so the rest of the bicycle is cached."""
    s = ident.size
    bb = pt(-0.05, -0.15) * s
    crank = state.get("crank", 0.6)
    pedal = [bb + 0.06 * s * pt(math.sin(crank + k * math.pi), -math.cos(crank + k * math.pi)) for k in (0, 1)]
    out = Drawing()
    # The far crank behind the wheels and frame, the near one in front of them.
    out.line(np.array([bb, pedal[1]]), (90, 90, 96), -0.6, 0.012, LABEL)
    out.convex(capsule(pedal[1] - pt(0.02, 0), pedal[1] + pt(0.02, 0), 0.008), (50, 50, 55), -0.59, LABEL)
    out.line(np.array([bb, pedal[0]]), (150, 150, 156), 0.6, 0.012, LABEL)
    out.convex(capsule(pedal[0] - pt(0.022, 0), pedal[0] + pt(0.022, 0), 0.009), (40, 40, 44), 0.61, LABEL)
    return out, {"pedal_near": pedal[0], "pedal_far": pedal[1]}


def ball(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    r = 0.065 * ident.size
    out = Drawing()
    c0 = pt(0, 0)
    a, b = "main", "second"
    out.rimmed(circle(c0, r, 28), a, 0.0, LABEL, RIM)
    rr = r * 0.97
    if ident.pattern == "stripe":
        t = math.asin(0.35)
        out.convex(np.concatenate([arc(c0, rr, rr, -t, t, 6), arc(c0, rr, rr, math.pi - t, math.pi + t, 6)]), b, 0.01)
    elif ident.pattern == "panels":
        out.convex(ellipse(c0, r * 0.3, r * 0.3, 0, 8), b, 0.01)
        for k in range(5):
            ang = k * 2 * math.pi / 5 - math.pi / 2
            out.convex(circle(c0 + 0.78 * r * pt(math.cos(ang), math.sin(ang)), r * 0.17, 8), b, 0.01)
    elif ident.pattern == "two_tone":
        out.convex(arc(c0, rr, rr, 0, math.pi, 14), b, 0.01)
    elif ident.pattern == "segments":
        for k in range(0, 6, 2):
            t0 = k * math.pi / 3
            out.convex(np.concatenate([[c0], arc(c0, rr, rr, t0, t0 + math.pi / 3, 6)]), b, 0.01)
        out.convex(circle(c0, r * 0.18, 8), (245, 245, 245), 0.02)
    else:  # dots
        for dx, dy in ((0, 0), (0.5, 0.45), (-0.5, 0.45), (0.5, -0.45), (-0.5, -0.45)):
            out.convex(circle(c0 + pt(dx, dy) * r, r * 0.2, 8), b, 0.01)
    # The shine stays at the upper left whatever the rotation: drawn in the caller's frame later.
    return out, {"center": c0, "top": pt(0, -r), "bottom": pt(0, r), "radius": pt(r, r)}


def umbrella(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    s = ident.size
    out = Drawing()
    length, w = 0.5 * s, 0.3 * s
    top = pt(0, -length)
    handle_col = (120, 74, 40) if ident.style == "wood_handle" else (34, 34, 38)
    hook = np.concatenate([[pt(0, -0.02)], arc(pt(-0.022, 0.035) * s, 0.022 * s, 0.022 * s, 0, math.pi, 6)])
    out.line(hook, handle_col, 0.05, 0.014, LABEL)
    a, b = "main", "second"
    if state.get("open", True):
        yc = -length + 0.13 * s
        out.line(np.array([pt(0, -0.02), top]), (90, 90, 96), -0.2, 0.008, LABEL)
        dome = np.concatenate([arc(pt(0, yc), w, 0.15 * s, math.pi, 2 * math.pi, 16)])
        out.rimmed(dome, a, 0.0, LABEL, RIM)
        apex = pt(0, yc - 0.15 * s)
        ribs = np.linspace(-w, w, 7)
        rim_pts = [pt(x, yc) for x in ribs]
        if ident.pattern == "segments":
            for k in range(0, 6, 2):
                out.convex(np.array([apex, rim_pts[k], rim_pts[k + 1]]), b, 0.01)
        elif ident.pattern == "border":
            out.convex(np.concatenate([arc(pt(0, yc), w * 0.97, 0.145 * s, math.pi, 2 * math.pi, 16)]), b, 0.01)
            out.convex(np.concatenate([arc(pt(0, yc), w * 0.8, 0.115 * s, math.pi, 2 * math.pi, 16)]), a, 0.015)
        elif ident.pattern == "dots":
            for x, y in ((-0.6, 0.35), (0.0, 0.55), (0.6, 0.35), (-0.25, 0.15), (0.3, 0.12)):
                out.convex(circle(pt(x * w, yc - y * 0.15 * s), 0.02 * s, 8), b, 0.01)
        else:  # two_tone: the far half in the second colour
            out.convex(
                np.concatenate([arc(pt(0, yc), w * 0.985, 0.148 * s, 1.5 * math.pi, 2 * math.pi, 9), [pt(0, yc)]]),
                b,
                0.01,
            )
        tips = np.stack([np.array(rim_pts), np.array(rim_pts) + pt(0, 0.012)], 1).reshape(-1, 2)
        out.segments(tips, (60, 60, 60), 0.02, 0.008, LABEL)
        out.segments(
            np.stack([np.repeat(apex[None], 5, 0), np.array(rim_pts[1:6])], 1).reshape(-1, 2),
            shade_spec(a, 0.7),
            0.02,
            0.003,
        )
        out.convex(capsule(apex, apex + pt(0, -0.025), 0.007), (60, 60, 60), 0.03, LABEL)
    else:
        out.line(np.array([pt(0, -0.02), top + pt(0, -0.03)]), (90, 90, 96), -0.2, 0.008, LABEL)
        spindle = np.array(
            [
                [0, -length],
                [0.03, -length * 0.55],
                [0.016, -length * 0.22],
                [-0.016, -length * 0.22],
                [-0.03, -length * 0.55],
            ]
        ) * [1, 1]
        spindle[:, 0] *= s
        out.rimmed(spindle, a, 0.0, LABEL, RIM)
        out.line(np.array([[0.008, -length * 0.9], [0.018, -length * 0.35]]), b, 0.01, 0.008)
        out.convex(capsule(pt(-0.02, -length * 0.45), pt(0.02, -length * 0.45), 0.008), b, 0.02, LABEL)
    return out, {"grip": pt(0, 0.005), "top": top, "tip": top + pt(0, -0.03), "shaft_mid": pt(0, -length * 0.4)}


def skateboard(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    s = ident.size
    out = Drawing()
    half = 0.21 * s
    deck, graphic, wheel = "main", "second", "tail"
    if state.get("view", "side") == "side":
        y = -0.05
        o = pt(0.012, -0.008)
        for x in (-0.13 * s, 0.13 * s):  # far wheels, trucks, near wheels
            out.convex(circle(pt(x, -0.018) + o, 0.017, 8), shade_spec(wheel, 0.7), -0.3, LABEL)
            out.convex(
                np.array([[x - 0.02, y + 0.005], [x + 0.02, y + 0.005], [x + 0.008, -0.02], [x - 0.008, -0.02]]),
                (150, 150, 156),
                -0.2,
                LABEL,
            )
        path = np.array([[-half, y - 0.025], [-half * 0.72, y], [half * 0.72, y], [half, y - 0.025]])
        for a, b in zip(path[:-1], path[1:], strict=True):
            out.convex(capsule(a, b, 0.011), shade_spec(deck, 0.55), 0.0, LABEL)
            out.convex(capsule(a, b, 0.0075), deck, 0.001)
            out.convex(capsule(a + pt(0, -0.005), b + pt(0, -0.005), 0.0035), (40, 40, 40), 0.002)
        for x in (-0.13 * s, 0.13 * s):
            out.convex(circle(pt(x, -0.018), 0.017, 8), wheel, 0.3, LABEL)
        anchors = {
            "center": pt(0, y - 0.012),
            "nose": path[-1],
            "tail": path[0],
            "front_foot": pt(0.1 * s, y - 0.012),
            "back_foot": pt(-0.1 * s, y - 0.012),
        }
        return out, anchors
    # Bottom view, lying along x: the deck graphic faces the viewer.
    w = 0.055 * s
    board = rounded_rect(-half, -w, half, w, w * 0.95)
    out.rimmed(board, deck, 0.0, LABEL, RIM)
    if ident.pattern == "stripe":
        out.convex(np.array([[-0.04, -w], [0.04, -w], [0.04, w], [-0.04, w]]) * [s, 0.93], graphic, 0.01)
    elif ident.pattern == "two_tone":
        out.convex(rounded_rect(0.0, -w * 0.93, half * 0.97, w * 0.93, w * 0.9), graphic, 0.01)
    elif ident.pattern == "dots":
        for x in (-0.12, -0.04, 0.04, 0.12):
            out.convex(circle(pt(x * s, 0), w * 0.35, 8), graphic, 0.01)
    else:  # tips
        for sign in (-1, 1):
            out.convex(
                rounded_rect(
                    -half * 0.97 if sign < 0 else half * 0.62,
                    -w * 0.93,
                    -half * 0.62 if sign < 0 else half * 0.97,
                    w * 0.93,
                    w * 0.9,
                ),
                graphic,
                0.01,
            )
    for x in (-0.13 * s, 0.13 * s):
        out.convex(rounded_rect(x - 0.012, -w * 0.8, x + 0.012, w * 0.8, 0.005), (150, 150, 156), 0.02, LABEL)
        for y in (-w * 1.05, w * 1.05):
            out.convex(ellipse(pt(x, y), 0.014, 0.018, 0, 8), wheel, 0.03, LABEL)
    return out, {"center": pt(0, 0), "nose": pt(half, 0), "tail": pt(-half, 0), "edge": pt(0, -w)}


def kite(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    s = ident.size
    out = Drawing()
    top, left, right, bottom = pt(0, -0.11) * s, pt(-0.1, 0) * s, pt(0.1, 0) * s, pt(0, 0.21) * s
    c = pt(0, 0)
    a, b = "main", "second"
    tail_col = "tail"
    # Tail first, so the sail covers its knot.
    t = np.linspace(0, 1, 12)
    tail = np.stack([0.04 * s * np.sin(t * 9) * (0.4 + t), bottom[1] + t * 0.3 * s], 1)
    out.line(tail, (70, 70, 70), -0.2, 0.004, LABEL)
    for k in (3, 6, 9):
        p = tail[k]
        bow = np.array(
            [
                p + pt(-0.022, -0.012) * s,
                p + pt(0.022, 0.012) * s,
                p + pt(0.022, -0.012) * s,
                p + pt(-0.022, 0.012) * s,
            ]
        )
        out.poly(bow, tail_col, -0.1, LABEL)
    sail = np.array([top, right, bottom, left])
    out.rimmed(sail, a, 0.0, LABEL, RIM)
    if ident.pattern == "quarters":
        out.convex(np.array([top, right, c]), b, 0.01)
        out.convex(np.array([bottom, left, c]), b, 0.01)
    elif ident.pattern == "halves":
        out.convex(np.array([top, right, bottom]), b, 0.01)
    else:  # border: an inner diamond
        out.convex(c + (sail - c) * 0.6, b, 0.01)
    out.segments(np.array([top, bottom, left, right]), (90, 70, 50), 0.02, 0.004)
    return out, {"bridle": pt(0, 0.03) * s, "left": left, "right": right, "bottom": bottom, "center": c}
