"""`lookalike index` killed with SIGKILL at random moments, with the CNN on (the default
attributes): the collection always opens, no committed image is ever lost, every stored image
has all its current signatures, and finishing the run gives the same search answers as a clean
build. LOOKALIKE_KILLS sets how many kills (default 50; e.g. 500 for a long soak).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.api import Collection
from lookalike.errors import CollectionError

KILLS = int(os.environ.get("LOOKALIKE_KILLS", "50"))
CLI = [sys.executable, "-m", "lookalike", "index"]


def make_images(folder: Path, count: int) -> None:
    """Small photos-like images: smooth random colour fields, all different."""
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(count):
        field = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
        Image.fromarray(field).resize((80, 64), Image.Resampling.BICUBIC).save(folder / f"{i}.png")


def index(folder: Path, collection: Path) -> subprocess.Popen:
    """`lookalike index` with the default attributes (the CNN on) and job count; a small frame
    keeps each run short, so the kills are many."""
    return subprocess.Popen(
        [*CLI, str(folder), "-c", str(collection), "--frame", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def check_invariants(collection: Path) -> set[str]:
    """What a killed run must leave: an openable collection (or none yet) whose every image
    has a current signature for every attribute. Returns the stored paths."""
    if not (collection / "catalog.sqlite").exists():
        return set()
    with Collection.open(collection) as coll:
        rows = coll.catalog.query("SELECT id, path FROM images")
        versions = coll.catalog.signature_versions()
        current = {name: ex.version for name, ex in coll.extractors.items()}
        assert "deep" in current
        for image_id, path in rows:
            assert versions.get(image_id) == current, f"{path} lacks a current signature"
        return {path for _, path in rows}


def answers(collection: Path, queries: list[Path]) -> list[dict[str, float]]:
    """Every image's score for each query, by file name."""
    with Collection.open(collection) as coll:
        return [
            {Path(hit.path).name: hit.score for hit in coll.search(str(q), top_k=None)}
            for q in queries
        ]


def same_answers(got: list[dict[str, float]], expected: list[dict[str, float]]) -> bool:
    """Equal up to float noise (the CNN's batches differ between a killed and a clean run)."""
    return all(
        g.keys() == e.keys() and all(abs(g[k] - e[k]) < 1e-2 for k in e)
        for g, e in zip(got, expected, strict=True)
    )


@pytest.mark.timeout(1800)  # 50 runs of `index`: minutes on a busy machine
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 16)
    clean = tmp_path / "clean"
    started = time.monotonic()
    assert index(folder, clean).wait() == 0
    full_run = time.monotonic() - started
    queries = sorted(folder.iterdir())[:3]
    expected = answers(clean, queries)

    rng = random.Random(int(os.environ.get("LOOKALIKE_KILL_SEED", "0")))
    kills = cycles = progressed = 0
    collection = tmp_path / "c0"
    kept: set[str] = set()
    while kills < KILLS:
        proc = index(folder, collection)
        try:
            proc.wait(timeout=rng.uniform(0.0, 1.1 * full_run))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:  # the run finished before its kill: compare with the clean build, start over
            assert proc.returncode == 0, proc.stderr.read().decode()
            assert same_answers(answers(collection, queries), expected)
            cycles += 1
            collection = tmp_path / f"c{cycles}"
            kept = set()
            continue
        stored = check_invariants(collection)
        assert kept <= stored, f"committed images lost: {sorted(kept - stored)}"
        progressed += stored != kept
        kept = stored
    assert index(folder, collection).wait() == 0
    assert len(check_invariants(collection)) == 16
    assert same_answers(answers(collection, queries), expected)
    assert not list(collection.glob(".creating-*"))
    assert progressed > 0  # some kills landed after commits, not all during start-up
    print(
        f"{kills} kills survived ({progressed} after new commits), {cycles} runs finished "
        f"between kills; a clean run took {full_run:.1f} s"
    )


def test_creation_interrupted_before_its_settings_leaves_no_collection(tmp_path, monkeypatch):
    """Settings are written before the catalog appears under its name: a creation stopped
    half-way (here by an error where a kill could land) leaves nothing to open."""
    from lookalike.store.catalog import Catalog

    def interrupted(self, values):
        raise KeyboardInterrupt

    monkeypatch.setattr(Catalog, "set_meta_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Collection.create(tmp_path / "c", attributes=["color"])
    assert not (tmp_path / "c" / "catalog.sqlite").exists()
    monkeypatch.undo()
    with Collection.open_or_create(tmp_path / "c", attributes=["color"]) as coll:
        assert coll.attributes == {"color": {}}
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["catalog.sqlite"]


def test_a_collection_left_unfinished_is_reported_and_created_again(tmp_path):
    """A catalog without settings (what a kill left before creation was atomic) is named as
    such, and `index` creates the collection again."""
    from lookalike.store.catalog import Catalog

    (tmp_path / "c").mkdir()
    Catalog(tmp_path / "c", create=True).close()
    with pytest.raises(CollectionError, match="never fully created"):
        Collection.open(tmp_path / "c")
    search = subprocess.run(
        [sys.executable, "-m", "lookalike", "search", "-c", str(tmp_path / "c"), "--text", "x"],
        capture_output=True,
        text=True,
    )
    assert search.returncode == 1 and "never fully created" in search.stderr
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    proc = subprocess.run(
        [*CLI, str(tmp_path / "red.png"), "-c", str(tmp_path / "c"), "--attributes", "color"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    with Collection.open(tmp_path / "c") as coll:
        assert len(coll) == 1 and list(coll.attributes) == ["color"]
