"""A search that a write in another thread overtakes (the shared indexes caught up between the
search choosing its images and reading their rows) runs again on the newer state: never an
error, never a removed image. bench/bench_load.py found this as 500s under 8 clients + a writer."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from index_fixtures import make_collection
from server_fixtures import local_client

from lookalike.api import Collection
from lookalike.index.attribute import AttributeIndex
from lookalike.server.app import create_app

N = 300


@pytest.fixture
def coll(tmp_path):
    collection = make_collection(tmp_path / "coll", N, deep=False)
    yield collection
    collection.close()


def add_copy(coll: Collection, source: int, name: str) -> int:
    """A new image (in the indexes' delta) with `source`'s vectors: its nearest neighbour."""
    vectors = {attr: v[None, :] for attr, v in coll.describe(source).items()}
    return coll.add_vectors([f"synthetic://{name}"], vectors)[0]


def remove_midway(monkeypatch, coll: Collection, victim: int) -> list[int]:
    """On the first row read of the next search, another thread removes `victim` and catches
    the shared indexes up, as a concurrent search after that write would."""
    calls: list[int] = []
    original = AttributeIndex.distances

    def distances(self, query, ids=None):
        if not calls:
            calls.append(1)
            writer = threading.Thread(target=lambda: (coll.remove(victim), coll.indexes.sync()))
            writer.start()
            writer.join()
        calls.append(1)
        return original(self, query, ids)

    monkeypatch.setattr(AttributeIndex, "distances", distances)
    return calls


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_search_overtaken_by_a_delete_answers_without_the_image(coll, monkeypatch, kind):
    coll.configure_index(kind=kind)
    source = 5
    victim = add_copy(coll, source, "copy")
    before = coll.search(source, weights="color=1", top_k=5)
    assert victim in [h.id for h in before]  # the copy is a candidate of this search

    calls = remove_midway(monkeypatch, coll, victim)
    overtaken = coll.search(source, weights="color=1", top_k=5)
    monkeypatch.undo()

    assert len(calls) > 2  # the rows were read again after the write
    assert victim not in [h.id for h in overtaken]
    fresh = coll.search(source, weights="color=1", top_k=5)
    assert [h.id for h in overtaken] == [h.id for h in fresh]
    assert np.allclose([h.score for h in overtaken], [h.score for h in fresh])


def test_over_http_the_overtaken_search_is_answered_200(coll, monkeypatch):
    source = 9
    victim = add_copy(coll, source, "copy-http")
    client = local_client(create_app(coll))
    remove_midway(monkeypatch, coll, victim)
    response = client.post("/api/search", data={"id": source, "top_k": 5, "weights": "color=1"})
    assert response.status_code == 200, response.text
    assert victim not in [hit["id"] for hit in response.json()["results"]]


def test_duplicates_overtaken_by_a_write_runs_again(coll, monkeypatch):
    """Duplicates reads rows of many images: a write that overtakes it makes it run again on
    the newer state (as a search does), instead of answering 500."""
    source = 11
    victim = add_copy(coll, source, "copy-dup")
    client = local_client(create_app(coll))
    calls = remove_midway(monkeypatch, coll, victim)
    response = client.get("/api/duplicates", params={"weights": "color=1"})
    monkeypatch.undo()
    assert response.status_code == 200, response.text
    assert len(calls) > 2  # the rows were read again after the write
    members = {i for group in response.json()["groups"] for i in group["ids"]}
    assert victim not in members
    assert len(coll) == N  # the copy was added and removed, nothing else lost


def test_every_image_s_distances_overtaken_by_a_write_are_refused_not_misaligned(coll, monkeypatch):
    """The exact plan asks for the distances of the index's own sorted ids; a write landing
    just after it chose them (another search thread catching the index up, as duplicates'
    worker threads do) must raise IndexChanged, so the search runs again, never give one
    distance fewer than the ids it was asked for (a 500 from duplicates before)."""
    from lookalike.index.attribute import IndexChanged

    victim = add_copy(coll, 7, "copy-all")
    index = coll.index_for("color")
    ids = index.ids
    assert victim in ids
    original = AttributeIndex._distances_to_all

    def overtaken(self, query, expected=None):
        monkeypatch.setattr(AttributeIndex, "_distances_to_all", original)
        coll.remove(victim)
        coll.indexes.sync()  # the shared index caught up: one image fewer
        return original(self, query, expected)

    monkeypatch.setattr(AttributeIndex, "_distances_to_all", overtaken)
    with pytest.raises(IndexChanged):
        index.distances(coll.describe(7)["color"], ids)
