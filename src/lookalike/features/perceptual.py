"""Perceptual colour: the 11 basic colour terms of Berlin and Kay, after Rachev et al.

Every pixel is given one of the eleven names people agree on across languages (white, black,
red, green, yellow, blue, brown, purple, pink, orange, grey). From the names come the two index
structures of the paper: the *index key* (terms ordered by how much of the image they cover) and
the *index matrix* (the dominant term of each cell of a 16 x 16 grid). Named colours are what a
user can ask for in words or draw in a sketch, so these structures also serve sketch and
limited-language queries (see `lookalike.query`).

Naming model: nearest prototype in CIELAB. Each term has several hand-chosen prototypes: its
focal colour plus light, dark, desaturated and boundary variants (navy and sky blue, olive and
forest green, tan and chocolate brown, ...). A single focal colour per term is not enough:
nearest of the eleven focal points calls navy purple, olive brown, tan pink, sky blue white and
dark red brown; the extra prototypes carve CIELAB into the regions people actually name.
Lightness is weighted a little less than the chromatic axes because people name hue and chroma
more consistently than lightness (a light and a dark blue are both "blue"). The model is
evaluated once on a 64-level RGB lattice (about 0.3 s, on first use) and kept as a lookup
table, so naming an image is one table look-up per pixel (about 2 ms for 256 x 256). Checked
against the colour names of X11's rgb.txt whose name contains a basic term or a clear
synonym (a rough check), it agrees on about 82 % of them; most disagreements are names X11
uses loosely ("brown" for a brick red, "maroon" for a magenta), borderlines (salmon, teal)
and where grey turns into black or white.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from skimage import color as skcolor

from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    grid_cell_index,
    lazy_njit,
    normalised_histogram,
)

TERMS: tuple[str, ...] = (
    "white",
    "black",
    "red",
    "green",
    "yellow",
    "blue",
    "brown",
    "purple",
    "pink",
    "orange",
    "grey",
)
N_TERMS = len(TERMS)
TERM_INDEX: dict[str, int] = {term: i for i, term in enumerate(TERMS)}
MATRIX_SIZE = 16

# sRGB prototypes per term as hex triplets: focal colour first, then variants and boundary
# colours. Kept as text so the table stays one line per handful of colours.
PROTOTYPES_HEX: dict[str, str] = {
    "white": ("ffffff f5f5f5 fafaf0 fffdeb f5f5e1 f0f4ff faf0f5 ececec"),
    "black": ("000000 161616 0f0f1e 1c120c 0c190f 1e0a14 262626"),
    "grey": (
        "808080 505050 3c3c3c 646464 a0a0a0 bebebe d4d4d4 708090 969687 807a76 c8c8d2 69695f b0a8a8"
    ),
    "red": ("ff0000 dc0000 be0f0f a00000 800000 690a14 dc143c b22222 ff3228 c82832 961e28 5a0f23"),
    "green": (
        "00c800 00ff00 008000 005a00 00370a 228b22 32cd32 90ee90 "
        "808000 556b2f 6b8e23 2e8b57 3cb371 98fb98 9acd32 649664 "
        "00aa6e 465a28 8fbc8f b4dc96 287350"
    ),
    "yellow": ("ffff00 ffe600 ffd700 ffff78 fffaaa f0e63c e6dc6e d2c800 faeb8c"),
    "blue": (
        "0000ff 0000c8 000080 0a145a 191970 4169e1 1e90ff 00bfff "
        "87ceeb add8e6 6495ed 4682b4 00ffff 40c8e0 0080a0 006482 "
        "b0c4de 5a5ad2 283c96 96beff 005ab4 002855 142d50 00505a "
        "2d5f73"
    ),
    "brown": (
        "8b4513 a0522d 654321 784628 50321e 96643c d2b48c c4a484 "
        "cd853f a57850 8c6e46 6e5a3c 5a3c32 805a46 b48c64 d7bea0 "
        "786432 966e5a 8c6e14"
    ),
    "purple": (
        "800080 9400d3 8a2be2 a020f0 ba55d3 4b0082 663399 5a286e "
        "461450 c8a0e6 966ebe b478dc 825aaa dcbef0 6e3c8c a06ea0 "
        "7850a0"
    ),
    "pink": (
        "ffc0cb ffb6c1 ff69b4 ff1493 db7093 ff96c8 f080a0 ffdce6 "
        "faa0aa c83c82 e65aa0 f0aad2 ff00c8 e60078 c88ca0"
    ),
    "orange": (
        "ffa500 ff8c00 ff7800 ff6414 ff7f50 e6781e fab45a ffc878 "
        "f0963c d2691e ff9664 eb5a1e ffc896 ffd7b4"
    ),
}
PROTOTYPES: dict[str, tuple[tuple[int, int, int], ...]] = {
    term: tuple(tuple(bytes.fromhex(h)) for h in text.split())
    for term, text in PROTOTYPES_HEX.items()
}

# CIELAB axis weights (L, a, b): see the module docstring.
_WEIGHTS = np.array([0.75, 1.0, 1.0], dtype=np.float32)
_LEVELS = 64  # lookup-table resolution per RGB channel: a step of 4/255, below what people name


@cache
def _prototype_table() -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) prototype Lab colours and (P,) their term indices."""
    rgb = []
    labels = []
    for term, colours in PROTOTYPES.items():
        rgb.extend(colours)
        labels.extend([TERM_INDEX[term]] * len(colours))
    lab = skcolor.rgb2lab(np.asarray(rgb, dtype=np.float64)[None, :, :] / 255.0)[0]
    lab32 = lab.astype(np.float32)
    terms = np.asarray(labels, dtype=np.int8)
    lab32.setflags(write=False)
    terms.setflags(write=False)
    return lab32, terms


def name_lab(lab: np.ndarray) -> np.ndarray:
    """Name CIELAB colours (..., 3) by their nearest prototype; the model behind the table."""
    protos, labels = _prototype_table()
    flat = np.asarray(lab, dtype=np.float32).reshape(-1, 3) * _WEIGHTS
    weighted = protos * _WEIGHTS
    # |x - p|^2 = |x|^2 - 2 x.p + |p|^2; |x|^2 is common to all prototypes and can be dropped.
    scores = flat @ (-2.0 * weighted.T)
    scores += (weighted**2).sum(axis=1)[None, :]
    return labels[np.argmin(scores, axis=1)].reshape(np.shape(lab)[:-1])


@cache
def _lookup_table() -> np.ndarray:
    """Term index for every colour of a 64^3 RGB lattice (262,144 int8, built once)."""
    axis = np.arange(_LEVELS, dtype=np.float64) / (_LEVELS - 1)
    r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(-1, 1, 3)
    lab = skcolor.rgb2lab(rgb.astype(np.float32))[:, 0, :]
    table = np.empty(len(lab), dtype=np.int8)
    for start in range(0, len(lab), 16384):  # bounded memory for the distance matrix
        table[start : start + 16384] = name_lab(lab[start : start + 16384])
    table.setflags(write=False)
    return table


def name_pixels(rgb: np.ndarray) -> np.ndarray:
    """Basic colour term index (into TERMS) of every pixel of an RGB image (H, W, 3) -> (H, W).

    Floats are taken as [0, 1]; uint8 as 0..255.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an (..., 3) RGB array, got shape {rgb.shape}")
    if rgb.dtype == np.float32:  # the prepared frame: one compiled pass, the same floats
        flat = np.ascontiguousarray(rgb.reshape(-1, 3))
        return _named_float32(flat, _lookup_table()).reshape(rgb.shape[:-1])
    if rgb.dtype == np.uint8:
        # 255 / 63 is not an integer: round through the same float path as float input.
        q = (rgb.astype(np.uint16) * (_LEVELS - 1) + 127) // 255
    else:
        q = np.rint(np.clip(rgb, 0.0, 1.0) * (_LEVELS - 1)).astype(np.uint16)
    index = (q[..., 0].astype(np.int32) * _LEVELS + q[..., 1]) * _LEVELS + q[..., 2]
    return _lookup_table()[index]


@lazy_njit(cache=True, nogil=True)
def _named_float32(rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`name_pixels` of (n, 3) float32 pixels: numpy's float32 clip, scale and rint, then the
    lattice index and the table, pixel by pixel (no temporaries)."""
    steps = np.float32(_LEVELS - 1)
    zero, one = np.float32(0.0), np.float32(1.0)
    out = np.empty(len(rgb), dtype=table.dtype)
    for i in range(len(rgb)):
        index = 0
        for c in range(3):
            level = np.rint(min(max(rgb[i, c], zero), one) * steps)
            index = index * _LEVELS + (int(level) if level >= 0 else 0)  # NaN: 0
        out[i] = table[index]
    return out


def term_histogram(names: np.ndarray) -> np.ndarray:
    """Share of pixels per term (11,), summing to 1 (all zero for an empty image)."""
    names = np.asarray(names).ravel()
    counts = np.bincount(names[names >= 0].astype(np.intp), minlength=N_TERMS)[:N_TERMS]
    return normalised_histogram(counts)


def index_key(hist: np.ndarray, min_share: float = 0.01) -> tuple[str, ...]:
    """The paper's index key: terms covering at least `min_share`, most dominant first.

    Equal shares keep the TERMS order so that the key of an image is deterministic.
    """
    hist = np.asarray(hist, dtype=np.float64).ravel()
    return tuple(TERMS[i] for i in index_key_terms(hist, min_share)[0])


def index_key_terms(hists: np.ndarray, min_share: float = 0.01) -> list[list[int]]:
    """`index_key` of each row of (n, N_TERMS) histograms, as term indices: one sort for many
    images (a page of hits) instead of a Python sort per image."""
    hists = np.atleast_2d(np.asarray(hists, dtype=np.float64))
    if hists.ndim != 2 or hists.shape[1] != N_TERMS:
        raise ValueError(f"expected histograms of {N_TERMS} shares, got shape {hists.shape}")
    orders = np.argsort(-hists, axis=1, kind="stable").tolist()  # equal shares: TERMS order
    return [
        [i for i in order if row[i] >= min_share and row[i] > 0]
        for row, order in zip(hists.tolist(), orders, strict=True)
    ]


def dominant_blocks(
    names: np.ndarray, rows: int, cols: int | None = None, min_coverage: float = 0.0
) -> np.ndarray:
    """Dominant term of each cell of a rows x cols grid over a name image (int8, -1 = none).

    Pixels named -1 (for instance transparent parts of a sketch) do not vote. A cell whose voting
    pixels cover less than `min_coverage` of it, or that has no pixels at all, is -1. Ties go
    to the term that comes first in TERMS. Cells are those of `grid_cells`, so every attribute
    that works on a grid cuts the image the same way.
    """
    names = np.asarray(names)
    cols = rows if cols is None else cols
    height, width = names.shape
    cell = grid_cell_index(height, width, rows, cols)
    valid = names >= 0
    votes = cell[valid].astype(np.intp) * N_TERMS + names[valid].astype(np.intp)
    counts = np.bincount(votes, minlength=rows * cols * N_TERMS).reshape(rows * cols, N_TERMS)
    area = np.bincount(cell.ravel(), minlength=rows * cols)
    voted = counts.sum(axis=1)
    dominant = counts.argmax(axis=1).astype(np.int8)
    enough = (voted > 0) & (voted >= min_coverage * np.maximum(area, 1))
    return np.where(enough, dominant, np.int8(-1)).astype(np.int8).reshape(rows, cols)


def index_matrix(
    names: np.ndarray, size: int = MATRIX_SIZE, min_coverage: float = 0.0
) -> np.ndarray:
    """The paper's index matrix: dominant term of each cell of a size x size grid (int8).

    Images smaller than the grid are enlarged by repeating pixels first, so no cell is empty.
    Pixels named -1 do not vote (see `dominant_blocks` for `min_coverage`).
    """
    names = np.asarray(names)
    height, width = names.shape
    if height < size or width < size:
        ys = (np.arange(max(height, size)) * height) // max(height, size)
        xs = (np.arange(max(width, size)) * width) // max(width, size)
        names = names[ys][:, xs]
    return dominant_blocks(names, size, size, min_coverage)


SPLIT_CHUNK = 65_536  # rows converted at once by `split_perceptual`


def split_perceptual(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors (n, 267) or (267,) -> histograms (n, 11) and index matrices (n, 16, 16)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    expected = N_TERMS + MATRIX_SIZE * MATRIX_SIZE
    if vectors.shape[1] != expected:
        raise ValueError(f"expected perceptual vectors of {expected} values, got {vectors.shape}")
    hist = vectors[:, :N_TERMS]
    matrices = np.empty((len(vectors), MATRIX_SIZE, MATRIX_SIZE), np.int8)
    flat = matrices.reshape(len(vectors), MATRIX_SIZE * MATRIX_SIZE)
    for start in range(0, len(vectors), SPLIT_CHUNK):  # no float temporary of every row
        part = vectors[start : start + SPLIT_CHUNK, N_TERMS:]
        flat[start : start + SPLIT_CHUNK] = np.rint(part)
    return hist, matrices


class PerceptualColorExtractor:
    """Term histogram (11 shares) followed by the 16 x 16 index matrix as float term indices.

    The distance gives each structure of the paper half of the 0..100 scale:
    50 x total variation of the histograms (the share of pixels whose colour name would have to
    change: what the index key summarises) plus 50 x the share of the 256 cells whose dominant
    term differs (where the colours are: what the index matrix holds). Both parts are in [0, 1]
    with a plain meaning, so their sum is 0 for the same naming everywhere and 100 only for
    images that share no colour name and no cell.
    """

    name = "perceptual"
    version = "1"
    dim = N_TERMS + MATRIX_SIZE * MATRIX_SIZE
    compile_size = 16  # compiled loop and colour table: features.base.warm_up

    def extract(self, image: PreparedImage) -> np.ndarray:
        names = name_pixels(image.rgb)
        hist = term_histogram(names)
        matrix = index_matrix(names, MATRIX_SIZE)
        return np.concatenate([hist, matrix.ravel().astype(np.float32)]).astype(np.float32)

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        q_hist, q_matrix = split_perceptual(query)
        s_hist, s_matrices = split_perceptual(stored)
        hist_tv = 0.5 * np.abs(s_hist.astype(np.float64) - q_hist.astype(np.float64)).sum(axis=1)
        differ = (s_matrices != q_matrix).reshape(len(s_matrices), -1).mean(axis=1)
        return np.clip(50.0 * hist_tv + 50.0 * differ, 0.0, 100.0)

    def index_space(self) -> IndexSpace:
        """L1 space: the histogram times 25 (50 x total variation) and each cell's term one-hot
        times 25/256 (a differing cell adds 2 x 25/256 = its 50/256 share), so L1 = distance."""
        cells = MATRIX_SIZE * MATRIX_SIZE

        def transform(vectors: np.ndarray) -> np.ndarray:
            hist, matrices = split_perceptual(vectors)
            onehot = np.zeros((len(vectors), cells, N_TERMS), dtype=np.float32)
            terms = np.clip(matrices.reshape(len(vectors), cells), 0, N_TERMS - 1)
            np.put_along_axis(onehot, terms[..., None].astype(np.int64), 25.0 / cells, axis=2)
            return np.concatenate([25.0 * hist, onehot.reshape(len(vectors), -1)], axis=1)

        def to_distance(values: np.ndarray) -> np.ndarray:
            return np.clip(np.asarray(values, dtype=np.float64), 0.0, 100.0)

        return IndexSpace("l1", N_TERMS + cells * N_TERMS, transform, to_distance)


__all__ = [
    "MATRIX_SIZE",
    "N_TERMS",
    "PROTOTYPES",
    "TERMS",
    "TERM_INDEX",
    "PerceptualColorExtractor",
    "dominant_blocks",
    "index_key",
    "index_matrix",
    "name_lab",
    "name_pixels",
    "split_perceptual",
    "term_histogram",
]
