"""Deep embeddings, automatic tags and search by text, through the Collection and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from lookalike.api import Collection  # noqa: E402
from lookalike.samples import TRANSFORMS, write_samples  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deep")
    originals, _ = write_samples(tmp / "images", variants=())
    coll = Collection.create(tmp / "coll", attributes=["color", "deep"])
    report = coll.add([tmp / "images"])
    assert not report.failed
    yield coll, {Path(p).stem: i for p, i in report.ids.items()}, tmp
    coll.close()


def test_photos_get_sensible_tags(photos):
    coll, ids, _ = photos
    cat = {k for k, source, _ in coll.get(ids["chelsea"]).keywords if source == "auto"}
    coffee = {k for k, source, _ in coll.get(ids["coffee"]).keywords if source == "auto"}
    assert "cat" in cat or cat & {"tabby", "tiger cat", "egyptian cat"}
    assert coffee & {"espresso", "cup", "coffee mug", "coffee"}


@pytest.mark.parametrize(
    "query,expected", [("cat", "chelsea"), ("kitten", "chelsea"), ("coffee", "coffee"),
                       ("cup of coffee", "coffee")]
)  # fmt: skip
def test_text_queries_find_the_right_photo_first(photos, query, expected):
    coll, ids, _ = photos
    results = coll.query(text=query, top_k=3)
    assert results[0].id == ids[expected], results.explain["text"]
    assert results[0].score < 50


def test_expansion_is_visible(photos):
    coll, _, _ = photos
    explain = coll.query(text="kitten", top_k=1).explain["text"]
    assert any("kitten" in e["reason"] for e in explain["expanded"])
    colours = coll.query(text="red", top_k=1).explain["text"]["expanded"]
    assert {"maroon", "burgundy"} & {e["term"] for e in colours}


@pytest.mark.parametrize("transform", ["crop80", "half", "jpeg30", "rotate5", "bright120", "hflip"])
def test_transformed_copy_finds_original_with_deep_alone(photos, transform):
    coll, ids, tmp = photos
    from lookalike.samples import sample_photo

    for name in ("astronaut", "chelsea", "coffee", "rocket", "brick"):
        query = tmp / f"{name}_{transform}.jpg"
        TRANSFORMS[transform](sample_photo(name)).save(query, quality=92)
        results = coll.search(query, weights="deep=1", top_k=1)
        assert results[0].id == ids[name], f"{name}/{transform}"
        assert set(results[0].breakdown) == {"deep"}


def test_deep_mixes_with_classic_weights(photos):
    coll, ids, _ = photos
    results = coll.search(ids["coffee"], weights="deep=0.5,color=0.5", top_k=2)
    assert results[0].id == ids["coffee"]
    assert results.weights == {"deep": 0.5, "color": 0.5}


def test_cli_text_search_and_tags(photos):
    coll, ids, tmp = photos
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "search",
            "-c",
            str(coll.directory),
            "--text",
            "kitten",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["id"] == ids["chelsea"]
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike", "tags", str(tmp / "images" / "photos" / "coffee.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "espresso" in proc.stdout or "cup" in proc.stdout
