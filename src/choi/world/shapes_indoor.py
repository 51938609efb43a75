"""Shapes of the everyday objects: chair, cup, suitcase and guitar (see object_shapes)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from choi.world.canvas import Drawing, arc, capsule, circle, ellipse, rounded_rect, shade_spec
from choi.world.object_shapes import LABEL, RIM, Anchors, pt

if TYPE_CHECKING:
    from choi.world.objects import ObjectIdentity


def chair(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    s = ident.size
    out = Drawing()
    hs, half, back_h = 0.26 * s, 0.11 * s, 0.26 * s
    o = pt(0.06, -0.035) * s  # the far side, up and to the right
    wood, cushion = "wood", "main"
    far = shade_spec(wood, 0.72)
    leg_r = 0.011 * s
    for x in (half - 0.01 * s, -half + 0.01 * s):  # far legs
        out.convex(capsule(pt(x, -hs) + o, pt(x, 0) + o, leg_r), far, -0.5, LABEL)
    back_top = -hs - back_h
    out.convex(capsule(pt(-half, -hs) + o, pt(-half - 0.02 * s, back_top) + o, leg_r), far, -0.45, LABEL)
    seat = np.array([[-half, -hs], [half, -hs], [half + o[0], -hs + o[1]], [-half + o[0], -hs + o[1]]])
    out.rimmed(seat, cushion, -0.1, LABEL, RIM)
    front_edge = np.array([[-half, -hs], [half, -hs], [half, -hs + 0.025 * s], [-half, -hs + 0.025 * s]])
    out.rimmed(front_edge, shade_spec(cushion if ident.pattern == "cushion" else wood, 0.8), -0.09, LABEL, RIM)
    if ident.pattern == "two_tone":
        out.convex(np.array([seat[0], (seat[0] + seat[1]) / 2, (seat[3] + seat[2]) / 2, seat[3]]), "second", -0.094)
    # Back rest between the near and far back posts.
    bl, bt = pt(-half - 0.01 * s, -hs - 0.07 * s), pt(-half - 0.02 * s, back_top + 0.01 * s)
    panel = np.array([bt, bt + o, bl + o, bl])
    if ident.style == "solid":
        out.rimmed(panel, "second", 0.0, LABEL, RIM)
    elif ident.style == "slats":
        for t0 in (0.0, 0.4, 0.8):
            p0, p1 = bt + (bl - bt) * t0, bt + (bl - bt) * (t0 + 0.2)
            out.rimmed(np.array([p0, p0 + o, p1 + o, p1]), "second", 0.0, LABEL, RIM)
    else:  # frame: a single top rail
        p1 = bt + (bl - bt) * 0.3
        out.rimmed(np.array([bt, bt + o, p1 + o, p1]), "second", 0.0, LABEL, RIM)
    for x in (half - 0.01 * s, -half + 0.01 * s):  # near legs
        out.convex(capsule(pt(x, -hs), pt(x, 0), leg_r), wood, 0.3, LABEL)
    out.convex(capsule(pt(-half, -hs), pt(-half - 0.02 * s, back_top), leg_r), wood, 0.35, LABEL)
    anchors = {
        "seat": pt(0, -hs) + o / 2,
        "seat_front": pt(half, -hs),
        "seat_back": pt(-half, -hs),
        "back_top": pt(-half - 0.02 * s, back_top) + o / 2,
        "seat_height": pt(0, hs),
    }
    return out, anchors


def cup(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    s = ident.size
    out = Drawing()
    h, w = 0.095 * s, 0.038 * s  # larger than life: a cup must stay visible at 64 px
    body_c, second = "main", "second"
    if ident.style == "mug":
        ring = arc(pt(w, -h * 0.5), 0.026 * s, 0.028 * s, -math.pi / 2, math.pi / 2, 8)
        out.line(ring, shade_spec(body_c, 0.8), -0.1, 0.011 * s, LABEL)
        body = rounded_rect(-w, -h, w, 0, 0.006 * s)
        top_w, bottom_w = w, w
    else:
        top_w, bottom_w = w * 1.1, w * 0.78
        body = np.array([[-top_w, -h], [top_w, -h], [bottom_w, 0], [-bottom_w, 0]])
    out.rimmed(body, body_c, 0.0, LABEL, RIM)

    def band(t0: float, t1: float) -> np.ndarray:
        x0, x1 = top_w + (bottom_w - top_w) * t0, top_w + (bottom_w - top_w) * t1
        return np.array([[-x0, -h + h * t0], [x0, -h + h * t0], [x1, -h + h * t1], [-x1, -h + h * t1]]) * [0.93, 1]

    if ident.pattern == "band":
        out.convex(band(0.4, 0.65), second, 0.01)
    elif ident.pattern == "dots":
        for x, y in ((-0.45, 0.3), (0.45, 0.45), (0.0, 0.65), (-0.4, 0.8)):
            out.convex(circle(pt(x * w, -h + y * h), 0.01 * s, 8), second, 0.01)
    elif ident.pattern == "two_tone":
        out.convex(band(0.5, 0.97), second, 0.01)
    else:  # rim
        out.convex(band(0.0, 0.2), second, 0.01)
    if ident.style == "paper":
        out.rimmed(
            rounded_rect(-top_w * 1.08, -h - 0.012 * s, top_w * 1.08, -h + 0.002, 0.004), "tail", 0.02, LABEL, RIM
        )
    else:
        out.convex(ellipse(pt(0, -h + 0.002), w * 0.9, 0.005 * s, 0, 12), (60, 40, 30), 0.02)
    return out, {"grip": pt(w * 0.5, -h * 0.5), "rim": pt(w * 0.8, -h), "base": pt(0, 0), "top": pt(0, -h)}


def suitcase(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    s = ident.size
    out = Drawing()
    hw, h = 0.11 * s, 0.3 * s
    o = pt(0.045, -0.03) * s
    body_c, second = "main", "second"
    metal = "metal"
    wheel_col = (30, 30, 32)
    for x in (-hw * 0.7 + o[0], hw * 0.7 + o[0]):
        out.convex(circle(pt(x, -0.016 + o[1] * 0.3), 0.016, 8), wheel_col, -0.5, LABEL)
    if state.get("handle", False):
        out.segments(
            np.array([[-0.05 * s, -h], [-0.05 * s, -h - 0.24 * s], [0.05 * s, -h], [0.05 * s, -h - 0.24 * s]]) + o / 2,
            metal,
            -0.3,
            0.008,
            LABEL,
        )
        tele = pt(0, -h - 0.24 * s) + o / 2
        out.convex(capsule(tele - pt(0.06 * s, 0), tele + pt(0.06 * s, 0), 0.01), (30, 30, 30), -0.29, LABEL)
    else:
        tele = pt(0, -h - 0.012) + o / 2
        out.convex(capsule(tele - pt(0.06 * s, 0), tele + pt(0.06 * s, 0), 0.008), (30, 30, 30), -0.29, LABEL)
    front = rounded_rect(-hw, -h, hw, -0.02, 0.02 * s)
    side = np.array([[hw, -h + 0.01], [hw + o[0], -h + o[1] + 0.01], [hw + o[0], -0.02 + o[1]], [hw, -0.02]])
    topf = np.array([[-hw + 0.01, -h], [-hw + 0.01 + o[0], -h + o[1]], [hw + o[0], -h + o[1]], [hw, -h]])
    out.rimmed(side, shade_spec(body_c, 0.75), -0.1, LABEL, RIM)
    out.rimmed(topf, shade_spec(body_c, 1.12), -0.1, LABEL, RIM)
    out.rimmed(front, body_c, 0.0, LABEL, RIM)
    if ident.pattern == "ribs":
        xs = np.linspace(-hw * 0.6, hw * 0.6, 4)
        out.segments(
            np.stack([np.stack([xs, np.full(4, -h * 0.9)], 1), np.stack([xs, np.full(4, -h * 0.12)], 1)], 1).reshape(
                -1, 2
            ),
            second,
            0.01,
            0.01,
        )
    elif ident.pattern == "band":
        out.convex(
            np.array([[-hw, -h * 0.58], [hw, -h * 0.58], [hw, -h * 0.45], [-hw, -h * 0.45]]) * [0.99, 1], second, 0.01
        )
    elif ident.pattern == "stickers":
        out.convex(circle(pt(-hw * 0.4, -h * 0.7), 0.025 * s, 12), second, 0.01)
        out.convex(rounded_rect(0.0, -h * 0.45, hw * 0.7, -h * 0.25, 0.006), second, 0.01)
    else:  # corners
        for x, y in ((-hw, -h), (hw, -h), (-hw, -0.02), (hw, -0.02)):
            out.convex(circle(pt(x * 0.85, y * 0.93 - 0.004 if y < -0.1 else y - 0.012), 0.022 * s, 8), second, 0.01)
    if ident.style == "soft":  # a front pocket seam
        out.line(
            rounded_rect(-hw * 0.75, -h * 0.8, hw * 0.75, -h * 0.2, 0.015)[[*range(16), 0]],
            shade_spec(body_c, 0.6),
            0.02,
            0.005,
        )
    handle = arc(pt(0, -h) + o / 2, 0.04 * s, 0.025 * s, math.pi, 2 * math.pi, 7)
    out.line(handle, (30, 30, 30), 0.05, 0.01, LABEL)
    for x in (-hw * 0.7, hw * 0.7):
        out.convex(circle(pt(x, -0.016), 0.016, 8), wheel_col, 0.1, LABEL)
    anchors = {
        "handle": pt(0, -h - 0.025 * s) + o / 2,
        "tele": tele,
        "top": pt(0, -h) + o / 2,
        "wheels": pt(0, -0.016),
        "back_bottom": pt(-hw, 0),
    }
    return out, anchors


def guitar(ident: ObjectIdentity, state: dict) -> tuple[Drawing, Anchors]:
    s = ident.size
    out = Drawing()
    body_c = "main" if ident.style == "electric" else "body_wood"
    neck_c = "wood"
    lower, upper = pt(-0.07, 0) * s, pt(0.05, 0) * s
    neck0, neck1, head1 = pt(0.08, 0) * s, pt(0.36, 0) * s, pt(0.43, 0) * s
    # Neck and headstock behind the body.
    out.rimmed(
        np.array([neck0 + pt(0, -0.013), neck1 + pt(0, -0.011), neck1 + pt(0, 0.011), neck0 + pt(0, 0.013)]),
        neck_c,
        -0.2,
        LABEL,
        RIM,
    )
    out.rimmed(
        np.array([neck1 + pt(0, -0.016), head1 + pt(0, -0.02), head1 + pt(0, 0.02), neck1 + pt(0, 0.016)]),
        shade_spec(neck_c, 0.7),
        -0.19,
        LABEL,
        RIM,
    )
    for k in range(1, 5):  # frets
        x = neck0[0] + (neck1[0] - neck0[0]) * k / 5
        out.line(np.array([[x, -0.011], [x, 0.011]]), (200, 200, 200), -0.18, 0.003)
    rim = "second" if ident.pattern == "binding" else shade_spec(body_c, 0.5)
    pad = RIM * 1.5
    bouts = [(lower, 0.1 * s, 0.085 * s, 28), (upper, 0.07 * s, 0.065 * s, 20)]
    for c, rx, ry, n in bouts:  # rims of both bouts first, then both fills: one clean outline
        out.convex(ellipse(c, rx + pad, ry + pad, 0, n), rim, 0.0, LABEL)
    for c, rx, ry, n in bouts:
        out.convex(ellipse(c, rx, ry, 0, n), body_c, 0.001)
    if ident.style == "acoustic":
        out.convex(circle(pt(0.035, 0) * s, 0.026 * s, 16), (40, 28, 20), 0.01)
        out.convex(ellipse(pt(-0.1, 0) * s, 0.012 * s, 0.03 * s, 0, 8), (50, 36, 26), 0.01)
    else:
        out.convex(ellipse(pt(-0.02, 0.025) * s, 0.075 * s, 0.04 * s, -0.3, 16), "second", 0.01)
        for x in (-0.01, 0.03):
            out.convex(rounded_rect(x * s - 0.008, -0.02 * s, x * s + 0.008, 0.02 * s, 0.003), (30, 30, 30), 0.02)
    out.segments(
        np.array([[-0.12 * s, -0.006], [head1[0] - 0.02, -0.006], [-0.12 * s, 0.006], [head1[0] - 0.02, 0.006]]),
        (225, 225, 215),
        0.03,
        0.002,
    )
    anchors = {
        "neck": pt(0.3, 0) * s,
        "strum": pt(0.0, 0.01) * s,
        "body": lower,
        "head": head1,
        "fret": pt(0.22, 0) * s,
    }
    return out, anchors
