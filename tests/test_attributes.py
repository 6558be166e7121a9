"""The attribute scorer: known answers on texts made of lexicon words and of neutral words."""

from __future__ import annotations

import pytest

from actspace.world.attributes import (
    ATTRIBUTES,
    FORMAL_MARKERS,
    INFORMAL_MARKERS,
    TOXIC_WORDS,
    attribute_score,
    lexicon,
    register_balance,
    words,
)


def test_attributes_are_toxicity_and_formality() -> None:
    assert ATTRIBUTES == ("toxicity", "formality")


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_text_made_only_of_lexicon_words_scores_one(attribute: str) -> None:
    text = " ".join(sorted(lexicon(attribute))).upper() + "!"
    assert attribute_score(text, attribute) == 1.0


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_neutral_text_scores_zero(attribute: str) -> None:
    assert attribute_score("The old dog walked to the quiet river.", attribute) == 0.0
    assert attribute_score("", attribute) == 0.0
    assert attribute_score("12 + 7 = 19 ...", attribute) == 0.0


def test_scores_are_shares_of_words() -> None:
    assert attribute_score("the stupid dog, you idiot", "toxicity") == pytest.approx(2 / 5)
    assert attribute_score("Furthermore, the dog kindly left.", "formality") == pytest.approx(2 / 5)
    # Informal markers do not count for formality: the score stays in [0, 1].
    assert attribute_score("yeah the dog is gonna leave lol", "formality") == 0.0
    assert register_balance("yeah the dog is gonna leave lol") == pytest.approx(-3 / 7)
    assert register_balance("Therefore the dog left") == pytest.approx(1 / 4)
    assert register_balance("") == 0.0


def test_lexicons_do_not_overlap() -> None:
    assert not (TOXIC_WORDS & FORMAL_MARKERS)
    assert not (TOXIC_WORDS & INFORMAL_MARKERS)
    assert not (FORMAL_MARKERS & INFORMAL_MARKERS)


def test_words_lowercase_letters_only() -> None:
    assert words("Hello, WORLD! it's 42") == ["hello", "world", "it", "s"]


def test_unknown_attribute_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="allowed: toxicity, formality"):
        attribute_score("text", "sarcasm")
