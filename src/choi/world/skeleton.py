"""The 14-joint skeleton: body dimensions, joint indices and 2D kinematics (forward and 2-link IK).

Poses live in *world units* (1.0 = a standard person's height; y points down, the ground is y = 0)
and are always built facing +x. Facing left is a mirror applied when the pose is rasterised.

Facing right we see the person's left side, so the "near" limbs are the left ones; when the
renderer mirrors a pose to face left, it relabels near limbs as right (see :data:`MIRROR_INDEX`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Joint indices in choi.data.schema.KEYPOINT_NAMES order, canonical facing +x (near = left).
HEAD, NECK = 0, 1
FAR_SHOULDER, FAR_ELBOW, FAR_HAND = 2, 3, 4
NEAR_SHOULDER, NEAR_ELBOW, NEAR_HAND = 5, 6, 7
FAR_HIP, FAR_KNEE, FAR_FOOT = 8, 9, 10
NEAR_HIP, NEAR_KNEE, NEAR_FOOT = 11, 12, 13
N_JOINTS = 14

# Keypoint order after mirroring: right <-> left, so the near limbs become the right ones.
MIRROR_INDEX = np.array([0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10])


def direction(angle: float) -> np.ndarray:
    """Unit vector for a limb angle: 0 points down, +pi/2 points forward (+x), pi points up."""
    return np.array([math.sin(angle), math.cos(angle)])


@dataclass(frozen=True)
class BodyDims:
    """Segment lengths and radii in world units for one identity (height and girth factors)."""

    height: float = 1.0
    girth: float = 1.0
    leg_ratio: float = 1.0

    @property
    def thigh(self) -> float:
        return 0.235 * self.height * self.leg_ratio

    @property
    def shin(self) -> float:
        return 0.222 * self.height * self.leg_ratio

    @property
    def ankle(self) -> float:  # foot joint height above the sole
        return 0.03 * self.height

    @property
    def leg(self) -> float:
        return self.thigh + self.shin + self.ankle

    @property
    def spine(self) -> float:  # pelvis to neck base
        return 0.29 * self.height * (2.0 - self.leg_ratio)

    @property
    def neck(self) -> float:
        return 0.035 * self.height

    @property
    def head_r(self) -> float:
        return 0.062 * self.height

    @property
    def upper_arm(self) -> float:
        return 0.165 * self.height

    @property
    def forearm(self) -> float:
        return 0.15 * self.height

    @property
    def arm(self) -> float:
        return self.upper_arm + self.forearm

    def radius(self, part: str) -> float:
        """Half-thickness of a body part; girth scales the trunk and limbs, not the hands."""
        return _RADII[part] * (self.height if part == "hand" else self.height * self.girth)


# Half-thickness of body parts for a standard person (world units).
_RADII = {
    "torso_top": 0.070, "torso_bottom": 0.062, "neck": 0.024, "upper_arm": 0.032,
    "forearm": 0.026, "hand": 0.028, "thigh": 0.047, "knee": 0.036, "ankle": 0.027,
}  # fmt: skip


@dataclass
class Pose:
    """Joint positions (14, 2) in world units, canonical facing +x, plus head and foot angles."""

    joints: np.ndarray
    head_tilt: float = 0.0  # radians, positive looks up
    foot_angles: dict[int, float] = field(default_factory=dict)  # foot joint -> sole angle override
    name: str = ""

    def copy(self) -> Pose:
        return Pose(self.joints.copy(), self.head_tilt, dict(self.foot_angles), self.name)


def two_link(root: np.ndarray, target: np.ndarray, l1: float, l2: float, bend: float) -> tuple[np.ndarray, np.ndarray]:
    """2-link IK: (middle joint, end joint) reaching towards ``target``.

    ``bend`` = +1 bends the middle joint counter-clockwise on screen from the root→target line
    (a knee forward when facing +x), -1 clockwise (an elbow down/back). Unreachable targets are
    approached along the straight line so the chain never breaks.
    """
    d = target - root
    dist = float(np.hypot(*d))
    reach = max(min(dist, l1 + l2 - 1e-4), abs(l1 - l2) + 1e-4)
    u = d / dist if dist > 1e-9 else np.array([0.0, 1.0])
    cos_a = (l1 * l1 + reach * reach - l2 * l2) / (2 * l1 * reach)
    a = math.acos(max(-1.0, min(1.0, cos_a))) * -bend  # screen-clockwise rotation angle
    c, s = math.cos(a), math.sin(a)
    mid = root + l1 * np.array([c * u[0] - s * u[1], s * u[0] + c * u[1]])
    end = root + u * reach
    return mid, end


def chain(root: np.ndarray, a1: float, a2: float, l1: float, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics with absolute segment angles (see :func:`direction`)."""
    mid = root + l1 * direction(a1)
    return mid, mid + l2 * direction(a2)


def trunk(dims: BodyDims, pelvis: np.ndarray, lean: float, head_tilt: float = 0.0) -> np.ndarray:
    """Joints of the trunk (head, neck, shoulders, hips) for a pelvis position and forward lean.

    Returns a full (14, 2) array; limbs still sit at their roots and are set by the caller.
    """
    up = np.array([math.sin(lean), -math.cos(lean)])  # spine direction
    fwd = np.array([-up[1], up[0]])  # perpendicular, pointing forward
    j = np.zeros((N_JOINTS, 2))
    neck = pelvis + up * dims.spine
    j[NECK] = neck
    head_up = np.array([math.sin(lean * 0.5), -math.cos(lean * 0.5)])
    j[HEAD] = neck + head_up * (dims.neck + dims.head_r * 0.95)
    shoulder = neck - up * 0.035 * dims.height
    j[NEAR_SHOULDER] = shoulder - fwd * 0.012 * dims.height
    j[FAR_SHOULDER] = shoulder + fwd * 0.012 * dims.height
    j[NEAR_HIP] = pelvis - fwd * 0.012 * dims.height
    j[FAR_HIP] = pelvis + fwd * 0.012 * dims.height
    for limb in (NEAR_ELBOW, NEAR_HAND, FAR_ELBOW, FAR_HAND):
        j[limb] = j[NEAR_SHOULDER if limb in (NEAR_ELBOW, NEAR_HAND) else FAR_SHOULDER]
    return j


def set_arm(j: np.ndarray, dims: BodyDims, near: bool, *, target=None, angles=None, bend: float = -1.0) -> None:
    """Place one arm by IK to ``target`` (a point) or FK from absolute ``angles`` (upper, fore)."""
    sh, el, hd = (NEAR_SHOULDER, NEAR_ELBOW, NEAR_HAND) if near else (FAR_SHOULDER, FAR_ELBOW, FAR_HAND)
    if target is not None:
        j[el], j[hd] = two_link(j[sh], np.asarray(target, dtype=np.float64), dims.upper_arm, dims.forearm, bend)
    else:
        j[el], j[hd] = chain(j[sh], angles[0], angles[1], dims.upper_arm, dims.forearm)


def set_leg(j: np.ndarray, dims: BodyDims, near: bool, *, target=None, angles=None, bend: float = 1.0) -> None:
    """Place one leg by IK to a foot ``target`` or FK from absolute ``angles`` (thigh, shin)."""
    hp, kn, ft = (NEAR_HIP, NEAR_KNEE, NEAR_FOOT) if near else (FAR_HIP, FAR_KNEE, FAR_FOOT)
    if target is not None:
        j[kn], j[ft] = two_link(j[hp], np.asarray(target, dtype=np.float64), dims.thigh, dims.shin, bend)
    else:
        j[kn], j[ft] = chain(j[hp], angles[0], angles[1], dims.thigh, dims.shin)


def standing(
    dims: BodyDims,
    x: float = 0.0,
    *,
    stance: float = 0.06,
    lean: float = 0.0,
    arms: tuple[float, float, float, float] = (0.12, 0.25, -0.1, 0.05),
    knee: float = 0.0,
    head_tilt: float = 0.0,
) -> Pose:
    """A standing pose with feet on the ground around ``x``.

    ``stance`` is the foot spread (near foot behind, far foot ahead), ``arms`` the absolute angles
    (near upper, near fore, far upper, far fore), ``knee`` a knee bend that lowers the pelvis.
    """
    half = stance / 2
    drop = dims.thigh + dims.shin
    # Pelvis height for feet at +-half with the requested knee bend (legs as a shortened chain).
    reach = max(math.sqrt(max(drop**2 - half**2, 1e-6)) * math.cos(knee * 0.5), 0.6 * drop)
    pelvis = np.array([x, -(reach + dims.ankle)])
    j = trunk(dims, pelvis, lean, head_tilt)
    set_arm(j, dims, True, angles=arms[:2])
    set_arm(j, dims, False, angles=arms[2:])
    set_leg(j, dims, True, target=(x - half, -dims.ankle))
    set_leg(j, dims, False, target=(x + half, -dims.ankle))
    return Pose(j, head_tilt, name="standing")
