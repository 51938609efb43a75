"""The interaction vocabulary: every verb–object class choi knows, its text forms and the rare flag.

One module, used by HOI-World, the data builders, the models and the evaluators alike, so that a
class name means the same thing everywhere. Free text ("riding a bike", "a person kicking a ball")
is resolved to a class with :func:`resolve`; unknown text raises :class:`UnknownInteractionError`
naming the closest known classes. :func:`match_interaction` accepts any phrasing: what
:func:`resolve` does not know goes to the nearest class by MiniLM sentence similarity, above
:data:`INTERACTION_FLOOR`.

Example:
    >>> resolve("a person riding a bike").name
    'ride_bicycle'
    >>> match_interaction("ride motorcycle")
    InteractionMatch(cls=...ride_bicycle..., similarity=0.648, exact=False)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from choi.errors import ChoiError, quote

if TYPE_CHECKING:
    from choi.models.text_encoder import TextEncoder

NO_INTERACTION = "no_interaction"


@dataclass(frozen=True)
class InteractionClass:
    """One verb–object interaction class."""

    index: int  # position in CLASSES; the label id used by every model
    verb: str  # canonical verb, e.g. "sit_on"
    object: str | None  # object category; None for "no interaction" (any object)
    rare: bool  # deliberately scarce in training data, like HICO-DET's rare classes
    gerund: str  # "sitting on", used to build the natural phrase

    @property
    def name(self) -> str:
        return NO_INTERACTION if self.object is None else f"{self.verb}_{self.object}"

    @property
    def text(self) -> str:
        """Short canonical text, e.g. "sit on chair"."""
        return "no interaction" if self.object is None else f"{self.verb.replace('_', ' ')} {self.object}"

    def phrase(self, object_category: str | None = None) -> str:
        """Natural sentence used as the conditioning text, e.g. "a person sitting on a chair"."""
        obj = self.object or object_category
        if self.object is None:
            return f"a person standing next to {_article(obj)} {obj}" if obj else "a person, no interaction"
        return f"a person {self.gerund} {_article(obj)} {obj}"


def _article(word: str | None) -> str:
    return "an" if word and word[0] in "aeiou" else "a"


OBJECT_CATEGORIES: tuple[str, ...] = (
    "bicycle", "ball", "umbrella", "chair", "skateboard", "cup", "kite", "suitcase", "guitar",
)  # fmt: skip

# (verb, object, rare, gerund). The rare subset is drawn ~10x less often in HOI-World's train split.
_SPEC: tuple[tuple[str, str | None, bool, str], ...] = (
    ("ride", "bicycle", False, "riding"),
    ("push", "bicycle", False, "pushing"),
    ("carry", "bicycle", True, "carrying"),
    ("kick", "ball", False, "kicking"),
    ("throw", "ball", False, "throwing"),
    ("hold", "ball", False, "holding"),
    ("dribble", "ball", True, "dribbling"),
    ("hold", "umbrella", False, "holding"),
    ("carry", "umbrella", False, "carrying"),
    ("sit_on", "chair", False, "sitting on"),
    ("carry", "chair", False, "carrying"),
    ("stand_on", "chair", False, "standing on"),
    ("push", "chair", True, "pushing"),
    ("ride", "skateboard", False, "riding"),
    ("carry", "skateboard", False, "carrying"),
    ("hold", "skateboard", True, "holding"),
    ("drink_with", "cup", False, "drinking from"),
    ("hold", "cup", False, "holding"),
    ("fly", "kite", False, "flying"),
    ("hold", "kite", True, "holding"),
    ("pull", "suitcase", False, "pulling"),
    ("carry", "suitcase", False, "carrying"),
    ("sit_on", "suitcase", True, "sitting on"),
    ("play", "guitar", False, "playing"),
    ("carry", "guitar", False, "carrying"),
    ("no_interaction", None, False, "standing next to"),
)

CLASSES: tuple[InteractionClass, ...] = tuple(
    InteractionClass(i, verb, obj, rare, gerund) for i, (verb, obj, rare, gerund) in enumerate(_SPEC)
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
BY_NAME: dict[str, InteractionClass] = {c.name: c for c in CLASSES}
RARE_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES if c.rare)


def classes_for_object(category: str) -> tuple[InteractionClass, ...]:
    """The interaction classes defined for an object category (without "no interaction")."""
    return tuple(c for c in CLASSES if c.object == category)


# --- free-text resolution ---------------------------------------------------------------------

# Surface forms -> canonical verb. Multi-word forms are matched before single words.
_VERB_FORMS: dict[str, str] = {
    "ride": "ride", "riding": "ride", "rides": "ride", "rode": "ride", "cycling": "ride", "cycle": "ride",
    "skating": "ride", "skate": "ride",
    "push": "push", "pushing": "push", "pushes": "push", "wheel": "push", "wheeling": "push",
    "carry": "carry", "carrying": "carry", "carries": "carry", "carried": "carry",
    "kick": "kick", "kicking": "kick", "kicks": "kick", "kicked": "kick",
    "throw": "throw", "throwing": "throw", "throws": "throw", "threw": "throw", "toss": "throw",
    "tossing": "throw",
    "hold": "hold", "holding": "hold", "holds": "hold", "held": "hold", "grab": "hold", "grabbing": "hold",
    "dribble": "dribble", "dribbling": "dribble", "bounce": "dribble", "bouncing": "dribble",
    "sit on": "sit_on", "sitting on": "sit_on", "sits on": "sit_on", "sat on": "sit_on", "sit": "sit_on",
    "sitting": "sit_on", "seated on": "sit_on",
    "stand on": "stand_on", "standing on": "stand_on", "stands on": "stand_on", "stood on": "stand_on",
    "drink from": "drink_with", "drinking from": "drink_with", "drink with": "drink_with",
    "drinking with": "drink_with", "drink": "drink_with", "drinking": "drink_with", "sip": "drink_with",
    "sipping": "drink_with",
    "fly": "fly", "flying": "fly", "flies": "fly", "flew": "fly",
    "pull": "pull", "pulling": "pull", "pulls": "pull", "drag": "pull", "dragging": "pull",
    "tow": "pull", "towing": "pull",
    "play": "play", "playing": "play", "plays": "play", "strum": "play", "strumming": "play",
    "no interaction": "no_interaction", "no_interaction": "no_interaction", "none": "no_interaction",
    "standing next to": "no_interaction", "standing near": "no_interaction", "next to": "no_interaction",
    "near": "no_interaction", "beside": "no_interaction", "standing by": "no_interaction",
}  # fmt: skip

_OBJECT_FORMS: dict[str, str] = {
    "bicycle": "bicycle", "bicycles": "bicycle", "bike": "bicycle", "bikes": "bicycle",
    "push bike": "bicycle",
    "ball": "ball", "balls": "ball", "football": "ball", "soccer ball": "ball", "basketball": "ball",
    "umbrella": "umbrella", "umbrellas": "umbrella", "brolly": "umbrella", "parasol": "umbrella",
    "chair": "chair", "chairs": "chair", "stool": "chair", "seat": "chair",
    "skateboard": "skateboard", "skateboards": "skateboard", "skate board": "skateboard",
    "cup": "cup", "cups": "cup", "mug": "cup", "glass": "cup",
    "kite": "kite", "kites": "kite",
    "suitcase": "suitcase", "suitcases": "suitcase", "luggage": "suitcase", "trolley": "suitcase",
    "guitar": "guitar", "guitars": "guitar",
}  # fmt: skip

_FILLER = re.compile(r"\b(a|an|the|his|her|their|its|person|man|woman|boy|girl|someone|somebody|people|is|are)\b")


class UnknownInteractionError(ChoiError, ValueError):
    """Raised for text that names no known interaction class."""


def _normalise(text: str) -> str:
    text = re.sub(r"[^a-z_ ]+", " ", text.lower().replace("-", " "))
    text = _FILLER.sub(" ", text)
    return " ".join(text.split())


def _find(forms: dict[str, str], text: str) -> tuple[str | None, str]:
    """The canonical value of the longest surface form found in ``text``, and the text without it."""
    for form in sorted(forms, key=len, reverse=True):
        match = re.search(rf"\b{re.escape(form)}\b", text)
        if match:
            return forms[form], (text[: match.start()] + " " + text[match.end() :]).strip()
    return None, text


def closest(text: str, n: int = 3) -> list[str]:
    """The ``n`` known class texts most similar to ``text``."""
    candidates = {c.text: c for c in CLASSES} | {c.phrase(): c for c in CLASSES}
    hits = difflib.get_close_matches(text.lower(), list(candidates), n=3 * n, cutoff=0.0)
    names: list[str] = []
    for hit in hits:
        if candidates[hit].text not in names:
            names.append(candidates[hit].text)
    return names[:n]


def resolve(text: str) -> InteractionClass:
    """Resolve free text or a class name to an :class:`InteractionClass`.

    Accepts class names ("ride_bicycle"), canonical texts ("ride bicycle") and paraphrases
    ("a person riding a bike", "sitting on a stool"). Raises :class:`UnknownInteractionError`
    naming the closest known classes.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnknownInteractionError("empty interaction; give text such as 'ride bicycle'")
    key = text.strip().lower()
    if key in BY_NAME:
        return BY_NAME[key]
    norm = _normalise(text)
    obj, rest = _find(_OBJECT_FORMS, norm)
    verb, _ = _find(_VERB_FORMS, rest)
    if verb == NO_INTERACTION:
        return BY_NAME[NO_INTERACTION]
    if verb is not None and obj is not None and f"{verb}_{obj}" in BY_NAME:
        return BY_NAME[f"{verb}_{obj}"]
    if obj is not None and verb is not None:
        known = ", ".join(f"'{c.text}'" for c in classes_for_object(obj))
        raise UnknownInteractionError(
            f"unknown interaction {quote(text)}: '{verb}' is not known for {obj}; known: {known}"
        )
    suggestions = ", ".join(f"'{s}'" for s in closest(text))
    raise UnknownInteractionError(f"unknown interaction {quote(text)}; closest known: {suggestions}")


# --- any phrasing: the nearest class by sentence similarity -------------------------------------

# MiniLM cosine similarity a text needs to its nearest class: the paraphrases in
# tests/test_interaction_match.py score >= 0.47, the unrelated phrases <= 0.37 (see that file).
INTERACTION_FLOOR = 0.42


@dataclass(frozen=True)
class InteractionMatch:
    """The class an interaction text was matched to, and how."""

    cls: InteractionClass
    similarity: float  # MiniLM cosine similarity to the class's texts; 1.0 when ``exact``
    exact: bool  # the text names the class (:func:`resolve`); else it is the nearest by similarity


def match_interaction(text: str, encoder: TextEncoder | None = None) -> InteractionMatch:
    """Match any phrasing of an interaction to a known class.

    Known phrasings are matched exactly, as :func:`resolve` does. Any other text goes to the class
    whose text ("ride bicycle") or phrase ("a person riding a bicycle") is nearest by the
    all-MiniLM-L6-v2 sentence similarity, when that is at least :data:`INTERACTION_FLOOR`; else
    :class:`UnknownInteractionError` names the closest classes. ``encoder`` is a loaded
    :class:`~choi.models.text_encoder.TextEncoder` (a pipeline passes its own); one is loaded when
    it is None.

    Example:
        >>> match = match_interaction("a woman pedalling a bike")
        >>> match.cls.name, match.exact
        ('ride_bicycle', False)
    """
    try:
        return InteractionMatch(resolve(text), 1.0, True)
    except UnknownInteractionError:
        if not isinstance(text, str) or not text.strip():
            raise
    ranked = rank_by_similarity(text, encoder)
    best, similarity = ranked[0]
    if similarity >= INTERACTION_FLOOR:
        return InteractionMatch(best, similarity, False)
    closest_known = ", ".join(f"'{c.text}' ({s:.2f})" for c, s in ranked[:3])
    raise UnknownInteractionError(
        f"unknown interaction {quote(text.strip())}: no known interaction is close enough; "
        f"closest known: {closest_known}"
    )


def rank_by_similarity(text: str, encoder: TextEncoder | None = None) -> list[tuple[InteractionClass, float]]:
    """Every class with its MiniLM cosine similarity to ``text`` (the best of its text and phrase), best first."""
    if encoder is None:
        from choi.models.text_encoder import TextEncoder

        encoder = TextEncoder()
    forms = [(c, form) for c in CLASSES for form in (c.text, c.phrase())]
    pooled = encoder([text, *(form for _, form in forms)]).pooled  # (1 + 2C, 384), unit norm
    similarity = (pooled[1:] @ pooled[0]).tolist()
    best: dict[str, tuple[InteractionClass, float]] = {}
    for (c, _), s in zip(forms, similarity, strict=True):
        if c.name not in best or s > best[c.name][1]:
            best[c.name] = (c, round(float(s), 4))
    return sorted(best.values(), key=lambda pair: -pair[1])


UNLABELLED = -100  # PyTorch cross-entropy's default ignore_index


def label_index(name: str) -> int:
    """Class index of an interaction name; :data:`UNLABELLED` for one outside choi's vocabulary
    (real HICO-DET verbs choi has no class for), which losses and metrics then skip."""
    cls = BY_NAME.get(name)
    return cls.index if cls is not None else UNLABELLED
