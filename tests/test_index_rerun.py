"""A re-run of `lookalike index` over an unchanged folder costs a stat per file: nothing is
read, hashed or decoded (issue 10 item 4; bench/bench_rerun.py times it over 10k files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import CLASSIC

from lookalike.api import Collection
from lookalike.ingest import TEST_FAULTS_ENV
from lookalike.samples import PHOTO_NAMES, sample_photo

CLI = [sys.executable, "-m", "lookalike"]


def index(folder: Path, collection: Path, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [*CLI, "index", str(folder), "-c", str(collection), "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr  # finished; the broken file is skipped
    return json.loads(proc.stdout)


def test_no_change_rerun_reads_no_file(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = [f"{name}.jpg" for name in PHOTO_NAMES]
    for name in PHOTO_NAMES:
        sample_photo(name).save(folder / f"{name}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    collection = tmp_path / "photos.lookalike"
    Collection.create(collection, attributes=CLASSIC).close()
    first = index(folder, collection)
    assert len(first["added"]) == len(names)

    # The content of one photo changes behind the catalog's back, size and mtime kept: a
    # re-run that read or hashed the file would notice and describe it again.
    changed = folder / names[0]
    facts = changed.stat()
    data = bytearray(changed.read_bytes())
    data[len(data) // 2 :] = bytes(reversed(data[len(data) // 2 :]))
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(facts.st_atime_ns, facts.st_mtime_ns))
    with Collection.open(collection) as coll:
        stored_hash = coll.get(str(changed)).sha256

    # Any file a worker is handed now crashes it, so describing anything shows as a skip.
    crash_all = ";".join(f"crash={name}" for name in names)
    env = {**os.environ, TEST_FAULTS_ENV: crash_all}
    again = index(folder, collection, env)
    assert sorted(Path(p).name for p in again["unchanged"]) == sorted(names)
    assert again["added"] == again["updated"] == []
    assert [Path(s["path"]).name for s in again["skipped"]] == ["broken.jpg"]
    with Collection.open(collection) as coll:
        assert coll.get(str(changed)).sha256 == stored_hash  # never hashed again

    # With a new mtime the change is found (hashed, then described again: the scrambled
    # half makes it a broken JPEG, skipped), and nothing else is touched.
    os.utime(changed, ns=(facts.st_atime_ns, facts.st_mtime_ns + 10**9))
    last = index(folder, collection)
    assert sorted(Path(p).name for p in last["unchanged"]) == sorted(names[1:])
    assert names[0] in {Path(p).name for p in last["updated"]} | {
        Path(s["path"]).name for s in last["skipped"]
    }


def index_cli(
    folder: Path, collection: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "index", str(folder), "-c", str(collection), *extra],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def skipped(proc: subprocess.CompletedProcess) -> dict[str, tuple[str, bool]]:
    assert proc.returncode == 3, proc.stderr
    return {
        Path(s["path"]).name: (s["reason"], s["unchanged_since_failed"])
        for s in json.loads(proc.stdout)["skipped"]
    }


def test_failed_files_are_remembered_until_they_change(tmp_path):
    """A broken file is read once: a re-run reports it from the catalog's record without
    starting a worker, until its size or mtime changes, `--retry-failed`, or it is gone."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = [f"{name}.jpg" for name in PHOTO_NAMES]
    for name in PHOTO_NAMES:
        sample_photo(name).save(folder / f"{name}.jpg", quality=90)
    broken, truncated = folder / "broken.jpg", folder / "truncated.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    truncated.write_bytes((folder / names[0]).read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image, not a failure")
    collection = tmp_path / "photos.lookalike"
    Collection.create(collection, attributes=["color", "perceptual"]).close()

    first = skipped(index_cli(folder, collection, "--json"))
    assert set(first) == {"broken.jpg", "truncated.jpg"}
    assert not any(again for _, again in first.values())

    # Any file handed to a worker now crashes it: the reasons below prove nothing was read.
    crash_all = ";".join(f"crash={name}" for name in [*names, "broken.jpg", "truncated.jpg"])
    crashing = {**os.environ, TEST_FAULTS_ENV: crash_all}
    again = skipped(index_cli(folder, collection, "--json", env=crashing))
    assert again == {name: (reason, True) for name, (reason, _) in first.items()}
    text = index_cli(folder, collection, env=crashing)
    assert text.returncode == 3
    assert "20 unchanged, 0 removed, 2 skipped (2 unchanged since they failed" in text.stdout
    assert f"broken.jpg: {first['broken.jpg'][0]} (unchanged since it failed)" in text.stdout

    # Fixed: the truncated file is now a whole photo (new size): added, its record dropped.
    sample_photo("coffee").resize((300, 200)).save(truncated, quality=90)
    fixed = index_cli(folder, collection, "--json")
    assert [Path(p).name for p in json.loads(fixed.stdout)["added"]] == ["truncated.jpg"]
    assert skipped(fixed) == {"broken.jpg": (first["broken.jpg"][0], True)}

    # A new mtime, or --retry-failed, hands the broken file to a worker again (it crashes).
    facts = broken.stat()
    os.utime(broken, ns=(facts.st_atime_ns, facts.st_mtime_ns + 10**9))
    touched = skipped(index_cli(folder, collection, "--json", env=crashing))
    assert touched["broken.jpg"][1] is False and "crashed" in touched["broken.jpg"][0]
    retried = skipped(index_cli(folder, collection, "--json", "--retry-failed"))
    assert retried == {"broken.jpg": (first["broken.jpg"][0], False)}

    # Deleting the file forgets it; the records never worry `lookalike check`.
    proc = subprocess.run([*CLI, "check", "-c", str(collection)], capture_output=True, text=True)
    assert proc.returncode == 0 and "0 problem(s) found" in proc.stdout, proc.stdout
    broken.unlink()
    last = index_cli(folder, collection, "--json")
    assert last.returncode == 0, last.stdout
    with Collection.open(collection) as coll:
        assert coll.catalog.failures() == {}


def test_a_rerun_describes_again_exactly_the_images_whose_signatures_are_not_current(tmp_path):
    """`info` and a re-run find the images to describe again (a signature of an older or a
    newer extractor version, or none at all for an attribute) from the index of versions,
    never by reading every signature row: at 1M images that scan ran past the statement
    budget and both commands failed."""
    import sqlite3

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTO_NAMES[:6]:
        sample_photo(name).save(folder / f"{name}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    collection = tmp_path / "photos.lookalike"
    Collection.create(collection, attributes=CLASSIC).close()
    index(folder, collection)
    with Collection.open(collection) as coll:
        ids = {Path(coll.get(i).path).name: i for i in range(1, 7)}
    db = sqlite3.connect(collection / "catalog.sqlite")
    with db:
        db.execute(
            "UPDATE signatures SET version = '0-old' WHERE image_id = ? AND attribute = 'color'",
            (ids["astronaut.jpg"],),
        )
        db.execute(
            "UPDATE signatures SET version = 'zzz-new' WHERE image_id = ? AND attribute = 'shape'",
            (ids["brick.jpg"],),
        )
        db.execute(
            "DELETE FROM signatures WHERE image_id = ? AND attribute = 'texture'",
            (ids["camera.jpg"],),
        )
    # each statement reads the index of versions, none scans the signatures table
    plans = " ".join(
        row[-1]
        for sql in (
            "SELECT count(*) FROM signatures WHERE attribute = 'color' AND version = 'v'",
            "SELECT id FROM images WHERE id NOT IN (SELECT image_id FROM signatures"
            " WHERE attribute = 'color' AND version = 'v')",
        )
        for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")
    )
    db.close()
    assert "signatures_version" in plans and "SCAN signatures" not in plans, plans

    shown = subprocess.run(
        [*CLI, "info", "-c", str(collection), "--json"], capture_output=True, text=True
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["stale"] == 3
    again = index(folder, collection)
    assert sorted(Path(p).name for p in again["updated"]) == [
        "astronaut.jpg", "brick.jpg", "camera.jpg"
    ]  # fmt: skip
    assert len(again["unchanged"]) == 3
    shown = subprocess.run(
        [*CLI, "info", "-c", str(collection), "--json"], capture_output=True, text=True
    )  # fmt: skip
    assert json.loads(shown.stdout)["stale"] == 0
