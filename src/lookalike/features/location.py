"""Location: where colours, textures and shapes sit, as a grid of local descriptors.

Location alone means nothing to a user ("where what?"), so, as in Oracle interMedia, it is
combined with each of the three attributes: the image is split into a 4x4 grid and each cell
gets its own small colour, texture or edge histogram. Two images score 0 only when the same
content sits in the same cells; moving content to other cells raises the score even when the
global distribution is unchanged.
"""

from __future__ import annotations

import numpy as np

from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    block_histogram_distance,
    block_l1_space,
    cell_histograms,
    grid_cell_index,
)
from lookalike.features.color import hsv_cell_histograms, hsv_histogram_size
from lookalike.features.shape import EDGE_TYPES, edge_types
from lookalike.features.texture import STRENGTH_BINS, gradient_strength_bins, lbp_codes

GRID = 4


class _GridExtractor:
    """Shared machinery: a per-cell histogram of `cell_dim` bins over a GRID x GRID grid."""

    name = ""
    version = "1"
    cell_dim = 0
    compile_size = 16  # compiled loops: features.base.warm_up

    def __init__(self) -> None:
        self.dim = GRID * GRID * self.cell_dim

    def cell_index(self, image: PreparedImage) -> np.ndarray:
        """Each pixel's cell number (shared by every grid extractor of the image)."""
        return image.shared(
            f"grid{GRID}", lambda: grid_cell_index(image.height, image.width, GRID, GRID)
        )

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        return block_histogram_distance(query, stored, [self.cell_dim] * (GRID * GRID))

    def index_space(self) -> IndexSpace:
        return block_l1_space([self.cell_dim] * (GRID * GRID))


class ColorLocationExtractor(_GridExtractor):
    """Per cell: 12 hues x 1 saturation x 2 values, plus 3 greys."""

    name = "color_location"
    HUE_BINS, SAT_LEVELS, VAL_LEVELS = 12, 1, 3
    cell_dim = hsv_histogram_size(HUE_BINS, SAT_LEVELS, VAL_LEVELS)

    def extract(self, image: PreparedImage) -> np.ndarray:
        levels = (self.HUE_BINS, self.SAT_LEVELS, self.VAL_LEVELS)
        cells = self.cell_index(image)
        return hsv_cell_histograms(image.hsv, cells, GRID * GRID, *levels).ravel()


class TextureLocationExtractor(_GridExtractor):
    """Per cell: radius-1 uniform LBP (10 bins) and gradient strength (8 bins)."""

    name = "texture_location"
    version = "3"
    cell_dim = 10 + STRENGTH_BINS

    def extract(self, image: PreparedImage) -> np.ndarray:
        # LBP is computed once on the whole image so that cell borders do not create patterns.
        cells = self.cell_index(image)
        lbp = cell_histograms(lbp_codes(image, 8, 1.0), cells, GRID * GRID, 10)
        strength = cell_histograms(gradient_strength_bins(image), cells, GRID * GRID, STRENGTH_BINS)
        return np.concatenate([lbp, strength], axis=1).ravel()


class ShapeLocationExtractor(_GridExtractor):
    """Per cell: the share of blocks with no edge, vertical, horizontal, diagonal, other edges."""

    name = "shape_location"
    cell_dim = len(EDGE_TYPES)

    def extract(self, image: PreparedImage) -> np.ndarray:
        types = edge_types(image)
        cells = grid_cell_index(types.shape[0], types.shape[1], GRID, GRID)
        return cell_histograms(types, cells, GRID * GRID, self.cell_dim).ravel()
