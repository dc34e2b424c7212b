"""Perceptual colour: naming obvious colours right, the index key and the index matrix."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.features.base import Extractor, PreparedImage, grid_cells
from lookalike.features.perceptual import (
    TERMS,
    PerceptualColorExtractor,
    dominant_blocks,
    index_key,
    index_matrix,
    name_pixels,
    split_perceptual,
    term_histogram,
)

# (sRGB, expected term): focal, light, dark and boundary colours people name without hesitation.
NAMED = [
    ((255, 0, 0), "red"),
    ((200, 0, 0), "red"),
    ((139, 0, 0), "red"),  # dark red
    ((128, 0, 0), "red"),  # maroon
    ((220, 20, 60), "red"),  # crimson
    ((0, 0, 255), "blue"),
    ((0, 0, 128), "blue"),  # navy
    ((0, 0, 80), "blue"),  # very dark navy
    ((135, 206, 235), "blue"),  # sky blue
    ((173, 216, 230), "blue"),  # light blue
    ((65, 105, 225), "blue"),  # royal blue
    ((70, 130, 180), "blue"),  # steel blue
    ((0, 128, 128), "blue"),  # teal (see colorwords: blue first)
    ((0, 255, 255), "blue"),  # cyan
    ((0, 128, 0), "green"),
    ((0, 255, 0), "green"),
    ((34, 139, 34), "green"),  # forest green
    ((0, 100, 0), "green"),  # dark green
    ((128, 128, 0), "green"),  # olive
    ((85, 107, 47), "green"),  # dark olive green
    ((144, 238, 144), "green"),  # light green
    ((255, 255, 0), "yellow"),
    ((255, 215, 0), "yellow"),  # gold
    ((255, 255, 150), "yellow"),  # light yellow
    ((139, 69, 19), "brown"),  # saddle brown
    ((101, 67, 33), "brown"),  # dark brown
    ((160, 82, 45), "brown"),  # sienna
    ((210, 180, 140), "brown"),  # tan
    ((230, 218, 166), "brown"),  # the usual beige swatch
    ((245, 245, 220), "white"),  # CSS beige: nearly white
    ((255, 255, 255), "white"),
    ((250, 250, 250), "white"),
    ((255, 253, 208), "white"),  # cream
    ((0, 0, 0), "black"),
    ((12, 12, 12), "black"),
    ((20, 20, 30), "black"),
    ((128, 128, 128), "grey"),
    ((80, 80, 80), "grey"),
    ((192, 192, 192), "grey"),  # silver
    ((112, 128, 144), "grey"),  # slate grey
    ((255, 192, 203), "pink"),
    ((255, 105, 180), "pink"),  # hot pink
    ((255, 20, 147), "pink"),  # deep pink
    ((128, 0, 128), "purple"),
    ((148, 0, 211), "purple"),  # dark violet
    ((238, 130, 238), "purple"),  # violet
    ((75, 0, 130), "purple"),  # indigo
    ((200, 162, 200), "purple"),  # lilac
    ((255, 165, 0), "orange"),
    ((255, 140, 0), "orange"),  # dark orange
    ((255, 127, 80), "orange"),  # coral
    ((255, 200, 150), "orange"),  # light orange / peach
]


def _image(colour: tuple[int, int, int], shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32) / 255.0, shape + (3,)).copy()


def test_names_obvious_colours():
    rgb = np.array([[c for c, _ in NAMED]], dtype=np.float32) / 255.0
    got = [TERMS[i] for i in name_pixels(rgb)[0]]
    wrong = [(c, want, have) for (c, want), have in zip(NAMED, got, strict=True) if want != have]
    assert not wrong, f"misnamed (rgb, expected, got): {wrong}"


def test_uint8_and_float_input_agree():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert np.array_equal(name_pixels(u8), name_pixels(u8.astype(np.float32) / 255.0))


def test_naming_of_a_full_frame_is_int8_terms():
    # (speed lives in bench/bench_index.py, not in a timed unit test)
    image = np.random.default_rng(0).random((256, 256, 3), dtype=np.float32)
    names = name_pixels(image)
    assert names.shape == (256, 256) and names.dtype == np.int8
    assert names.min() >= 0 and names.max() < len(TERMS)


def test_histogram_shares_sum_to_one():
    rgb = np.zeros((10, 10, 3), np.float32)
    rgb[:7] = (0, 0, 1)  # 70 % blue
    rgb[7:] = (1, 1, 1)  # 30 % white
    hist = term_histogram(name_pixels(rgb))
    assert hist.dtype == np.float32 and hist.shape == (11,)
    assert hist.sum() == pytest.approx(1.0)
    assert hist[TERMS.index("blue")] == pytest.approx(0.7)
    assert hist[TERMS.index("white")] == pytest.approx(0.3)


def test_index_key_orders_by_dominance_with_ties_in_terms_order():
    hist = np.zeros(11, np.float32)
    hist[TERMS.index("blue")] = 0.5
    hist[TERMS.index("white")] = 0.2
    hist[TERMS.index("red")] = 0.2
    hist[TERMS.index("grey")] = 0.095
    hist[TERMS.index("pink")] = 0.005  # below min_share
    assert index_key(hist) == ("blue", "white", "red", "grey")
    assert index_key(hist, min_share=0.1) == ("blue", "white", "red")


def blue_over_grey(height: int = 96, width: int = 128) -> np.ndarray:
    rgb = np.empty((height, width, 3), np.float32)
    rgb[: height // 2] = (0.1, 0.2, 0.8)
    rgb[height // 2 :] = (0.5, 0.5, 0.5)
    return rgb


def test_index_matrix_of_blue_over_grey():
    matrix = index_matrix(name_pixels(blue_over_grey()))
    assert matrix.shape == (16, 16) and matrix.dtype == np.int8
    assert (matrix[:8] == TERMS.index("blue")).all()
    assert (matrix[8:] == TERMS.index("grey")).all()


def test_index_matrix_cells_follow_grid_cells():
    names = np.random.default_rng(3).integers(0, 11, size=(50, 70)).astype(np.int8)
    matrix = index_matrix(names)
    for n, (ys, xs) in enumerate(grid_cells(50, 70, 16, 16)):
        counts = np.bincount(names[ys, xs].ravel(), minlength=11)
        assert matrix.flat[n] == counts.argmax()  # ties: first term in TERMS order


def test_index_matrix_of_tiny_image_has_no_empty_cells():
    names = np.array([[2, 5], [3, 4]], np.int8)
    matrix = index_matrix(names)
    assert (matrix >= 0).all()
    assert (matrix[:8, :8] == 2).all() and (matrix[8:, 8:] == 4).all()


def test_dominant_blocks_leaves_thin_cells_open():
    names = np.full((16, 16), -1, np.int8)
    names[:8, :8] = TERMS.index("red")
    names[8, 8] = TERMS.index("blue")  # one stray pixel in a 8x8 cell
    blocks = dominant_blocks(names, 2, 2, min_coverage=0.5)
    assert blocks.tolist() == [[TERMS.index("red"), -1], [-1, -1]]


def test_extractor_vector_and_distance():
    extractor = PerceptualColorExtractor()
    assert isinstance(extractor, Extractor)
    assert extractor.dim == 11 + 256
    a = extractor.extract(PreparedImage(blue_over_grey()))
    b = extractor.extract(PreparedImage(blue_over_grey()[::-1].copy()))  # grey over blue
    c = extractor.extract(PreparedImage(_image((0, 160, 0), (64, 64))))  # all green
    assert a.dtype == np.float32 and a.shape == (267,)
    hist, matrices = split_perceptual(np.stack([a, b, c]))
    assert hist.shape == (3, 11) and matrices.shape == (3, 16, 16)
    assert (matrices[0, :8] == TERMS.index("blue")).all()
    d = extractor.distance(a, np.stack([a, b, c]))
    assert d.dtype == np.float64
    # Same colours elsewhere: histogram part 0, every cell differs: 50.
    assert d.tolist() == pytest.approx([0.0, 50.0, 100.0])


def test_split_accepts_a_single_vector_and_rejects_wrong_sizes():
    hist, matrices = split_perceptual(np.zeros(267, np.float32))
    assert hist.shape == (1, 11) and matrices.shape == (1, 16, 16)
    with pytest.raises(ValueError):
        split_perceptual(np.zeros((2, 266), np.float32))
