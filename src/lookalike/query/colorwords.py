"""The colour vocabulary shared by layout sentences, index-key queries and text search.

Every colour word maps to one or more of the 11 basic terms, most likely first. A word maps to
several terms where English speakers split on it, and the first term is the one the pixel
naming model of `lookalike.features.perceptual` gives to the word's usual swatch, so that what a
user types agrees with what the index holds. Choices worth knowing:

* maroon, burgundy, wine -> red first (dark reds), then brown / purple;
* beige -> brown first (the usual beige swatch is a light brown), then white;
  ivory and cream -> white;
* teal, turquoise, cyan, aqua -> blue first, then green (the pixel model names these hues blue;
  aquamarine, greener, goes the other way);
* olive -> green (olive drab is named green by the pixel model);
* magenta, fuchsia -> pink first, then purple; mauve, lilac-like words -> purple then pink;
* charcoal -> grey first, then black; taupe -> brown, then grey;
* salmon -> pink, then orange (the pixel model leans to orange for the brightest salmons).

Phrases are read as ``[modifier ...] colour [colour]``: modifiers such as "light", "dark" or
"pale" do not change the term ("dark green" is green), and in a two-colour compound the last
word is the head ("navy blue" is blue, "blue green" is green, then blue; "reddish brown" is
brown, then red). Plural terms ("blues") are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import MappingProxyType

from lookalike.features.perceptual import TERMS

# Words whose only term is the key, most common first.
_SINGLE: dict[str, str] = {
    "white": "ivory cream creamy snow snowy offwhite alabaster pearl eggshell chalk "
    "bone linen whitish",
    "black": "jet ebony onyx coal ink inky obsidian raven sable pitch blackish",
    "red": "crimson scarlet ruby cherry carmine cardinal blood garnet oxblood claret reddish",
    "green": "olive emerald jade lime mint forest moss kelly shamrock avocado pistachio greenish",
    "yellow": "gold golden lemon canary blond blonde saffron sunflower maize straw yellowish",
    "blue": "navy azure cobalt sapphire cerulean ultramarine denim cornflower bluish blueish",
    "brown": "tan chocolate coffee chestnut sepia umber sienna caramel hazel mocha cinnamon "
    "walnut camel fawn cocoa espresso sandy brownish",
    "purple": "violet lilac lavender plum amethyst eggplant aubergine grape heliotrope purplish "
    "purpley",
    "pink": "blush flamingo bubblegum carnation rosy pinkish",
    "orange": "tangerine apricot pumpkin ginger orangey orangish mandarin persimmon",
    "grey": "gray silver silvery ash ashen slate graphite smoky pewter steel gunmetal "
    "greyish grayish",
}

# Words with several terms, most likely first (see the module docstring for the reasons).
_MULTI: dict[str, tuple[str, ...]] = {
    "maroon": ("red", "brown"),
    "burgundy": ("red", "purple"),
    "wine": ("red", "purple"),
    "vermilion": ("red", "orange"),
    "vermillion": ("red", "orange"),
    "brick": ("red", "brown"),
    "beige": ("brown", "white"),
    "khaki": ("brown", "green"),
    "bronze": ("brown", "orange"),
    "taupe": ("brown", "grey"),
    "mahogany": ("brown", "red"),
    "auburn": ("brown", "red"),
    "russet": ("brown", "red"),
    "ochre": ("brown", "yellow"),
    "ocher": ("brown", "yellow"),
    "rust": ("brown", "orange"),
    "teal": ("blue", "green"),
    "turquoise": ("blue", "green"),
    "cyan": ("blue", "green"),
    "aqua": ("blue", "green"),
    "aquamarine": ("green", "blue"),
    "indigo": ("blue", "purple"),
    "periwinkle": ("blue", "purple"),
    "chartreuse": ("green", "yellow"),
    "sage": ("green", "grey"),
    "mustard": ("yellow", "brown"),
    "amber": ("orange", "yellow"),
    "marigold": ("orange", "yellow"),
    "coral": ("orange", "pink"),
    "peach": ("orange", "pink"),
    "copper": ("orange", "brown"),
    "terracotta": ("orange", "brown"),
    "salmon": ("pink", "orange"),
    "rose": ("pink", "red"),
    "cerise": ("pink", "red"),
    "raspberry": ("pink", "red"),
    "magenta": ("pink", "purple"),
    "fuchsia": ("pink", "purple"),
    "mauve": ("purple", "pink"),
    "orchid": ("purple", "pink"),
    "charcoal": ("grey", "black"),
}

# Words that shade a colour without changing its term ("light blue" is blue).
COLOR_MODIFIERS: frozenset[str] = frozenset(
    "light dark pale bright deep pastel vivid medium dull neon dusty muted rich soft strong warm "
    "cool faded dim brilliant intense saturated lighter darker very pure vibrant hot baby sky "
    "royal sea powder midnight electric off".split()
)


def _build() -> dict[str, tuple[str, ...]]:
    vocabulary: dict[str, tuple[str, ...]] = {term: (term,) for term in TERMS}
    for term, words in _SINGLE.items():
        for word in words.split():
            vocabulary[word] = (term,)
    vocabulary.update(_MULTI)
    unknown = {t for terms in vocabulary.values() for t in terms} - set(TERMS)
    if unknown:  # pragma: no cover - a typo in the tables above
        raise AssertionError(f"colour vocabulary names unknown terms: {sorted(unknown)}")
    return vocabulary


VOCABULARY = MappingProxyType(_build())
"""Single word -> basic terms, most likely first."""

_TOKEN = re.compile(r"[A-Za-z]+|\d+(?:\.\d+)?|[^\sA-Za-z\d-]")


def words_with_positions(text: str) -> list[tuple[str, int]]:
    """Split query text into lowercase words and punctuation, each with its character offset.

    Hyphens and whitespace separate words ("top-left" is "top", "left"); any other character
    that is not a letter or digit is a token of its own, so that a parser can point at it.
    """
    return [(m.group(0).lower(), m.start()) for m in _TOKEN.finditer(text)]


def _single(word: str) -> tuple[str, ...]:
    terms = VOCABULARY.get(word)
    if terms is None and len(word) > 3 and word.endswith("s"):
        singular = VOCABULARY.get(word[:-1])
        if singular is not None and word[:-1] in TERMS:  # "blues", "greys"; not "grass"
            terms = singular
    return terms or ()


def parse_color(words: Sequence[str], start: int = 0) -> tuple[tuple[str, ...], int] | None:
    """Read the longest colour phrase at words[start:]; return (terms, words used) or None.

    Grammar: ``modifier* colour colour?``. Alone, a modifier is not a colour (None).
    """
    i = start
    while i < len(words) and words[i] in COLOR_MODIFIERS:
        i += 1
    if i >= len(words):
        return None
    first = _single(words[i])
    if not first:
        # "sky", "baby", ... are modifiers, but also what people type before a colour only.
        return None
    i += 1
    if i < len(words):
        head = _single(words[i])
        if head:
            combined = head + tuple(t for t in first if t not in head)
            return combined, i + 1 - start
    return first, i - start


def terms_for_word(word: str) -> tuple[str, ...]:
    """Basic terms a colour word or phrase may mean, most likely first; () if not a colour."""
    words = [w for w, _ in words_with_positions(word.replace("_", " "))]
    if not words:
        return ()
    parsed = parse_color(words, 0)
    if parsed is None or parsed[1] != len(words):
        return ()
    return parsed[0]


def synonyms_of_term(term: str, include_secondary: bool = False) -> tuple[str, ...]:
    """Words that mean `term` (the term itself excluded), for expanding text searches.

    By default only words whose most likely term is `term`; `include_secondary` adds words for
    which it is a second reading (e.g. beige for white).
    """
    if term not in TERMS:
        raise ValueError(f"unknown colour term {term!r}; known: {', '.join(TERMS)}")
    return tuple(
        word
        for word, terms in VOCABULARY.items()
        if word != term and (terms[0] == term or (include_secondary and term in terms))
    )


__all__ = [
    "COLOR_MODIFIERS",
    "TERMS",
    "VOCABULARY",
    "parse_color",
    "synonyms_of_term",
    "terms_for_word",
    "words_with_positions",
]
