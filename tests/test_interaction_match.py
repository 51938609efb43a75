"""match_interaction: any phrasing of an interaction goes to the nearest known class, above a floor.

The floor (``INTERACTION_FLOOR``) was chosen on the two lists below: paraphrases that name no known
class (so :func:`resolve` refuses them) and unrelated text. Both sides are tested, with a margin,
so a new encoder or a moved floor that mixes them up fails here.
"""

from __future__ import annotations

import pytest

from choi.vocabulary import (
    CLASSES,
    INTERACTION_FLOOR,
    UnknownInteractionError,
    match_interaction,
    rank_by_similarity,
    resolve,
)

# Paraphrases resolve() does not know, with the class a person would pick.
PARAPHRASES = [
    ("ride motorcycle", "ride_bicycle"),
    ("riding a motorbike", "ride_bicycle"),
    ("a woman pedalling a bike", "ride_bicycle"),
    ("a cyclist on a road bike", "ride_bicycle"),
    ("drinking tea", "drink_with_cup"),
    ("someone strumming a ukulele", "play_guitar"),
    ("playing the violin", "play_guitar"),
    ("sitting on a bench", "sit_on_chair"),
    ("sitting on a sofa", "sit_on_chair"),
    ("shooting hoops", "throw_ball"),
    ("tossing a frisbee", "throw_ball"),
    ("juggle a ball", "throw_ball"),
    ("carrying a backpack", "carry_suitcase"),
    ("person jumping on a skateboard", "ride_skateboard"),
]

# Known phrasings: matched exactly, as resolve() does, without the encoder's opinion.
EXACT = [
    ("ride bicycle", "ride_bicycle"),
    ("a man kicking a soccer ball", "kick_ball"),
    ("sipping coffee from a mug", "drink_with_cup"),
    ("a person holding a cup of coffee", "hold_cup"),
    ("standing beside a chair", "no_interaction"),
]

UNRELATED = [
    "the stock market crashed",
    "quantum chromodynamics",
    "banana",
    "asdfgh",
    "qwerty uiop",
    "1234",
    "hello world",
    "the weather is nice today",
    "a bowl of soup",
    "photosynthesis in plants",
    "tax return deadline",
    "a red car parked on the street",
    "the cat sleeps",
    "mountain landscape at sunset",
    "python programming",
    "the capital of France",
    "lorem ipsum dolor sit amet",
    "a dog",
    "running a marathon",
    "reading a book",
    "typing on a laptop",
    "cooking pasta",
    "swimming in a pool",
    "juggle a cat",
]

MARGIN = 0.03  # both lists stay at least this far from the floor


@pytest.fixture(scope="module")
def encoder():
    from choi.models.text_encoder import TextEncoder

    return TextEncoder()


def _best(text: str, encoder) -> float:
    return rank_by_similarity(text, encoder)[0][1]


@pytest.mark.parametrize(("text", "name"), PARAPHRASES)
def test_paraphrase_goes_to_the_nearest_class(encoder, text, name):
    with pytest.raises(UnknownInteractionError):
        resolve(text)  # not a known phrasing: the similarity decides
    match = match_interaction(text, encoder)
    assert (match.cls.name, match.exact) == (name, False)
    assert match.similarity >= INTERACTION_FLOOR + MARGIN


@pytest.mark.parametrize(("text", "name"), EXACT)
def test_known_phrasing_is_exact(encoder, text, name):
    match = match_interaction(text, encoder)
    assert (match.cls.name, match.similarity, match.exact) == (name, 1.0, True)


@pytest.mark.parametrize("text", UNRELATED)
def test_unrelated_text_is_refused(encoder, text):
    assert _best(text, encoder) <= INTERACTION_FLOOR - MARGIN
    with pytest.raises(UnknownInteractionError, match="closest known: '") as info:
        match_interaction(text, encoder)
    assert "\n" not in str(info.value)


def test_floor_separates_the_lists(encoder):
    lowest_paraphrase = min(_best(text, encoder) for text, _ in PARAPHRASES)
    highest_unrelated = max(_best(text, encoder) for text in UNRELATED)
    assert highest_unrelated < INTERACTION_FLOOR < lowest_paraphrase


def test_error_quotes_at_most_60_characters(encoder):
    text = "the quarterly report on municipal bond yields " * 4
    with pytest.raises(UnknownInteractionError) as info:
        match_interaction(text, encoder)
    message = str(info.value)
    assert text[:60].strip() in message and text[:61] not in message and "..." in message


def test_empty_text_is_refused(encoder):
    with pytest.raises(UnknownInteractionError, match="empty interaction"):
        match_interaction("  ", encoder)


def test_ranking_lists_every_class_once(encoder):
    ranked = rank_by_similarity("ride motorcycle", encoder)
    names = [c.name for c, _ in ranked]
    assert len(names) == len(set(names)) == len(CLASSES)
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
