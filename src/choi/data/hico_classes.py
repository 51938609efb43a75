"""HICO-DET label lists: the 80 COCO object categories (with their COCO ids) and the 117 verbs.

HICO-DET annotation files in the widely used JSON layout give object boxes a COCO category id
(1-90 with gaps; 1 is "person") and each human-object interaction a 1-based verb id into
:data:`VERBS`. An HOI class is a (verb, object) pair; HICO-DET defines 600 of them.

What is *not* shipped, on purpose: the official ordered 600-class HOI list and its rare/non-rare
split. They could not be written out here with certainty, and a subtly wrong list would silently
corrupt Full/Rare/Non-rare numbers. Instead, rarity is computed from its definition — an HOI class
is *rare* when it has fewer than :data:`RARE_THRESHOLD` training instances — with
:func:`hoi_counts` and :func:`rare_classes` over the training annotations the user has. Run on the
full HICO-DET train annotations, this reproduces the standard split (138 rare classes); run on a
subset, it gives that subset's own split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from choi.vocabulary import BY_NAME, NO_INTERACTION

RARE_THRESHOLD = 10  # HICO-DET: "rare" HOI classes have fewer than 10 training instances
PERSON_ID = 1  # COCO category id of "person": every HICO-DET subject

# (COCO category id, HICO-DET name). HICO-DET writes multi-word names with underscores.
OBJECTS: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic_light"), (11, "fire_hydrant"),
    (13, "stop_sign"), (14, "parking_meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports_ball"),
    (38, "kite"), (39, "baseball_bat"), (40, "baseball_glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis_racket"), (44, "bottle"), (46, "wine_glass"), (47, "cup"), (48, "fork"), (49, "knife"),
    (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"),
    (56, "broccoli"), (57, "carrot"), (58, "hot_dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted_plant"), (65, "bed"), (67, "dining_table"),
    (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell_phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy_bear"), (89, "hair_drier"), (90, "toothbrush"),
)  # fmt: skip

# Verb id k (1-based, as in the annotations) is VERBS[k - 1].
VERBS: tuple[str, ...] = (
    "adjust", "assemble", "block", "blow", "board", "break", "brush_with", "buy", "carry", "catch",
    "chase", "check", "clean", "control", "cook", "cut", "cut_with", "direct", "drag", "dribble",
    "drink_with", "drive", "dry", "eat", "eat_at", "exit", "feed", "fill", "flip", "flush", "fly",
    "greet", "grind", "groom", "herd", "hit", "hold", "hop_on", "hose", "hug", "hunt", "inspect",
    "install", "jump", "kick", "kiss", "lasso", "launch", "lick", "lie_on", "lift", "light", "load",
    "lose", "make", "milk", "move", "no_interaction", "open", "operate", "pack", "paint", "park",
    "pay", "peel", "pet", "pick", "pick_up", "point", "pour", "pull", "push", "race", "read",
    "release", "repair", "ride", "row", "run", "sail", "scratch", "serve", "set", "shear", "sign",
    "sip", "sit_at", "sit_on", "slide", "smell", "spin", "squeeze", "stab", "stand_on",
    "stand_under", "stick", "stir", "stop_at", "straddle", "swing", "tag", "talk_on", "teach",
    "text_on", "throw", "tie", "toast", "train", "turn", "type_on", "walk", "wash", "watch", "wave",
    "wear", "wield", "zip",
)  # fmt: skip

OBJECT_BY_ID: dict[int, str] = dict(OBJECTS)

# HICO-DET names of the objects choi's own vocabulary knows, when they differ.
_CHOI_OBJECT = {"sports_ball": "ball"}
_CHOI_VERB = {"drag": "pull", "sip": "drink_with"}


def object_name(coco_id: int) -> str | None:
    """HICO-DET name of a COCO category id, or None for an id that is not one of the 80."""
    return OBJECT_BY_ID.get(coco_id)


def verb_name(verb_id: int) -> str | None:
    """HICO-DET verb of a 1-based verb id, or None when out of range."""
    return VERBS[verb_id - 1] if 1 <= verb_id <= len(VERBS) else None


def hoi_name(verb: str, obj: str) -> str:
    """The HOI class name, e.g. ``"ride_bicycle"``; HICO-DET's "no interaction" is per object."""
    return f"{verb}_{obj}"


def hoi_text(verb: str, obj: str) -> str:
    """Short canonical text, e.g. ``"ride bicycle"`` (the same form as choi's class texts)."""
    return f"{verb.replace('_', ' ')} {obj.replace('_', ' ')}"


def choi_object(obj: str) -> str:
    """choi's name for a HICO-DET object (``sports_ball`` → ``ball``); other names are kept."""
    return _CHOI_OBJECT.get(obj, obj)


def choi_class(verb: str, obj: str) -> str | None:
    """The choi vocabulary class for a HICO-DET (verb, object), or None when choi has no such class."""
    if verb == NO_INTERACTION:
        return NO_INTERACTION
    name = f"{_CHOI_VERB.get(verb, verb)}_{_CHOI_OBJECT.get(obj, obj)}"
    return name if name in BY_NAME else None


def hoi_counts(pairs: Iterable[tuple[str, str]]) -> Counter[str]:
    """Instances per HOI class name for an iterable of (verb, object) training annotations."""
    return Counter(hoi_name(v, o) for v, o in pairs)


def rare_classes(counts: Counter[str], threshold: int = RARE_THRESHOLD) -> frozenset[str]:
    """HOI classes with fewer than ``threshold`` training instances (HICO-DET's definition of rare)."""
    return frozenset(name for name, n in counts.items() if n < threshold)
