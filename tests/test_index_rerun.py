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
