"""Ids are never reused; identical uploads are explicit; bulk vectors (API, `lookalike import`,
`lookalike export`) are validated whole and added all or nothing."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CLASSIC, solid

from lookalike.api import Collection
from lookalike.errors import LookalikeError
from lookalike.query.text import text_match
from lookalike.samples import write_samples
from lookalike.store.schema import MIGRATIONS, migrate

CLI = [sys.executable, "-m", "lookalike"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def png(rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    solid(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


# -- ids --------------------------------------------------------------------------------------


def test_a_deleted_id_is_never_handed_out_again(tmp_path):
    path = tmp_path / "c"
    with Collection.create(path, attributes=["color"]) as coll:
        first = coll.add_bytes(png((200, 0, 0)), "a.png")
        newest = coll.add_bytes(png((0, 200, 0)), "b.png")
        coll.remove(newest)
        again = coll.add_bytes(png((0, 0, 200)), "c.png")
        assert again > newest > first
        coll.remove(again)
    with Collection.open(path) as coll:  # the high-water mark survives a reopen
        after_reopen = coll.add_bytes(png((200, 200, 0)), "d.png")
        assert after_reopen > again


def test_ids_are_not_reused_through_the_cli(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    solid((250, 0, 0)).save(folder / "red.png")
    solid((0, 0, 250)).save(folder / "blue.png")
    coll = tmp_path / "coll"
    Collection.create(coll, attributes=["color"]).close()
    first = json.loads(run("index", str(folder), "-c", str(coll), "--json").stdout)
    assert len(first["added"]) == 2
    with Collection.open(coll) as c:
        newest = max(r.id for r in c.search(1, top_k=None))
    assert run("remove", str(newest), "-c", str(coll)).returncode == 0
    solid((0, 250, 0)).save(folder / "green.png")
    run("index", str(folder), "-c", str(coll))
    with Collection.open(coll) as c:
        ids = sorted(r.id for r in c.search(1, top_k=None))
    assert len(ids) == 3 and newest not in ids and max(ids) > newest


def test_migration_3_keeps_every_row_and_stops_reuse(tmp_path):
    """A schema-2 catalog (ids 1..3, id 2 deleted) opens as schema 3 with its rows, signatures,
    keywords and full text intact, and the next id is above every id it ever held."""
    file = tmp_path / "catalog.sqlite"
    conn = sqlite3.connect(file, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    for number in range(2):
        conn.executescript(
            f"BEGIN; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
        )
    for image_id in (1, 2, 3):
        conn.execute(
            "INSERT INTO images VALUES (?, ?, 1, 0, 'h', 1, 1, 'PNG', '{}', 0, 0)",
            (image_id, f"/p/{image_id}.png"),
        )
        conn.execute("INSERT INTO signatures VALUES (?, 'color', '1', ?)", (image_id, b"\0\0\0\0"))
        conn.execute("INSERT INTO keywords VALUES (?, 'cat', 'user', 1)", (image_id,))
        conn.execute("INSERT INTO search_text(rowid, text) VALUES (?, 'cat')", (image_id,))
    conn.execute("DELETE FROM search_text WHERE rowid = 2")
    conn.execute("DELETE FROM images WHERE id = 2")
    conn.execute("PRAGMA foreign_keys = ON")
    assert migrate(conn) == len(MIGRATIONS)  # 3 and every later one
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("SELECT id, origin FROM images").fetchall() == [
        (1, "decoded"),
        (3, "decoded"),
    ]
    assert conn.execute("SELECT count(*) FROM signatures").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM keywords").fetchone()[0] == 2
    assert conn.execute("SELECT rowid FROM search_text WHERE search_text MATCH 'cat'").fetchall()
    conn.execute("DELETE FROM images WHERE id = 3")
    assert conn.execute("SELECT count(*) FROM signatures").fetchone()[0] == 1  # FK still on
    new = conn.execute(
        "INSERT INTO images(path, size, mtime, sha256, width, height, format, added_at,"
        " updated_at) VALUES ('/p/4.png', 1, 0, 'h', 1, 1, 'PNG', 0, 0)"
    ).lastrowid
    assert new == 4


# -- identical uploads --------------------------------------------------------------------------


def test_identical_bytes_return_the_stored_upload_and_keep_its_metadata(tmp_path):
    with Collection.create(tmp_path / "c", attributes=["color"]) as coll:
        data = png((10, 200, 10))
        added = coll.add_bytes(data, "green.png", metadata={"owner": "ann"})
        assert added.created and coll.get(added).metadata["owner"] == "ann"
        again = coll.add_bytes(data, "other-name.jpg", metadata={"owner": "bob"})
        assert again == added and not again.created
        assert coll.get(added).metadata == {"filename": "green.png", "owner": "ann"}
        assert len(coll) == 1 and len(list((tmp_path / "c" / "uploads").iterdir())) == 1
        replaced = coll.add_bytes(
            data, "x.png", metadata={"owner": "cy"}, on_duplicate="replace-metadata"
        )
        assert replaced == added and not replaced.created
        assert coll.get(added).metadata == {"filename": "x.png", "owner": "cy"}
        with pytest.raises(LookalikeError, match="on_duplicate"):
            coll.add_bytes(data, "x.png", on_duplicate="overwrite")
        coll.remove(added)
        fresh = coll.add_bytes(data, "green.png")
        assert fresh.created and fresh > added


# -- add_vectors --------------------------------------------------------------------------------


def random_vectors(coll: Collection, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible signatures: non-negative, like the histograms most attributes are."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.random((count, extractor.dim), dtype=np.float32)
        for name, extractor in coll.extractors.items()
    }


@pytest.fixture
def classic(tmp_path) -> Collection:
    with Collection.create(tmp_path / "vectors", attributes=CLASSIC) as coll:
        yield coll


def test_add_vectors_adds_searchable_images_without_files(classic):
    vectors = random_vectors(classic, 50)
    paths = [f"/elsewhere/img{i:03}.jpg" for i in range(50)]
    metadata = [{"keywords": ["zebra"]} if i == 7 else None for i in range(50)]
    ids = classic.add_vectors(paths, vectors, metadata)
    assert len(ids) == 50 and len(classic) == 50 and ids == sorted(ids)
    hit = classic.search(ids[10], top_k=1)[0]
    assert hit.id == ids[10] and hit.score == pytest.approx(0.0, abs=1e-6)
    assert [h.id for h in classic.query(text="zebra")] == [ids[7]]
    assert classic.catalog.origin_of(ids[0]) == "imported"
    assert classic.check().healthy  # no file on disk is no problem for an imported image
    stored = classic.catalog.signature(ids[3], "color")
    assert np.array_equal(stored[1], vectors["color"][3])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda v, p, m: v.update(color=v["color"][:, :-1]), "must be 76-dimensional"),
        (lambda v, p, m: v.update(color=v["color"][:-1]), "rows for 20 paths"),
        (lambda v, p, m: v["texture"].__setitem__((19, 0), np.nan), "row 19 has non-finite"),
        (lambda v, p, m: v.update(shape=v["shape"].astype(np.float64) * 1e300), "non-finite"),
        (lambda v, p, m: v.update(deep=np.zeros((20, 1280), np.float32)), "unknown attribute"),
        (lambda v, p, m: v.pop("perceptual"), "missing attribute"),
        (lambda v, p, m: v.update(color=v["color"].astype(str)), "must be numbers"),
        (lambda v, p, m: p.__setitem__(19, p[0]), "appears twice"),
        (lambda v, p, m: p.__setitem__(5, ""), "path must be non-empty"),
        (lambda v, p, m: p.__setitem__(19, "/already/there.jpg"), "already in the collection"),
        (lambda v, p, m: m.__setitem__(3, "{not json"), "not JSON"),
        (lambda v, p, m: m.__setitem__(3, [1, 2]), "must be a JSON object"),
        (lambda v, p, m: m.append({}), "21 entries for 20 paths"),
    ],
)
def test_bad_vectors_are_refused_whole_with_the_reason(classic, damage, reason):
    classic.add_vectors(["/already/there.jpg"], random_vectors(classic, 1, seed=9))
    vectors = random_vectors(classic, 20)
    paths = [f"/batch/{i}.jpg" for i in range(20)]
    metadata: list = [{} for _ in range(20)]
    damage(vectors, paths, metadata)
    with pytest.raises(LookalikeError, match=reason):
        classic.add_vectors(paths, vectors, metadata)
    assert len(classic) == 1  # nothing of the batch was added


# -- import / export through the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("import")
    write_samples(root, variants=(), names=("astronaut", "chelsea", "coffee", "rocket", "horse"))
    coll = root / "photos.lookalike"
    Collection.create(coll, attributes=CLASSIC).close()
    proc = run("index", str(root / "photos"), "-c", str(coll))
    assert proc.returncode == 0, proc.stderr
    with Collection.open(coll) as c:  # by path: ids follow the order the workers finished in
        c.update(str(root / "photos" / "coffee.png"), metadata={"keywords": ["espresso"]})
    return coll


def ranked(coll: Path, target: str) -> list[tuple[str, float]]:
    proc = run("search", target, "-c", str(coll), "--json")
    assert proc.returncode == 0, proc.stderr
    return [(r["path"], r["score"]) for r in json.loads(proc.stdout)["results"]]


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_export_then_import_moves_a_collection_without_re_extracting(photos, tmp_path, suffix):
    from terminal import run_on_a_terminal

    exported = tmp_path / f"vectors{suffix}"
    proc = run_on_a_terminal("export", str(exported), "-c", str(photos))  # as on a terminal
    assert proc.returncode == 0 and "5 images exported" in proc.stdout, proc.shown
    # each long step is named while it runs (at 1M each takes tens of seconds)
    assert "exporting" in proc.shown and "reading color" in proc.shown, proc.shown
    assert f"writing {exported.name}" in proc.shown and "exporting" not in proc.stdout
    target = tmp_path / "copy.lookalike"
    proc = run("import", str(exported), "-c", str(target), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["added"] == 5
    with Collection.open(photos) as a, Collection.open(target) as b:
        assert set(b.attributes) == set(a.attributes)
        source_path = a.get(1).path
        target_id = b.get(source_path).id
        source_ranking = [(h.path, round(h.score, 3)) for h in a.search(1, top_k=10)]
        words = text_match(b.catalog, "espresso", semantic=False)  # the keyword's full text
        [(hit, _)] = [(i, d) for i, d in zip(words.ids, words.distances, strict=True) if d < 100]
        assert Path(b.get(int(hit)).path).name == "coffee.png"
    assert [(p, round(s, 3)) for p, s in ranked(target, f"id:{target_id}")] == source_ranking
    assert run("check", "-c", str(target)).returncode == 0
    again = run("import", str(exported), "-c", str(target))
    assert again.returncode == 1 and "already in the collection" in again.stderr
    assert len(Collection.open(target)) == 5


def test_import_refuses_a_bad_file_in_one_line_and_leaves_nothing(tmp_path):
    coll = tmp_path / "new.lookalike"
    bad = tmp_path / "bad.npz"
    np.savez(bad, path=np.array(["/a.jpg", "/b.jpg"]), color=np.array([[np.inf] * 76, [0] * 76]))
    proc = run("import", str(bad), "-c", str(coll))
    assert proc.returncode == 1 and "row 0 has non-finite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not coll.exists()

    ragged = tmp_path / "ragged.parquet"
    pq.write_table(
        pa.table({"path": ["/a.jpg", "/b.jpg"], "color": [[0.5] * 76, [0.5] * 75]}), ragged
    )
    proc = run("import", str(ragged), "-c", str(coll))
    assert proc.returncode == 1 and "rows of different lengths" in proc.stderr
    assert not coll.exists()

    text = tmp_path / "notes.npz"
    text.write_text("not a zip")
    proc = run("import", str(text), "-c", str(coll))
    assert proc.returncode == 1 and "not a readable .npz" in proc.stderr


def test_import_refuses_vectors_of_another_extractor_version(classic, tmp_path):
    file = tmp_path / "old.npz"
    vectors = random_vectors(classic, 2)
    np.savez(
        file,
        path=np.array(["/a.jpg", "/b.jpg"]),
        versions=np.array(json.dumps({"color": "0-ancient"})),
        **vectors,
    )
    classic.close()
    proc = run("import", str(file), "-c", str(classic.directory))
    assert proc.returncode == 1 and "version 0-ancient" in proc.stderr
    assert len(Collection.open(classic.directory)) == 0


def test_a_long_import_shows_its_progress_on_a_terminal(tmp_path):
    """`lookalike import` writes everything in one transaction (1M images: ~17 min): on a
    terminal it shows the rows written of all; stdout keeps its one line."""
    from terminal import run_on_a_terminal

    rng = np.random.default_rng(4)
    file = tmp_path / "vectors.npz"
    count = 300
    colours = rng.random((count, 76)).astype(np.float32)
    np.savez(file, path=np.array([f"/p/{i}.jpg" for i in range(count)]), color=colours)
    run = run_on_a_terminal("import", str(file), "-c", str(tmp_path / "coll"))
    assert run.returncode == 0, run.shown
    rows = count * 2  # each image, then its one signature
    assert "importing" in run.shown and f"{rows}/{rows}" in run.shown, run.shown
    assert run.stdout.strip().startswith(f"{count} added")
    assert len(Collection.open(tmp_path / "coll")) == count
    reported: list[tuple[int, int]] = []
    with Collection.open(tmp_path / "coll") as coll:
        more = 12_000  # past two reports' worth of rows, then the last
        coll.add_vectors(
            [f"/q/{i}.jpg" for i in range(more)],
            {"color": rng.random((more, 76)).astype(np.float32)},
            progress=lambda done, total: reported.append((done, total)),
        )
    assert reported == [(5_000, 24_000), (10_000, 24_000), (15_000, 24_000),
                        (20_000, 24_000), (24_000, 24_000)]  # fmt: skip


def test_reading_every_signature_of_an_attribute_takes_bounded_statements(photos, monkeypatch):
    """`export`, `whiten` and zero-shot read every signature of an attribute: in one statement
    that took 9.8 s of the 10 s statement budget at 1M images. They read it in chunks now,
    each its own statement, and get the same matrix, in id order, across the chunks' edges."""
    from lookalike.store import catalog as catalog_module

    with Collection.open(photos) as coll:
        extractor = coll.extractors["color"]
        rows = coll.catalog.query(
            "SELECT image_id, vector FROM signatures WHERE attribute = 'color' ORDER BY image_id"
        )
        monkeypatch.setattr(catalog_module, "SIGNATURE_CHUNK", 2)
        statements: list[str] = []
        coll.catalog._reader().conn.set_trace_callback(statements.append)
        ids, matrix = coll.catalog.signature_matrix("color", extractor.version, extractor.dim)
        coll.catalog._reader().conn.set_trace_callback(None)
    assert ids.tolist() == [r[0] for r in rows] and len(rows) == 5
    assert np.array_equal(matrix, np.stack([np.frombuffer(r[1], "<f4") for r in rows]))
    reads = [s for s in statements if "FROM signatures" in s]
    assert len(reads) == 4  # 2 + 2 + 1 rows, then an empty chunk that ends it
