"""Zero-shot text through the classifier (ConSE): a class name finds images no tag names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from quality_fixtures import run, write_fashion

pytest.importorskip("torch")

from lookalike.query.expansion import TEMPLATE  # noqa: E402
from lookalike.query.zeroshot import (  # noqa: E402
    COS_FLOOR,
    ZeroShot,
    class_signature,
    split_signature,
)


def test_class_signature_keeps_the_top_classes_best_first():
    probs = np.full((2, 1000), 0.0005, np.float32)
    probs[0, [7, 3, 999]] = [0.5, 0.3, 0.1]
    probs[1, 42] = 0.9
    classes, weights = split_signature(class_signature(probs, top=3))
    assert classes.tolist()[0] == [7, 3, 999] and classes[1, 0] == 42
    assert weights[0].tolist() == pytest.approx([0.5, 0.3, 0.1])


def test_the_image_point_is_the_convex_combination_of_class_names():
    # classes 0, 1, 2 embed along three axes; the query along class 0's
    weights = np.array([[0.6, 0.2]] * 2)
    scorer = ZeroShot(np.array([1, 2]), np.array([[0, 1], [2, 1]]), weights, discount_prior=False)
    axis = {TEMPLATE.format(p.lower()): i for i, p in enumerate(scorer.used_phrases())}
    axis[TEMPLATE.format("query")] = 0

    def embed(texts):
        return np.eye(3, dtype=np.float32)[[axis[t] for t in texts]]

    d = scorer.distances("query", embed)
    # image 1 sits 3:1 between classes 0 and 1: cos = 0.75 / |(0.75, 0.25)|
    assert d[0] == pytest.approx(100 * (1 - 0.75 / np.hypot(0.75, 0.25)) / (1 - COS_FLOOR))
    assert d[1] == 100.0  # classes 2 and 1 say nothing of class 0


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zeroshot")
    write_fashion(tmp / "images", ["sandal", "trouser", "bag", "t-shirt", "sneaker"], 12)
    write_fashion(tmp / "labels", ["sandal", "trouser", "bag", "t-shirt", "sneaker"], 8, skip=12)
    coll = tmp / "coll"
    run("index", str(tmp / "images"), "-c", str(coll), "--attributes", "color,deep")
    return tmp, coll


def text_search(coll, text: str, top: int = 10) -> dict:
    return json.loads(
        run("search", "-c", str(coll), "--text", text, "--json", "--top", str(top)).stdout
    )


def test_every_image_gets_a_zero_shot_score_not_only_tagged_ones(fashion):
    _, coll = fashion
    out = text_search(coll, "trousers", top=60)
    assert out["explain"]["text"]["zero_shot"] == {
        "images": 60,
        "method": "ConSE over the CNN's ImageNet classes",
    }
    assert len(out["results"]) > 30  # far more than the images tagged with any trouser word


def test_sandal_ranks_sandals_first_once_the_labels_are_learned(fashion):
    tmp, coll = fashion
    run("adapt", "-c", str(coll), "--labels", str(tmp / "labels"))
    try:
        # "handbag" is no label: it finds the bags by meaning. ("sandals" would not: the
        # sentence model puts it nearer "sneaker" than "sandal", cos 0.57 against 0.47.)
        for text, folder in (("sandal", "sandal"), ("handbag", "bag")):
            out = text_search(coll, text)
            folders = [h["path"].split("/")[-2] for h in out["results"]]
            assert folders[0] == folder and folders.count(folder) >= 7, (text, folders)
            explain = out["explain"]["text"]["zero_shot"]
            assert explain["method"] == "ConSE over the classes learned by adapt", text
    finally:
        run("adapt", "-c", str(coll), "--reset")


def test_classes_said_of_every_image_are_discounted():
    # every image is "class 0" at 0.5; only image 1 is also class 1 at 0.3
    scorer = ZeroShot(np.arange(50), np.tile([[0, 1]], (50, 1)), np.tile([[0.5, 0.0]], (50, 1)))
    scorer.probabilities[1] = [0.5, 0.3]
    prior = scorer.class_prior()
    assert prior[0] > 50 * prior[1]
    axis = {TEMPLATE.format(p.lower()): i for i, p in enumerate(scorer.used_phrases())}
    axis[TEMPLATE.format("query")] = 1

    def embed(texts):
        return np.eye(2, dtype=np.float32)[[axis[t] for t in texts]]

    d = scorer.distances("query", embed)
    assert d[1] < 10 < 90 < d[0]  # class 1 dominates image 1 once class 0 is discounted
