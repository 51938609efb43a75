import pytest

from choi.errors import ChoiError
from choi.vocabulary import (
    BY_NAME,
    CLASS_NAMES,
    CLASSES,
    NO_INTERACTION,
    OBJECT_CATEGORIES,
    RARE_NAMES,
    UnknownInteractionError,
    classes_for_object,
    resolve,
)


def test_vocabulary_size_and_structure():
    verb_object = [c for c in CLASSES if c.object is not None]
    assert len(verb_object) >= 24
    assert CLASS_NAMES[-1] == NO_INTERACTION
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert [c.index for c in CLASSES] == list(range(len(CLASSES)))
    assert len(OBJECT_CATEGORIES) >= 8
    assert all(classes_for_object(cat) for cat in OBJECT_CATEGORIES)
    assert 0 < len(RARE_NAMES) < len(CLASSES) // 2


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("riding a bike", "ride_bicycle"),
        ("ride bicycle", "ride_bicycle"),
        ("ride_bicycle", "ride_bicycle"),
        ("A person kicking a ball", "kick_ball"),
        ("kicks the football", "kick_ball"),
        ("sitting on a stool", "sit_on_chair"),
        ("a woman standing on a chair", "stand_on_chair"),
        ("drinking from a mug", "drink_with_cup"),
        ("strumming a guitar", "play_guitar"),
        ("pulling luggage", "pull_suitcase"),
        ("flying a kite", "fly_kite"),
        ("standing next to a bike", NO_INTERACTION),
        ("no interaction", NO_INTERACTION),
    ],
)
def test_resolve_paraphrases(text, name):
    assert resolve(text).name == name


def test_every_class_resolves_from_its_own_text_and_phrase():
    for c in CLASSES:
        assert resolve(c.text) is c
        assert resolve(c.phrase(c.object or "ball")) is c


def test_unknown_interaction_names_closest():
    with pytest.raises(UnknownInteractionError, match="closest known") as info:
        resolve("juggle a cat")
    assert isinstance(info.value, ChoiError)
    with pytest.raises(UnknownInteractionError, match="'ride bicycle'"):
        resolve("eat a bicycle")
    with pytest.raises(UnknownInteractionError):
        resolve("   ")


def test_phrase_uses_articles():
    assert BY_NAME["ride_bicycle"].phrase() == "a person riding a bicycle"
    assert BY_NAME["hold_umbrella"].phrase() == "a person holding an umbrella"
    assert BY_NAME[NO_INTERACTION].phrase("umbrella") == "a person standing next to an umbrella"


def test_label_index_skips_interactions_outside_the_vocabulary():
    from choi.vocabulary import UNLABELLED, label_index

    assert label_index("kick_ball") == BY_NAME["kick_ball"].index
    assert label_index("inspect_airplane") == UNLABELLED
