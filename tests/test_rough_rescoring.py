"""Candidates rescored in float32 with a float64 guard band (query/plan.py `ImagePart.settle`):
a search by id through the CLI returns the exact plan's hits in the exact plan's order, with
its scores, even where float32 cannot tell the candidates apart (near-ties at the k-th place,
in the main index and in the delta)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    # as users run it (once: a process start costs seconds)
    want = coll.query(image=ids[0], weights="deep=1", top_k=25, exact=True)
    proc = subprocess.run(
        [*CLI, "search", f"id:{ids[0]}", "-c", str(folder), "-w", "deep=1", "--top", "25",
         "--json"],
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


def test_one_attribute_ranked_alone_takes_the_delta_s_best_with_their_ties(tmp_path):
    """With one weighted attribute, the delta gives only the images that can be hits
    (`_delta_nearest`); an attribute without a rough distance (colour) ranks it exactly, ties
    by id as the exact plan breaks them, with and without a filter, through the CLI."""
    rng = np.random.default_rng(11)
    folder = tmp_path / "coll"
    coll = Collection.create(folder, attributes=["color"])
    dim = coll.extractors["color"].dim
    far = rng.random((1200, dim)).astype(np.float32)
    far /= far.sum(axis=1, keepdims=True)
    ids = coll.add_vectors(
        [f"far/{i}.jpg" for i in range(1200)],
        {"color": far},
        [{"shard": i % 10} for i in range(1200)],
    )
    coll.configure_index(kind="hnsw", effort={"hnsw": 256})
    assert len(coll.index_for("color").delta) == 0  # built now, the ties added after
    # in the delta: 20 images between the query and others, then 30 ties added in two
    # batches; the 10th hit falls among the ties, so a selection that ignored ties could
    # keep any of them (seen red with an argpartition of k)
    mid = far[:1] * 0.5 + far[2:22] * 0.5
    tie = far[:1] * 0.6 + far[1:2] * 0.4
    coll.add_vectors([f"mid/{i}.jpg" for i in range(20)], {"color": mid})
    for batch in range(2):
        coll.add_vectors(
            [f"near/{batch}-{i}.jpg" for i in range(15)],
            {"color": np.repeat(tie, 15, axis=0)},
            [{"shard": i % 3} for i in range(15)],
        )
    assert len(coll.index_for("color").delta) == 50
    for where in (None, "shard < 5"):  # 600 of 1,230 allowed: still the candidate plan
        want = coll.query(image=ids[0], weights="color=1", top_k=10, where=where, exact=True)
        got = coll.query(image=ids[0], weights="color=1", top_k=10, where=where)
        assert got.explain["plan"] == "candidates"
        assert [h.id for h in got] == [h.id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-9)
        extra = ["--where", where] if where else []
        proc = subprocess.run(
            [*CLI, "search", f"id:{ids[0]}", "-c", str(folder), "-w", "color=1", "--json", *extra],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        shown = json.loads(proc.stdout)["results"]
        assert [h["id"] for h in shown] == [h.id for h in want]
        assert sum(h["path"].startswith("near/") for h in shown) >= 5  # the ties were at stake
    coll.close()


def test_numba_and_numpy_kernels_stay_within_the_bound_of_float64():
    """A process that has not loaded numba (a CLI search by id: loading it costs 1.3 s) ranks
    with numpy; a server loads the numba kernel at start-up. Both keep the bound."""
    from lookalike.features import base

    rng = np.random.default_rng(5)
    query = rng.standard_normal(DIM).astype(np.float32)
    rows = np.vstack(
        [near_ties(query, 30, rng), rng.standard_normal((60, DIM)), np.full((1, DIM), 1e-12)]
    ).astype(np.float32)
    exact = np.clip(
        100.0
        * (
            1.0
            - rows.astype(np.float64)
            @ query
            / (
                np.linalg.norm(rows.astype(np.float64), axis=1)
                * np.linalg.norm(query.astype(np.float64))
            )
        )
        / (1.0 - 0.2),
        0.0,
        100.0,
    )
    _, bound = rough_cosine_distance(query, rows, 0.2)
    scale = 100.0 / (1.0 - 0.2)
    for kernel in (base._numpy_float32_cosine_distances, base._float32_cosine_distances):
        out = kernel(rows, query, scale)
        assert np.isnan(out[-1]) and not np.isnan(out[:-1]).any()  # too small: float64 later
        assert np.abs(out[:-1] - exact[:-1]).max() <= bound
    rough, _ = rough_cosine_distance(query, rows, 0.2)  # the near-zero row done in float64
    assert np.abs(rough - exact).max() <= bound


def test_a_search_by_id_does_not_load_numba_s_kernel(tmp_path):
    """Loading the kernel costs a process 1.3 s, more than a CLI search by id gains from it."""
    script = f"""
import numpy as np
from lookalike.api import Collection
from lookalike.features import base
coll = Collection.create({str(tmp_path / "coll")!r}, attributes=["deep"])
vectors = np.random.default_rng(0).random((60, {DIM}), dtype=np.float32)
ids = coll.add_vectors([f"{{i}}.jpg" for i in range(60)], {{"deep": vectors}})
coll.configure_index(kind="hnsw")
coll.merge_indexes()
hits = coll.search(ids[0], weights="deep=1", top_k=5)
assert hits.explain["plan"] == "candidates" and hits[0].id == ids[0], hits.explain
print(len(base._float32_cosine_distances.signatures))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_the_compiled_float64_kernel_agrees_with_numpy_on_a_few_rows(monkeypatch):
    """A server (kernels loaded at start-up) settles a search's few doubtful candidates in one
    compiled float64 pass; it gives numpy's values to ~1e-13, for float32 rows (the
    candidates) and float64 ones (the delta), zero and tiny rows included; many rows (the
    exact plan) stay with numpy's BLAS."""
    from lookalike.features import base

    rng = np.random.default_rng(8)
    query = rng.normal(size=DIM)
    rows = np.vstack(
        [rng.normal(size=(30, DIM)), np.zeros((1, DIM)), np.full((1, DIM), 1e-30),
         near_ties(query.astype(np.float32), 10, rng)]
    )  # fmt: skip
    monkeypatch.setitem(base.LOADED_KERNELS, "rough", False)
    want = {
        (dtype, floor): base.cosine_distance(query, rows.astype(dtype), floor)
        for dtype in (np.float32, np.float64)
        for floor in (0.0, -0.2)
    }
    base.load_rough_kernel()
    assert base.LOADED_KERNELS["rough"]
    calls = []
    kernel = base._float64_cosine_distances
    monkeypatch.setattr(
        base, "_float64_cosine_distances", lambda *a: calls.append(len(a[0])) or kernel(*a)
    )
    for (dtype, floor), expected in want.items():
        got = base.cosine_distance(query, rows.astype(dtype), floor)
        assert np.abs(got - expected).max() < 1e-11
    assert calls == [len(rows)] * 4
    many = rng.normal(size=(base.FEW_ROWS + 1, DIM))
    base.cosine_distance(query, many, 0.0)
    assert calls == [len(rows)] * 4  # numpy's BLAS for many rows


def test_the_compiled_doubt_selection_is_numpy_s(monkeypatch):
    """`within_kth` (which candidates a rough score leaves in doubt) compiled as numpy's
    partition and flatnonzero: ties at the k-th, k = 1 and k = all, margins 0 and wide."""
    from lookalike.features import base

    base.load_rough_kernel()
    rng = np.random.default_rng(12)
    for size in (1, 2, 7, 11, 60, 203, 1500):
        values = np.round(rng.random(size) * 100, 1)  # rounded: many ties
        values[rng.integers(0, size, size // 4)] = values[0]
        for k in {1, min(3, size), min(10, size), size}:
            for margin in (0.0, 1e-9, 2.5, 200.0):
                got = base.within_kth(values, k, margin)
                kth = np.sort(values)[k - 1]
                assert got.tolist() == np.flatnonzero(values <= kth + margin).tolist()
    monkeypatch.setitem(base.LOADED_KERNELS, "rough", False)  # a one-off process: numpy's
    assert base.within_kth(np.array([5.0, 1.0, 3.0, 1.0]), 2, 2.0).tolist() == [1, 2, 3]


def test_a_server_settles_near_ties_as_the_exact_plan_does(tmp_path):
    """Through `lookalike serve` (which loads the compiled kernels at start-up), a search by id
    among near-ties in main and in the delta gives the exact plan's hits and scores."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_load
    import httpx

    rng = np.random.default_rng(3)
    folder = tmp_path / "coll"
    with Collection.create(folder, attributes=["deep"]) as coll:
        query = rng.random(DIM).astype(np.float32)
        far = rng.random((300, DIM)).astype(np.float32)
        ids = coll.add_vectors(
            ["q.jpg", *(f"far/{i}.jpg" for i in range(300))], {"deep": np.vstack([query, far])}
        )
        coll.add_vectors([f"main/{i}.jpg" for i in range(40)], {"deep": near_ties(query, 40, rng)})
        coll.configure_index(kind="hnsw", effort={"hnsw": 256})
        delta = coll.add_vectors(
            [f"delta/{i}.jpg" for i in range(40)], {"deep": near_ties(query, 40, rng)}
        )
        want = coll.query(image=ids[0], weights="deep=1", top_k=25, exact=True).to_dict()
    port = bench_load.free_port()
    process = bench_load.start_server(folder, port)  # as users start it; /api/health up
    try:
        got = httpx.post(
            f"http://127.0.0.1:{port}/api/search",
            data={"id": str(ids[0]), "weights": "deep=1", "top_k": "25"},
            timeout=60,
        ).json()
    finally:
        bench_load.stop_server(process)
    assert [(h["id"], h["score"]) for h in got["results"]] == [
        (h["id"], h["score"]) for h in want["results"]
    ]
    assert sum(h["id"] in delta for h in got["results"]) >= 5  # the delta's ties at stake
