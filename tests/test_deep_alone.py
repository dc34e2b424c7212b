"""One attribute ranked alone, unfiltered (weights "deep=1"), takes the index's fast path
(`AttributeIndex.rough_nearest`: candidates from the ANN structure and the delta, scored
roughly once, no fusion of several lists): after inserts, updates and removals in main and
in the delta, its hits and scores are the exact plan's, through the CLI and the API."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from lookalike.api import Collection  # noqa: E402
from lookalike.index.attribute import AttributeIndex  # noqa: E402
from lookalike.samples import write_samples  # noqa: E402

DIM = 1280
CLI = [sys.executable, "-m", "lookalike"]


def embeddings(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    """Clustered, non-negative, sparse vectors, as a CNN's pooled features after ReLU."""
    picked = centres[rng.integers(0, len(centres), count)]
    noise = np.maximum(rng.normal(0.0, 0.2, (count, DIM)), 0.0)
    return (picked + noise).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_the_fast_path_after_writes_gives_the_exact_plan_s_hits_through_the_cli(
    tmp_path, monkeypatch, kind
):
    rng = np.random.default_rng(7)
    folder = tmp_path / "coll"
    coll = Collection.create(folder, attributes=["deep"])
    centres = rng.random((8, DIM)) * (rng.random((8, DIM)) < 0.3)
    rows = embeddings(rng, centres, 400)
    rows[21:26] = rows[20] + rng.random((5, DIM)).astype(np.float32) * 0.01  # 20's near twins
    ids = coll.add_vectors([f"main/{i}.jpg" for i in range(400)], {"deep": rows})
    # every list; IVF-PQ's codes order roughly, so it gathers more (recall is not tested)
    coll.configure_index(
        kind=kind, effort={"hnsw": 256, "ivfpq": 4096}, candidates=10 if kind == "hnsw" else 60
    )
    deep = coll.index_for("deep")
    assert len(deep.delta) == 0 and deep.ann is not None  # built: these are main rows

    # the delta: 60 images, 8 of them near twins of image 20 (its best hits), more than k
    later = embeddings(rng, centres, 60)
    later[:8] = rows[20] + rng.random((8, DIM)).astype(np.float32) * 0.01
    new = coll.add_vectors([f"delta/{i}.jpg" for i in range(60)], {"deep": later})
    photos, _ = write_samples(tmp_path / "images", variants=(), names=["coffee", "rocket"])
    # updates: a main twin (its main row becomes a tombstone) and a delta twin (its first
    # delta slot dies) get a photo's vector, far from image 20
    coll.update(ids[21], source=photos[0].read_bytes(), name="a.png")
    coll.update(new[0], source=photos[1].read_bytes(), name="b.png")
    # removals: a main twin and a delta twin, hits of image 20 a moment ago
    before = [h.id for h in coll.query(image=ids[20], weights="deep=1", top_k=10, exact=True)]
    assert {ids[22], new[1]} <= set(before)
    coll.remove([ids[22], new[1]])
    deep = coll.index_for("deep")
    assert deep.tombstones == 2 and len(deep.delta) == 60  # 59 left + the updated main twin

    fast_calls = []
    original = AttributeIndex.rough_nearest

    def spy(self, *args, **kwargs):
        fast_calls.append(self.spec.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AttributeIndex, "rough_nearest", spy)
    queries = [ids[20], ids[100], ids[21], new[0], new[2], new[30]]
    for query in queries:
        for top in (3, 10, 25):
            want = coll.query(image=query, weights="deep=1", top_k=top, exact=True)
            got = coll.search(query, weights="deep=1", top_k=top)
            assert (got.explain["plan"], want.explain["plan"]) == ("candidates", "exact")
            assert [h.id for h in got] == [h.id for h in want]
            assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-9)
            assert [h.path for h in got] == [h.path for h in want]
            near = coll.nearest(query, weights="deep=1", top_k=top)  # the same, as arrays
            assert near.ids.tolist() == [h.id for h in want]
            assert near.scores.tolist() == pytest.approx([h.score for h in want], abs=1e-9)
            assert near.breakdown["deep"].tolist() == pytest.approx(near.scores.tolist())
    assert fast_calls == ["deep"] * 2 * 3 * len(queries)  # each went through the fast path
    hits = [h.id for h in coll.search(ids[20], weights="deep=1", top_k=10)]
    assert ids[22] not in hits and new[1] not in hits  # removed
    assert ids[21] not in hits and new[0] not in hits  # updated away from image 20
    assert sum(i in hits for i in new[2:8]) == 6  # the delta's twins are found
    coll.close()

    for query in (ids[20], new[2]):  # as users run it
        proc = subprocess.run(
            [*CLI, "search", f"id:{query}", "-c", str(folder), "-w", "deep=1", "--json"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        shown = json.loads(proc.stdout)["results"]
        with Collection.open(folder) as reopened:
            want = reopened.query(image=query, weights="deep=1", top_k=10, exact=True)
            assert [(h["id"], h["score"]) for h in shown] == [
                (h["id"], h["score"]) for h in want.to_dict()["results"]
            ]


def test_a_hit_removed_between_ranking_and_its_record_read_is_left_out(tmp_path, monkeypatch):
    """Another writer removes a ranked hit before the hits' records are read: the page has
    every other hit, in order, each with its own record and score."""
    rng = np.random.default_rng(9)
    coll = Collection.create(tmp_path / "coll", attributes=["deep"])
    centres = rng.random((4, DIM)) * (rng.random((4, DIM)) < 0.3)
    ids = coll.add_vectors(
        [f"{i}.jpg" for i in range(120)], {"deep": embeddings(rng, centres, 120)}
    )
    coll.configure_index(kind="hnsw", effort={"hnsw": 256})
    want = coll.search(ids[5], weights="deep=1", top_k=10)
    victim = want[3].id
    read = coll.planner.sources.hit_fields

    def removed_first(hit_ids):
        if victim in hit_ids:
            coll.catalog.delete([victim])  # a write in between, as another thread's would be
        return read(hit_ids)

    monkeypatch.setattr(coll.planner.sources, "hit_fields", removed_first)
    got = coll.search(ids[5], weights="deep=1", top_k=10)
    monkeypatch.undo()
    assert [h.id for h in got] == [h.id for h in want if h.id != victim]
    assert [(h.path, h.score) for h in got] == [(h.path, h.score) for h in want if h.id != victim]
    coll.close()
