"""Layout sentences ("top predominantly blue and bottom predominantly grey") and colour words."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.errors import QueryError
from lookalike.features.base import LOADED_KERNELS
from lookalike.features.perceptual import TERMS, index_matrix, name_pixels
from lookalike.query.colorwords import synonyms_of_term, terms_for_word
from lookalike.query.layout import parse_layout, render_grid

T = {term: TERMS.index(term) for term in TERMS}


def scene(top: str, bottom: str, size: int = 16) -> np.ndarray:
    matrix = np.full((size, size), T[bottom], np.int8)
    matrix[: size // 2] = T[top]
    return matrix


# -- colour words -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "terms"),
    [
        ("navy", ("blue",)),
        ("crimson", ("red",)),
        ("scarlet", ("red",)),
        ("maroon", ("red", "brown")),
        ("beige", ("brown", "white")),
        ("gray", ("grey",)),
        ("violet", ("purple",)),
        ("lilac", ("purple",)),
        ("lavender", ("purple",)),
        ("teal", ("blue", "green")),
        ("turquoise", ("blue", "green")),
        ("olive", ("green",)),
        ("gold", ("yellow",)),
        ("tan", ("brown",)),
        ("ivory", ("white",)),
        ("cream", ("white",)),
        ("charcoal", ("grey", "black")),
        ("magenta", ("pink", "purple")),
        ("fuchsia", ("pink", "purple")),
        ("Light Blue", ("blue",)),
        ("navy blue", ("blue",)),
        ("off-white", ("white",)),
        ("blue green", ("green", "blue")),
        ("reddish brown", ("brown", "red")),
        ("blues", ("blue",)),
        ("table", ()),
        ("dark", ()),
        ("", ()),
    ],
)
def test_terms_for_word(word, terms):
    assert terms_for_word(word) == terms


def test_synonyms_of_term_for_text_search():
    assert {"navy", "azure", "cobalt"} <= set(synonyms_of_term("blue"))
    assert "blue" not in synonyms_of_term("blue")
    assert "gray" in synonyms_of_term("grey")
    assert "beige" not in synonyms_of_term("white")
    assert "beige" in synonyms_of_term("white", include_secondary=True)
    with pytest.raises(ValueError):
        synonyms_of_term("plaid")


# -- sentences ----------------------------------------------------------------------------------


def test_paper_example_top_blue_bottom_grey():
    query = parse_layout("top predominantly blue and bottom predominantly grey")
    cells = query.grid.cells
    assert (cells[:8] == T["blue"]).all() and (cells[8:] == T["grey"]).all()
    matrices = np.stack([scene("grey", "blue"), scene("blue", "grey"), scene("green", "green")])
    scores = query.score(matrices)
    assert scores.tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert np.argmax(scores) == 1


def test_paper_sentence_word_for_word():
    text = (
        "Select image where the up part is predominantly blue and down part is predominantly gray"
    )
    reference = parse_layout("top predominantly blue and bottom predominantly grey")
    assert np.array_equal(parse_layout(text).grid.cells, reference.grid.cells)


@pytest.mark.parametrize(
    "text",
    [
        "top predominantly blue",
        "the top is predominantly blue",
        "blue top",
        "upper half mostly navy",
        "the upper part of the image is blue",
        "top: blue",
    ],
)
def test_word_order_variants(text):
    cells = parse_layout(text).grid.cells
    assert (cells[:8] == T["blue"]).all() and (cells[8:] == -1).all()


def test_later_clauses_override_and_some_is_part_of_the_region():
    query = parse_layout("mostly green with some white in the centre")
    cells = query.grid.cells
    white = cells == T["white"]
    assert white.sum() == 16 and white[6:10, 6:10].all()  # the middle half of the centre
    centre = np.zeros((16, 16), bool)
    centre[4:12, 4:12] = True
    assert (cells[~centre] == T["green"]).all()
    assert (cells[centre & ~white] == -1).all()  # the rest of the centre is left open
    assert [c.describe() for c in query.clauses] == ["whole image: green", "centre: some white"]
    # "some" white may sit anywhere in the centre
    moved = np.full((16, 16), T["green"], np.int8)
    moved[4:8, 4:8] = T["white"]
    exact = query.grid.cells.copy()
    none = np.full((16, 16), T["green"], np.int8)
    scores = query.score(np.stack([exact, moved, none]))
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(1.0)
    assert scores[1] > scores[2]


def test_halves_thirds_corners_and_centre():
    cells = parse_layout("left half red, right half yellow").grid.cells
    assert (cells[:, :8] == T["red"]).all() and (cells[:, 8:] == T["yellow"]).all()
    cells = parse_layout("top third is white").grid.cells
    assert (cells[:5] == T["white"]).all() and (cells[5:] == -1).all()
    cells = parse_layout("the top-left corner is black").grid.cells
    assert (cells[:5, :5] == T["black"]).all() and (cells >= 0).sum() == 25
    cells = parse_layout("upper left corner black").grid.cells
    assert (cells[:5, :5] == T["black"]).all() and (cells >= 0).sum() == 25
    cells = parse_layout("top left red").grid.cells  # two regions intersect: a quarter
    assert (cells[:8, :8] == T["red"]).all() and (cells >= 0).sum() == 64
    cells = parse_layout("red in the middle").grid.cells
    assert (cells[4:12, 4:12] == T["red"]).all() and (cells >= 0).sum() == 64
    cells = parse_layout("everywhere orange").grid.cells
    assert (cells == T["orange"]).all()


def test_regions_shared_by_and():
    cells = parse_layout("top third and bottom third are blue").grid.cells
    assert (cells[:5] == T["blue"]).all() and (cells[11:] == T["blue"]).all()
    assert (cells[5:11] == -1).all()
    cells = parse_layout("blue left and right third").grid.cells
    assert (cells[:, :8] == T["blue"]).all() and (cells[:, 11:] == T["blue"]).all()


def test_negative_constraints_penalise_the_forbidden_colour():
    query = parse_layout("mostly blue without red at the top")
    assert [term for term, _ in query.negatives] == ["red"]
    term, mask = query.negatives[0]
    assert mask[:8].all() and not mask[8:].any()
    clean = np.full((16, 16), T["blue"], np.int8)
    red_top = clean.copy()
    red_top[:4] = T["red"]
    red_bottom = clean.copy()
    red_bottom[12:] = T["red"]
    scores = query.score(np.stack([clean, red_top, red_bottom]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[2] == pytest.approx(0.75)  # only cells missing blue
    assert scores[1] == pytest.approx(0.75 - 0.5)  # and half the top is red
    only_negative = parse_layout("no red")
    assert only_negative.score(np.stack([clean, red_top])).tolist() == pytest.approx([1.0, 0.75])


def test_render_shows_letters_open_cells_and_bans():
    query = parse_layout("top blue, no red in the bottom left corner")
    lines = query.render().splitlines()
    assert lines[0] == " ".join("B" * 16)
    assert lines[15].startswith("r r r r r . .")
    assert lines[-1] == "B = blue, r = not red, . = any colour"
    assert render_grid(query.grid, legend=False).splitlines()[15] == " ".join("." * 16)


def test_several_readings_all_count_when_scoring():
    query = parse_layout("beige top")
    assert query.grid.cells[0, 0] == T["brown"]  # drawn with the first reading
    white_top = scene("white", "black")
    grey_top = scene("grey", "black")
    assert query.score(np.stack([white_top, grey_top])).tolist() == pytest.approx([1.0, 0.0])


def test_unparsable_sentence_names_the_word_and_position():
    with pytest.raises(QueryError) as error:
        parse_layout("top mostly blue and bottom somewhat plaid")
    assert "plaid" in str(error.value) and error.value.position == 36
    with pytest.raises(QueryError) as error:
        parse_layout("top is blue light red")
    assert "light" in str(error.value) and error.value.position == 12
    with pytest.raises(QueryError):
        parse_layout("")
    with pytest.raises(QueryError):
        parse_layout("the top and the bottom")
    with pytest.raises(QueryError) as error:
        parse_layout("top bottom blue")
    assert "overlap" in str(error.value)


def test_layout_ranks_real_naming_of_synthetic_images():
    def image(top: tuple[float, float, float], bottom: tuple[float, float, float]) -> np.ndarray:
        rgb = np.empty((64, 64, 3), np.float32)
        rgb[:32], rgb[32:] = top, bottom
        return index_matrix(name_pixels(rgb))

    sky, road, grass = (0.2, 0.4, 0.9), (0.45, 0.45, 0.47), (0.1, 0.6, 0.1)
    matrices = np.stack([image(road, sky), image(sky, road), image(grass, grass)])
    scores = parse_layout("up part is predominantly blue and down part is gray").score(matrices)
    assert np.argmax(scores) == 1 and scores[1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "sentence",
    [
        "top blue or grey",
        "left red or orange or yellow and bottom green",
        "blue or white above green or brown",
        "no red or pink, right black",
    ],
)
def test_stored_int8_matrices_score_every_colour_of_a_clause(sentence):
    """Index matrices come from the index as int8, where cells are matched by comparisons
    per colour (fast); any other integer type goes through np.isin. Both score alike, each
    colour of an "or" counting."""
    rng = np.random.default_rng(4)
    matrices = rng.integers(0, len(TERMS), (300, 16, 16)).astype(np.int8)
    layout = parse_layout(sentence)
    scores = layout.score(matrices)
    assert np.array_equal(scores, layout.score(matrices.astype(np.int64)))
    assert len(np.unique(scores)) > 2  # the colours really vary the scores


def test_compiled_layout_kernels_score_as_numpy_does_bit_for_bit(monkeypatch):
    """A server scores layout sentences with compiled kernels (one pass over the matrices,
    4-5x numpy's speed at 1M images); every relation kind, both sides, clauses of every
    quantity, mixed regions, negatives and alternatives give numpy's scores exactly."""
    from lookalike.query import layout

    rng = np.random.default_rng(0)
    stack = rng.integers(-1, len(TERMS), (3000, 16, 16)).astype(np.int8)
    stack[:1000] = rng.integers(0, 3, (1000, 16, 16))  # few colours: many ordered pairs
    stack[1000:1100] = 4  # one colour only
    sentences = [
        "blue above green", "green below blue", "red left of white", "white right of red",
        "blue beside yellow", "top blue and bottom green", "top blue or grey and bottom white",
        "some red in the centre and no green at the top", "the top is blue and grey",
        "blue above green and red left of white", "left third black or blue above white",
    ]  # fmt: skip
    monkeypatch.setitem(LOADED_KERNELS, "layout", False)
    want = {s: parse_layout(s).score(stack) for s in sentences}
    layout.load_layout_kernels()
    assert LOADED_KERNELS["layout"]
    for sentence in sentences:
        assert np.array_equal(parse_layout(sentence).score(stack), want[sentence]), sentence
    assert want["blue above green"].max() > 0.5 and want["blue beside yellow"].max() > 0.5


def test_a_server_scores_layout_sentences_with_its_kernels_as_a_cli_process_does(
    tmp_path, monkeypatch
):
    """`lookalike serve` loads the kernels at start-up; its layout answers (ids and scores)
    are those of a process scoring with numpy."""
    import sys
    from pathlib import Path

    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_load
    from server_fixtures import fresh_collection

    from lookalike.api import Collection

    folder = fresh_collection(tmp_path / "base", tmp_path / "coll")
    sentences = [
        "blue above grey",
        "red left of blue",
        "yellow beside green",
        "top red and bottom green",
    ]
    monkeypatch.setitem(LOADED_KERNELS, "layout", False)  # this process: numpy (an
    # in-process server test before this one may have loaded the kernels)
    with Collection.open(folder) as coll:
        want = {s: coll.query(layout=s, top_k=None).to_dict()["results"] for s in sentences}
    port = bench_load.free_port()
    process = bench_load.start_server(folder, port)  # as users start it; /api/health up
    try:
        for sentence in sentences:
            got = httpx.post(
                f"http://127.0.0.1:{port}/api/search",
                data={"layout": sentence, "top_k": str(len(want[sentence]))},
                timeout=60,
            ).json()["results"]
            assert [(h["id"], h["score"]) for h in got] == [
                (h["id"], h["score"]) for h in want[sentence]
            ], sentence
            assert got[0]["score"] < 25 and got[-1]["score"] > 50  # it tells images apart
    finally:
        bench_load.stop_server(process)
