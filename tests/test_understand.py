"""One query box (issue 11): colour words, layout phrases and keywords read from one text,
through the CLI and over HTTP; and the layout language's new forms, each ranking a
constructed image first."""

from __future__ import annotations

import pytest
from query_fixtures import names, query_collection, run, run_json

from lookalike.errors import QueryError
from lookalike.query.layout import parse_layout
from lookalike.query.understand import understand


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    return query_collection(tmp_path_factory)[0]


def test_reading_splits_colours_layout_and_words():
    reading = understand('red dress "summer sale"')
    assert reading.colors == ["red"] and reading.layout is None
    assert reading.keywords == '"summer sale" dress'
    reading = understand("top navy and bottom grey")
    assert reading.layout == "top navy and bottom grey" and reading.keywords is None
    assert understand("kitten").keywords == "kitten" and not understand("kitten").colors


def test_text_blue_finds_blue_images_first(coll):
    results = run_json("search", "-c", str(coll), "--text", "blue", "--top", "6")
    top = names(results)
    assert all("blue" in name for name in top[:4]), top
    assert results["explain"]["understood"]["colors"] == "blue"
    assert "red" not in " ".join(top[:4])
    plain = run_json("search", "-c", str(coll), "--text", "blue", "--no-understand")
    assert plain["results"] == [] and "understood" not in plain["explain"]


def test_red_dress_ranks_red_things_tagged_dress_first(coll):
    top = names(run_json("search", "-c", str(coll), "--text", "red dress", "--top", "8"))
    assert top[0] == "red_dress", top  # red and tagged dress; then red or dress things
    assert {"blue_dress", "red_car"} <= set(top), top


def test_layout_words_in_the_box_become_a_layout(coll):
    results = run_json("search", "-c", str(coll), "--text", "top blue and bottom grey")
    assert names(results)[0] == "blue_over_grey"
    assert results["explain"]["understood"]["layout"] == "top blue and bottom grey"
    assert "layout" in results["explain"]["parts"]


@pytest.mark.parametrize(
    ("sentence", "first"),
    [
        ("the up part is blue and gray", "top_blue_and_grey"),
        ("blue above grey", "blue_patch_above_grey|blue_over_grey"),
        ("grey under blue", "blue_patch_above_grey|blue_over_grey"),
        ("red left of green", "red_left_green"),
        ("red to the right of green", "green_left_red"),
        ("top grey or yellow and bottom blue", "grey_over_blue"),
        ("top red and bottom blue or top blue and bottom grey", "blue_over_grey"),
        (
            "Select image where the up part is predominantly blue and down part is "
            "predominantly gray",
            "blue_over_grey",
        ),
    ],
)
def test_each_layout_form_ranks_its_constructed_image_first(coll, sentence, first):
    results = run_json("search", "-c", str(coll), "--layout", sentence, "--top", "3")
    wanted = first.split("|")  # a relation holds for both: the patches and the halves
    assert set(names(results)[: len(wanted)]) == set(wanted), (sentence, names(results))


def test_relative_position_is_not_absolute():
    """A small blue patch above a small grey one matches 'blue above grey' fully, although
    neither fills a half; the halves the other way round score nothing."""
    import numpy as np

    from lookalike.features.perceptual import TERMS

    blue, grey, white = (TERMS.index(t) for t in ("blue", "grey", "white"))
    patch = np.full((16, 16), white, np.int8)
    patch[1:5, 8:13], patch[10:14, 2:6] = blue, grey
    flipped = np.full((16, 16), blue, np.int8)
    flipped[:8] = grey
    assert parse_layout("blue above grey").score(np.stack([patch, flipped])).tolist() == [1.0, 0.0]


def test_layout_errors_name_the_word_and_the_known_words(coll):
    proc = run("search", "-c", str(coll), "--layout", "top blue plaid", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    message = proc.stderr + proc.stdout
    assert "'plaid'" in message and "above" in message and "left of" in message
    with pytest.raises(QueryError, match="blue above grey"):
        parse_layout("blue above")
    with pytest.raises(QueryError, match="mixed"):
        parse_layout("top blue red green")


def test_rest_search_reads_the_box_too(coll):
    from query_fixtures import ids_by_stem
    from server_fixtures import local_client, settings_without_uploads

    from lookalike.server.app import create_app

    with local_client(create_app(coll, settings_without_uploads())) as client:
        answer = client.post("/api/search/json", json={"text": "blue", "top_k": 4}).json()
        stems = {v: k for k, v in ids_by_stem(coll).items()}
        assert all("blue" in stems[hit["id"]] for hit in answer["results"]), answer
        image = client.get(f"/api/images/{answer['results'][0]['id']}").json()
        assert image["index_key"][0]["term"] == "blue"
        assert answer["results"][0]["index_key"][0]["term"] == "blue"
