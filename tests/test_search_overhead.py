"""A search by stored id with one attribute weighted, the case whose fixed costs issue 9 cut:
every hit field is what the long way gives (through the CLI and the API), the candidate plan
equals the exact plan, the query's vector comes from the indexes' rows (the catalog's bytes),
and a search reads the catalog in one statement, for its hits, with one look at the change
token."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from lookalike.api import Collection  # noqa: E402
from lookalike.samples import write_samples  # noqa: E402
from lookalike.store.catalog import Catalog  # noqa: E402

CLI = [sys.executable, "-m", "lookalike"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """60 real photos (20 scikit-image photos, a crop and a mirror of each) and a broken file,
    indexed by the CLI with the default attributes and job count."""
    tmp = tmp_path_factory.mktemp("overhead")
    write_samples(tmp / "images", variants=("crop80", "hflip"))
    (tmp / "images" / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    proc = run("index", str(tmp / "images"), "-c", str(tmp / "coll"))
    assert proc.returncode == 3, proc.stderr  # finished, the broken file skipped
    with Collection.open(tmp / "coll") as coll:
        rows = coll.catalog.query("SELECT id, path FROM images")
        for image_id, path in rows:  # metadata as a shop catalogue would have it
            coll.update(image_id, metadata={"sku": f"A{image_id}", "tags": path.split("/")[-2:]})
    assert len(rows) == 60
    return tmp / "coll", {path.rsplit("/", 1)[-1]: image_id for image_id, path in rows}


def test_hits_by_id_through_the_cli_are_the_records_and_keys_read_the_long_way(photos):
    folder, ids = photos
    with Collection.open(folder) as coll:
        for name in ("chelsea.png", "coffee.png", "astronaut.png"):
            proc = run("search", f"id:{ids[name]}", "-c", str(folder), "-w", "deep=1", "--json")
            assert proc.returncode == 0, proc.stderr
            shown = json.loads(proc.stdout)["results"]
            api = coll.search(ids[name], weights="deep=1").to_dict()["results"]
            assert shown == json.loads(json.dumps(api))
            assert len(shown) == 10 and shown[0]["id"] == ids[name] and shown[0]["is_query"]
            assert shown[0]["score"] == 0  # searched with its own stored vector
            assert shown[1]["path"].rsplit("/", 1)[-1].startswith(name.removesuffix(".png"))
            for hit in shown:
                record = coll.get(hit["id"])
                assert (hit["path"], hit["metadata"]) == (record.path, record.metadata)
                assert hit["index_key"] == coll.index_key(hit["id"])
                assert hit["breakdown"] == {"deep": hit["score"]}
                assert hit["is_query"] == (hit["id"] == ids[name])


def test_the_candidate_plan_gives_the_exact_plan_s_hits(photos, tmp_path):
    folder, ids = photos
    shutil.copytree(folder, tmp_path / "coll")
    with Collection.open(tmp_path / "coll") as coll:
        coll.configure_index(kind="hnsw", effort={"hnsw": 256})
        for weights in ("deep=1", "color=1", None):
            for image_id in list(ids.values())[::7]:
                fast = coll.search(image_id, weights=weights, top_k=3)
                exact = coll.query(image=image_id, weights=weights, top_k=3, exact=True)
                assert (fast.explain["plan"], exact.explain["plan"]) == ("candidates", "exact")
                assert fast.likely_cut == exact.likely_cut
                for got, want in zip(fast, exact, strict=True):
                    assert got.score == pytest.approx(want.score, abs=1e-9)
                    assert (got.id, got.path, got.metadata, got.index_key, got.likely) == (
                        want.id, want.path, want.metadata, want.index_key, want.likely
                    )  # fmt: skip


def test_a_search_by_id_reads_the_catalog_once_for_its_hits(photos):
    folder, ids = photos
    with Collection.open(folder) as coll:
        coll.search(ids["coffee.png"], weights="deep=1")  # indexes and caches made
        statements: list[str] = []
        tokens: list[str] = []
        with coll.catalog.reading() as conn:
            conn.set_trace_callback(statements.append)  # this thread's read connection
        coll.catalog._watch.conn.set_trace_callback(tokens.append)
        statements.clear()  # the ROLLBACK that closed the snapshot above
        hits = coll.search(ids["chelsea.png"], weights="deep=1")
        assert len(hits) == 10
        # the query's vector comes from the indexes' own rows, the hits' fields in one read
        assert [s.split()[1] for s in statements] == ["id,"], statements
        assert "FROM images" in statements[0]
        assert tokens == ["PRAGMA data_version"]


def test_one_change_token_per_search_still_sees_its_own_writes(tmp_path):
    Collection.create(tmp_path / "coll", attributes=["color"]).close()
    catalog, other = Catalog(tmp_path / "coll"), Catalog(tmp_path / "coll")
    try:
        before = catalog.change_token()
        with catalog.one_change_token():
            other.set_meta("by_another", 1)  # another connection (or process) commits
            assert catalog.change_token() == before  # the search goes on with what it read
            catalog.set_meta("by_this", 1)
            assert catalog.change_token() != before  # its own writes are never hidden
        other.set_meta("again", 2)
        assert catalog.change_token() not in (before,)
    finally:
        catalog.close()
        other.close()


def test_a_stored_query_vector_read_from_the_indexes_is_the_catalog_s(photos, tmp_path):
    """The query vector of a search by id comes from the indexes' rows (main and delta), the
    catalog's own bytes; a whitened attribute, whose index keeps whitened rows, and a missing
    image still go to the catalog."""
    folder, ids = photos
    shutil.copytree(folder, tmp_path / "coll")
    with Collection.open(tmp_path / "coll") as coll:
        names = list(coll.attributes)
        stored = coll.describe(ids["coffee.png"])
        [new] = coll.add_vectors(  # an image only in the delta: a near copy of coffee
            ["elsewhere/coffee-copy.jpg"], {n: (v * 0.97)[None, :] for n, v in stored.items()}
        )
        for image_id in [*ids.values(), new]:
            fast = coll._indexed_vectors(image_id, names)
            assert fast is not None
            slow = coll.describe(image_id)  # the catalog's read
            for name in names:
                assert fast[name].tobytes() == slow[name].tobytes(), (image_id, name)
        assert coll._indexed_vectors(10**9, names) is None
        with pytest.raises(Exception, match="no image"):
            coll.search(10**9, weights="deep=1")
        coll.fit_whitening("deep", dim=16)
        assert coll._indexed_vectors(new, ["deep"]) is None
    proc = run("search", f"id:{new}", "-c", str(tmp_path / "coll"), "-w", "deep=1", "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)["results"]
    assert shown[0]["id"] == new and shown[0]["score"] == 0 and shown[0]["is_query"]
    assert shown[1]["id"] == ids["coffee.png"]


def test_index_keys_read_after_writes_are_those_of_search_time(photos, tmp_path):
    """Index keys are read only when asked, yet they are the hits' keys when the search ran:
    neither a removal, a re-added image in the delta, a merge nor a rebuild changes them."""
    folder, ids = photos
    shutil.copytree(folder, tmp_path / "coll")
    with Collection.open(tmp_path / "coll") as coll:
        want = [h.index_key for h in coll.search(ids["coffee.png"], weights="deep=1")]
        assert all(key for key in want)
        [copy] = coll.add_vectors(  # in the delta: the coffee photo's vectors, colours changed
            ["elsewhere/coffee-copy.jpg"],
            {n: v[None, :] for n, v in coll.describe(ids["chelsea.png"]).items()}
            | {"deep": coll.describe(ids["coffee.png"])["deep"][None, :]},
        )
        page = coll.search(ids["coffee.png"], weights="deep=1", top_k=11)
        assert copy in [h.id for h in page]
        shown = [h.index_key for h in page]  # read now: the keys the page must keep
        late = coll.search(ids["coffee.png"], weights="deep=1", top_k=11)  # not read yet
        lone = coll.search(ids["coffee.png"], weights="deep=1")  # not read yet either
        # three of its hits (the copy, which ties with the query at 0, is removed next)
        coll.remove([h.id for h in late if h.id not in (ids["coffee.png"], copy)][:3])
        coll.remove(copy)
        coll.merge_indexes()
        coll.rebuild_indexes(["perceptual"])
        assert [h.index_key for h in late] == shown
        assert [h.id for h in lone] == [h.id for h in page][:10]
        assert [h.index_key for h in lone] == shown[:10]
        assert shown[[h.id for h in page].index(copy)] != want[0]  # chelsea's, not coffee's
