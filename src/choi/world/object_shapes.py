"""What objects are made of: the conventions and helpers shared by the per-category shape functions.

The shapes live in :mod:`choi.world.shapes_outdoor` and :mod:`choi.world.shapes_indoor`; the
registry that maps categories to them is in :mod:`choi.world.objects`.

A shape function takes an :class:`~choi.world.objects.ObjectIdentity` (whose size, pattern and
style it may read, but not its colours: it names colour *roles*, see :func:`color_roles`) and a
state dict and returns ``(Drawing, anchors)`` in the object's own frame: world units at scale 1 (a person is ~1.0 tall),
y down, the object's front towards +x. Part depths are small offsets (-1..1) that the layout adds
to the object's depth; anchors are the points people hold, sit or stand on.

Some objects use a light pseudo-3D (a far side offset up and to the right) because pure profiles
of chairs and suitcases are unreadable at 64-128 px.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from choi.world import palette
from choi.world.canvas import Color, Drawing

if TYPE_CHECKING:
    from choi.world.objects import ObjectIdentity

LABEL = 100  # every object part shares one label: masks need the object, not its parts
RIM = 0.006

DARK = ((30, 30, 34), (60, 60, 66), (150, 120, 80), (235, 235, 230))  # tyres
TAILS = ((230, 40, 40), (250, 200, 30), (40, 120, 230), (240, 240, 240))  # kite tails, wheels, lids


def color_roles(ident: ObjectIdentity) -> dict[str, Color]:
    """The colours behind the role names that shape functions use instead of RGB values.

    Shapes only know roles ("main", "second", "wood"...), so one cached geometry serves every
    colourway of the same size/pattern/style, and a new identity only costs a recolouring.
    """
    k = ident.accent
    return {
        "main": ident.main, "second": ident.second, "tyre": DARK[k], "tail": TAILS[k],
        "rim": (190, 190, 196) if k % 2 else (70, 70, 76), "metal": (150, 150, 158) if k % 2 else (40, 40, 44),
        "wood": palette.WOOD[k], "body_wood": palette.WOOD[(k + 1) % len(palette.WOOD)],
    }  # fmt: skip


Anchors = dict[str, np.ndarray]
ShapeFn = Callable[["ObjectIdentity", dict], tuple[Drawing, Anchors]]


def pt(x: float, y: float) -> np.ndarray:
    return np.array([x, y])
