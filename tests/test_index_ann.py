"""Indexes behind one interface: each kind agrees with exact search, writes are visible at once,
filters never leak, broken index files are rebuilt from the catalog."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
from index_fixtures import make_collection, recall_at

from lookalike.api import Collection
from lookalike.query.parts import PART_SCORERS
from lookalike.store.catalog import NewImage

N = 2000
QUERIES = [1, 17, 250, 777, 1024, 1500, 1999]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ann") / "coll"
    make_collection(folder, N).close()
    return folder


def open_as(folder, kind: str, **effort) -> Collection:
    coll = Collection.open(folder)
    coll.configure_index(kind=kind, effort=effort)
    return coll


@pytest.fixture(scope="module")
def built(synthetic, tmp_path_factory):
    """kind -> a copy of `synthetic` with every index of that kind built, made once per module
    (8 IVF-PQ indexes are ~10 s of CPU); tests take copies of it, so none sees another's edits
    or effort settings."""
    folders = {}

    def folder_of(kind: str):
        if kind not in folders:
            folder = tmp_path_factory.mktemp(f"ann-{kind}") / "coll"
            shutil.copytree(synthetic, folder)
            with open_as(folder, kind) as coll:
                for name in coll.attributes:
                    coll.index_for(name)
            folders[kind] = folder
        return folders[kind]

    return folder_of


def copy_built(built, kind: str, tmp_path):
    """A private copy of the collection with `kind` indexes already built."""
    return shutil.copytree(built(kind), tmp_path / "coll")


@pytest.mark.parametrize(("kind", "effort", "least"), [("hnsw", 512, 1.0), ("ivfpq", 256, 0.97)])
def test_each_index_agrees_with_exact_search_at_high_effort(built, tmp_path, kind, effort, least):
    with open_as(copy_built(built, kind, tmp_path), kind, **{kind: effort}) as coll:
        recalls = []
        for weights in (None, "deep=1", "color=1", "texture=0.5,shape=0.5,location=0.5"):
            for q in QUERIES:
                fast = coll.search(q, weights=weights, top_k=10)
                exact = coll.query(image=q, weights=weights, top_k=10, exact=True)
                assert fast.explain["plan"] == "candidates"
                assert exact.explain["plan"] == "exact"
                recalls.append(recall_at(fast, exact))
                same = {h.id: h.score for h in exact}
                for hit in fast:  # scores of the candidate plan are the exact ones
                    if hit.id in same:
                        assert hit.score == pytest.approx(same[hit.id], abs=1e-6)
        assert np.mean(recalls) >= least, recalls
        assert coll.indexes.describe()["deep"]["kind"] == kind


def test_index_space_reproduces_every_attribute_distance(synthetic):
    """For every extractor, the index metric on transformed vectors *is* its 0..100 distance."""
    with Collection.open(synthetic) as coll:
        for name, extractor in coll.extractors.items():
            _, matrix = coll.catalog.signature_matrix(name, extractor.version, extractor.dim)
            matrix = matrix[:200]
            space = extractor.index_space()
            moved = space(matrix)
            assert moved.shape == (200, space.dim)
            expected = extractor.distance(matrix[0], matrix)
            if space.metric == "l1":
                values = np.abs(moved - moved[0]).sum(axis=1)
            else:
                values = moved @ moved[0]
            assert np.allclose(space.to_distance(values), expected, atol=1e-3), name


def copy_of(coll: Collection, image_id: int, path: str) -> NewImage:
    """A new image whose signature is image `image_id`'s own."""
    signatures = {
        name: (ex.version, coll.catalog.signature(image_id, name)[1])
        for name, ex in coll.extractors.items()
    }
    return NewImage(path, 1, 0.0, "f" * 64, 256, 256, "SYN", signatures, {"shard": 0})


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw", "flat"])
def test_inserts_updates_and_deletes_are_visible_at_once(built, synthetic, tmp_path, kind):
    folder = (
        copy_built(built, kind, tmp_path)
        if kind != "flat"
        else shutil.copytree(synthetic, tmp_path / "coll")
    )
    with open_as(folder, kind) as coll:
        before = coll.search(40, top_k=5)
        assert before[0].id == 40
        new_id, _ = coll.catalog.put_image(copy_of(coll, 40, "synthetic://copy"))
        after = coll.search(40, top_k=5)
        assert {after[0].id, after[1].id} == {40, new_id}
        assert after[1].score == pytest.approx(0.0, abs=1e-9)
        assert coll.indexes.describe()["color"]["delta"] == 1  # not merged: searched live

        coll.catalog.put_image(copy_of(coll, 900, "synthetic://copy"), image_id=new_id)
        moved = coll.search(40, top_k=5)
        assert new_id not in [h.id for h in moved][:2]
        assert {h.id for h in coll.search(900, top_k=2)} == {900, new_id}

        coll.remove(900)
        gone = coll.search(new_id, top_k=20)
        assert 900 not in [h.id for h in gone]
        ids = [h.id for h in gone]
        assert len(ids) == len(set(ids))  # nothing searchable twice

        coll.merge_indexes()
        assert coll.indexes.describe()["color"]["delta"] == 0
        merged = coll.search(new_id, top_k=20)
        assert [h.id for h in merged] == ids
    with Collection.open(folder) as again:  # what a merge wrote is what a new process sees
        reopened = again.search(new_id, top_k=20)
        assert [h.id for h in reopened] == ids
        assert again.indexes.describe()["color"]["tombstones"] >= 1


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_filters_never_leak_and_selective_filters_are_exact(built, tmp_path, kind):
    with open_as(copy_built(built, kind, tmp_path), kind, **{kind: 128}) as coll:
        for where, plan in (("shard < 30", "candidates"), ("shard = 7", "exact")):
            for q in QUERIES[:4]:
                hits = coll.search(q, top_k=10, where=where)
                exact = coll.query(image=q, top_k=10, where=where, exact=True)
                assert hits.explain["plan"] == plan
                shards = [json.loads(json.dumps(h.metadata))["shard"] for h in hits]
                assert all((s < 30) if "<" in where else s == 7 for s in shards), shards
                assert recall_at(hits, exact) >= 0.9


def test_a_kept_filter_mask_never_brings_back_a_removed_image(built, tmp_path):
    """A filter's mask of main rows is kept while the same filter ids come back (made per
    attribute of every filtered search, O(collection)); a write in between makes it anew."""
    with open_as(copy_built(built, "ivfpq", tmp_path), "ivfpq", ivfpq=256) as coll:
        allowed = coll._filter_ids("shard < 30")
        gone = int(allowed[5])
        index = coll.index_for("color")
        query = index.row(gone).copy()
        assert gone in index.search(query, 20, allowed_ids=allowed)
        assert index.allowed_positions(allowed) is index.allowed_positions(allowed)  # kept
        coll.remove(gone)
        assert coll.index_for("color") is index  # the removal applied to it, in place
        assert gone not in index.search(query, 20, allowed_ids=allowed)
        assert gone not in [h.id for h in coll.search(int(allowed[6]), where="shard < 30")]
        # copies in the delta, one inside the filter and one outside it
        vectors = {n: v[None, :] for n, v in coll.describe(int(allowed[6])).items()}
        inside, outside = (
            coll.add_vectors([f"synthetic://copy-{s}"], vectors, metadata=[{"shard": s}])[0]
            for s in (3, 99)
        )
        found = [h.id for h in coll.search(int(allowed[6]), top_k=5, where="shard < 30")]
        assert inside in found[:2] and outside not in found
        assert outside in [h.id for h in coll.search(int(allowed[6]), top_k=5)][:3]


def test_missing_or_corrupt_index_files_are_rebuilt_on_open(built, tmp_path):
    folder = copy_built(built, "ivfpq", tmp_path)
    with open_as(folder, "ivfpq") as coll:
        reference = [h.id for h in coll.search(5, top_k=10)]
        assert coll.verify_indexes() == {}
    state = json.loads((folder / "indexes" / "deep" / "state.json").read_text())
    (folder / "indexes" / "deep" / state["files"]["ann"]).write_bytes(b"not a faiss index")
    (folder / "indexes" / "color" / "state.json").unlink()
    ids_file = (
        folder
        / "indexes"
        / "texture"
        / state["files"]["ids"].replace(
            str(state["generation"]),
            str(
                json.loads((folder / "indexes" / "texture" / "state.json").read_text())[
                    "generation"
                ]
            ),
        )
    )
    with open(ids_file, "r+b") as f:  # swap the first id: the checksum no longer matches
        f.write(np.int64(999_999).tobytes())
    with Collection.open(folder) as coll:
        problems = coll.verify_indexes()
        assert set(problems) == {"deep", "color", "texture"}, problems
        assert [h.id for h in coll.search(5, top_k=10)] == reference
        assert coll.verify_indexes() == {}


def test_check_reports_broken_index_files_and_repair_rebuilds_them(built, tmp_path):
    folder = copy_built(built, "hnsw", tmp_path)
    with open_as(folder, "hnsw") as coll:
        reference = [h.id for h in coll.search(9, top_k=10)]
    state = json.loads((folder / "indexes" / "deep" / "state.json").read_text())
    vectors = folder / "indexes" / "deep" / state["files"]["vectors"]
    with open(vectors, "r+b") as f:
        f.truncate(1000)  # a torn file
    with Collection.open(folder) as coll:
        found = [f for f in coll.check().found if f.check == "indexes"]
        assert [f.subject for f in found] == ["indexes/deep"]
        report = coll.check(repair=True)
        assert not [f for f in report.remaining if f.check == "indexes"]
        assert [h.id for h in coll.search(9, top_k=10)] == reference


def test_a_search_after_a_write_gathers_nothing_collection_wide(built, tmp_path):
    """The first search after a write reads its candidates only: no index rebuilds its sorted
    id list or a whole matrix (what made that search cost O(collection)), and each hit still
    gets its index key (read from the hit's own perceptual row)."""
    folder = copy_built(built, "ivfpq", tmp_path)
    with open_as(folder, "ivfpq") as coll:
        coll.search(40, top_k=5)
        new_id, _ = coll.catalog.put_image(copy_of(coll, 40, "synthetic://copy"))
        hits = coll.search(40, top_k=5)
        assert new_id in [h.id for h in hits[:2]]
        for name, index in coll.indexes.loaded().items():
            assert "ids" not in index._cache and "matrix" not in index._cache, name
        for hit in hits:
            assert hit.index_key and hit.index_key == coll.index_key(hit.id)
        # an update leaves a tombstone: counted as it is made, not by a pass over every row
        coll.catalog.put_image(copy_of(coll, 900, "synthetic://moved"), image_id=41)
        moved = coll.search(900, top_k=3)
        assert {h.id for h in moved[:2]} == {900, 41} and 41 not in [h.id for h in moved[2:]]
        for name, index in coll.indexes.loaded().items():
            assert index.tombstones == int(index.dead.sum()) == 1, name


def test_colour_sketch_and_layout_queries_after_a_write_split_only_the_delta(
    built, tmp_path, monkeypatch
):
    """Sketch, layout and colour parts score every image: the main rows are split into
    histograms and index matrices once per map, the delta's per write (at 1M images the
    whole collection gathered in id order after each write cost 5 s and 1 GB). Hits, scores
    and per-image measures equal those of a fresh process on the same folder."""
    from lookalike.features import perceptual

    split_rows: list[int] = []
    original = perceptual.split_perceptual

    def counting(vectors):
        split_rows.append(len(np.atleast_2d(vectors)))
        return original(vectors)

    monkeypatch.setattr(perceptual, "split_perceptual", counting)
    queries = {"colors": "blue then white", "sketch": "b b\ng g", "layout": "top blue"}
    folder = copy_built(built, "ivfpq", tmp_path)
    with open_as(folder, "ivfpq") as coll:
        coll.query(colors="red")
        assert max(split_rows) == N  # the main rows, once
        split_rows.clear()
        copy, _ = coll.catalog.put_image(copy_of(coll, 40, "synthetic://copy"))
        coll.remove(41)
        seen = {}
        for part, value in queries.items():
            hits = coll.query(**{part: value}, top_k=N)
            seen[part] = [(h.id, h.score, h.details) for h in hits]
            assert copy in [h.id for h in hits] and 41 not in [h.id for h in hits]
        assert split_rows and max(split_rows) <= 2, split_rows  # the delta's rows only
        assert "matrix" not in coll.index_for("perceptual")._cache
        index = coll.index_for("perceptual")  # each image's own row, scored on its own
        hists, matrices = original(index.rows(index.ids))
        for part, value in queries.items():
            expected = PART_SCORERS[part](value, hists, matrices)[0]
            by_id = dict(zip(index.ids.tolist(), expected.tolist(), strict=True))
            assert [score for _, score, _ in seen[part]] == [by_id[i] for i, _, _ in seen[part]]
    with Collection.open(folder) as fresh:
        for part, value in queries.items():
            hits = fresh.query(**{part: value}, top_k=N)
            assert [(h.id, h.score, h.details) for h in hits] == seen[part], part


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_a_kept_live_row_mask_serves_until_another_mask_comes(kind):
    """An ANN structure keeps the packed selector of the mask it was last given (an index's
    live-row mask lives until the next change); a new mask object is packed again, so a row
    the new mask drops is never returned and one it admits again can be."""
    from lookalike.index.ann import build_ann

    rng = np.random.default_rng(3)
    vectors = rng.random((2000, 16), dtype=np.float32)
    ann = build_ann(kind, vectors, "l1", {})
    query = vectors[[5]]
    first = np.ones(2000, bool)
    first[5] = False
    assert 5 not in ann.search(query, 5, 256, first)[0]
    assert 5 not in ann.search(query, 5, 256, first)[0]  # the same mask, kept
    second = np.ones(2000, bool)
    second[6] = False  # row 5 alive again, row 6 dead
    found = ann.search(query, 5, 256, second)[0]
    assert found[0] == 5 and 6 not in found
    first[:] = True  # a mask is never changed in place by its owner; this one is new again
    assert ann.search(query, 5, 256, first.copy())[0][0] == 5


def test_the_delta_kept_up_write_by_write_is_the_delta_made_whole(synthetic, tmp_path):
    """A write appends its own rows to the delta's buffers instead of restacking the delta:
    after adds, updates (to a new vector and back) and removals, each search equals the exact
    plan, finds what was just written and never what was removed, and the kept-up delta
    holds the same rows as one made whole from the same images."""
    import shutil

    from lookalike.index.attribute import DeltaRows

    folder = tmp_path / "coll"
    shutil.copytree(synthetic, folder)
    with open_as(folder, "ivfpq", ivfpq=256) as coll:
        coll.search(40, top_k=5)
        added: list[int] = []
        for step, source in enumerate([40, 900, 1500, 40, 777, 250, 1024, 17]):
            new_id, _ = coll.catalog.put_image(copy_of(coll, source, f"synthetic://d{step}"))
            added.append(new_id)
            if step % 3 == 1:  # an added image moved to another's vector
                coll.catalog.put_image(copy_of(coll, 1999, "synthetic://moved"), image_id=added[0])
            if step % 3 == 2:
                coll.remove(added[-2])
                added.pop(-2)
            fast = coll.search(new_id, top_k=8)
            exact = coll.query(image=new_id, top_k=8, exact=True)
            # (by id: copies tie at 0 up to the last bit, which the batch of a product decides)
            assert {h.id: round(h.score, 9) for h in fast} == {
                h.id: round(h.score, 9) for h in exact
            }
            assert fast[0].score == pytest.approx(0.0, abs=1e-9)
            assert {new_id, source} <= {h.id for h in fast[:2]}
            assert set(h.id for h in fast) <= set(coll.index_for("color").ids.tolist())
        for name, index in coll.indexes.loaded().items():
            kept = index._delta_rows()
            whole = DeltaRows.of(index.delta, index.spec.dim, index.spec.space)
            assert kept.ids.tolist() == whole.ids.tolist() == sorted(added), name
            assert np.array_equal(kept.rows[kept.slots], whole.rows[whole.slots]), name
            assert kept.used > len(kept.ids), name  # slots of changed images left behind


def test_our_pca_keeps_what_faiss_pca_keeps_and_reads_back(tmp_path):
    """`pca_matrix` (power iteration on a bounded sample) keeps the variance faiss's own
    training keeps, and an IVF-PQ index made with it is written and read as faiss's."""
    import faiss

    from lookalike.index.ann import IvfPqIndex, pca_matrix, read_ann

    rng = np.random.default_rng(3)
    spectrum = 1.0 / (1.0 + np.arange(300) / 10.0)
    rows = (
        rng.standard_normal((1500, 300))
        * spectrum
        @ np.linalg.qr(rng.standard_normal((300, 300)))[0]
    ).astype(np.float32)
    centred = rows - rows.mean(axis=0)

    def kept(pca) -> float:
        a = faiss.vector_to_array(pca.A).reshape(32, 300)
        return float(((centred @ a.T) ** 2).sum() / (centred**2).sum())

    reference = faiss.PCAMatrix(300, 32)
    reference.train(rows)
    assert kept(pca_matrix(rows, 32, 1)) == pytest.approx(kept(reference), abs=2e-3)

    index = IvfPqIndex.build(rows, "ip", pca=32, code_bytes=8)
    index.write(tmp_path / "ann.faiss")
    again = read_ann("ivfpq", tmp_path / "ann.faiss", "ip")
    assert np.array_equal(again.search(rows[:20], 10, 8), index.search(rows[:20], 10, 8))


def test_pca_is_learned_from_the_whole_collection_not_its_oldest_images():
    """An IVF-PQ's PCA sees rows from the whole collection: here the older half varies in
    dims 0-7 and the newer half (larger variance) in dims 8-15, so the kept directions must
    be the newer half's; a sample's first rows alone would keep the older half's."""
    import faiss

    from lookalike.index.ann import IvfPqIndex

    rng = np.random.default_rng(11)
    rows = np.zeros((24_000, 16), np.float32)
    rows[:12_000, :8] = rng.standard_normal((12_000, 8))
    rows[12_000:, 8:] = 3 * rng.standard_normal((12_000, 8))
    index = IvfPqIndex.build(rows, "ip", pca=8, code_bytes=4)
    pca = faiss.downcast_VectorTransform(index.index.chain.at(0))
    kept = faiss.vector_to_array(pca.A).reshape(8, 16)
    assert float((kept[:, 8:] ** 2).sum() / (kept**2).sum()) > 0.95


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_a_merge_waits_for_the_searches_in_its_ann_structure(built, tmp_path, kind):
    """faiss allows no add while a search runs (the server's threads search at once, and a
    search's catch-up may merge a full delta): a merge's add starts after the searches in the
    structure end, and searches arriving meanwhile wait for the merge."""
    folder = copy_built(built, kind, tmp_path)
    with open_as(folder, kind) as coll:
        new_id, _ = coll.catalog.put_image(copy_of(coll, 40, "synthetic://copy"))
        coll.search(40, top_k=5)  # caught up: the copy is in the delta
        index = coll.index_for("color")
        ann = index.ann
        events: list[str] = []
        inside = threading.Event()
        search, add = ann.search, ann.add

        def slow_search(*args, **kwargs):
            events.append("search starts")
            inside.set()
            time.sleep(0.3)
            found = search(*args, **kwargs)
            events.append("search ends")
            return found

        def recorded_add(*args, **kwargs):
            events.append("add")
            return add(*args, **kwargs)

        ann.search, ann.add = slow_search, recorded_add
        searching = threading.Thread(target=lambda: coll.search(40, top_k=5, weights="color=1"))
        searching.start()
        assert inside.wait(10)
        merging = threading.Thread(target=index.merge)
        merging.start()
        searching.join(10)
        merging.join(10)
        assert events == ["search starts", "search ends", "add"]
        ann.search = search
        assert {h.id for h in coll.search(40, top_k=2, weights="color=1")} == {40, new_id}


def test_a_whole_collection_scan_waits_for_a_merge_in_progress(built, tmp_path):
    """Colour, sketch and layout parts read the delta and main together (`row_blocks`); a
    merge moving the delta into main must not land between the two reads."""
    with open_as(copy_built(built, "ivfpq", tmp_path), "ivfpq") as coll:
        index = coll.index_for("perceptual")
        done = threading.Event()
        with index.ann_use.exclusive():  # as a merge holds it
            reader = threading.Thread(target=lambda: (index.row_blocks(), done.set()))
            reader.start()
            assert not done.wait(0.3)
        assert done.wait(10)
        reader.join()


def test_the_duplicate_self_join_gives_the_same_groups_on_any_number_of_threads(synthetic):
    """`lookalike duplicates` searches on every core; the groups and each pair's score do not
    depend on how many threads searched or in which order they finished."""
    from lookalike.query.duplicates import find_duplicates
    from lookalike.scoring import normalise_weights

    with Collection.open(synthetic) as coll:
        weights = normalise_weights(None, coll.attributes, coll.default_weights)
        ids = coll._searchable(weights)[:600]

        threads: set[int] = set()

        def signatures(batch):
            threads.add(threading.get_ident())
            return coll._stored_signatures(batch, list(weights))

        def groups(workers: int):
            threads.clear()
            found = find_duplicates(
                coll.planner, ids, signatures, weights, threshold=25.0, batch=16, workers=workers
            )
            return [(g.ids, g.pairs) for g in found], len(threads)

        alone, one = groups(1)
        assert alone and sum(len(pairs) for _, pairs in alone) > 20 and one == 1
        (three_way, three), (four_way, _) = groups(3), groups(4)
        assert three_way == alone == four_way and three > 1
