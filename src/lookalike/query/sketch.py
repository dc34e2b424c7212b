"""Query by sketch: a grid of basic colour terms matched against the stored index matrices.

Rachev et al. let users build a *query matrix* of colour descriptors (-1 where the sketch says
nothing) and rank images by how many cells of their index matrix agree. A `QueryGrid` is that
matrix. It can be built from a coarser grid, from text, from JSON or from a drawing, and it is
always brought to the size of the stored matrices (16 x 16) so that matching is a plain
cell-by-cell comparison.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lookalike.errors import QueryError
from lookalike.features.perceptual import (
    MATRIX_SIZE,
    N_TERMS,
    TERMS,
    dominant_blocks,
    index_matrix,
    name_pixels,
)
from lookalike.query.colorwords import terms_for_word

UNSPECIFIED = -1

# One letter per term for showing grids as text: the initial where it is free, else a letter
# of the word (blacK, browN, pInk, grAy). Parsers accept these letters back.
CODES: dict[str, str] = {
    "white": "W",
    "black": "K",
    "red": "R",
    "green": "G",
    "yellow": "Y",
    "blue": "B",
    "brown": "N",
    "purple": "P",
    "pink": "I",
    "orange": "O",
    "grey": "A",
}
_CODE_TERM = {code: term for term, code in CODES.items()}
_BLANK_TOKENS = frozenset({".", "-", "?", "_"})


def term_index_of(token: str) -> int | None:
    """Term index for a cell token: a term, a colour word (its first term) or a one-letter code."""
    if len(token) == 1 and token.upper() in _CODE_TERM:
        return TERMS.index(_CODE_TERM[token.upper()])
    terms = terms_for_word(token)
    return TERMS.index(terms[0]) if terms else None


def _resize_nearest(cells: np.ndarray, size: int) -> np.ndarray:
    """Any n x m grid -> size x size by nearest neighbour (cell centres map to cell centres)."""
    rows, cols = cells.shape
    ys = np.minimum(((np.arange(size) + 0.5) * rows / size).astype(int), rows - 1)
    xs = np.minimum(((np.arange(size) + 0.5) * cols / size).astype(int), cols - 1)
    return cells[ys][:, xs]


@dataclass(frozen=True, eq=False)
class QueryGrid:
    """A size x size int8 grid of term indices (into TERMS); -1 marks cells the user left open."""

    cells: np.ndarray

    def __post_init__(self) -> None:
        cells = np.array(self.cells, dtype=np.int8, copy=True)
        if cells.ndim != 2 or cells.shape[0] != cells.shape[1] or cells.shape[0] == 0:
            raise ValueError(f"a query grid is square, got shape {cells.shape}")
        if cells.min() < UNSPECIFIED or cells.max() >= N_TERMS:
            raise ValueError(f"grid cells must be -1 or a term index 0..{N_TERMS - 1}")
        cells.setflags(write=False)
        object.__setattr__(self, "cells", cells)

    @property
    def size(self) -> int:
        return int(self.cells.shape[0])

    @property
    def specified(self) -> np.ndarray:
        """Boolean mask of the cells that say something."""
        return self.cells >= 0

    @property
    def specified_count(self) -> int:
        return int(self.specified.sum())

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def empty(cls, size: int = MATRIX_SIZE) -> QueryGrid:
        return cls(np.full((size, size), UNSPECIFIED, dtype=np.int8))

    @classmethod
    def from_coarse(cls, cells: Any, size: int = MATRIX_SIZE) -> QueryGrid:
        """From any n x m grid of term indices (-1 = open), resized to size x size.

        Smaller grids are scaled up by nearest neighbour, whether or not n divides the size
        (a 3 x 3 grid gives bands of 5, 6 and 5 cells). Finer grids are reduced by majority
        vote per cell; a cell most of whose sources are open stays open.
        """
        array = np.asarray(cells)
        if array.ndim != 2 or 0 in array.shape:
            raise QueryError(f"a grid needs rows and columns, got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise QueryError("grid cells must be term indices (integers); use from_json for names")
        if array.min() < UNSPECIFIED or array.max() >= N_TERMS:
            raise QueryError(f"grid cells must be -1 or a term index 0..{N_TERMS - 1}")
        array = array.astype(np.int8)
        if array.shape[0] >= size and array.shape[1] >= size:
            resized = dominant_blocks(array, size, size, min_coverage=0.5)
        else:
            resized = _resize_nearest(array, size)
        return cls(resized)

    @classmethod
    def from_text(cls, text: str, size: int = MATRIX_SIZE) -> QueryGrid:
        """From rows of colour words; '.', '-', '?' or '_' leave a cell open.

        Rows end at a newline, ';' or '/'; cells are separated by whitespace or commas. A cell
        is a term, any colour word of `colorwords` (its most likely term; a phrase is written
        with hyphens, e.g. sky-blue) or a one-letter code of `CODES`. Example::

            blue  blue
            grey  .
        """
        rows: list[list[int]] = []
        row_starts: list[int] = []
        current: list[int] = []
        start = 0
        for match in re.finditer(r"[\n;/]|[^\s,;/]+", text):
            token = match.group(0)
            if token in ("\n", ";", "/"):
                if current:
                    rows.append(current)
                    row_starts.append(start)
                current = []
                continue
            if not current:
                start = match.start()
            if token in _BLANK_TOKENS:
                current.append(UNSPECIFIED)
                continue
            index = term_index_of(token)
            if index is None:
                raise QueryError(f"not a colour: {token!r}", match.start())
            current.append(index)
        if current:
            rows.append(current)
            row_starts.append(start)
        if not rows:
            raise QueryError("empty sketch grid: give at least one row of colours", 0)
        width = len(rows[0])
        for row, row_start in zip(rows, row_starts, strict=True):
            if len(row) != width:
                raise QueryError(
                    f"every row needs {width} cells like the first; this one has {len(row)}",
                    row_start,
                )
        return cls.from_coarse(np.array(rows, dtype=np.int8), size)

    @classmethod
    def from_json(cls, data: str | list[Any], size: int = MATRIX_SIZE) -> QueryGrid:
        """From a JSON list of rows; each cell a colour word, a one-letter code, a term index or
        null (open)."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise QueryError(f"invalid JSON: {exc.msg}", exc.pos) from None
        if not isinstance(data, list) or not data or not all(isinstance(r, list) for r in data):
            raise QueryError("a sketch grid in JSON is a non-empty list of lists (rows)")
        width = len(data[0])
        rows: list[list[int]] = []
        for r, row in enumerate(data):
            if len(row) != width or width == 0:
                raise QueryError(f"row {r} has {len(row)} cells; every row needs {width} (> 0)")
            cells: list[int] = []
            for c, value in enumerate(row):
                if value is None:
                    cells.append(UNSPECIFIED)
                elif isinstance(value, bool):
                    raise QueryError(f"row {r}, column {c}: {value!r} is not a colour")
                elif isinstance(value, int) and UNSPECIFIED <= value < N_TERMS:
                    cells.append(value)
                elif isinstance(value, str) and (index := term_index_of(value)) is not None:
                    cells.append(index)
                elif isinstance(value, str) and value.strip() in _BLANK_TOKENS:
                    cells.append(UNSPECIFIED)
                else:
                    raise QueryError(f"row {r}, column {c}: {value!r} is not a colour")
            rows.append(cells)
        return cls.from_coarse(np.array(rows, dtype=np.int8), size)

    @classmethod
    def from_image(
        cls,
        image: Any,
        size: int = MATRIX_SIZE,
        *,
        background: tuple[int, int, int] | None = None,
        background_tolerance: int = 8,
        alpha_threshold: int = 128,
        min_coverage: float = 0.5,
    ) -> QueryGrid:
        """From a drawing: a path, a PIL image or an (H, W, 3|4) array (uint8 or float 0..1).

        Which pixels count as drawn:
        * with an alpha channel, pixels with alpha below `alpha_threshold` are not drawn (a
          transparent canvas says nothing);
        * with `background` set (e.g. (255, 255, 255) for a drawing on a white canvas), pixels
          within `background_tolerance` of that colour on every channel are not drawn; without
          it, white is a colour like any other.
        Each cell takes the dominant term of its drawn pixels, and stays open (-1) when drawn
        pixels cover less than `min_coverage` of it (a stray stroke does not pin a cell).
        """
        rgba = _load_rgba(image)
        drawn = rgba[..., 3] >= alpha_threshold
        rgb = rgba[..., :3]
        if background is not None:
            diff = np.abs(rgb.astype(np.int16) - np.asarray(background, dtype=np.int16))
            drawn &= diff.max(axis=-1) > background_tolerance
        names = name_pixels(rgb)
        names = np.where(drawn, names, np.int8(UNSPECIFIED)).astype(np.int8)
        return cls(index_matrix(names, size, min_coverage=min_coverage))

    # -- use ------------------------------------------------------------------------------------

    def to_json(self) -> list[list[str | None]]:
        """Rows of term names, None for open cells (the inverse of `from_json`)."""
        return [[TERMS[v] if v >= 0 else None for v in row] for row in self.cells.tolist()]

    def to_text(self) -> str:
        """One code letter per cell (see CODES), '.' for open cells, rows on lines."""
        letters = np.array(["."] + [CODES[t] for t in TERMS])
        return "\n".join(" ".join(letters[row + 1]) for row in self.cells)

    def match(self, matrices: np.ndarray) -> GridMatch:
        return match_grid(self, matrices)

    def score(self, matrices: np.ndarray) -> np.ndarray:
        """Ranking score in [0, 1]: the share of specified cells that agree (see match_grid)."""
        return match_grid(self, matrices).specified_share


class GridMatch(NamedTuple):
    """Agreement of one query grid with n index matrices."""

    simple_matching: np.ndarray  # (n,) int: specified cells whose term agrees
    jaccard: np.ndarray  # (n,) float: simple_matching / all cells, as in the paper
    specified_share: np.ndarray  # (n,) float: simple_matching / specified cells; rank by this


def match_grid(grid: QueryGrid | np.ndarray, matrices: np.ndarray) -> GridMatch:
    """Compare a query grid with index matrices (n, k, k) (or one (k, k)) of the same size.

    Following Rachev et al., the simple matching coefficient counts cells whose term agrees
    (open cells, -1, never agree) and their "Jaccard's coefficient" divides that count by the
    number of cells of the matrix, open ones included: their worked example has 9 of 16 cells
    agreeing with open cells in the query and reports 9/16 = 0.56.

    That divisor is the same for every image, so it cannot change a ranking, and for a sparse
    sketch it squeezes every score towards 0 (a sketch of 16 cells matched perfectly scores
    0.06). `specified_share` divides by the number of specified cells instead: 1.0 means every
    cell the user asked for is there, which is what a 0..1 score should say. It ranks exactly
    like the paper's coefficients. A grid with no specified cell gives 0 everywhere.
    """
    cells = grid.cells if isinstance(grid, QueryGrid) else np.asarray(grid)
    stack = np.asarray(matrices)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[1:] != cells.shape:
        raise ValueError(
            f"query grid {cells.shape} and index matrices {stack.shape[1:]} differ in size"
        )
    specified = cells >= 0
    if np.issubdtype(stack.dtype, np.integer) and _fits(cells, stack.dtype):
        cells = cells.astype(stack.dtype)  # compared in the matrices' own type: int8 2x faster
    agree = (stack == cells[None]) & specified[None]
    # counted as bytes: a bool sum widens every cell to int64 first
    matches = agree.reshape(len(stack), cells.size).view(np.uint8).sum(axis=1, dtype=np.int64)
    jaccard = matches / float(cells.size)
    count = int(specified.sum())
    share = matches / count if count else np.zeros(len(stack), dtype=np.float64)
    return GridMatch(matches, jaccard.astype(np.float64), share.astype(np.float64))


def _fits(values: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every value is representable in the integer `dtype`."""
    info = np.iinfo(dtype)
    return not values.size or (info.min <= values.min() and values.max() <= info.max)


def _load_rgba(image: Any) -> np.ndarray:
    """A drawing as uint8 RGBA (H, W, 4); images without alpha get an opaque channel."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise QueryError(f"a drawing array is (H, W, 3) or (H, W, 4), got {array.shape}")
        if array.dtype != np.uint8:
            array = np.clip(np.asarray(array, dtype=np.float64) * 255.0 + 0.5, 0, 255)
            array = array.astype(np.uint8)
        if array.shape[2] == 3:
            alpha = np.full(array.shape[:2] + (1,), 255, dtype=np.uint8)
            array = np.concatenate([array, alpha], axis=2)
        return np.ascontiguousarray(array)
    if isinstance(image, str | os.PathLike):
        from lookalike.decode import decode_rgba, read_source_bytes

        label = os.fspath(image)
        return decode_rgba(read_source_bytes(label), label)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image already open
        return _load_rgba(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    raise QueryError(f"a drawing is a path, a PIL image or an array, not {type(image).__name__}")


__all__ = [
    "CODES",
    "UNSPECIFIED",
    "GridMatch",
    "QueryGrid",
    "match_grid",
    "term_index_of",
]
