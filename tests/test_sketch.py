"""Sketch queries: building query grids and matching them as Rachev et al. do."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import QueryError
from lookalike.features.perceptual import TERMS
from lookalike.query.sketch import QueryGrid, match_grid

R, G, B, W, A = (TERMS.index(t) for t in ("red", "green", "blue", "white", "grey"))

# A 4 x 4 index matrix of an image, as in the paper's worked example.
STORED = np.array(
    [
        [B, B, B, B],
        [B, B, W, W],
        [G, G, G, A],
        [G, G, A, A],
    ],
    np.int8,
)


def test_paper_example_query_by_image_example():
    query = STORED.copy()
    query[0, 0] = R
    query[1, 2] = G
    query[2, 3] = W
    query[3, 0] = B  # 4 cells differ, 12 agree
    result = match_grid(query, STORED)
    assert result.simple_matching.tolist() == [12]
    assert result.jaccard.tolist() == pytest.approx([0.75])
    assert result.specified_share.tolist() == pytest.approx([0.75])


def test_paper_example_query_by_user_construction():
    query = np.full((4, 4), -1, np.int8)
    query[0, :] = B  # 4 agree
    query[1, :2] = B  # 2 agree
    query[2, :3] = G  # 3 agree
    query[3, 3] = R  # 1 differs; 6 cells left unspecified
    smc, jaccard, share = match_grid(query, STORED)
    assert smc.tolist() == [9]
    assert jaccard.tolist() == pytest.approx([0.5625])  # the paper's 9 / 16 = 0.56
    assert share.tolist() == pytest.approx([0.9])  # 9 of the 10 cells the user drew


def test_match_grid_is_vectorised_and_ranks_like_the_paper():
    matrices = np.stack([STORED, np.full((4, 4), G, np.int8), STORED[::-1]])
    query = QueryGrid.from_coarse(np.array([[B], [G]]), size=4)  # blue over green
    result = query.match(matrices)
    assert result.simple_matching.dtype == np.int64
    order_paper = np.argsort(-result.jaccard, kind="stable")
    order_share = np.argsort(-result.specified_share, kind="stable")
    assert order_paper.tolist() == order_share.tolist()
    assert order_paper[0] == 0


def test_match_grid_checks_sizes_and_empty_grid():
    with pytest.raises(ValueError):
        match_grid(np.zeros((4, 4), np.int8), np.zeros((2, 16, 16), np.int8))
    empty = match_grid(QueryGrid.empty(16), np.zeros((3, 16, 16), np.int8))
    assert empty.simple_matching.tolist() == [0, 0, 0]
    assert empty.specified_share.tolist() == [0.0, 0.0, 0.0]


def test_from_coarse_scales_any_grid_to_16():
    grid = QueryGrid.from_coarse(np.array([[B, B], [A, -1]]))
    assert grid.cells.shape == (16, 16)
    assert (grid.cells[:8] == B).all()
    assert (grid.cells[8:, :8] == A).all() and (grid.cells[8:, 8:] == -1).all()
    thirds = QueryGrid.from_coarse(np.array([[R], [G], [B]]))  # 3 does not divide 16
    column = thirds.cells[:, 0].tolist()
    assert column == [R] * 5 + [G] * 6 + [B] * 5
    assert (thirds.cells == thirds.cells[:, :1]).all()


def test_from_coarse_reduces_finer_grids_by_majority():
    fine = np.full((32, 32), R, np.int8)
    fine[:, 16:] = -1
    grid = QueryGrid.from_coarse(fine)
    assert (grid.cells[:, :8] == R).all() and (grid.cells[:, 8:] == -1).all()


def test_from_text_rows_words_codes_and_blanks():
    grid = QueryGrid.from_text(
        """
        navy   blue, sky-blue
        grey   .     B
        """
    )
    assert grid.to_json()[0][0] == "blue"
    assert grid.cells[0].tolist() == [B] * 16
    assert grid.cells[15, :5].tolist() == [A] * 5
    assert (grid.cells[15, 5:11] == -1).all() and (grid.cells[15, 11:] == B).all()
    same = QueryGrid.from_text("navy blue sky-blue; gray - b")
    assert np.array_equal(grid.cells, same.cells)


def test_from_text_errors_point_at_the_problem():
    with pytest.raises(QueryError) as error:
        QueryGrid.from_text("blue blue\nblue banana")
    assert "banana" in str(error.value) and error.value.position == 15
    with pytest.raises(QueryError) as error:
        QueryGrid.from_text("blue blue\nblue")
    assert error.value.position == 10
    with pytest.raises(QueryError):
        QueryGrid.from_text("  \n ")


def test_from_json_lists_and_text():
    grid = QueryGrid.from_json([["blue", "blue"], ["gray", None]])
    assert np.array_equal(grid.cells, QueryGrid.from_json('[["blue","blue"],["grey",null]]').cells)
    assert grid.to_json()[15][15] is None and grid.to_json()[0][0] == "blue"
    round_trip = QueryGrid.from_json(grid.to_json())
    assert np.array_equal(round_trip.cells, grid.cells)
    with pytest.raises(QueryError) as error:
        QueryGrid.from_json('[["blue", ]')
    assert error.value.position is not None
    for bad in ([["blue"], ["blue", "red"]], [["plaid"]], [[True]], {"a": 1}, []):
        with pytest.raises(QueryError):
            QueryGrid.from_json(bad)


def test_to_text_shows_codes():
    grid = QueryGrid.from_coarse(np.array([[B, -1]]), size=4)
    assert grid.to_text().splitlines()[0] == "B B . ."


def test_from_image_with_transparency(tmp_path):
    drawing = np.zeros((64, 64, 4), np.uint8)  # fully transparent canvas
    drawing[:32, :, :] = (20, 40, 220, 255)  # blue sky drawn over the top half
    drawing[40:, :8] = (255, 255, 255, 255)  # a white patch, bottom left
    path = tmp_path / "sketch.png"
    Image.fromarray(drawing, "RGBA").save(path)
    grid = QueryGrid.from_image(path)
    assert (grid.cells[:8] == B).all()
    assert (grid.cells[10:, :2] == W).all()  # drawn white is white
    assert (grid.cells[8:10] == -1).all() and (grid.cells[10:, 2:] == -1).all()


def test_from_image_white_canvas_as_background():
    drawing = np.full((48, 48, 3), 255, np.uint8)
    drawing[24:] = (200, 0, 0)
    pil = Image.fromarray(drawing)
    kept = QueryGrid.from_image(pil)
    assert (kept.cells[:8] == W).all()  # without `background`, white is a colour
    sketch = QueryGrid.from_image(pil, background=(255, 255, 255))
    assert (sketch.cells[:8] == -1).all() and (sketch.cells[8:] == R).all()


def test_from_image_rejects_what_it_cannot_read(tmp_path):
    from lookalike.errors import DecodeError

    bad = tmp_path / "not.png"
    bad.write_text("nope")
    with pytest.raises(DecodeError):
        QueryGrid.from_image(bad)
    with pytest.raises(QueryError):
        QueryGrid.from_image(42)


def test_query_grid_validates_and_is_read_only():
    grid = QueryGrid(np.zeros((4, 4), np.int8))
    with pytest.raises(ValueError):
        grid.cells[0, 0] = 3
    with pytest.raises(ValueError):
        QueryGrid(np.zeros((4, 5), np.int8))
    with pytest.raises(ValueError):
        QueryGrid(np.full((4, 4), 11, np.int8))
