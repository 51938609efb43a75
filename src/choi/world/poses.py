"""Building blocks of pose programmes: the programme context, its result, and reusable body moves.

A pose programme (see :mod:`choi.world.interactions`) gets a :class:`Ctx` (random generator, body
dimensions, object identity, animation phase) and returns a :class:`Layout`: the body pose, where
the object is, and the depth order that makes occlusion right. Everything is in world units,
facing +x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from choi.world.canvas import Drawing
from choi.world.objects import ObjectIdentity, ObjectPose
from choi.world.skeleton import (
    FAR_FOOT,
    FAR_HIP,
    NEAR_FOOT,
    NEAR_HIP,
    BodyDims,
    Pose,
    set_arm,
    set_leg,
    standing,
    trunk,
)  # fmt: skip

TAU = 2 * math.pi


@dataclass
class Ctx:
    """What a pose programme may use: draw all randomness from ``rng`` in a fixed order."""

    rng: np.random.Generator
    dims: BodyDims
    obj: ObjectIdentity
    phase: float  # animation phase in [0, 1): pedalling, walking, strumming...

    def u(self, lo: float, hi: float) -> float:
        """A random value that stays fixed over a sequence (the same draw for every phase)."""
        return float(self.rng.uniform(lo, hi))

    def w(self, lo: float, hi: float) -> float:
        """A random value that also moves with the phase: it sweeps ``lo..hi`` once per cycle from a
        random starting point. Poses built from these change smoothly across video frames."""
        offset = float(self.rng.uniform())
        return lo + (hi - lo) * 0.5 * (1.0 + math.sin(TAU * (self.phase + offset)))

    @property
    def cycle(self) -> float:
        """``sin`` of the phase: a smooth -1..1 oscillation for gaits and swings."""
        return math.sin(TAU * self.phase)


@dataclass
class Layout:
    """A pose programme's result: body pose, object placement and depths (world units, facing +x)."""

    pose: Pose
    obj: ObjectPose
    obj_depth: float = 15.0  # base depth of the object's parts (the body uses DEFAULT_DEPTHS)
    depths: dict[str, float] = field(default_factory=dict)  # overrides of body group depths
    extra: Drawing | None = None  # world-space extras that belong to the object (a kite string)


def walking(
    ctx: Ctx, *, x: float = 0.0, stride: float = 0.09, lean: float = 0.05, swing: float = 0.35, head_tilt: float = 0.0
) -> Pose:
    """A walking pose at ``x``: feet on the ground, legs and arms swinging with the phase."""
    d = ctx.dims
    a = ctx.cycle
    lift = max(0.0, math.cos(TAU * ctx.phase)) * 0.035 * d.height
    pelvis = np.array([x, -(d.ankle + 0.965 * (d.thigh + d.shin))])
    j = trunk(d, pelvis, lean, head_tilt)
    set_leg(j, d, True, target=(x + stride * a, -d.ankle - lift))
    set_leg(j, d, False, target=(x - stride * a, -d.ankle - max(0.0, -math.cos(TAU * ctx.phase)) * 0.035 * d.height))
    set_arm(j, d, True, angles=(-swing * a, -swing * a + 0.25))
    set_arm(j, d, False, angles=(swing * a, swing * a + 0.25))
    return Pose(j, head_tilt, name="walking")


def relaxed(ctx: Ctx, *, x: float = 0.0, head_tilt: float = 0.0) -> Pose:
    """A relaxed standing pose, arms hanging with a little random variation."""
    arms = (ctx.w(-0.25, 0.25), ctx.w(0.0, 0.4), ctx.w(-0.25, 0.2), ctx.w(-0.1, 0.35))
    return standing(ctx.dims, x, stance=ctx.u(0.03, 0.1), lean=ctx.w(-0.04, 0.06), arms=arms, head_tilt=head_tilt)


def seated(ctx: Ctx, seat: np.ndarray, *, lean: float = 0.05, knee_dx: float = 0.2) -> Pose:
    """Sitting with the pelvis on ``seat`` (a world point on the seat surface), feet on the ground."""
    d = ctx.dims
    pelvis = seat + np.array([0.0, -0.035 * d.height])
    j = trunk(d, pelvis, lean)
    for near, dx in ((True, knee_dx - 0.02), (False, knee_dx + 0.02)):
        set_leg(j, d, near, target=(pelvis[0] + dx * d.height, -d.ankle))
    return Pose(j, 0.0, {NEAR_FOOT: 0.0, FAR_FOOT: 0.0}, name="seated")


def on_surface(pose: Pose, dy: float) -> Pose:
    """``pose`` lifted by ``dy`` world units (standing on something)."""
    out = pose.copy()
    out.joints[:, 1] -= dy
    return out


def hips(pose: Pose) -> np.ndarray:
    return (pose.joints[NEAR_HIP] + pose.joints[FAR_HIP]) / 2


def string_line(a: np.ndarray, b: np.ndarray, sag: float, width: float = 0.004, depth: float = 14.0) -> Drawing:
    """A slightly sagging string from ``a`` to ``b`` (a kite line), labelled as object."""
    t = np.linspace(0.0, 1.0, 12)[:, None]
    pts = a + (b - a) * t
    pts[:, 1] += sag * np.sin(np.pi * t[:, 0])
    out = Drawing()
    out.line(pts, (60, 60, 60), depth, width, 100)
    return out


# --- reference poses -----------------------------------------------------------------------------

REF_POSES = ("open_arms", "wave", "stride", "hands_on_hips")


def reference_pose(rng: np.random.Generator, dims: BodyDims, kind: str) -> Pose:
    """A presentation pose for the human reference image (standing, clothes visible)."""
    u = rng.uniform
    if kind == "open_arms":
        arms = (u(-0.9, -0.5), u(-0.9, -0.3), u(0.5, 0.9), u(0.6, 1.2))
        pose = standing(dims, 0.0, stance=u(0.12, 0.2), arms=arms)
    elif kind == "wave":
        arms = (u(1.8, 2.1), u(2.9, 3.3), u(-0.1, 0.1), u(0.0, 0.2))
        pose = standing(dims, 0.0, stance=u(0.05, 0.12), arms=arms)
    elif kind == "stride":
        arms = (u(0.4, 0.7), u(0.6, 1.1), u(-0.6, -0.35), u(-0.5, -0.2))
        pose = standing(dims, 0.0, stance=u(0.22, 0.3), arms=arms)
    else:  # hands_on_hips: elbows out to the back and the front
        pose = standing(dims, 0.0, stance=u(0.06, 0.14))
        j = pose.joints
        for near, hip, bend in ((True, NEAR_HIP, -1.0), (False, FAR_HIP, 1.0)):
            set_arm(j, dims, near, target=j[hip] + np.array([0.0, -0.03]) * dims.height, bend=bend)
    pose.name = kind
    return pose


def pose_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean joint distance after centring on the joint mean and scaling by the joint spread."""

    def norm(p: np.ndarray) -> np.ndarray:
        p = p[:, :2] - p[:, :2].mean(axis=0)
        return p / max(float(np.sqrt((p**2).sum(axis=1).mean())), 1e-9)

    return float(np.linalg.norm(norm(a) - norm(b), axis=1).mean())
