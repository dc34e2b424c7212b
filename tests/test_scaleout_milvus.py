"""The Milvus backend against a real Milvus standalone server, as users run it: the same CLI
commands on a folder collection and on `milvus://127.0.0.1:PORT/name` must give the same
answers, the same refusals, and survive the server going away with nothing acknowledged lost.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import long_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from milvus_server import MilvusServer
from test_cli import run

from lookalike.api import Collection
from lookalike.errors import CollectionError, LookalikeError, QueryError
from lookalike.migrate import copy_collection
from lookalike.query.filters import evaluate_filter
from lookalike.query.milvus_filter import quote, translate
from lookalike.query.text import text_match
from lookalike.remote import MilvusCollection
from lookalike.samples import write_samples
from lookalike.store.backend import parse_store_uri
from lookalike.store.milvus import TIMEOUT_S, StoreUnavailable
from lookalike.store.text_snapshot import TextSnapshot

pytestmark = pytest.mark.scaleout
EXAMPLES = int(os.environ.get("LOOKALIKE_FUZZ_EXAMPLES", "30"))  # filters tried against Milvus
# Every kind of index space the classic attributes have: histograms (L1, square-rooted for
# Milvus's L2), a location grid and the perceptual hashes' mapped space; fewer Milvus
# collections to create and write than all seven.
ATTRIBUTES = "color,texture,color_location,perceptual"
FILTERS = [
    None,
    "category = 'odd'",
    "price BETWEEN 3 AND 12 AND NOT category = 'odd'",
    "keywords CONTAINS 'SPACE' OR price >= 17",
    "path CONTAINS 'C' AND width > 300",  # no Milvus form: decided by the evaluator alone
    "category != 'odd' AND NOT (price IN (2, 4, 6.0) OR format = 'JPEG')",
    "price < 0",
]


def index(*args: str) -> subprocess.CompletedProcess:
    """`lookalike index` on folders that hold broken files: exit 3 (files were skipped)."""
    proc = run("index", *args, check=False)
    assert proc.returncode == 3, proc.stderr
    return proc


def ranking(proc: subprocess.CompletedProcess) -> list[tuple[str, float]]:
    return [
        (Path(h["path"]).name, round(h["score"], 4)) for h in json.loads(proc.stdout)["results"]
    ]


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    server = MilvusServer(tmp_path_factory.mktemp("milvus") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """20 real photos (scikit-image), two broken files, a CSV catalogue; cropped queries."""
    root = tmp_path_factory.mktemp("photos")
    originals, variants = write_samples(root, variants=("crop80",))
    folder = root / "photos"
    (folder / "truncated.jpg").write_bytes((folder / "astronaut.png").read_bytes()[:300])
    (folder / "notes.png").write_text("not an image")
    sidecar = root / "catalogue.csv"
    with sidecar.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "category", "price", "keywords"])
        for i, path in enumerate(originals):
            tags = "space;Rocket" if path.stem in ("rocket", "hubble_deep_field") else ""
            writer.writerow([f"photos/{path.name}", "odd" if i % 2 else "even", i, tags])
    return folder, sidecar, variants


@pytest.fixture(scope="module")
def both(milvus, photos, tmp_path_factory):
    """The same folder indexed by the same command into a folder and into Milvus."""
    folder, sidecar, _ = photos
    places = {
        "folder": str(tmp_path_factory.mktemp("emb") / "coll"),
        "milvus": milvus.uri("photos"),
    }
    reports = on_both(places, lambda place: index(
        str(folder), "-c", place, "--attributes", ATTRIBUTES, "--metadata", str(sidecar), "--json"
    ))  # fmt: skip
    return places, {name: json.loads(p.stdout) for name, p in reports.items()}


def on_both(places: dict[str, str], action):
    """`action(place)` for the folder and the Milvus collection at once (the two CLI processes
    overlap their start-up and the server's waits): {"folder": result, "milvus": result}."""
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(action, place) for name, place in places.items()}
        return {name: future.result() for name, future in futures.items()}


# -- no server needed ----------------------------------------------------------------------------


def test_store_uri_is_parsed_or_refused_clearly():
    address = parse_store_uri("milvus://db.example:19531/shop_photos")
    assert (address.host, address.port, address.name) == ("db.example", 19531, "shop_photos")
    assert parse_store_uri(Path("milvus://h/x")).port == 19530  # a Path keeps one slash
    for bad, says in [
        ("milvus://h:99999/x", "port"),
        ("milvus://h:19530/", "collection name"),
        ("milvus://h:19530/a-b", "collection name"),
        ("milvus:///x", "server"),
    ]:
        with pytest.raises(CollectionError, match=says):
            parse_store_uri(bad)


def test_filter_literals_are_escaped_never_pasted():
    hostile = 'x" or id > 0 or path == "'
    flt = translate(f"category = '{hostile.replace(chr(39), chr(39) * 2)}'")
    assert flt.expression == 'metadata["category"] == ' + quote(hostile)
    assert '\\" or id > 0' in flt.expression  # the quote stays inside the literal
    assert quote("é\n\\😀") == '"\\u00e9\\u000a\\\\\\U0001f600"'
    with pytest.raises(QueryError, match="position"):
        translate("category = 'shirt' OR")


def test_text_rows_rebuilt_in_memory_are_the_catalogs(tmp_path):
    """The full-text rows TextSnapshot builds from records hold what catalog.sqlite's hold
    (the same keywords and metadata strings), so BM25 and the text distances are the same.
    (The order of the items in a row follows the catalog's write path: `index` sorts the
    keywords, as the snapshot does; `import` keeps the metadata's order.)"""
    rng = np.random.default_rng(2)
    metadata = [
        {"keywords": ["sky", "Blue", "a b"], "title": "Blue sky", "tags": {"x": ["b a"]}},
        {"keywords": ["b", "a"], "note": "b a", "n": 3},
        {"title": "sky"},
        {},
    ]
    with Collection.create(tmp_path / "coll", attributes=["color"]) as coll:
        dim = coll.extractors["color"].dim
        paths = [f"/t/{i}.png" for i in range(len(metadata))]
        coll.add_vectors(paths, {"color": rng.random((4, dim), np.float32)}, metadata)
        records = coll.catalog.get_many(range(1, 5))
        snapshot = TextSnapshot((i, r.metadata, r.keywords) for i, r in records.items())
        rows = "SELECT rowid, text FROM search_text ORDER BY rowid"
        items = [(i, sorted(t.split(" ; "))) for i, t in snapshot.query(rows)]
        assert items == [(i, sorted(t.split(" ; "))) for i, t in coll.catalog.query(rows)]
        assert snapshot.keyword_vocabulary() == coll.catalog.keyword_vocabulary()
        for words in ['"Blue sky"', "sky", "bl*", "b", "a sky"]:
            mine, theirs = (text_match(c, words, semantic=False) for c in (snapshot, coll.catalog))
            assert np.array_equal(mine.ids, theirs.ids), words
            assert np.array_equal(mine.distances, theirs.distances), words
            assert 0 < np.count_nonzero(mine.distances < 100) < 4, words


# -- one backend, the other: same answers --------------------------------------------------------


def test_index_reports_the_same_on_both(both):
    _, reports = both
    for report in reports.values():
        assert len(report["added"]) == 20
        assert sorted(Path(s["path"]).name for s in report["skipped"]) == [
            "notes.png",
            "truncated.jpg",
        ]
    again = index(str(Path(reports["milvus"]["added"][0]).parent), "-c",
                both[0]["milvus"], "--json")  # fmt: skip
    assert len(json.loads(again.stdout)["unchanged"]) == 20  # a re-run reads nothing again


def hits(results) -> list[tuple[str, float]]:
    return [(Path(h.path).name, round(h.score, 4)) for h in results]


def test_search_matches_embedded_ranking_and_scores(both, photos):
    places, _ = both
    with Collection.open(places["folder"]) as folder, Collection.open(places["milvus"]) as milvus:
        assert isinstance(milvus, MilvusCollection)
        for where in FILTERS:
            for query in photos[2][::4]:
                expected = hits(folder.search(str(query), top_k=5, where=where))
                found = milvus.search(str(query), top_k=5, where=where)
                assert hits(found) == expected, where
                near = milvus.nearest(str(query), top_k=5, where=where)  # no record read
                assert near.ids.tolist() == [h.id for h in found], where
                assert near.scores.tolist() == [h.score for h in found], where
            assert (expected == []) == (where == "price < 0"), where  # every other one matches
        where = "category = 'odd' AND price > 10"  # a filter alone: every match scores 0
        only = sorted(hits(milvus.query(where=where, top_k=None)))
        assert only == sorted(hits(folder.query(where=where, top_k=None))) and len(only) == 5


@pytest.mark.slow  # `pytest --long`: weights, threshold and id queries over the CLI on both
def test_weights_threshold_and_ids_match(both, photos):
    places, _ = both
    query = str(photos[2][4])
    args = ["search", query, "--weights", "color=0.7,texture=0.3", "--threshold", "80", "--json",
            "--where", "keywords CONTAINS 'SPACE' OR price >= 10"]  # fmt: skip
    found = on_both(places, lambda place: ranking(run(*args, "-c", place)))
    folder, milvus = found["folder"], found["milvus"]
    assert milvus == folder and folder
    first = json.loads(run("search", query, "--json", "-c", places["milvus"]).stdout)["results"][0]
    by_id = run("search", f"id:{first['id']}", "--top", "3", "--json", "-c", places["milvus"])
    assert json.loads(by_id.stdout)["results"][0]["id"] == first["id"]  # its own best match


def same_but_ties(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> bool:
    """The same scores in the same order and the same images at each score; ties are ordered
    by id, which differs between backends, so the last score's group may hold others."""
    if [score for _, score in got] != [score for _, score in expected]:
        return False
    last = expected[-1][1] if expected else None

    def groups(ranked):
        return sorted((score, name) for name, score in ranked if score != last)

    return groups(got) == groups(expected)


@pytest.mark.slow  # `pytest --long`: colour queries scan every signature
def test_sketch_layout_and_colours_match_embedded(both, tmp_path):
    """Colour queries without an example image: the planner scores every image's perceptual
    signature, read from Milvus in one scan; same hits, same scores as the folder."""
    places, _ = both
    grid = tmp_path / "sketch.txt"
    grid.write_text("blue blue\ngrey grey\n")
    args = ["search", "--sketch", str(grid), "--top", "5", "--json"]
    found = on_both(places, lambda place: ranking(run(*args, "-c", place)))
    folder, milvus = found["folder"], found["milvus"]
    assert same_but_ties(milvus, folder) and len(folder) == 5
    queries = [
        {"layout": "top blue and bottom grey", "where": "price > 2"},
        {"colors": "red then yellow", "top_k": 6},
        {"layout": "top green", "where": "price < 0"},
        {"sketch": "blue blue\ngrey grey\n", "top_k": 1},
        {"sketch": "yellow yellow\n. .", "top_k": 1},  # mostly open cells
        {"sketch": "green . . brown\n. grey grey .\n", "top_k": 2, "where": "price > 3"},
        {"sketch": "white black", "top_k": 1, "where": "NOT path CONTAINS 'hubble'"},
        {"sketch": "red", "top_k": 3, "where": "price < 0"},
    ]
    with Collection.open(places["folder"]) as embedded, Collection.open(places["milvus"]) as far:
        for query in queries:
            expected = hits(embedded.query(**query))
            got = far.query(**query)
            assert same_but_ties(hits(got), expected), query
            assert (expected == []) == ("price < 0" in str(query)), query


@pytest.mark.slow  # `pytest --long`: each text search loads the sentence model
def test_text_and_mixed_queries_match_embedded(both, photos, tmp_path):
    """Words (keywords, metadata strings, phrases, prefixes, expansion) scored by the folder's
    own FTS5 scoring over rows rebuilt from Milvus; an example image fused with text, a
    sketch, a layout or colours by part weights, Milvus searching the image stage."""
    places, _ = both
    query = str(photos[2][4])
    args = ["search", query, "-t", "red space rocket", "-k", "6", "--json"]  # three parts
    found = on_both(places, lambda place: ranking(run(*args, "-c", place)))
    assert same_but_ties(found["milvus"], found["folder"]) and found["folder"]
    grid = tmp_path / "sketch.txt"
    grid.write_text("blue blue\ngrey grey\n")
    queries = [
        {"text": "rocket"},
        {"text": "space", "where": "price > 2"},
        {"text": "odd", "top_k": None},  # a metadata string: every odd-priced image
        {"text": '"rocket space"'},  # a phrase across two keywords (their stored order)
        {"text": "roc*", "where": "price > 12"},  # rocket (17), not hubble (11)
        {"text": 'x" OR id > 0 OR path == "'},  # hostile words: matched as words, nothing else
        {"text": "space", "where": "price < 0"},
        {"image": query, "sketch": grid.read_text(), "top_k": 5},
        {"image": query, "layout": "top blue", "where": "price > 2",
         "part_weights": "image=0.8,layout=0.2"},
        {"image": query, "colors": "red then yellow", "text": "space", "top_k": 8},
        {"image": query, "text": "rocket", "weights": "color=0.7,texture=0.3", "threshold": 60},
    ]  # fmt: skip
    with Collection.open(places["folder"]) as embedded, Collection.open(places["milvus"]) as far:
        for query_ in queries:
            expected = embedded.query(**query_)
            got = far.query(**query_)
            assert same_but_ties(hits(got), hits(expected)), query_
            assert got.explain["parts"] == expected.explain["parts"], query_
            assert (hits(expected) == []) == ("price < 0" in str(query_)), query_
        assert len(far.query(text="odd", top_k=None)) == 10


@pytest.mark.slow  # `pytest --long`: indexes with the CNN, loads torch and the sentence model
def test_zero_shot_text_matches_embedded(milvus, photos, tmp_path):
    """With the CNN's classifier, words also find what images show (ConSE over each image's
    top classes, kept beside its deep signature on Milvus): same hits and scores as a folder,
    and a metadata update keeps the classes. (Few images, one CLI search: every process that
    searches text here loads torch and the sentence model.)"""
    few = tmp_path / "few"
    few.mkdir()
    for name in ("chelsea.png", "coffee.png", "coins.png", "rocket.png", "astronaut.png"):
        (few / name).write_bytes((photos[0] / name).read_bytes())
    places = {"folder": str(tmp_path / "coll"), "milvus": milvus.uri("classes")}
    on_both(places, lambda place: run("index", str(few), "-c", place, "--attributes", "deep"))
    for place in places.values():
        with Collection.open(place) as coll:
            coll.update(str(few / "chelsea.png"), metadata={"pet": "tabby"})
    cli = ranking(run("search", "--text", "kitten", "--json", "-c", places["milvus"]))
    assert cli[0][0] == "chelsea.png" and len(cli) == 5  # no word says kitten: its classes do
    with Collection.open(places["folder"]) as embedded, Collection.open(places["milvus"]) as far:
        expected = [(name, round(score, 3)) for name, score in hits(embedded.query(text="kitten"))]
        assert same_but_ties(cli, expected)  # the CLI prints scores to 3 decimals
        for query in [
            {"text": "tabby", "top_k": 3},  # the updated metadata and the classes
            {"image": str(few / "coffee.png"), "text": "cat", "part_weights": "image=0.3,text=0.7"},
        ]:
            got = far.query(**query)
            assert same_but_ties(hits(got), hits(embedded.query(**query))), query
            assert got.explain["text"]["zero_shot"]["images"] == 5, query
        far.drop()


def test_bad_input_gets_the_same_clear_error(both, photos):
    """A bad filter and a missing image; `--long` adds a bad --top and a broken query file."""
    places, _ = both
    query = str(photos[2][0])
    cases = [["search", query, "--where", "price >"], ["remove", "/no/such/image.png"]]
    if long_run():
        cases += [["search", query, "--top", "0"], ["search", str(photos[0] / "notes.png")]]
    for args in cases:
        found = on_both(places, lambda place, args=args: run(*args, "-c", place, check=False))
        errors = [found["folder"], found["milvus"]]
        assert [e.returncode for e in errors] == [1, 1], args
        assert errors[0].stderr == errors[1].stderr, args
        assert "Traceback" not in errors[1].stderr and errors[1].stderr.count("\n") == 1
    for args in [["check"], ["duplicates"]][: 2 if long_run() else 1]:  # a folder's only
        refused = run(*args, "-c", places["milvus"], check=False)
        assert refused.returncode == 1 and "not available on the Milvus backend" in refused.stderr
        assert refused.stderr.count("\n") == 1, args


def test_update_and_remove_through_the_cli(milvus, photos, tmp_path):
    """On six of the photos and a broken file: the edits do not depend on the corpus's size."""
    _, sidecar, variants = photos
    folder = tmp_path / "photos"
    folder.mkdir()
    keep = {"coffee.png", "chelsea.png", "rocket.png", "camera.png", "coins.png", "truncated.jpg"}
    for name in keep:
        (folder / name).write_bytes((photos[0] / name).read_bytes())
    rows = sidecar.read_text().splitlines(keepends=True)
    (tmp_path / "catalogue.csv").write_text(
        "".join(row for row in rows if row.split(",")[0].removeprefix("photos/") in keep | {"path"})
    )
    uri = milvus.uri("edits")
    index(str(folder), "-c", uri, "--attributes", "color,texture", "--metadata",
          str(tmp_path / "catalogue.csv"))  # fmt: skip
    target = str(folder / "coffee.png")
    run("update", target, "-c", uri, "--metadata", '{"price": 99, "on_sale": true}')
    with Collection.open(uri) as coll:
        assert coll.get(target).metadata == {"category": "odd", "price": 99, "on_sale": True}
        assert coll.search(str(variants[5]), top_k=1, where="on_sale = TRUE")[0].path == target
        before = len(coll)
    run("remove", target, "-c", uri)
    with Collection.open(uri) as coll:  # a process after the writer's: the delete is seen
        assert len(coll) == before - 1
        assert all(h.path != target for h in coll.search(target, top_k=30))
        with pytest.raises(CollectionError, match="no image"):
            coll.get(target)
        coll.drop()


def test_an_import_to_milvus_shows_its_progress_on_a_terminal(milvus, tmp_path):
    """`lookalike import` into a Milvus collection reports the images written, 1,000 at a
    time, as the folder's import reports its rows."""
    from terminal import run_on_a_terminal

    count = 1_500
    file = tmp_path / "vectors.npz"
    colours = np.random.default_rng(6).random((count, 76)).astype(np.float32)
    np.savez(file, path=np.array([f"/m/{i}.jpg" for i in range(count)]), color=colours)
    uri = milvus.uri("imported_progress")
    shown = run_on_a_terminal("import", str(file), "-c", uri)
    assert shown.returncode == 0, shown.shown
    assert "importing" in shown.shown and f"{count}/{count}" in shown.shown, shown.shown
    with Collection.open(uri) as coll:
        assert len(coll) == count
        coll.drop()


@pytest.mark.slow  # `pytest --long`: export, import and copy through the CLI
def test_import_copy_and_back_without_extracting(both, photos, tmp_path):
    places, _ = both
    query = str(photos[2][8])
    exported = tmp_path / "vectors.npz"
    run("export", str(exported), "-c", places["folder"])
    imported = places["milvus"].rsplit("/", 1)[0] + "/imported"
    run("import", str(exported), "-c", imported)
    refused = run("import", str(exported), "-c", imported, check=False)
    assert refused.returncode == 1 and "already in the collection" in refused.stderr
    copied = places["milvus"].rsplit("/", 1)[0] + "/copied"
    out = run("copy", places["folder"], copied, "--json")
    assert json.loads(out.stdout) == {"copied": 20, "skipped": 0}
    back = tmp_path / "back"
    run("copy", copied, str(back))
    again = copy_collection(places["folder"], copied)  # a re-run resumes: nothing to copy
    assert (again.copied, again.skipped) == (0, 20)
    rankings = []
    for place in (places["folder"], imported, copied, str(back)):
        with Collection.open(place) as coll:
            rankings.append(hits(coll.search(query, top_k=10, where="price > 2")))
    assert rankings[0] and all(r == rankings[0] for r in rankings)
    with Collection.open(back) as coll:  # facts and metadata travelled; nothing re-extracted
        record = coll.get(str(photos[0] / "rocket.png"))
        assert record.width > 0 and record.metadata["keywords"] == ["space", "Rocket"]
    for uri in (imported, copied):
        with Collection.open(uri) as coll:
            coll.drop()


@pytest.mark.slow  # `pytest --long`: read-your-writes rounds
def test_a_write_is_seen_by_the_next_search_and_a_delete_never_comes_back(milvus):
    """A search's reads wait for one server timestamp taken as it begins (store.snapshot), not
    each for Milvus's next time tick: still, whatever was acknowledged before is seen."""
    rng = np.random.default_rng(5)
    with Collection.create(milvus.uri("fresh"), attributes=["color", "texture"]) as coll:
        dims = {name: ex.dim for name, ex in coll.extractors.items()}
        stay = [f"/fresh/stay{i}.png" for i in range(20)]
        kept = coll.add_vectors(stay, {n: rng.random((20, d), np.float32) for n, d in dims.items()})
        for round_ in range(3):
            path = f"/fresh/{round_}.png"
            vectors = {n: rng.random((1, d), dtype=np.float32) for n, d in dims.items()}
            [image_id] = coll.add_vectors([path], vectors, [{"round": round_}])
            assert [h.path for h in coll.search(f"id:{image_id}", top_k=1)] == [path]
            assert [h.path for h in coll.query(where=f"round = {round_}")] == [path]
            coll.remove(path)
            assert path not in {h.path for h in coll.search(f"id:{kept[round_]}", top_k=30)}
            assert list(coll.query(where=f"round = {round_}")) == []
        coll.drop()


# -- the filter translation against Milvus itself -------------------------------------------------

VALUES = st.one_of(
    st.integers(-3, 3), st.sampled_from([0.5, 2.0, -1.5]), st.booleans(), st.none(),
    st.sampled_from(["a", "B", "ab", "é", 'q"'])
)  # fmt: skip
FIELDS = ["x", "y", "nested.z", "width", "format"]
OPERATORS = ["=", "!=", "<", "<=", ">", ">="]


def _literal(value):
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


@st.composite
def filters(draw, depth=2):
    if depth == 0 or draw(st.booleans()):
        field = draw(st.sampled_from(FIELDS))
        kind = draw(st.sampled_from(["cmp", "in", "between", "contains", "null"]))
        value, other = (_literal(draw(VALUES.filter(lambda v: v is not None))) for _ in "ab")
        if kind == "cmp":
            return f"{field} {draw(st.sampled_from(OPERATORS))} {value}"
        if kind == "in":
            return f"{field} IN ({value}, {other})"
        if kind == "between":
            return f"{field} BETWEEN {value} AND {other}"
        if kind == "contains":
            return f"{field} {draw(st.sampled_from(['', 'NOT ']))}CONTAINS {value}"
        return f"{field} IS {draw(st.sampled_from(['', 'NOT ']))}NULL"
    left, right = draw(filters(depth - 1)), draw(filters(depth - 1))
    shape = draw(st.sampled_from(["AND", "OR", "NOT"]))
    return f"NOT ({left})" if shape == "NOT" else f"({left}) {shape} ({right})"


@pytest.fixture(scope="module")
def typed_records(milvus):
    """Images whose metadata mixes every JSON kind, stored by add_vectors."""
    rng = np.random.default_rng(3)
    values = [-3, -1, 0, 1, 2, 3, 0.5, 2.0, -1.5, True, False, None, "a", "B", "ab", "é", 'q"',
              [1, "A"], {"k": 1}]  # fmt: skip
    metadata = []
    for _ in range(60):
        meta = {}
        for key in ("x", "y"):
            if rng.random() < 0.8:
                meta[key] = values[rng.integers(len(values))]
        if rng.random() < 0.5:
            meta["nested"] = {"z": values[rng.integers(len(values))]}
        metadata.append(meta)
    coll = Collection.create(milvus.uri("typed"), attributes=["color"])
    dim = coll.extractors["color"].dim
    paths = [f"/typed/{i}.png" for i in range(60)]
    coll.add_vectors(paths, {"color": rng.random((60, dim), dtype=np.float32)}, metadata)
    records = [{"path": p, "width": 0, "format": "", "metadata": m, "keywords": []}
               for p, m in zip(paths, metadata, strict=True)]  # fmt: skip
    yield coll, records
    with contextlib.suppress(StoreUnavailable):  # the outage test ends with the server killed
        coll.drop()
    coll.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=filters())
def test_milvus_expression_never_drops_an_admitted_image(typed_records, text):
    """LOOKALIKE_FUZZ_EXAMPLES raises the number of filters tried (default 30)."""
    coll, records = typed_records
    with coll.store.snapshot():  # the example's reads share one wait for the server's tick
        check_expression(coll, records, text)


def check_expression(coll, records, text: str) -> None:
    """Milvus's expression admits every image the filter admits (exactly where it says it is
    exact), and the search answers what the filter language's evaluator answers."""
    flt = translate(text)
    wanted = {r["path"] for r in records if evaluate_filter(text, r)}
    if flt.nothing:
        assert wanted == set()
        return
    rows = [r for batch in coll.store.scan(coll.first, ["path"], flt.expression) for r in batch]
    narrowed = {r["path"] for r in rows}
    assert wanted <= narrowed, flt.expression  # a sound superset
    if flt.exact:
        assert narrowed == wanted, flt.expression
    found = coll.query(where=text, top_k=None)
    assert {h.path for h in found} == wanted


# -- outages -------------------------------------------------------------------------------------


def test_outage_names_the_server_and_loses_nothing_acknowledged(milvus, photos):
    """Runs last of the server tests: it ends with the server killed."""
    folder, _, variants = photos
    uri = milvus.uri("outage")
    every = [p for p in sorted(folder.glob("*.png")) if p.name != "notes.png"][:10]
    with Collection.create(uri, attributes=["color", "texture"]) as coll:
        acknowledged = coll.add(every[:5], jobs=1).added
        assert len(acknowledged) == 5
        coll.store.timeout = 3.0  # how long a call waits for a server that stopped answering
        milvus.pause()  # the server stops answering mid-run
        try:
            with pytest.raises(StoreUnavailable, match=milvus.address):
                coll.add(every, jobs=1)
        finally:
            milvus.resume()
        coll.store.timeout = TIMEOUT_S
        assert {coll.get(p).path for p in acknowledged} == set(acknowledged)
        report = coll.add(every, jobs=1)  # the re-run finishes the job, nothing doubled
        assert len(coll) == 10 and len(report.added) + len(report.unchanged) == 10
        paths = [r["path"] for rows in coll.store.scan(coll.first, ["path"]) for r in rows]
        assert sorted(paths) == sorted(map(str, every))
    milvus.kill()
    down = run("search", str(variants[0]), "-c", uri, check=False)
    assert down.returncode == 1 and milvus.address in down.stderr
    assert "Traceback" not in down.stderr and down.stderr.count("\n") == 1


def test_no_server_is_a_clear_error(tmp_path):
    from milvus_server import free_port

    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{(port := free_port())}"):
        Collection.open(f"milvus://127.0.0.1:{port}/photos")
    with pytest.raises(LookalikeError):
        MilvusCollection.open("milvus://127.0.0.1:1/x")
