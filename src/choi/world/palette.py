"""Named colour palettes shared by bodies, objects and scenes (RGB tuples, immutable)."""

from __future__ import annotations

SKIN = (
    (255, 224, 196), (241, 194, 160), (226, 170, 128), (198, 134, 94), (150, 96, 62), (98, 64, 44),
)  # fmt: skip

HAIR = (
    (28, 24, 24), (70, 44, 28), (120, 78, 44), (214, 176, 104), (168, 70, 34), (170, 170, 176),
)  # fmt: skip

# Saturated, mutually distinct garment / object colours: identity must survive a 64 px render.
CLOTH = (
    (214, 48, 49), (232, 126, 34), (241, 196, 15), (39, 174, 96), (22, 160, 133),
    (41, 128, 185), (52, 73, 94), (142, 68, 173), (236, 112, 160), (245, 245, 240),
)  # fmt: skip

TROUSERS = (
    (56, 88, 140), (30, 32, 38), (190, 165, 115), (110, 112, 118),
    (28, 44, 82), (104, 72, 46), (86, 100, 58), (150, 40, 50),
)  # fmt: skip

SHOES = ((24, 24, 28), (245, 245, 245), (120, 70, 40), (200, 40, 40), (40, 90, 200))

# Object paint: brighter and more varied than clothes.
PAINT = (
    (220, 40, 40), (240, 130, 20), (250, 210, 30), (60, 180, 70), (20, 170, 170), (40, 110, 220),
    (110, 60, 200), (230, 80, 170), (250, 250, 250), (40, 40, 48), (150, 90, 50), (140, 200, 240),
)  # fmt: skip

WOOD = ((150, 98, 52), (196, 148, 90), (110, 66, 36), (222, 184, 130), (90, 56, 36), (170, 120, 70))

OUTLINE_FACTOR = 0.5  # rim colour = fill * this
REFERENCE_FILL = {"human": 0.88, "object": 0.78}  # of the side a reference's subject spans: room for its outline
FAR_FACTOR = 0.78  # limbs on the far side of the body are in shadow
HIGHLIGHT_FACTOR = 1.12

REF_BACKGROUND = (238, 238, 236)  # the plain light background of reference images
