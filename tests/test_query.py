"""Query kinds through the Collection API and the CLI: sketch, layout, index key, text,
metadata filters and hybrids, on synthetic scenes whose right answer is known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSIC
from PIL import Image

from lookalike.api import Collection
from lookalike.errors import QueryError

BLUE, GREY, RED, YELLOW, GREEN, WHITE = (
    (30, 60, 200), (128, 128, 128), (210, 30, 30), (240, 220, 30), (40, 160, 50), (250, 250, 250),
)  # fmt: skip


def scene(top, bottom=None, *, left=None, right=None, blob=None, size=96) -> Image.Image:
    rgb = np.zeros((size, size, 3), np.uint8)
    if left is not None:
        rgb[:, : size // 2], rgb[:, size // 2 :] = left, right
    else:
        rgb[: size // 2], rgb[size // 2 :] = top, bottom if bottom is not None else top
    if blob is not None:
        q = size // 4
        rgb[q : 3 * q, q : 3 * q] = blob
    return Image.fromarray(rgb)


SCENES = {
    "blue_over_grey": (scene(BLUE, GREY), {"category": "sky", "price": 30, "keywords": ["sea"]}),
    "grey_over_blue": (scene(GREY, BLUE), {"category": "sky", "price": 60}),
    "all_green": (scene(GREEN), {"category": "field", "price": 15, "keywords": ["grass"]}),
    "red_left_yellow_right": (scene(None, left=RED, right=YELLOW),
                              {"category": "flag", "price": 45, "keywords": ["used"]}),
    "yellow_left_red_right": (scene(None, left=YELLOW, right=RED),
                              {"category": "flag", "price": 5}),
    "green_with_white_centre": (scene(GREEN, blob=WHITE), {"category": "field", "title": "Daisy"}),
}  # fmt: skip


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    meta = {}
    for name, (image, metadata) in SCENES.items():
        image.save(folder / f"{name}.png")
        meta[str(folder / f"{name}.png")] = metadata
    collection = Collection.create(folder / "coll", attributes=CLASSIC)
    collection.add([folder], metadata=meta)
    yield collection
    collection.close()


def names(results) -> list[str]:
    return [Path(h.path).stem for h in results]


def test_layout_sentence_finds_blue_over_grey(coll):
    results = coll.query(layout="top predominantly blue and bottom predominantly grey", top_k=6)
    assert names(results)[0] == "blue_over_grey"
    assert results[0].score == pytest.approx(0, abs=1)
    assert names(results).index("grey_over_blue") > 0
    grid = results.explain["layout"]["grid"]
    assert grid[0][0] == "blue" and grid[15][15] == "grey"


def test_layout_halves_and_centre(coll):
    assert (
        names(coll.query(layout="left half red, right half yellow"))[0] == "red_left_yellow_right"
    )
    top = names(coll.query(layout="mostly green with some white in the centre", top_k=2))
    assert top[0] == "green_with_white_centre"


def test_unparsable_sentence_names_the_word(coll):
    with pytest.raises(QueryError, match="'fluffy'"):
        coll.query(layout="top fluffy blue")


def test_sketch_with_unspecified_cells(coll):
    sketch = [["yellow", None], [None, "red"]]  # a coarse 2x2 sketch, two cells left blank
    results = coll.query(sketch=sketch, top_k=6)
    assert names(results)[0] == "yellow_left_red_right"
    assert results.explain["sketch"]["specified_cells"] == 128
    assert results[0].score == pytest.approx(0, abs=1e-6)  # every drawn cell is there
    best = results[0].details["sketch"]  # both of the paper's coefficients, per image
    assert best["simple_matching"] == 128 and best["jaccard"] == pytest.approx(0.5)
    assert best["specified_share"] == pytest.approx(1.0)
    mirrored = results[names(results).index("red_left_yellow_right")].details["sketch"]
    assert mirrored["simple_matching"] == 0


def test_sketch_from_a_drawing(coll, tmp_path):
    drawing = np.zeros((64, 64, 4), np.uint8)  # transparent = unspecified
    drawing[:32, :, :] = (*BLUE, 255)
    Image.fromarray(drawing).save(tmp_path / "sketch.png")
    results = coll.query(sketch=tmp_path / "sketch.png", top_k=2)
    assert names(results)[0] == "blue_over_grey"


def test_index_key_query(coll):
    results = coll.query(colors="red then yellow", top_k=6)
    assert set(names(results)[:2]) == {"red_left_yellow_right", "yellow_left_red_right"}


def test_filters_combine_with_any_query(coll):
    results = coll.query(where="category = 'flag' AND price BETWEEN 10 AND 50", top_k=10)
    assert names(results) == ["red_left_yellow_right"]
    results = coll.query(layout="top blue", where="NOT keywords CONTAINS 'sea'", top_k=10)
    assert "blue_over_grey" not in names(results) and len(results) == 5
    hostile = coll.query(where="title = 'x'' OR 1=1 --'", top_k=10)
    assert len(hostile) == 0
    with pytest.raises(QueryError, match="position"):
        coll.query(where="price >", top_k=10)
    assert len(coll) == 6


def test_text_search_matches_keywords_and_colour_synonyms(coll):
    results = coll.query(text="grass", top_k=6)
    assert names(results)[0] == "all_green" and results[0].score < 50
    daisy = coll.query(text="daisy", top_k=1)
    assert names(daisy) == ["green_with_white_centre"]


def test_text_prefix_and_phrase_queries(coll):
    assert names(coll.query(text="dai*", top_k=1)) == ["green_with_white_centre"]
    assert coll.query(text="dai*", top_k=1).explain["text"]["terms"] == ["dai*"]
    coll.update(
        coll.query(text="grass", top_k=1)[0].id, metadata={"title": "green meadow in spring"}
    )
    phrase = coll.query(text='"meadow in spring"', top_k=6)
    assert names(phrase)[0] == "all_green" and phrase[0].score < 50
    assert len(phrase) == 1  # words alone: images that match none are not answers
    assert len(coll.query(text='"spring in meadow"')) == 0
    example = coll.query(image=np.asarray(scene(GREEN)), text='"spring in meadow"', top_k=6)
    assert len(example) == 6 and example[0].breakdown["text"] == 100  # a hybrid ranks them all


def test_hybrid_explains_each_part(coll, tmp_path):
    example = tmp_path / "q.png"
    scene(BLUE, GREY).save(example)
    results = coll.query(
        image=example,
        layout="top blue",
        where="price < 50",
        weights="color=1",
        part_weights="image=0.5,layout=0.5",
        top_k=3,
    )
    assert names(results)[0] == "blue_over_grey"
    hit = results[0]
    assert set(hit.breakdown) == {"color", "layout"}
    assert results.explain["parts"] == {"image": 0.5, "layout": 0.5}
    assert hit.score == pytest.approx(0.5 * hit.breakdown["color"] + 0.5 * hit.breakdown["layout"])


def test_metadata_update_is_searchable(coll):
    record = coll.get(next(h.id for h in coll.query(where="category = 'field'", top_k=1)))
    coll.update(record.id, metadata={"price": 999})
    assert [h.id for h in coll.query(where="price > 500")] == [record.id]


def test_cli_query_kinds(coll, tmp_path):
    cli = [sys.executable, "-m", "lookalike", "search", "-c", str(coll.directory)]
    proc = subprocess.run(
        [*cli, "--layout", "top blue and bottom grey", "--where", "price < 100", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(json.loads(proc.stdout)["results"][0]["path"]).stem == "blue_over_grey"
    grid = tmp_path / "sketch.txt"
    grid.write_text("yellow red\nyellow red\n")
    proc = subprocess.run(
        [*cli, "--sketch", str(grid), "--top", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert Path(json.loads(proc.stdout)["results"][0]["path"]).stem == "yellow_left_red_right"
    proc = subprocess.run([*cli, "--layout", "top sparkly"], capture_output=True, text=True)
    assert proc.returncode == 1 and "sparkly" in proc.stderr


def test_sidecar_metadata(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    scene(RED).save(folder / "a.png")
    scene(BLUE).save(folder / "b.png")
    (folder / "meta.csv").write_text(
        "path,category,price,keywords\na.png,shirt,19.5,cotton;red\nb.png,shirt,45,wool\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "index",
            str(folder),
            "-c",
            str(tmp_path / "c"),
            "--attributes",
            "color",
            "--metadata",
            str(folder / "meta.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with Collection.open(tmp_path / "c") as c:
        hits = c.query(where="category = 'shirt' AND price < 20 AND keywords CONTAINS 'cotton'")
        assert [Path(h.path).name for h in hits] == ["a.png"]
        assert hits[0].metadata["price"] == 19.5
