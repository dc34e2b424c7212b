"""Indexes as a user meets them, through the CLI, on a collection of 100,000 images (synthetic
vectors added in bulk): IVF-PQ is picked by size, built once and reused by later processes,
a write is searched live without rebuilding, and `tune` keeps the effort that reaches a recall."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from index_fixtures import bulk_insert

from lookalike.api import Collection

CLI = [sys.executable, "-m", "lookalike"]
N = 100_000


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def state(coll: Path, attribute: str) -> dict:
    return json.loads((coll / "indexes" / attribute / "state.json").read_text())


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("big") / "coll"
    coll = Collection.create(folder, attributes=["color"])
    for _ in bulk_insert(coll, N, chunk=20_000):
        pass
    coll.close()
    return folder


def test_search_builds_ivfpq_once_and_later_processes_reuse_it(big):
    first = json.loads(run("search", "id:77", "-c", str(big), "--json", "--top", "5").stdout)
    assert first["explain"]["plan"] == "candidates"
    assert first["results"][0]["id"] == 77 and first["results"][0]["score"] == 0
    built = state(big, "color")
    assert built["kind"] == "ivfpq" and built["count"] == N
    again = json.loads(run("search", "id:77", "-c", str(big), "--json", "--top", "5").stdout)
    assert again["results"] == first["results"]
    assert state(big, "color")["generation"] == built["generation"]  # loaded, not rebuilt


def test_a_removed_image_is_gone_from_the_next_search_without_a_rebuild(big):
    before = json.loads(run("search", "id:500", "-c", str(big), "--json").stdout)["results"]
    victim = before[1]["id"]
    run("remove", str(victim), "-c", str(big))
    after = json.loads(run("search", "id:500", "-c", str(big), "--json").stdout)["results"]
    assert victim not in [r["id"] for r in after]
    assert [r["id"] for r in after][:1] == [500]
    assert state(big, "color")["count"] == N  # the delete is a tombstone, main is untouched


def test_tune_reaches_the_recall_and_keeps_the_effort_and_the_candidates(big):
    proc = run("tune", "-c", str(big), "--recall", "0.9", "--queries", "20", "--json")
    report = json.loads(proc.stdout)
    assert report["chosen"]["recall"] >= 0.9
    assert report["chosen"] in report["curve"]
    assert report["indexes"]["color"]["kind"] == "ivfpq"
    chosen = report["chosen"]["effort"]["ivfpq"]
    # then fewer candidates per attribute at that effort, the fewest that still reach it
    fewer = [p for p in report["curve"] if p["effort"]["ivfpq"] == chosen]
    assert fewer[0]["candidates"] == 10 and len(fewer) > 1
    assert all(p["recall"] >= 0.9 for p in fewer[:-1])
    kept = report["chosen"]["candidates"]
    assert kept < 10 and kept == min(p["candidates"] for p in fewer if p["recall"] >= 0.9)
    with Collection.open(big) as coll:
        assert coll.indexes.settings()["effort"]["ivfpq"] == chosen
        assert coll.indexes.settings()["candidates"] == kept
    searched = json.loads(run("search", "id:77", "-c", str(big), "--json").stdout)
    assert searched["results"][0]["id"] == 77
    # on a terminal, the stage and the queries run in it show while it works (the exact
    # ranking of the sample alone takes minutes at 1M)
    from terminal import run_on_a_terminal

    shown = run_on_a_terminal("tune", "-c", str(big), "--recall", "0.9", "--queries", "10")
    assert shown.returncode == 0, shown.shown
    assert "recall@10" in shown.stdout and "candidates per attribute" in shown.stdout
    assert "tuning" in shown.shown and "10/10" in shown.shown, shown.shown
    assert "exact ranking" in shown.shown and "effort ivfpq=" in shown.shown
    assert "tuning" not in shown.stdout


def test_a_search_that_must_build_an_index_says_so_on_a_terminal(tmp_path):
    """A search after a bulk load builds each index first (minutes at 1M, silent before): on
    a terminal it names the index it is building; the next search, which loads it, does not;
    stdout holds the hits either way."""
    from terminal import run_on_a_terminal

    folder = tmp_path / "coll"
    coll = Collection.create(folder, attributes=["color"])
    for _ in bulk_insert(coll, 3_000, chunk=3_000):
        pass
    coll.close()
    first = run_on_a_terminal("search", "id:7", "-c", str(folder), "--top", "3")
    assert first.returncode == 0, first.shown
    assert "building the color index (3,000 images; flat), once" in first.shown, first.shown
    assert "id:7" in first.stdout and "building" not in first.stdout
    again = run_on_a_terminal("search", "id:7", "-c", str(folder), "--top", "3")
    assert again.returncode == 0 and "building" not in again.shown
    assert again.stdout == first.stdout
