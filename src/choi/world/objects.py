"""Object identities, object placement, and drawing an object with its anchor points in the world.

Every category has the same identity fields (main/second/accent colour, pattern, style, size);
each category's shape function in :mod:`choi.world.object_shapes` decides what they look like.
An identity id maps onto factor combinations through a fixed affine permutation, so the
every-10th test pool covers all factor values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache

import numpy as np

from choi.errors import ChoiError
from choi.vocabulary import OBJECT_CATEGORIES
from choi.world import object_shapes, palette, shapes_indoor, shapes_outdoor
from choi.world.canvas import Color, Drawing

_N_PAINT = len(palette.PAINT)
_SIZES = (0.9, 1.0, 1.1)

# Per category: (patterns, styles). Every pattern uses the second colour, so all combinations differ.
_VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bicycle": (("plain", "striped_tubes"), ("diamond", "step_through")),
    "ball": (("stripe", "panels", "two_tone", "segments", "dots"), ("ball",)),
    "umbrella": (("segments", "border", "dots", "two_tone"), ("wood_handle", "black_handle")),
    "chair": (("cushion", "two_tone"), ("slats", "solid", "frame")),
    "skateboard": (("stripe", "two_tone", "dots", "tips"), ("popsicle",)),
    "cup": (("band", "dots", "two_tone", "rim"), ("mug", "paper")),
    "kite": (("quarters", "halves", "border"), ("diamond",)),
    "suitcase": (("ribs", "band", "stickers", "corners"), ("hard", "soft")),
    "guitar": (("plain", "binding"), ("acoustic", "electric")),
}
_N_ACCENT = 4  # accent colours (tyres, wheels, handles, tails...) per category


def _factors(category: str) -> tuple[tuple[str, int], ...]:
    patterns, styles = _VARIANTS[category]
    return (
        ("main", _N_PAINT),
        ("second", _N_PAINT - 1),
        ("pattern", len(patterns)),
        ("style", len(styles)),
        ("size", len(_SIZES)),
        ("accent", _N_ACCENT),
    )


SHAPES: dict[str, object_shapes.ShapeFn] = {
    "bicycle": shapes_outdoor.bicycle, "ball": shapes_outdoor.ball, "umbrella": shapes_outdoor.umbrella,
    "skateboard": shapes_outdoor.skateboard, "kite": shapes_outdoor.kite, "chair": shapes_indoor.chair,
    "cup": shapes_indoor.cup, "suitcase": shapes_indoor.suitcase, "guitar": shapes_indoor.guitar,
}  # fmt: skip
# Parts that change continuously with the state are drawn per call rather than cached.
DYNAMIC: dict[str, object_shapes.ShapeFn] = {"bicycle": shapes_outdoor.bicycle_cranks}
DYNAMIC_KEYS = frozenset({"crank"})

#: Distinct instances per category (product of its factors), each >= 1e3.
N_OBJECT_IDENTITIES: dict[str, int] = {c: math.prod(n for _, n in _factors(c)) for c in OBJECT_CATEGORIES}
_PERM_A, _PERM_B = 7_919, 104_729  # primes not dividing any count above: affine bijections


@dataclass(frozen=True)
class ObjectIdentity:
    """Appearance of one object instance; build with :meth:`from_id`.

    Example:
        >>> ObjectIdentity.from_id("ball", 3).category
        'ball'
    """

    category: str
    id: int
    main: Color
    second: Color
    accent: int  # index; its meaning is per category
    pattern: str
    style: str
    size: float

    @classmethod
    def from_id(cls, category: str, i: int) -> ObjectIdentity:
        return _object_from_id(category, int(i))

    def factors(self) -> dict[str, str | float]:
        return {"pattern": self.pattern, "style": self.style, "size": self.size}


def _factor_codes(category: str, i: int) -> dict[str, int]:
    """The factor values (indices) of ``category``'s identity ``i``."""
    if category not in N_OBJECT_IDENTITIES:
        raise ChoiError(f"unknown object category '{category}'; allowed: {', '.join(OBJECT_CATEGORIES)}")
    n = N_OBJECT_IDENTITIES[category]
    if not 0 <= i < n:
        raise ChoiError(f"{category} id {i} out of range; allowed 0 <= id < {n}")
    code = (i * _PERM_A + _PERM_B) % n
    f: dict[str, int] = {}
    for name, k in _factors(category):
        code, f[name] = divmod(code, k)
    return f


def _offsets(sizes: list[int]) -> list[int]:
    return [sum(sizes[:j]) for j in range(len(sizes))]


# Per-category factors (pattern, style, accent) are numbered across categories: "dots" on a ball
# and on a cup are different classes.
_PATTERN_BASE = _offsets([len(_VARIANTS[c][0]) for c in OBJECT_CATEGORIES])
_STYLE_BASE = _offsets([len(_VARIANTS[c][1]) for c in OBJECT_CATEGORIES])

#: Classes of each visible object factor, in the order of :func:`object_factor_labels`. Size is
#: left out: a reference is drawn scaled to fill its image, so size cannot be seen in it.
OBJECT_FACTOR_CLASSES: dict[str, int] = {
    "category": len(OBJECT_CATEGORIES),
    "main": _N_PAINT,
    "second": _N_PAINT,
    "pattern": sum(len(_VARIANTS[c][0]) for c in OBJECT_CATEGORIES),
    "style": sum(len(_VARIANTS[c][1]) for c in OBJECT_CATEGORIES),
    "accent": _N_ACCENT * len(OBJECT_CATEGORIES),
}


@lru_cache(maxsize=65536)
def object_factor_labels(category: str, i: int) -> tuple[int, ...]:
    """Class labels of identity ``i``'s visible factors, one per :data:`OBJECT_FACTOR_CLASSES` entry.

    They let an evaluator learn what tells two objects apart (the identity evaluator's auxiliary
    targets). A factor the identity's drawings never show is -1 (a ball's accent colour, an
    acoustic guitar's main colour); an accent shown only through colours it shares with another
    accent (a suitcase's metal parts come in two) is labelled as the first of them. So two
    identities have the same labels exactly when they have the same :func:`object_look`.

    Example:
        >>> len(object_factor_labels("ball", 3)) == len(OBJECT_FACTOR_CLASSES)
        True
        >>> object_factor_labels("ball", 3)[-1]  # a ball's accent is never drawn
        -1
    """
    f = _factor_codes(category, int(i))
    c = OBJECT_CATEGORIES.index(category)
    ident = _object_from_id(category, int(i))
    drawn = _roles_drawn(category, ident.pattern, ident.style)
    accent_roles = [r for r in drawn if r not in ("main", "second")]

    def accent_colours(k: int) -> tuple:
        roles = object_shapes.color_roles(replace(ident, accent=k))
        return tuple(roles[r] for r in accent_roles)

    accent = next(k for k in range(_N_ACCENT) if accent_colours(k) == accent_colours(ident.accent))
    return (
        c,
        f["main"] if "main" in drawn else -1,
        (f["main"] + 1 + f["second"]) % _N_PAINT if "second" in drawn else -1,
        _PATTERN_BASE[c] + f["pattern"],
        _STYLE_BASE[c] + f["style"],
        _N_ACCENT * c + accent if accent_roles else -1,
    )


@lru_cache(maxsize=4096)
def _object_from_id(category: str, i: int) -> ObjectIdentity:
    f = _factor_codes(category, i)
    patterns, styles = _VARIANTS[category]
    return ObjectIdentity(
        category=category,
        id=i,
        main=palette.PAINT[f["main"]],
        second=palette.PAINT[(f["main"] + 1 + f["second"]) % _N_PAINT],
        accent=f["accent"],
        pattern=patterns[f["pattern"]],
        style=styles[f["style"]],
        size=_SIZES[f["size"]],
    )


_DRAWN_STATES = ({}, {"open": False}, {"handle": True}, {"view": "bottom"})  # every drawn variant


@lru_cache(maxsize=256)
def _roles_drawn(category: str, pattern: str, style: str) -> tuple[str, ...]:
    """The colour roles that drawings of ``category`` in ``pattern`` and ``style`` use, in any state."""
    blank = ObjectIdentity(category, 0, (0, 0, 0), (0, 0, 0), 0, pattern, style, 1.0)
    names: set[str] = set()
    for state in _DRAWN_STATES:
        drawings = [_geometry(blank, tuple(sorted(state.items())))[0]]
        if category in DYNAMIC:
            drawings.append(DYNAMIC[category](blank, state)[0])
        for spec in (c for d in drawings for c in d.color):
            if isinstance(spec, str) or isinstance(spec[0], str):
                names.add(spec if isinstance(spec, str) else spec[0])
    return tuple(sorted(names))


def object_look(category: str, i: int) -> tuple:
    """What any picture of identity ``i`` can show: category, pattern, style and the colour of
    every colour role its drawings use. Size is left out, as a reference is scaled to fill its image.

    Identities with one look are indistinguishable: a ball's accent colour is never drawn, so balls
    that differ only in it (or in size) look alike. Identity retrieval counts them as one.

    Example:
        >>> look = object_look("ball", 0)
        >>> look[0], [role for role, _ in look[3]]  # a ball shows its main and second colours only
        ('ball', ['main', 'second'])
    """
    ident = ObjectIdentity.from_id(category, i)
    roles = object_shapes.color_roles(ident)
    drawn = _roles_drawn(category, ident.pattern, ident.style)
    return (category, ident.pattern, ident.style, tuple((r, roles[r]) for r in drawn))


@cache
def _first_of_look(category: str) -> dict[tuple, int]:
    first: dict[tuple, int] = {}
    for i in range(N_OBJECT_IDENTITIES[category]):
        first.setdefault(object_look(category, i), i)
    return first


def look_id(category: str, i: int) -> int:
    """The smallest id of ``category`` with identity ``i``'s :func:`object_look`: one id per
    visually distinct object.

    Example:
        >>> len({look_id("ball", i) for i in range(N_OBJECT_IDENTITIES["ball"])})  # of 7,920 balls
        660
    """
    return _first_of_look(category)[object_look(category, int(i))]


@dataclass(frozen=True)
class ObjectPose:
    """Where an object is: its local origin at ``(x, y)``, rotated, scaled, optionally mirrored.

    ``state`` holds category-specific settings, e.g. ``{"open": True}`` for an umbrella,
    ``{"crank": 1.2}`` for a bicycle's pedals, ``{"handle": True}`` for a suitcase.
    """

    x: float = 0.0
    y: float = 0.0
    angle: float = 0.0  # radians, positive turns clockwise on screen
    scale: float = 1.0
    flip: bool = False  # mirror the object's local x before rotating
    state: dict = field(default_factory=dict)

    def matrix(self) -> np.ndarray:
        c, s = math.cos(self.angle) * self.scale, math.sin(self.angle) * self.scale
        fx = -1.0 if self.flip else 1.0
        return np.array([[c * fx, -s, self.x], [s * fx, c, self.y]])


@lru_cache(maxsize=1024)
def _geometry(shape_key: ObjectIdentity, state_key: tuple) -> tuple[Drawing, dict[str, np.ndarray]]:
    """Cached geometry with colour roles; keyed by an identity stripped of its colours (never mutated)."""
    return SHAPES[shape_key.category](shape_key, dict(state_key))


def object_local(ident: ObjectIdentity, state: dict) -> tuple[list[Drawing], dict[str, np.ndarray]]:
    """The object in its own frame (world units at scale 1) as drawings to combine, and its anchors."""
    shape_key = replace(ident, id=0, main=(0, 0, 0), second=(0, 0, 0), accent=0)
    key = tuple(sorted((k, v) for k, v in state.items() if k not in DYNAMIC_KEYS))
    static, anchors = _geometry(shape_key, key)
    roles = object_shapes.color_roles(ident)
    parts = [static.recolored(roles)]
    dynamic = DYNAMIC.get(ident.category)
    if dynamic is not None:
        moving, more = dynamic(ident, state)
        parts.append(moving.recolored(roles))
        anchors = {**anchors, **more}
    return parts, anchors


def draw_object(ident: ObjectIdentity, pose: ObjectPose, depth: float) -> tuple[Drawing, dict[str, np.ndarray]]:
    """The object placed in the world at ``pose``; part depths are offsets around ``depth``."""
    parts, anchors = object_local(ident, pose.state)
    m = pose.matrix()
    placed = parts[0].transformed(m, depth, pose.scale)
    for extra in parts[1:]:
        placed.extend(extra.transformed(m, depth, pose.scale))
    return placed, {k: m[:, :2] @ v + m[:, 2] for k, v in anchors.items()}


def object_anchors(ident: ObjectIdentity, pose: ObjectPose) -> dict[str, np.ndarray]:
    """Anchor points of the placed object, for IK targets (no drawing is transformed)."""
    shape_key = replace(ident, id=0, main=(0, 0, 0), second=(0, 0, 0), accent=0)
    key = tuple(sorted((k, v) for k, v in pose.state.items() if k not in DYNAMIC_KEYS))
    anchors = _geometry(shape_key, key)[1]
    dynamic = DYNAMIC.get(ident.category)
    if dynamic is not None:
        anchors = {**anchors, **dynamic(ident, pose.state)[1]}
    m = pose.matrix()
    return {k: m[:, :2] @ v + m[:, 2] for k, v in anchors.items()}
