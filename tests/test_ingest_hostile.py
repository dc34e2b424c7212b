"""Indexing a folder of hostile files among good photos, as a user runs it: `python -m lookalike
index` with the default job count. Every good photo is added, every bad file is skipped with
a reason, images already stored are kept, a worker that crashes or hangs costs only its file,
and the exit status says that files were skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLASSIC
from hostile import FAULTS, write_good, write_hostile
from PIL import Image

from lookalike.api import Collection
from lookalike.decode import read_regular_file
from lookalike.errors import DecodeError
from lookalike.ingest import TEST_FAULTS_ENV

CLI = [sys.executable, "-m", "lookalike"]


def index(*args: str, faults: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, TEST_FAULTS_ENV: faults}
    return subprocess.run(
        [*CLI, "index", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    photos = root / "photos"
    good = write_good(photos / "good")
    expect = write_hostile(photos / "hostile")
    prior = root / "prior"
    prior.mkdir()
    for color in ((200, 20, 20), (20, 20, 200)):
        Image.new("RGB", (64, 48), color).save(prior / f"{color[0]}.png")
    coll = root / "coll"
    first = index(str(prior), "-c", str(coll), "--attributes", ",".join(CLASSIC))
    assert first.returncode == 0, first.stderr
    proc = index(str(photos), "-c", str(coll), "--json", "--file-timeout", "8", faults=FAULTS)
    return coll, good, expect, proc


def test_the_hostile_corpus_is_large_and_varied(hostile_run):
    _, good, expect, _ = hostile_run
    assert len(good) >= 20
    assert sum(1 for outcome in expect.values() if outcome != "good") >= 60


def test_every_good_photo_is_added_and_every_bad_file_reported(hostile_run):
    coll, good, expect, proc = hostile_run
    assert proc.returncode == 3, proc.stderr  # finished, with files skipped
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    added = [Path(p).name for p in report["added"]]
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert len(added) == len(set(added)) and not set(added) & set(skipped)
    shown = {os.fsencode(n).decode("utf-8", "backslashreplace"): o for n, o in expect.items()}
    must_add = {p.name for p in good} | {n for n, o in shown.items() if o == "good"}
    must_skip = {n for n, o in shown.items() if o == "bad"}
    assert must_add <= set(added), f"good files not added: {must_add - set(added)}"
    assert must_skip <= set(skipped), f"bad files not reported: {must_skip - set(skipped)}"
    assert set(added) | set(skipped) == must_add | set(shown)  # nothing else, nothing lost
    assert all(reason.strip() for reason in skipped.values())
    assert "crashed the worker process" in skipped["crash.jpg"]
    assert "took longer than 8 s" in skipped["hang.png"]
    assert "MemoryError" in skipped["raise.png"]
    assert "named pipe" in skipped["pipe.jpg"]
    assert "character device" in skipped["endless.jpg"]
    assert "link loop" in skipped["loop-a.jpg"] and "socket" in skipped["sock.png"]
    assert "not valid UTF-8" in skipped["caf\\xe9.jpg"]
    assert "decompression bomb" in skipped["bomb-png.png"]
    assert "empty file" in skipped["zero.webp"] and "not an image" in skipped["page.jpg"]


def test_prior_images_are_kept_and_every_image_is_whole(hostile_run):
    coll, _, _, proc = hostile_run
    report = json.loads(proc.stdout)
    with Collection.open(coll) as collection:
        assert len(collection) == 2 + len(report["added"])
        assert collection.info()["stale"] == 0
        versions = collection.catalog.signature_versions()
        assert len(versions) == len(collection)
        hits = collection.search(str(Path(report["added"][0])), top_k=1)
        assert Path(hits[0].path) == Path(report["added"][0])


def test_a_missing_path_is_an_error_and_creates_nothing(tmp_path):
    proc = index(str(tmp_path / "nope"), "-c", str(tmp_path / "coll"))
    assert proc.returncode == 1
    assert "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "coll").exists()


def test_all_good_exits_zero(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (80 * i, 40, 40)).save(folder / f"{i}.png")
    proc = index(str(folder), "-c", str(tmp_path / "c"), "--attributes", "color")
    assert proc.returncode == 0, proc.stderr
    assert "3 added" in proc.stdout


def test_reads_stop_at_the_byte_limit(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 5000)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        read_regular_file(str(big), max_bytes=1000)
    assert read_regular_file(str(big), max_bytes=5000) == b"\0" * 5000
    with pytest.raises(DecodeError, match="character device"):
        read_regular_file("/dev/zero")


def test_a_fifo_named_explicitly_does_not_hang(tmp_path):
    pipe = tmp_path / "x.jpg"
    os.mkfifo(pipe)
    proc = index(str(pipe), "-c", str(tmp_path / "c"), "--attributes", "color", "-j", "1")
    assert proc.returncode == 3 and "named pipe" in proc.stdout
