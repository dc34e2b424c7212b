"""The planner: only weighted attributes are described, hybrids and thresholds through the
candidate plan agree with the exact plan, ties are broken by id in every plan."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CLASSIC, make_image_dir

from lookalike import ingest
from lookalike.api import Collection
from lookalike.query.plan import top_order


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan")
    images = make_image_dir(folder / "images")
    with Collection.create(folder / "coll", attributes=CLASSIC) as coll:
        coll.add([images], metadata={str(images / "red.png"): {"keywords": ["red", "shirt"]}})
    return folder / "coll", images


def test_a_query_image_is_described_only_for_weighted_attributes(small, monkeypatch):
    folder, images = small
    asked: list[list[str]] = []
    real = ingest.describe_bytes

    def spy(data, label, settings, **kw):
        asked.append(sorted(settings.attributes))
        return real(data, label, settings, **kw)

    monkeypatch.setattr(ingest, "describe_bytes", spy)
    with Collection.open(folder) as coll:
        hits = coll.search(str(images / "red2.jpg"), weights="color=1", top_k=2)
        assert hits[0].path.endswith("red.png") or hits[0].path.endswith("red2.jpg")
        assert set(hits[0].breakdown) == {"color"}
        coll.search(str(images / "red2.jpg"), weights="color=0.5,location=0.5", top_k=2)
    assert asked == [["color"], ["color", "color_location"]]


def test_hybrid_and_threshold_queries_agree_across_plans(small):
    folder, images = small
    with Collection.open(folder) as coll:
        coll.configure_index(kind="hnsw", effort={"hnsw": 256})
        for kwargs in (
            {"image": str(images / "red2.jpg"), "text": "shirt"},
            {"image": 1, "threshold": 40.0},
            {"image": 2, "layout": "top predominantly red"},
        ):
            fast = coll.query(**kwargs, top_k=3)
            exact = coll.query(**kwargs, top_k=3, exact=True)
            assert fast.explain["plan"] == "candidates" and exact.explain["plan"] == "exact"
            assert [(h.id, round(h.score, 9)) for h in fast] == [
                (h.id, round(h.score, 9)) for h in exact
            ]


def test_top_order_breaks_ties_by_id():
    ids = np.array([9, 3, 7, 1, 5])
    scores = np.array([1.0, 0.5, 0.5, 2.0, 0.5])
    assert ids[top_order(ids, scores, 3)].tolist() == [3, 5, 7]
    assert ids[top_order(ids, scores, None)].tolist() == [3, 5, 7, 9, 1]


def test_align_picks_each_wanted_id_s_value_whatever_the_order_of_ids():
    """Parts give their ids ascending (then no sort); any other order is sorted first."""
    from lookalike.query.parts import align

    ids = np.array([3, 9, 4, 1, 7])
    values = ids * 10.0
    for order in (np.arange(5), np.argsort(ids)):
        picked = align(ids[order], values[order], np.array([1, 4, 9]))
        assert picked.tolist() == [10.0, 40.0, 90.0]
