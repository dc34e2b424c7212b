"""`lookalike check [--repair]` on a real collection of photos, damaged in each way it guards
against: every damage is reported, repair fixes what can be fixed, and search answers as it
did before the damage."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSIC

from lookalike.api import Collection
from lookalike.check import CHECKS, Finding, register_check
from lookalike.query.text import text_match
from lookalike.samples import TRANSFORMS, sample_photo, write_samples

CLI = [sys.executable, "-m", "lookalike"]
PROBLEMS = 2  # check's exit code when problems are found or remain


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    """20 real photos and a broken file indexed through the CLI with the default job count."""
    root = tmp_path_factory.mktemp("check")
    originals, _ = write_samples(root / "samples", variants=())
    folder = root / "samples" / "photos"
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")  # skipped, nothing else
    coll = root / "coll"
    Collection.create(coll, attributes=CLASSIC).close()
    proc = run("index", str(folder), "-c", str(coll))
    assert proc.returncode == 3, proc.stdout + proc.stderr  # 3: finished, a file was skipped
    assert "20 added" in proc.stdout and "1 skipped" in proc.stdout, proc.stdout + proc.stderr
    return coll, folder


@pytest.fixture
def coll(pristine, tmp_path) -> Path:
    """A copy of the pristine collection, plus one image added as an upload (its original
    kept under the copy's uploads/)."""
    copy = tmp_path / "coll"
    shutil.copytree(pristine[0], copy)
    upload = io.BytesIO()
    TRANSFORMS["hflip"](sample_photo("chelsea")).save(upload, format="JPEG", quality=90)
    with Collection.open(copy) as c:
        c.add_bytes(upload.getvalue(), "upload.jpg", metadata={"keywords": ["mirrored cat"]})
    return copy


def check(coll: Path, *flags: str) -> tuple[int, dict]:
    proc = run("check", "-c", str(coll), "--json", *flags)
    assert proc.returncode in (0, PROBLEMS), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def answers(coll: Path, query: Path, ids=(1, 5, 12)) -> list:
    """Ranked (path, score) of a search by a file through the CLI, and of searches by stored
    ids (in this process: one CLI start per comparison is enough)."""
    proc = run("search", str(query), "-c", str(coll), "--json", "--top", "8")
    assert proc.returncode == 0, proc.stderr
    out = [[(r["path"], round(r["score"], 3)) for r in json.loads(proc.stdout)["results"]]]
    with Collection.open(coll) as c:
        for image_id in ids:
            out.append([(h.path, round(h.score, 3)) for h in c.search(image_id, top_k=8)])
    return out


def sql(coll: Path, statement: str, params=()) -> None:
    with sqlite3.connect(coll / "catalog.sqlite") as conn:
        conn.execute(statement, params)


def vector(coll: Path, image_id: int, attribute: str) -> np.ndarray:
    with sqlite3.connect(coll / "catalog.sqlite") as conn:
        blob = conn.execute(
            "SELECT vector FROM signatures WHERE image_id = ? AND attribute = ?",
            (image_id, attribute),
        ).fetchone()[0]
    return np.frombuffer(blob, "<f4").copy()


def problems(report: dict, key: str = "found") -> set[tuple[str, str]]:
    return {(f["check"], f["subject"]) for f in report[key]}


def test_a_fresh_collection_is_healthy(pristine):
    proc = run("check", "-c", str(pristine[0]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 problem(s) found" in proc.stdout


def test_check_shows_which_check_runs_on_a_terminal(pristine):
    """At 1M images the catalog's integrity check and the signatures' take minutes each: on
    a terminal the check running and the count done show; stdout keeps the report."""
    from terminal import run_on_a_terminal

    from lookalike.check import CHECKS

    shown = run_on_a_terminal("check", "-c", str(pristine[0]))
    assert shown.returncode == 0, shown.shown
    total = len(CHECKS)
    assert "checking" in shown.shown and f"{total}/{total}" in shown.shown, shown.shown
    assert "signatures" in shown.shown  # a check's name while it ran
    assert "0 problem(s) found" in shown.stdout and "checking" not in shown.stdout


def test_damage_is_reported_repaired_and_search_is_unchanged(coll, pristine):
    folder = pristine[1]
    before = answers(coll, folder / "coffee.png")
    sql(coll, "DELETE FROM signatures WHERE image_id = 1 AND attribute = 'color'")
    where = "WHERE image_id = ? AND attribute = ?"
    sql(coll, f"UPDATE signatures SET vector = zeroblob(12) {where}", (2, "shape"))
    nan = vector(coll, 3, "texture")
    nan[5] = np.nan
    sql(coll, f"UPDATE signatures SET vector = ? {where}", (nan.tobytes(), 3, "texture"))
    sql(coll, f"UPDATE signatures SET version = 'old' {where}", (4, "perceptual"))
    sql(coll, "DELETE FROM search_text WHERE rowid = 5")
    sql(coll, "UPDATE search_text SET text = 'nonsense' WHERE rowid = 6")
    sql(coll, "INSERT INTO search_text(rowid, text) VALUES (999, 'a row of no image')")
    orphan = coll / "uploads" / "0123456789abcdef.jpg"
    orphan.write_bytes(b"left behind by a crash")
    os.utime(orphan, (1e9, 1e9))  # old enough not to be an upload in progress

    code, report = check(coll)
    assert code == PROBLEMS and not report["healthy"]
    assert problems(report) == {
        ("signatures", "image 1"),
        ("signatures", "image 2"),
        ("signatures", "image 3"),
        ("signatures", "image 4"),
        ("fulltext", "image 5"),
        ("fulltext", "image 6"),
        ("fulltext", "row 999"),
        ("uploads", "uploads/0123456789abcdef.jpg"),
    }
    reasons = {f["subject"]: f["problem"] for f in report["found"]}
    assert "color: missing" in reasons["image 1"]
    assert "shape: 12 bytes" in reasons["image 2"]
    assert "texture: non-finite" in reasons["image 3"]
    assert "perceptual: version old is stale" in reasons["image 4"]

    code, repaired = check(coll, "--repair")
    assert code == 0 and repaired["healthy"] and not repaired["remaining"]
    assert all(f["repaired"] for f in repaired["found"])
    assert not orphan.exists()
    assert check(coll) == (0, {**repaired, "repair": False, "found": [], "remaining": []})
    assert answers(coll, folder / "coffee.png") == before
    with Collection.open(coll) as c:  # the rebuilt full text answers words again (no model)
        for word, found in [("mirrored", [21]), ("nonsense", []), ("row", [])]:
            match = text_match(c.catalog, word, semantic=False)
            assert list(match.ids[match.distances < 100]) == found, word


def test_an_upload_whose_file_is_gone_is_dropped_and_said_so(coll):
    with Collection.open(coll) as c:
        ((upload_id, _),) = c.catalog.upload_images()
        stored = Path(c.get(upload_id).path)
    stored.unlink()
    code, report = check(coll)
    assert code == PROBLEMS and problems(report) == {("uploads", f"image {upload_id}")}
    proc = run("check", "-c", str(coll), "--repair")
    assert proc.returncode == 0, proc.stdout
    assert f"image {upload_id}" in proc.stdout and "image dropped" in proc.stdout
    with Collection.open(coll) as c:
        assert len(c) == 20 and upload_id not in {r.id for r in c.search(1, top_k=None)}


def test_an_unreadable_source_cannot_be_re_extracted_and_stays_a_problem(coll, pristine, tmp_path):
    moved = shutil.copytree(pristine[1], tmp_path / "photos-copy")
    with Collection.open(coll) as c:
        c.add([moved / "rocket.png"])
        rocket = c.get(str(moved / "rocket.png")).id
    sql(coll, "DELETE FROM signatures WHERE image_id = ?", (rocket,))
    (moved / "rocket.png").unlink()
    code, report = check(coll, "--repair")
    assert code == PROBLEMS
    assert problems(report, "remaining") == {("signatures", f"image {rocket}")}
    assert "cannot re-extract" in report["found"][0]["action"]


def flip(coll: Path, table: str, offset_from_end: int | None) -> None:
    """XOR bytes of the first page of `table` (at its cells near the end of the page, or
    the page header when `offset_from_end` is None)."""
    with sqlite3.connect(coll / "catalog.sqlite") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        page = conn.execute("SELECT min(pageno) FROM dbstat WHERE name = ?", (table,)).fetchone()[0]
    start = (page - 1) * size + (size - offset_from_end if offset_from_end else 0)
    with (coll / "catalog.sqlite").open("r+b") as file:
        file.seek(start)
        data = file.read(40)
        file.seek(start)
        file.write(bytes(b ^ 0x55 for b in data))


def test_flipped_bytes_in_an_index_are_found_and_rebuilt(coll, pristine):
    before = answers(coll, pristine[1] / "coffee.png")
    flip(coll, "images_sha256", offset_from_end=300)
    code, report = check(coll)
    assert code == PROBLEMS and ("sqlite", "catalog.sqlite") in problems(report)
    assert any("images_sha256" in f["problem"] for f in report["found"])
    code, repaired = check(coll, "--repair")
    assert code == 0 and repaired["remaining"] == []
    assert check(coll)[1]["found"] == []
    assert answers(coll, pristine[1] / "coffee.png") == before


def test_flipped_bytes_in_a_table_page_are_reported_and_not_hidden(coll):
    flip(coll, "keywords", offset_from_end=None)
    proc = run("check", "-c", str(coll), "--repair")
    assert proc.returncode == PROBLEMS, proc.stdout + proc.stderr
    assert "sqlite" in proc.stdout and "restore a backup" in proc.stdout


def test_broken_settings_with_a_default_are_restored(coll):
    sql(coll, "DELETE FROM meta WHERE key = 'default_weights'")
    sql(coll, "UPDATE meta SET value = '-5' WHERE key = 'max_pixels'")
    code, report = check(coll)
    assert code == PROBLEMS
    assert problems(report) == {("settings", "default_weights"), ("settings", "max_pixels")}
    assert check(coll, "--repair")[0] == 0
    assert run("search", "id:1", "-c", str(coll)).returncode == 0


def test_a_stale_metadata_index_is_found_and_rebuilt_and_filters_answer_right(coll):
    def admitted(where: str) -> set[str]:
        proc = run("search", "id:1", "-c", str(coll), "--where", where, "--json", "--top", "50")
        assert proc.returncode == 0, proc.stderr
        return {Path(r["path"]).name for r in json.loads(proc.stdout)["results"]}

    with sqlite3.connect(coll / "catalog.sqlite") as conn:
        name = dict(conn.execute("SELECT id, path FROM images").fetchall())
    second, seventh, uploaded = (Path(name[i]).name for i in (2, 7, max(name)))
    assert admitted("keywords CONTAINS 'mirrored cat'") == {uploaded}
    sql(coll, "UPDATE images SET metadata = json_object('room', 'hall') WHERE id = 2")
    sql(coll, "DELETE FROM meta_values WHERE image_id = 2")  # written around the index
    sql(coll, "INSERT INTO meta_values VALUES ('room', 0, 't', 'hall', 7)")  # a stale row
    sql(coll, "INSERT INTO meta_values VALUES ('room', 0, 't', 'hall', 4242)")  # of no image
    assert admitted("room = 'hall'") == {seventh}  # the damage misleads filters until repaired

    code, report = check(coll)
    assert code == PROBLEMS
    assert problems(report) == {
        ("metadata-index", "image 2"),
        ("metadata-index", "image 7"),
        ("metadata-index", "image 4242"),
        ("fulltext", "image 2"),  # its metadata was written around the full text too
    }
    reasons = {f["subject"]: f["problem"] for f in report["found"]}
    assert reasons["image 4242"] == "metadata index rows of no image"
    assert check(coll, "--repair")[0] == 0
    assert check(coll)[0] == 0
    assert admitted("room = 'hall'") == {second}
    assert admitted("keywords CONTAINS 'mirrored cat'") == {uploaded}


def test_the_api_gives_the_same_report_and_a_derived_file_check_can_be_registered(coll):
    sql(coll, "DELETE FROM signatures WHERE image_id = 7 AND attribute = 'texture'")
    marker = coll / "derived.idx"

    class DerivedFile:
        """What the index layer registers for its files: here, one file that must exist."""

        name = "derived"

        def verify(self, c: Collection) -> list[Finding]:
            return [] if marker.exists() else [Finding(self.name, marker.name, "missing")]

        def repair(self, c: Collection, findings: list[Finding]) -> None:
            marker.write_text(str(len(c)))
            for finding in findings:
                finding.action, finding.repaired = "rebuilt", True

    register_check(DerivedFile())
    try:
        with Collection.open(coll) as c:
            report = c.check()
            assert not report.healthy
            assert {(f.check, f.subject) for f in report.found} == {
                ("signatures", "image 7"),
                ("derived", "derived.idx"),
            }
            assert report.to_dict()["checks"][-1] == "derived"
            fixed = c.check(repair=True)
            assert fixed.healthy and marker.read_text() == "21"  # 20 photos and the upload
            assert c.check().to_dict()["found"] == []
    finally:
        CHECKS[:] = [check for check in CHECKS if check.name != "derived"]


def test_a_check_reads_past_the_statement_budget_that_searches_keep(pristine):
    """The statement budget stops a long read so a search cannot hold a server's worker; a
    check must read everything (at 1M images the integrity check alone is minutes: `lookalike
    check` stopped at 10 s and failed). Here a budget of 0 s stops the integrity check read
    on its own, while the whole check runs without the budget and then the budget holds
    again."""
    from lookalike.store.catalog import StatementTimeout

    with Collection.open(pristine[0]) as coll:
        coll.catalog.statement_budget_s = 0.0
        with pytest.raises(StatementTimeout):
            coll.catalog.query("PRAGMA integrity_check")
        report = coll.check()
        assert report.healthy and not report.found
        with pytest.raises(StatementTimeout):  # only the check went past it
            coll.catalog.query("PRAGMA integrity_check")
