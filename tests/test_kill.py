"""`lookalike index` killed with SIGKILL at random moments, with the CNN on (the default
attributes) and the default job count: the collection always opens, no committed image is ever
lost, every stored image has all its current signatures, and finishing the run gives the same
search answers as a clean build. Every other kill lands at a random moment of the whole run
(start-up, creation, planning, describing), the others at a random moment just after a new
commit (so many kills interrupt the commit phase). Two kill loops run at once.
The normal suite lands 6 kills; `pytest -m slow` runs the 50-kill soak, and LOOKALIKE_KILLS
sets the soak's count (e.g. 500).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.api import Collection
from lookalike.errors import CollectionError

SOAK_KILLS = int(os.environ.get("LOOKALIKE_KILLS", "50"))
QUICK_KILLS = 6
IMAGES = 24
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
    keeps each run short, so the kills are many. Its stderr goes to `proc.log`."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read when a run fails; a pipe could fill
    proc = subprocess.Popen(
        [*CLI, str(folder), "-c", str(collection), "--frame", "64"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def failure(proc: subprocess.Popen) -> str:
    proc.log.seek(0)  # type: ignore[attr-defined]
    return proc.log.read().decode()  # type: ignore[attr-defined]


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
            have = versions.get(image_id, {})
            stale = {n for n, v in current.items() if have.get(n) != v}
            assert not stale, f"{path} lacks a current signature for {sorted(stale)}"
        return {path for _, path in rows}


def stored_count(collection: Path) -> int:
    try:
        with sqlite3.connect(f"file:{collection / 'catalog.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def wait_for_a_commit(proc: subprocess.Popen, collection: Path, before: int) -> None:
    """Return once the run has committed an image beyond `before`, or has ended."""
    while proc.poll() is None and stored_count(collection) <= before:
        time.sleep(0.05)


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


@dataclass
class KillLoop:
    """Kill `index` runs of one folder at random moments until `kills` kills have landed; a run
    that finishes first is compared with the clean build and the loop starts a new collection.
    """

    folder: Path
    workdir: Path
    queries: list[Path]
    expected: list[dict[str, float]]
    window_s: float
    seed: int
    kills: int = 0
    progressed: int = 0
    finished: int = 0

    def run(self, kills: int) -> KillLoop:
        rng = random.Random(self.seed)
        collection = self.workdir / "c0"
        kept: set[str] = set()
        fruitless = 0
        while self.kills < kills:
            if fruitless >= 4:  # this machine is slower now than for the clean build
                self.window_s *= 1.3
                fruitless = 0
            proc = index(self.folder, collection)
            try:
                if self.kills % 2:  # every other kill: a random moment of the commit phase
                    wait_for_a_commit(proc, collection, len(kept))
                    proc.wait(timeout=rng.uniform(0.0, 0.5))
                else:  # a random moment of the whole run: start-up, creation, planning...
                    proc.wait(timeout=rng.uniform(0.0, self.window_s))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                self.kills += 1
            else:  # finished before its kill: the same answers as a clean build; start over
                assert proc.returncode == 0, failure(proc)
                assert same_answers(answers(collection, self.queries), self.expected)
                self.finished += 1
                collection = self.workdir / f"c{self.finished}"
                kept = set()
                continue
            stored = check_invariants(collection)
            assert kept <= stored, f"committed images lost: {sorted(kept - stored)}"
            self.progressed += stored != kept
            fruitless = 0 if stored != kept else fruitless + 1
            kept = stored
        assert index(self.folder, collection).wait() == 0
        assert len(check_invariants(collection)) == IMAGES
        assert same_answers(answers(collection, self.queries), self.expected)
        assert not list(collection.glob(".creating-*"))
        checked = subprocess.run(
            [sys.executable, "-m", "lookalike", "check", "-c", str(collection)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr  # 0: healthy
        return self


def kill_at_random_moments(tmp_path: Path, kills_wanted: int) -> None:
    folder = tmp_path / "images"
    make_images(folder, IMAGES)
    clean = tmp_path / "clean"
    started = time.monotonic()
    assert index(folder, clean).wait() == 0
    full_run = time.monotonic() - started
    queries = sorted(folder.iterdir())[:3]
    expected = answers(clean, queries)
    seed = int(os.environ.get("LOOKALIKE_KILL_SEED", "0"))
    loops = [
        KillLoop(folder, tmp_path / f"loop{i}", queries, expected, full_run, seed + i)
        for i in range(2)  # two at once: a run mostly waits on imports, so they overlap well
    ]
    with ThreadPoolExecutor(len(loops)) as pool:
        share = -(-kills_wanted // len(loops))
        done = list(pool.map(lambda loop: loop.run(share), loops))
    kills = sum(loop.kills for loop in done)
    progressed = sum(loop.progressed for loop in done)
    assert kills >= kills_wanted
    assert progressed > 0  # some kills landed after commits, not all during start-up
    print(
        f"{kills} kills survived ({progressed} after new commits), "
        f"{sum(loop.finished for loop in done)} runs finished between kills; "
        f"a clean run took {full_run:.1f} s"
    )


@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    kill_at_random_moments(tmp_path, QUICK_KILLS)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 50 runs of `index`: minutes on a busy machine
def test_sigkill_soak(tmp_path):
    kill_at_random_moments(tmp_path, SOAK_KILLS)


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
