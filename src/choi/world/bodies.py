"""Human identities: discrete appearance factors and the id -> appearance map.

An identity is a combination of discrete appearance factors. Ids map onto combinations through a
fixed affine permutation, so consecutive ids (and the every-10th test pool) do not share factors.
How a posed person is drawn lives in :mod:`choi.world.figure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from choi.errors import ChoiError
from choi.world import palette
from choi.world.canvas import Color
from choi.world.skeleton import BodyDims

HAIR_STYLES = ("buzz", "short", "bob", "long", "ponytail", "curly")
PATTERNS = ("plain", "stripes", "dots", "two_tone")
SLEEVES = ("short", "long")
LEG_WEAR = ("trousers", "shorts")
HEIGHTS = (0.93, 1.0, 1.07)
GIRTHS = (0.85, 1.0, 1.2)

# A shirt is a primary colour and, for the three non-plain patterns, a different secondary colour.
_N_CLOTH = len(palette.CLOTH)
_SHIRTS = _N_CLOTH * (1 + (len(PATTERNS) - 1) * (_N_CLOTH - 1))  # 280 distinct shirts

# Mixed-radix factors of a human identity: (name, number of values).
_FACTORS = (
    ("skin", len(palette.SKIN)), ("hair_style", len(HAIR_STYLES)), ("hair_color", len(palette.HAIR)),
    ("shirt", _SHIRTS), ("sleeves", len(SLEEVES)), ("trouser_color", len(palette.TROUSERS)),
    ("leg_wear", len(LEG_WEAR)), ("shoes", len(palette.SHOES)), ("height", len(HEIGHTS)),
    ("girth", len(GIRTHS)),
)  # fmt: skip

#: Number of distinct human identities: 6 skin x 6 hair styles x 6 hair colours x 280 shirts
#: x 2 sleeves x 8 trouser colours x 2 lengths x 5 shoes x 3 heights x 3 girths = 87,091,200.
N_HUMAN_IDENTITIES = math.prod(n for _, n in _FACTORS)
_PERM_A, _PERM_B = 1_000_003, 7_919  # 1_000_003 is prime and does not divide the count: a bijection


@dataclass(frozen=True)
class HumanIdentity:
    """Appearance of one person; build with :meth:`from_id`.

    Example:
        >>> HumanIdentity.from_id(17).hair_style in HAIR_STYLES
        True
    """

    id: int
    skin: Color
    hair_style: str
    hair_color: Color
    shirt: Color
    shirt_second: Color
    pattern: str
    sleeves: str
    trousers: Color
    leg_wear: str
    shoes: Color
    dims: BodyDims

    @classmethod
    def from_id(cls, i: int) -> HumanIdentity:
        return _human_from_id(int(i))

    def factors(self) -> dict[str, str | int]:
        """A JSON-friendly summary (used in sample metadata)."""
        return {
            "hair_style": self.hair_style,
            "pattern": self.pattern,
            "sleeves": self.sleeves,
            "leg_wear": self.leg_wear,
            "height": self.dims.height,
            "girth": self.dims.girth,
        }


@lru_cache(maxsize=4096)
def _human_from_id(i: int) -> HumanIdentity:
    if not 0 <= i < N_HUMAN_IDENTITIES:
        raise ChoiError(f"human id {i} out of range; allowed 0 <= id < {N_HUMAN_IDENTITIES}")
    code = (i * _PERM_A + _PERM_B) % N_HUMAN_IDENTITIES
    f: dict[str, int] = {}
    for name, n in _FACTORS:
        code, f[name] = divmod(code, n)
    shirt = f["shirt"]
    if shirt < _N_CLOTH:
        primary, pattern, second = shirt, 0, shirt
    else:
        k = shirt - _N_CLOTH
        primary, rest = divmod(k, (len(PATTERNS) - 1) * (_N_CLOTH - 1))
        pattern_m1, offset = divmod(rest, _N_CLOTH - 1)
        pattern, second = 1 + pattern_m1, (primary + 1 + offset) % _N_CLOTH
    return HumanIdentity(
        id=i,
        skin=palette.SKIN[f["skin"]],
        hair_style=HAIR_STYLES[f["hair_style"]],
        hair_color=palette.HAIR[f["hair_color"]],
        shirt=palette.CLOTH[primary],
        shirt_second=palette.CLOTH[second],
        pattern=PATTERNS[pattern],
        sleeves=SLEEVES[f["sleeves"]],
        trousers=palette.TROUSERS[f["trouser_color"]],
        leg_wear=LEG_WEAR[f["leg_wear"]],
        shoes=palette.SHOES[f["shoes"]],
        dims=BodyDims(HEIGHTS[f["height"]], GIRTHS[f["girth"]], 1.0),
    )
