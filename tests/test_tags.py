"""Keywords from classifier output: splitting, cleaning, head words, scores."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.tags import (
    Keyword,
    head_word,
    keywords_from_predictions,
    label_synonyms,
    looks_latin,
)


def test_label_is_split_into_clean_lower_case_phrases():
    assert label_synonyms("tabby, tabby cat") == ["tabby", "tabby cat"]
    assert label_synonyms("Egyptian cat") == ["egyptian cat"]
    assert label_synonyms("giant panda, panda, panda bear, coon bear, Ailuropoda melanoleuca") == [
        "giant panda",
        "panda",
        "panda bear",
        "coon bear",
    ]
    assert label_synonyms("ice bear, polar bear, Ursus Maritimus, Thalarctos maritimus") == [
        "ice bear",
        "polar bear",
    ]
    # the first, primary name is kept even when it looks Latin to the heuristic
    assert label_synonyms("Great Pyrenees") == ["great pyrenees"]
    assert label_synonyms("Siamese cat, Siamese") == ["siamese cat", "siamese"]


def test_latin_heuristic():
    for latin in ("Felis catus", "Tinca tinca", "Canis niger", "Ursus Maritimus"):
        assert looks_latin(latin), latin
    for english in ("Egyptian cat", "Persian cat", "German shepherd dog", "tabby cat", "Model T"):
        assert not looks_latin(english), english


def test_head_words():
    assert head_word("tabby cat") == "cat"
    assert head_word("coffee mug") == "mug"
    assert head_word("espresso") is None
    assert head_word("hen of the woods") is None  # "woods" is not what it is
    assert head_word("model t") is None  # too short to mean anything alone


def test_scores_add_up_over_classes_and_respect_the_floor():
    predictions = [
        ("Egyptian cat", 0.40),
        ("tiger cat", 0.22),
        ("tabby, tabby cat", 0.21),
        ("lynx, catamount", 0.07),
    ]
    keywords = keywords_from_predictions(predictions, floor=0.1)
    by_text = {k.text: k for k in keywords}
    assert by_text["cat"] == Keyword("cat", pytest.approx(0.83), "head")
    assert by_text["egyptian cat"].score == pytest.approx(0.40)
    assert by_text["tabby"].score == pytest.approx(0.21)
    assert by_text["tabby cat"].source == "label"
    assert "lynx" not in by_text and "catamount" not in by_text  # below the floor
    assert [k.score for k in keywords] == sorted((k.score for k in keywords), reverse=True)
    assert keywords[0].text == "cat"

    no_heads = keywords_from_predictions(predictions, floor=0.1, head_words=False)
    assert "cat" not in {k.text for k in no_heads}
    everything = keywords_from_predictions(predictions, floor=0.0)
    assert {"lynx", "catamount"} <= {k.text for k in everything}


def test_synonym_shared_by_two_classes_and_capped_score():
    keywords = keywords_from_predictions([("missile", 0.6), ("projectile, missile", 0.5)])
    by_text = {k.text: k.score for k in keywords}
    assert by_text["missile"] == 1.0  # 1.1 capped
    assert by_text["projectile"] == pytest.approx(0.5)
    assert keywords_from_predictions([]) == []
    assert keywords_from_predictions([("espresso", 0.0)], floor=0.0) == []


@pytest.fixture(scope="module")
def classifier():
    from lookalike.features.deep import DeepExtractor  # installed by the project: no skip

    return DeepExtractor()  # the loaded model is shared with test_deep.py (per-process cache)


def _prepared(name: str):
    from PIL import Image
    from skimage import data as skdata

    from lookalike.features.base import PreparedImage

    im = Image.fromarray(getattr(skdata, name)())
    im.thumbnail((256, 256), Image.Resampling.LANCZOS)
    return PreparedImage(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)


def test_real_photos_get_sensible_keywords(classifier):
    chelsea, coffee = classifier.classify(
        [_prepared("chelsea"), _prepared("coffee")], top_k=10, min_prob=0.01
    )
    cat_words = [k.text for k in keywords_from_predictions(chelsea, floor=0.2)]
    assert cat_words[0] == "cat", cat_words  # breeds disagree, the head word adds them up
    coffee_words = [k.text for k in keywords_from_predictions(coffee, floor=0.2)]
    assert coffee_words[0] == "espresso", coffee_words
