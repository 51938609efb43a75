"""One pose programme per interaction class of :mod:`choi.vocabulary`.

Each programme places the object relative to the body (or the body relative to the object), puts
hands and feet on the object's anchor points with 2-link IK, and sets depths so that occlusion is
right (the far leg behind a bicycle, the near one in front). Layouts are chosen to be distinctive
between classes of the same object: a skateboard carried flat under the arm vs held upright on
the ground, a kite in the hands vs high in the sky on a string.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from choi.vocabulary import CLASS_NAMES
from choi.world.objects import ObjectPose, draw_object, object_anchors
from choi.world.poses import Ctx, Layout, hips, on_surface, relaxed, seated, string_line, walking
from choi.world.skeleton import (
    FAR_FOOT,
    HEAD,
    NEAR_FOOT,
    NEAR_HAND,
    NEAR_HIP,
    NEAR_SHOULDER,
    NECK,
    Pose,
    set_arm,
    set_leg,
    standing,
    trunk,
)

Programme = Callable[[Ctx], Layout]


def _anchors(ctx: Ctx, pose: ObjectPose) -> dict[str, np.ndarray]:
    return object_anchors(ctx.obj, pose)


def _at(ctx: Ctx, pose: ObjectPose, anchor: str, target: np.ndarray) -> ObjectPose:
    """``pose`` moved so that its ``anchor`` lands on the world point ``target``."""
    a = _anchors(ctx, pose)[anchor]
    return ObjectPose(
        pose.x + target[0] - a[0], pose.y + target[1] - a[1], pose.angle, pose.scale, pose.flip, pose.state
    )


def _hands(ctx: Ctx, pose: Pose, near=None, far=None) -> Pose:
    j = pose.joints
    if near is not None:
        set_arm(j, ctx.dims, True, target=near)
    if far is not None:
        set_arm(j, ctx.dims, False, target=far)
    return pose


# Objects keep their identity's size (scale 1 = world units), except bicycles, which are fitted to
# their rider so that hands and feet reach the handlebar and the pedals.

# --- bicycle -------------------------------------------------------------------------------------


def _bike_scale(ctx: Ctx) -> float:
    return 0.92 * ctx.dims.height / ctx.obj.size  # bikes fit their rider; the size factor shows elsewhere


def ride_bicycle(ctx: Ctx) -> Layout:
    d = ctx.dims
    bike = ObjectPose(0.0, 0.0, 0.0, _bike_scale(ctx), state={"crank": math.tau * ctx.phase})
    a = _anchors(ctx, bike)
    lean = ctx.u(0.35, 0.6)
    j = trunk(d, a["saddle"] + np.array([0.0, -0.03 * d.height]), lean, head_tilt=lean * 0.5)
    up = np.array([0.0, -d.ankle])
    set_leg(j, d, True, target=a["pedal_near"] + up)
    set_leg(j, d, False, target=a["pedal_far"] + up)
    set_arm(j, d, True, target=a["grip"])
    set_arm(j, d, False, target=a["grip"] + np.array([0.01, -0.005]))
    pose = Pose(j, lean * 0.5, {NEAR_FOOT: 0.0, FAR_FOOT: 0.0}, "ride")
    return Layout(pose, bike, obj_depth=15.0)


def push_bicycle(ctx: Ctx) -> Layout:
    bike = ObjectPose(0.0, 0.0, 0.0, _bike_scale(ctx), state={"crank": ctx.u(0, math.tau)})
    a = _anchors(ctx, bike)
    x = a["grip"][0] - ctx.u(0.26, 0.34) * ctx.dims.height
    pose = walking(ctx, x=x, stride=0.08, lean=ctx.u(0.1, 0.2))
    _hands(ctx, pose, a["grip"], a["grip"] + np.array([0.01, -0.005]))
    return Layout(pose, bike, obj_depth=22.0, depths={"far_hand": 23.0})


def carry_bicycle(ctx: Ctx) -> Layout:
    pose = walking(ctx, stride=0.06, lean=-0.04, swing=0.0)
    bike = ObjectPose(0.0, 0.0, ctx.u(-0.12, 0.05), _bike_scale(ctx) * 0.95, state={"crank": ctx.u(0, math.tau)})
    shoulder = pose.joints[NEAR_SHOULDER] + np.array([ctx.u(-0.05, 0.02), -0.01])
    bike = _at(ctx, bike, "top_tube", shoulder)
    a = _anchors(ctx, bike)
    _hands(ctx, pose, a["head_top"] * 0.5 + a["top_tube"] * 0.5, a["grip"])
    return Layout(pose, bike, obj_depth=25.0)


# --- ball ----------------------------------------------------------------------------------------


def kick_ball(ctx: Ctx) -> Layout:
    d = ctx.dims
    swing = ctx.cycle * 0.25
    pose = standing(d, 0.0, stance=0.0, lean=ctx.u(-0.2, -0.05), arms=(ctx.u(-0.9, -0.5), -0.3, ctx.u(0.8, 1.3), 1.4))
    j = pose.joints
    thigh = ctx.u(0.55, 1.0) + swing
    set_leg(j, d, True, angles=(thigh, thigh - ctx.u(0.1, 0.5)))
    set_leg(j, d, False, target=(j[NEAR_HIP][0] - 0.03, -d.ankle))
    r = 0.065 * ctx.obj.size
    toe = j[NEAR_FOOT] + np.array([0.07, 0.02]) * d.height
    ball = ObjectPose(toe[0] + r * ctx.u(0.8, 2.2), min(toe[1] - r * 0.3, -r), ctx.u(0, math.tau))
    return Layout(pose, ball, obj_depth=32.0)


def throw_ball(ctx: Ctx) -> Layout:
    d = ctx.dims
    back = ctx.u(0.2, 0.8) + ctx.cycle * 0.2
    pose = standing(
        d,
        0.0,
        stance=ctx.u(0.22, 0.3),
        lean=ctx.u(-0.2, -0.05),
        arms=(math.pi + back, math.pi + back + ctx.u(0.3, 0.9), ctx.u(1.1, 1.6), ctx.u(1.2, 1.8)),
    )
    r = 0.065 * ctx.obj.size
    hand = pose.joints[NEAR_HAND]
    ball = ObjectPose(hand[0], hand[1] - r * 0.6, ctx.u(0, math.tau))
    return Layout(pose, ball, obj_depth=30.45)


def hold_ball(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = relaxed(ctx)
    j = pose.joints
    r = 0.065 * ctx.obj.size
    c = j[NECK] + np.array([ctx.w(0.11, 0.16), ctx.w(0.1, 0.25)]) * d.height + np.array([r, 0])
    _hands(ctx, pose, c + np.array([-0.2 * r, 0.7 * r]), c + np.array([0.6 * r, -0.2 * r]))
    return Layout(pose, ObjectPose(c[0], c[1], ctx.u(0, math.tau)), obj_depth=29.0)


def dribble_ball(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = standing(
        d,
        0.0,
        stance=ctx.u(0.12, 0.2),
        lean=ctx.u(0.25, 0.45),
        knee=0.6,
        arms=(0.0, 0.0, ctx.u(-0.6, -0.2), ctx.u(0.2, 0.6)),
        head_tilt=-0.2,
    )
    j = pose.joints
    r = 0.065 * ctx.obj.size
    bounce = 0.5 + 0.5 * math.cos(math.tau * ctx.phase)  # 1: at the hand, 0: on the ground
    # The palm rides the ball down a little and waits for it at the top of the bounce.
    hand = j[NEAR_SHOULDER] + np.array([ctx.u(0.14, 0.2), ctx.u(0.22, 0.25) + 0.05 * (1 - bounce)]) * d.height
    set_arm(j, d, True, target=hand)
    top = j[NEAR_HAND][1] + 0.03 * d.height
    y = -r * (1 - bounce) + (top + r) * bounce  # from resting on the ground up to the palm
    ball = ObjectPose(j[NEAR_HAND][0] + 0.01, min(y, -r), ctx.u(0, math.tau))
    return Layout(pose, ball, obj_depth=29.0)


# --- umbrella ------------------------------------------------------------------------------------


def hold_umbrella(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = walking(ctx, stride=ctx.u(0.0, 0.06), swing=0.15)
    j = pose.joints
    grip = j[NEAR_SHOULDER] + np.array([ctx.u(0.1, 0.16), ctx.u(0.02, 0.1)]) * d.height
    set_arm(j, d, True, target=grip)
    umb = ObjectPose(0, 0, ctx.u(-0.25, 0.1), 1.0, state={"open": True})
    return Layout(pose, _at(ctx, umb, "grip", j[NEAR_HAND]), obj_depth=26.0)


def carry_umbrella(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = walking(ctx, stride=0.08, swing=0.1)
    j = pose.joints
    set_arm(j, d, True, angles=(ctx.u(0.1, 0.35), ctx.u(0.3, 0.6)))
    umb = ObjectPose(0, 0, math.pi - ctx.u(0.35, 0.6), 1.0, state={"open": False})
    return Layout(pose, _at(ctx, umb, "grip", j[NEAR_HAND]), obj_depth=29.0)


# --- chair ---------------------------------------------------------------------------------------


def _chair(ctx: Ctx, x: float = 0.0, **kw) -> ObjectPose:
    return ObjectPose(x, 0.0, 0.0, 0.95, **kw)


def sit_on_chair(ctx: Ctx) -> Layout:
    chair = _chair(ctx)
    a = _anchors(ctx, chair)
    pose = seated(ctx, a["seat"] + np.array([-0.02, 0.0]), lean=ctx.w(-0.05, 0.12), knee_dx=ctx.w(0.18, 0.26))
    knee = pose.joints[NEAR_HIP] + np.array([0.2, 0.0]) * ctx.dims.height
    _hands(ctx, pose, knee + np.array([ctx.w(-0.1, 0.0), -0.03]), knee + np.array([ctx.w(-0.08, 0.0), -0.03]))
    return Layout(pose, chair, obj_depth=5.0)


def carry_chair(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = walking(ctx, stride=0.07, lean=-0.08, swing=0.0)
    j = pose.joints
    # Lifted to the chest and tilted back against the body: clearly off the ground, unlike pushing.
    hold = j[NEAR_SHOULDER] + np.array([ctx.u(0.1, 0.14), ctx.u(0.04, 0.1)]) * d.height
    chair = ObjectPose(0.0, 0.0, -ctx.u(0.1, 0.35), 0.95)
    chair = _at(ctx, chair, "seat_back", hold)
    a = _anchors(ctx, chair)
    _hands(ctx, pose, a["seat_back"] + np.array([0.02, 0.01]), a["seat_front"] * 0.4 + a["seat_back"] * 0.6)
    return Layout(pose, chair, obj_depth=25.0, depths={"far_hand": 26.0})


def stand_on_chair(ctx: Ctx) -> Layout:
    d = ctx.dims
    chair = _chair(ctx)
    a = _anchors(ctx, chair)
    up = ctx.w(2.5, 3.1)
    base = standing(
        d,
        a["seat"][0],
        stance=ctx.u(0.06, 0.12),
        arms=(up, up + ctx.w(-0.2, 0.3), ctx.w(0.3, 2.8), ctx.w(0.3, 3.0)),
        head_tilt=ctx.w(0.0, 0.4),
    )
    return Layout(on_surface(base, -a["seat"][1]), chair, obj_depth=5.0)


def push_chair(ctx: Ctx) -> Layout:
    d = ctx.dims
    chair = _chair(ctx)
    a = _anchors(ctx, chair)
    x = a["back_top"][0] - ctx.u(0.24, 0.3) * d.height
    pose = walking(ctx, x=x, stride=0.1, lean=ctx.u(0.3, 0.5))
    top = a["back_top"]
    _hands(ctx, pose, top + np.array([-0.01, 0.01]), top + np.array([0.02, 0.0]))
    return Layout(pose, chair, obj_depth=25.0, depths={"far_hand": 26.0})


# --- skateboard ----------------------------------------------------------------------------------


def ride_skateboard(ctx: Ctx) -> Layout:
    d = ctx.dims
    board = ObjectPose(0.0, 0.0, 0.0, 1.0, state={"view": "side"})
    a = _anchors(ctx, board)
    knee = ctx.w(0.3, 0.8)
    pelvis = np.array([0.0, a["center"][1] - d.ankle - (d.thigh + d.shin) * (0.98 - 0.12 * knee)])
    j = trunk(d, pelvis, ctx.w(0.0, 0.2), head_tilt=0.0)
    up = np.array([0.0, -d.ankle])
    set_leg(j, d, True, target=a["back_foot"] + up)
    set_leg(j, d, False, target=a["front_foot"] + up)
    set_arm(j, d, True, angles=(-ctx.w(0.7, 1.3), -ctx.w(0.5, 1.0)))
    set_arm(j, d, False, angles=(ctx.w(0.8, 1.4), ctx.w(1.0, 1.6)))
    pose = Pose(j, 0.0, {NEAR_FOOT: 0.0, FAR_FOOT: 0.0}, "ride")
    return Layout(pose, board, obj_depth=5.0)


def carry_skateboard(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = walking(ctx, stride=0.08, swing=0.0)
    j = pose.joints
    set_arm(j, d, True, angles=(ctx.u(0.15, 0.35), ctx.u(0.9, 1.3)))
    board = ObjectPose(0, 0, ctx.u(-0.15, 0.15), 1.0, state={"view": "bottom"})
    board = _at(ctx, board, "center", j[NEAR_HAND] + np.array([-0.02, 0.0]))
    return Layout(pose, board, obj_depth=29.0)


def hold_skateboard(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = relaxed(ctx)
    j = pose.joints
    tilt = ctx.w(-0.15, 0.05)
    board = ObjectPose(0, 0, -math.pi / 2 + tilt, 1.0, state={"view": "bottom"})
    board = _at(ctx, board, "tail", np.array([ctx.u(0.16, 0.22) * d.height, -0.002]))
    a = _anchors(ctx, board)
    set_arm(j, d, True, target=a["nose"] + (a["center"] - a["nose"]) * 0.1)
    return Layout(pose, board, obj_depth=28.0)


# --- cup -----------------------------------------------------------------------------------------


def _mouth(pose: Pose, d) -> np.ndarray:
    c, t = pose.joints[HEAD], -pose.head_tilt
    m = np.array([0.045, 0.034]) * d.height
    return c + np.array([math.cos(t) * m[0] - math.sin(t) * m[1], math.sin(t) * m[0] + math.cos(t) * m[1]])


def drink_with_cup(ctx: Ctx) -> Layout:
    d = ctx.dims
    tilt = ctx.w(0.15, 0.35)
    pose = relaxed(ctx, head_tilt=tilt)
    cup = ObjectPose(0, 0, -ctx.w(0.6, 1.0), 1.0)
    cup = _at(ctx, cup, "rim", _mouth(pose, d) + np.array([0.008, 0.0]))
    set_arm(pose.joints, d, True, target=_anchors(ctx, cup)["grip"])
    return Layout(pose, cup, obj_depth=30.4)


def hold_cup(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = relaxed(ctx)
    j = pose.joints
    set_arm(j, d, True, target=j[NEAR_SHOULDER] + np.array([ctx.w(0.12, 0.2), ctx.w(0.2, 0.26)]) * d.height)
    cup = ObjectPose(0, 0, ctx.u(-0.1, 0.1), 1.0)
    return Layout(pose, _at(ctx, cup, "grip", j[NEAR_HAND]), obj_depth=30.4)


# --- kite ----------------------------------------------------------------------------------------


def fly_kite(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = standing(
        d,
        0.0,
        stance=ctx.u(0.12, 0.22),
        lean=ctx.u(-0.15, 0.0),
        arms=(ctx.w(2.0, 2.5), ctx.w(2.0, 2.6), ctx.w(0.3, 1.0), ctx.w(0.6, 1.4)),
        head_tilt=ctx.w(0.5, 0.8),
    )
    hand = pose.joints[NEAR_HAND]
    kite_at = hand + np.array([ctx.w(0.4, 0.8), -ctx.w(0.8, 1.1)]) * d.height
    kite = ObjectPose(kite_at[0], kite_at[1], ctx.u(-0.35, 0.35) + 0.1 * ctx.cycle, 0.75)
    bridle = _anchors(ctx, kite)["bridle"]
    return Layout(pose, kite, obj_depth=14.0, extra=string_line(hand, bridle, 0.06 * d.height, 0.003))


def hold_kite(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = relaxed(ctx, head_tilt=-0.1)
    j = pose.joints
    center = j[NECK] + np.array([ctx.w(0.2, 0.26), ctx.w(0.1, 0.2)]) * d.height
    kite = ObjectPose(center[0], center[1], ctx.u(-0.25, 0.25), 1.0)
    a = _anchors(ctx, kite)
    _hands(ctx, pose, a["left"] + np.array([0.01, 0.0]), a["right"] + np.array([-0.01, 0.0]))
    return Layout(pose, kite, obj_depth=26.0, depths={"far_hand": 27.0})


# --- suitcase ------------------------------------------------------------------------------------


def pull_suitcase(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = walking(ctx, stride=0.1, lean=ctx.u(0.05, 0.15), swing=0.3)
    j = pose.joints
    set_arm(j, d, True, angles=(-ctx.u(0.4, 0.6), -ctx.u(0.2, 0.5)))
    hand = j[NEAR_HAND]
    case = ObjectPose(0, 0, 0.0, 1.0, state={"handle": True})
    tele = _anchors(ctx, case)["tele"]
    # Tilt the case until its handle reaches the hand with the wheels on the ground.
    angle = math.acos(max(-1.0, min(1.0, (-hand[1] - 0.016) / max(-tele[1], 1e-6)))) if -tele[1] > -hand[1] else 0.0
    case = ObjectPose(0, 0, angle, case.scale, state={"handle": True})
    case = _at(ctx, case, "tele", hand)
    return Layout(pose, case, obj_depth=8.0)


def carry_suitcase(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = walking(ctx, stride=0.07, lean=-ctx.u(0.02, 0.1), swing=0.0)
    j = pose.joints
    set_arm(j, d, True, angles=(ctx.u(0.05, 0.2), ctx.u(0.05, 0.2)))
    case = ObjectPose(0, 0, ctx.u(-0.06, 0.06), 0.85, state={"handle": False})
    return Layout(pose, _at(ctx, case, "handle", j[NEAR_HAND]), obj_depth=29.0)


def sit_on_suitcase(ctx: Ctx) -> Layout:
    case = ObjectPose(0.0, 0.0, 0.0, 0.9, state={"handle": False})
    a = _anchors(ctx, case)
    pose = seated(ctx, a["top"] + np.array([-0.02, 0.01]), lean=ctx.w(0.0, 0.2), knee_dx=ctx.w(0.2, 0.28))
    knee = hips(pose) + np.array([0.2, 0.0])
    _hands(ctx, pose, knee + np.array([-0.05, -0.04]), a["top"] + np.array([0.08, 0.0]))
    return Layout(pose, case, obj_depth=5.0)


# --- guitar --------------------------------------------------------------------------------------


def play_guitar(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = relaxed(ctx, head_tilt=-ctx.u(0.1, 0.3))
    g = ObjectPose(0, 0, -ctx.w(0.3, 0.6), 1.0)
    g = _at(ctx, g, "body", hips(pose) + np.array([0.05, -0.07]) * d.height)
    a = _anchors(ctx, g)
    strum = a["strum"] + np.array([0.0, 0.02 * ctx.cycle])
    _hands(ctx, pose, strum, a["fret"])
    return Layout(pose, g, obj_depth=26.0, depths={"far_hand": 27.0})


def carry_guitar(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = walking(ctx, stride=0.08, swing=0.0)
    j = pose.joints
    set_arm(j, d, True, angles=(ctx.u(0.05, 0.25), ctx.u(0.1, 0.3)))
    g = ObjectPose(0, 0, -math.pi / 2 + ctx.u(-0.25, 0.25), 0.95)
    return Layout(pose, _at(ctx, g, "neck", j[NEAR_HAND]), obj_depth=29.0)


# --- no interaction ------------------------------------------------------------------------------

# How an object rests on the ground: (angle, state, anchor that touches the ground).
_RESTING = {
    "bicycle": (0.0, {}, None), "ball": (0.0, {}, "bottom"), "umbrella": (math.pi / 2, {"open": False}, "grip"),
    "chair": (0.0, {}, None), "skateboard": (0.0, {"view": "side"}, None), "cup": (0.0, {}, None),
    "kite": (math.pi / 2, {}, "left"), "suitcase": (0.0, {"handle": False}, None), "guitar": (0.0, {}, "body"),
}  # fmt: skip


def no_interaction(ctx: Ctx) -> Layout:
    d = ctx.dims
    pose = relaxed(ctx)
    angle, state, ground = _RESTING[ctx.obj.category]
    side = 1.0 if ctx.rng.random() < 0.5 else -1.0
    scale = 0.92 if ctx.obj.category == "bicycle" else 1.0
    obj = ObjectPose(0.0, 0.0, angle + ctx.u(-0.1, 0.1) * (ground is not None), scale, state=state)
    x0, _, x1, y1 = draw_object(ctx.obj, obj, 0.0)[0].bounds()
    lo = obj
    if ground is not None:  # lying objects: drop them onto the ground
        lo = ObjectPose(obj.x, obj.y - y1, obj.angle, obj.scale, obj.flip, obj.state)
    gap = ctx.u(0.2, 0.45) * d.height
    dx = (0.12 * d.height + gap - x0) if side > 0 else (-0.12 * d.height - gap - x1)
    obj = ObjectPose(lo.x + dx, lo.y, lo.angle, lo.scale, lo.flip, lo.state)
    return Layout(pose, obj, obj_depth=5.0 if ctx.rng.random() < 0.5 else 35.0)


PROGRAMMES: dict[str, Programme] = {
    "ride_bicycle": ride_bicycle, "push_bicycle": push_bicycle, "carry_bicycle": carry_bicycle,
    "kick_ball": kick_ball, "throw_ball": throw_ball, "hold_ball": hold_ball, "dribble_ball": dribble_ball,
    "hold_umbrella": hold_umbrella, "carry_umbrella": carry_umbrella, "sit_on_chair": sit_on_chair,
    "carry_chair": carry_chair, "stand_on_chair": stand_on_chair, "push_chair": push_chair,
    "ride_skateboard": ride_skateboard, "carry_skateboard": carry_skateboard, "hold_skateboard": hold_skateboard,
    "drink_with_cup": drink_with_cup, "hold_cup": hold_cup, "fly_kite": fly_kite, "hold_kite": hold_kite,
    "pull_suitcase": pull_suitcase, "carry_suitcase": carry_suitcase, "sit_on_suitcase": sit_on_suitcase,
    "play_guitar": play_guitar, "carry_guitar": carry_guitar, "no_interaction": no_interaction,
}  # fmt: skip
assert set(PROGRAMMES) == set(CLASS_NAMES), "every vocabulary class needs a pose programme"
