"""Candidates rescored in float32 with a float64 guard band (query/plan.py `ImagePart.settle`):
a search by id through the CLI returns the exact plan's hits in the exact plan's order, with
its scores, even where float32 cannot tell the candidates apart (near-ties at the k-th place,
in the main index and in the delta)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from lookalike.api import Collection  # noqa: E402
from lookalike.features.base import rough_cosine_distance  # noqa: E402

DIM = 1280
CLI = [sys.executable, "-m", "lookalike"]


def near_ties(query: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` vectors whose cosines to `query` differ by ~1e-8: float64 orders them, float32
    (resolution ~6e-8 near 1, dot-product rounding ~1e-6) cannot."""
    unit = query / np.linalg.norm(query)
    out = []
    for i in rng.permutation(count):
        other = rng.random(DIM)
        other -= (other @ unit) * unit
        other /= np.linalg.norm(other)
        cos = 1.0 - 1e-6 - 1e-8 * i
        out.append((cos * unit + np.sqrt(1.0 - cos * cos) * other) * (3.0 + rng.random()))
    return np.asarray(out, np.float32)


def test_float32_rescoring_gives_the_exact_plan_s_hits_and_scores_through_the_cli(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "coll"
    coll = Collection.create(folder, attributes=["deep"])
    query = rng.random(DIM).astype(np.float32)
    far = rng.random((300, DIM)).astype(np.float32)
    ids = coll.add_vectors(
        ["q.jpg", *(f"far/{i}.jpg" for i in range(300))],
        {"deep": np.vstack([query, far])},
    )
    main_ties = near_ties(query, 40, rng)
    ids += coll.add_vectors([f"main/{i}.jpg" for i in range(40)], {"deep": main_ties})
    coll.configure_index(kind="hnsw", effort={"hnsw": 256})
    coll.merge_indexes()  # built, then these rows in the main index
    assert len(coll.index_for("deep").delta) == 0
    delta_ties = near_ties(query, 40, rng)  # after the build: searched in the delta
    coll.add_vectors([f"delta/{i}.jpg" for i in range(40)], {"deep": delta_ties})
    assert len(coll.index_for("deep").delta) == 40

    # float32 really cannot order these candidates: the test would not see a missing band
    rows = np.vstack([main_ties, delta_ties])
    rough, _ = rough_cosine_distance(query, rows, 0.0)
    exact = coll.extractors["deep"].distance(query, rows)
    assert not np.array_equal(np.argsort(rough, kind="stable"), np.argsort(exact, kind="stable"))

    for top in (3, 10, 25):
        want = coll.query(image=ids[0], weights="deep=1", top_k=top, exact=True)
        got = coll.search(ids[0], weights="deep=1", top_k=top)
        assert (got.explain["plan"], want.explain["plan"]) == ("candidates", "exact")
        assert [h.id for h in got] == [h.id for h in want]
        for g, w in zip(got, want, strict=True):
            assert g.score == pytest.approx(w.score, abs=1e-9)
            assert g.breakdown["deep"] == pytest.approx(w.breakdown["deep"], abs=1e-9)
        proc = subprocess.run(
            [*CLI, "search", f"id:{ids[0]}", "-c", str(folder), "-w", "deep=1",
             "--top", str(top), "--json"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        shown = json.loads(proc.stdout)["results"]
        assert [(h["id"], h["score"]) for h in shown] == [
            (h["id"], h["score"]) for h in want.to_dict()["results"]
        ]
    coll.close()


def test_the_rough_distance_is_within_its_bound_of_the_exact_one():
    rng = np.random.default_rng(5)
    from lookalike.features.deep import DeepExtractor

    extractor = DeepExtractor.__new__(DeepExtractor)
    for floor in (0.0, -0.2):
        extractor.cos_floor = floor
        query = rng.normal(size=DIM).astype(np.float32)
        rows = np.vstack(
            [
                rng.normal(size=(50, DIM)),
                np.abs(rng.normal(size=(50, DIM))) * 1e3,
                np.zeros((1, DIM)),  # no vector at all: float64 says 100 * (1 - 0)
                np.full((1, DIM), 1e-30),  # underflows in float32
                near_ties(query, 20, rng),
            ]
        ).astype(np.float32)
        rough, bound = extractor.rough_distance(query, rows)
        exact = extractor.distance(query, rows)
        assert 0 < bound < 0.1
        assert np.abs(rough - exact).max() <= bound
