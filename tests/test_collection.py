"""Collections on disk: add, re-add, update, remove, prune, reopen, survive a kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSIC, make_image_dir, solid
from PIL import Image

from lookalike.api import Collection
from lookalike.errors import CollectionError, DecodeError, WeightsError


@pytest.fixture
def coll(tmp_path):
    with Collection.create(tmp_path / "coll", attributes=CLASSIC) as collection:
        yield collection


@pytest.fixture(scope="module")
def indexed_once(tmp_path_factory) -> tuple[Path, Path]:
    """The synthetic images added once (default jobs), for the tests that search and edit
    rather than check adding: each gets a copy (`indexed`), the images stay where they are."""
    base = tmp_path_factory.mktemp("indexed")
    images = make_image_dir(base / "images")
    with Collection.create(base / "coll", attributes=CLASSIC) as collection:
        assert len(collection.add([images]).added) == 6
    return base / "coll", images


@pytest.fixture
def indexed(indexed_once, tmp_path) -> tuple[Collection, Path]:
    template, images = indexed_once
    shutil.copytree(template, tmp_path / "coll")
    with Collection.open(tmp_path / "coll") as collection:
        yield collection, images


def test_add_folder_recursively_and_search(coll, image_dir):
    report = coll.add([image_dir])
    assert len(report.added) == 6 and not report.failed  # notes.txt is not an image file
    assert any(p.endswith("sub/green.webp") for p in report.added)
    results = coll.search(image_dir / "red.png", weights="color=1", top_k=3)
    assert [Path(h.path).name for h in results][:2] == ["red.png", "red2.jpg"]
    assert results[0].score == pytest.approx(0, abs=1e-6)
    assert set(results[0].breakdown) == {"color"}
    assert results.weights == {"color": 1.0}


def test_results_carry_breakdown_and_threshold(indexed):
    coll, image_dir = indexed
    results = coll.search(
        image_dir / "red.png",
        weights="color=0.5,texture=0.5,location=0.2",
        top_k=None,
        threshold=20,
    )
    assert results.hits and all(h.similar for h in results)
    assert all(h.score <= 20 for h in results)
    for hit in results:
        total = sum(results.weights[a] * d for a, d in hit.breakdown.items())
        assert hit.score == pytest.approx(total)
    assert "blue.gif" not in {Path(h.path).name for h in results}


def test_rerun_only_processes_what_changed(coll, image_dir):
    coll.add([image_dir])
    again = coll.add([image_dir])
    assert len(again.unchanged) == 6 and not again.added and not again.updated
    # touch without changing content: still unchanged
    os.utime(image_dir / "red.png", (time.time() + 5, time.time() + 5))
    assert len(coll.add([image_dir]).unchanged) == 6
    # real change: updated, and the new content is what is searched
    solid((10, 240, 10)).save(image_dir / "red.png")
    report = coll.add([image_dir])
    assert [Path(p).name for p in report.updated] == ["red.png"]
    hit = coll.search(image_dir / "sub" / "green.webp", weights="color=1", top_k=2)
    assert "red.png" in {Path(h.path).name for h in hit}


def test_prune_drops_files_that_are_gone(coll, image_dir):
    coll.add([image_dir])
    (image_dir / "blue.gif").unlink()
    assert len(coll.add([image_dir]).removed) == 0  # not without asking
    report = coll.add([image_dir], prune=True)
    assert [Path(p).name for p in report.removed] == ["blue.gif"]
    assert len(coll) == 5


def test_bad_files_are_reported_and_the_rest_goes_on(coll, image_dir):
    coll.add([image_dir / "red.png"])
    bad = image_dir / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.jpg").write_text("hello")
    good = image_dir / "blue.gif"
    data = (image_dir / "red2.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
    report = coll.add([bad, good, image_dir / "missing.png"])
    reasons = {Path(p).name: r for p, r in report.failed}
    assert set(reasons) == {"empty.png", "text.jpg", "truncated.jpg", "missing.png"}
    assert "empty" in reasons["empty.png"] and "not an image" in reasons["text.jpg"]
    assert "no such file" in reasons["missing.png"]
    assert [Path(p).name for p in report.added] == ["blue.gif"]
    assert len(coll) == 2  # what was stored before is still there


def test_update_remove_and_get(indexed):
    coll, image_dir = indexed
    red_id = coll.get(str(image_dir / "red.png")).id
    coll.update(red_id, metadata={"title": "a red square", "keywords": ["red", "square"]})
    record = coll.get(red_id)
    assert record.metadata["title"] == "a red square"
    assert {k for k, s, _ in record.keywords if s == "user"} == {"red", "square"}
    blue = (image_dir / "blue.gif").read_bytes()
    coll.update(red_id, source=blue)
    top = coll.search(image_dir / "blue.gif", weights="color=1", top_k=2)
    assert red_id in {h.id for h in top}
    assert coll.get(red_id).metadata["title"] == "a red square"  # metadata kept
    assert coll.remove([red_id, str(image_dir / "blue.gif")]) == 2
    with pytest.raises(CollectionError):
        coll.get(red_id)
    assert len(coll) == 4


def test_search_by_bytes_array_url_and_stored_id(indexed):
    coll, image_dir = indexed
    red_id = coll.get(str(image_dir / "red.png")).id
    by_bytes = coll.search((image_dir / "red.png").read_bytes(), weights="color=1", top_k=1)
    by_array = coll.search(
        np.asarray(Image.open(image_dir / "red.png")), weights="color=1", top_k=1
    )
    by_id = coll.search(red_id, weights="color=1", top_k=1)
    assert by_bytes[0].id == by_array[0].id == by_id[0].id == red_id
    with pytest.raises(DecodeError, match="cannot fetch"):
        coll.search("http://127.0.0.1:9/none.png", weights="color=1")


def test_add_bytes_keeps_the_original(coll, image_dir):
    image_id = coll.add_bytes(
        (image_dir / "red.png").read_bytes(), "upload.png", metadata={"category": "test"}
    )
    record = coll.get(image_id)
    assert Path(record.path).is_file() and Path(record.path).parent.name == "uploads"
    assert record.metadata == {"category": "test", "filename": "upload.png"}
    with pytest.raises(DecodeError):
        coll.add_bytes(b"garbage", "x.png")
    assert len(coll) == 1


def test_reopen_without_rebuilding(tmp_path, image_dir):
    with Collection.create(tmp_path / "c", attributes=CLASSIC) as coll:
        coll.add([image_dir])
        before = coll.search(image_dir / "red.png", top_k=6).to_dict()
    with Collection.open(tmp_path / "c") as coll:
        assert len(coll) == 6
        assert coll.add([image_dir]).unchanged
        assert coll.search(image_dir / "red.png", top_k=6).to_dict() == before


def test_open_errors(tmp_path):
    with pytest.raises(CollectionError, match="no collection"):
        Collection.open(tmp_path / "nothing")
    Collection.create(tmp_path / "c", attributes=["color"]).close()
    with pytest.raises(CollectionError, match="already exists"):
        Collection.create(tmp_path / "c")
    with Collection.open(tmp_path / "c") as coll, pytest.raises(WeightsError, match="unknown"):
        coll.search(np.zeros((8, 8, 3), np.uint8), weights="texture=1")


def test_stale_signatures_are_re_extracted(tmp_path, image_dir, monkeypatch):
    with Collection.create(tmp_path / "c", attributes=["color", "texture"]) as coll:
        coll.add([image_dir])
    from lookalike.features.texture import TextureExtractor

    monkeypatch.setattr(TextureExtractor, "version", "changed")
    with Collection.open(tmp_path / "c") as coll:
        assert coll.info()["stale"] == 6
        report = coll.add([image_dir], jobs=1)  # the patched version lives in this process only
        assert len(report.updated) == 6
        assert coll.info()["stale"] == 0


KILL_SCRIPT = """
import sys
from lookalike.api import Collection
coll = Collection.open_or_create(sys.argv[1], attributes=["color", "texture"])
coll.add([sys.argv[2]], jobs=1, progress=lambda d, t, p: print(d, flush=True))
"""


def test_killed_indexing_leaves_an_openable_collection(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray((rng.random((200, 200, 3)) * 255).astype(np.uint8)).save(
            folder / f"{i}.png"
        )
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "c"), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # wait until a few images are committed, then kill hard
        if int(line) >= 5:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Collection.open(tmp_path / "c") as coll:
        stored = len(coll)
        assert 4 <= stored < 60
        assert coll.info()["stale"] == 0  # every stored image has all its signatures
        report = coll.add([folder])
        assert len(report.unchanged) == stored and len(report.added) == 60 - stored


def test_replacing_an_upload_keeps_the_id_and_swaps_the_original(coll, image_dir):
    image_id = coll.add_bytes((image_dir / "red.png").read_bytes(), "a.png")
    old = Path(coll.get(image_id).path)
    coll.update(image_id, source=(image_dir / "blue.gif").read_bytes(), name="b.gif")
    new = Path(coll.get(image_id).path)
    assert new != old and new.is_file() and not old.exists()  # no orphan left behind
    assert coll.search(image_dir / "blue.gif", weights="color=1", top_k=1)[0].id == image_id
    assert coll.remove(image_id) == 1 and not new.exists()


def test_search_and_add_by_url_on_loopback(coll, image_dir):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(image_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        report = coll.add([f"{base}/red.png", f"{base}/missing.png", str(image_dir / "blue.gif")])
        # workers finish in any order: the report lists what was added, not in input order
        assert sorted(report.added) == sorted([f"{base}/red.png", str(image_dir / "blue.gif")])
        assert "missing.png" in report.failed[0][0] and "cannot fetch" in report.failed[0][1]
        hit = coll.search(f"{base}/red.png", weights="color=1", top_k=1)[0]
        assert hit.path == f"{base}/red.png" and hit.score == pytest.approx(0, abs=1e-6)
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "attributes,expected",
    [
        (["color", "perceptual"], {"color": 1.0}),
        (["perceptual"], {"perceptual": 1.0}),
        (["color", "color_location"], {"color": 0.6, "color_location": 0.4}),
        (["texture", "shape"], {"texture": 0.35 / 0.5, "shape": 0.15 / 0.5}),
    ],
)
def test_any_attribute_set_searches_with_default_weights(tmp_path, image_dir, attributes, expected):
    with Collection.create(tmp_path / "c", attributes=attributes) as coll:
        assert len(coll.search(image_dir / "red.png")) == 0  # an empty collection answers
        coll.add([image_dir])
        results = coll.search(image_dir / "red.png", top_k=None)
        assert results.weights == pytest.approx(expected)
        itself = next(h for h in results if Path(h.path).name == "red.png")
        assert itself.score == pytest.approx(0, abs=1e-6)  # (flat images tie on texture)
        assert results[0].score == pytest.approx(0, abs=1e-6)


def test_empty_collection_answers_every_query_kind(tmp_path):
    with Collection.create(tmp_path / "c", attributes=["color", "perceptual"]) as coll:
        for kind in (
            {"text": "cat"},
            {"layout": "top blue"},
            {"sketch": [["red"]]},
            {"colors": "red"},
            {"where": "price < 3"},
        ):
            assert len(coll.query(**kind)) == 0


def test_bad_default_weights_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(WeightsError, match="unknown attribute"):
        Collection.create(tmp_path / "c", attributes=["color"], default_weights={"deep": 1})
    assert not (tmp_path / "c").exists()


def test_opening_while_another_process_migrates_says_busy(tmp_path, monkeypatch):
    """A first open that must migrate, while another process holds the write lock (as a 1M
    collection's backfill does for minutes), is a clear 'busy' error, not 'not usable'."""
    import sqlite3

    from lookalike.store import catalog

    Collection.create(tmp_path / "c", attributes=["color"]).close()
    file = tmp_path / "c" / "catalog.sqlite"
    with sqlite3.connect(file) as conn:  # back to schema 4: the next open migrates
        for name in ("meta_values_insert", "meta_values_update", "meta_values_delete"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP INDEX keywords_folded")
        conn.execute("DROP TABLE meta_values")
        conn.execute("PRAGMA user_version = 4")
    holder = subprocess.Popen(  # another process in a long write transaction
        [sys.executable, "-c",
         "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
         " c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(60)", str(file)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(catalog, "BUSY_TIMEOUT_S", 0.5)
        with pytest.raises(CollectionError, match="busy for 0.5 s: another process is writing"):
            Collection.open(tmp_path / "c")
    finally:
        holder.kill()
        holder.wait()
    with Collection.open(tmp_path / "c") as coll:  # once it is free, the open migrates
        assert coll.catalog.query("PRAGMA user_version")[0][0] >= 5
