"""Near-duplicate groups through the CLI and the API, on real photos and transformed copies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.api import Collection
from lookalike.samples import write_samples

CLI = [sys.executable, "-m", "lookalike"]
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "horse", "retina", "rocket")
VARIANTS = ("jpeg30", "half", "hflip")


def run(*args: str, allowed: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode in allowed, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dups")
    write_samples(folder / "images", variants=VARIANTS, names=PHOTOS)
    (folder / "images" / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    indexed = run("index", str(folder / "images"), "-c", str(folder / "coll"), allowed=(0, 3))
    assert "broken.png" in indexed.stdout  # skipped and said so (exit code 3), the rest indexed
    return folder / "coll"


def photo_of(path: str) -> str:
    return Path(path).stem.split("__")[0]


@pytest.fixture(scope="module")
def listed(indexed) -> dict:
    return json.loads(run("duplicates", "-c", str(indexed), "--json").stdout)


def test_cli_groups_each_photo_with_its_transformed_copies(listed):
    groups = [sorted(photo_of(p) for p in g["paths"]) for g in listed["groups"]]
    assert sorted(groups) == sorted([[name] * (1 + len(VARIANTS)) for name in PHOTOS])
    for group in listed["groups"]:
        assert group["pairs"], group
        for pair in group["pairs"]:
            assert 0 <= pair["score"] <= 15.0
            assert {pair["a"], pair["b"]} <= set(group["ids"])


def test_a_strict_threshold_keeps_fewer_pairs(indexed, listed):
    text = run("duplicates", "-c", str(indexed), "--threshold", "2").stdout
    strict_pairs = text.count(" ~ ")
    assert 0 < strict_pairs < sum(len(g["pairs"]) for g in listed["groups"])
    assert "group 1:" in text


def test_api_matches_cli_and_scores_are_exact(indexed, listed):
    with Collection.open(indexed) as coll:
        groups = coll.duplicates()
        for group in groups[:3]:
            exact = {}
            for a, b, score in group.pairs:
                if a not in exact:
                    exact[a] = {h.id: h.score for h in coll.search(a, top_k=None)}
                assert exact[a][b] == pytest.approx(score, abs=1e-6)
    assert [g.ids for g in groups] == [g["ids"] for g in listed["groups"]]


def test_rest_endpoint_gives_the_same_groups_over_http(indexed, listed):
    """GET /api/duplicates on a live server: the CLI's groups and pairs, image links instead
    of paths, bad input refused with a 4xx, and the endpoint in the OpenAPI schema."""
    import httpx
    from server_fixtures import live_server, settings_without_uploads

    from lookalike.server.app import create_app

    with (
        Collection.open(indexed) as coll,
        live_server(create_app(coll, settings_without_uploads())) as url,
    ):
        answer = httpx.get(f"{url}/api/duplicates", timeout=120)
        assert answer.status_code == 200, answer.text
        groups = answer.json()["groups"]
        assert [g["ids"] for g in groups] == [g["ids"] for g in listed["groups"]]
        assert [g["pairs"] for g in groups] == [g["pairs"] for g in listed["groups"]]
        for group in groups:
            assert [i["id"] for i in group["images"]] == group["ids"]
            assert all(i["thumbnail"].endswith("/thumbnail") for i in group["images"])
            assert all("path" not in i for i in group["images"])  # paths are not exposed
        strict = httpx.get(f"{url}/api/duplicates", params={"threshold": 2}, timeout=120).json()
        assert sum(len(g["pairs"]) for g in strict["groups"]) < sum(len(g["pairs"]) for g in groups)
        for bad in (
            {"threshold": "-1"},
            {"threshold": "nan"},
            {"weights": "sparkle=1"},
            {"weights": "color=abc"},
        ):
            refused = httpx.get(f"{url}/api/duplicates", params=bad, timeout=60)
            assert 400 <= refused.status_code < 500, (bad, refused.status_code, refused.text)
            assert refused.json()["detail"]
        schema = httpx.get(f"{url}/api/openapi.json", timeout=30).json()
        assert "threshold" in json.dumps(schema["paths"]["/api/duplicates"])


def test_cli_shows_its_progress_on_a_terminal_and_the_api_reports_it(indexed):
    """`lookalike duplicates` searches every image (minutes at 100k): on a terminal it shows
    how many it has searched; piped, stdout holds only the groups. The API reports the same
    through `progress(done, total)`."""
    from terminal import run_on_a_terminal

    with Collection.open(indexed) as coll:
        total = len(coll)
        seen: list[tuple[int, int]] = []
        coll.duplicates(progress=lambda done, of: seen.append((done, of)))
    assert seen and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    run = run_on_a_terminal("duplicates", "-c", str(indexed))
    assert run.returncode == 0
    assert "finding duplicates" in run.shown and f"{total}/{total}" in run.shown, run.shown
    assert "group 1:" in run.stdout and "finding" not in run.stdout
