"""Shape: regions of uniform colour and what they look like, plus the kinds of edges present.

The image is segmented by colour (Felzenszwalb's graph method) into regions; each region that
covers at least 0.5% of the image is described by eccentricity (round vs elongated) and solidity
(convex vs ragged), weighted by its area, and by its size class. An edge histogram in the
manner of MPEG-7's edge histogram descriptor adds the kind of contours present. Diagonals are
pooled so that a mirrored image keeps its shape signature.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import regionprops
from skimage.segmentation import felzenszwalb
from skimage.transform import resize

from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    block_histogram_distance,
    block_l1_space,
    normalised_histogram,
)

SEGMENT_FRAME = 128
MIN_REGION_SHARE = 0.005
ECCENTRICITY_CENTRES = (0.3, 0.7, 0.9, 0.99)  # round ... elongated
SOLIDITY_CENTRES = (0.5, 0.75, 0.95)  # ragged ... convex
SIZE_CENTRES = (-2.3, -1.9, -1.5, -1.1, -0.7, -0.3)  # log10 of the share of the image
EDGE_TYPES = ("none", "vertical", "horizontal", "diagonal", "nondirectional")
EDGE_BLOCK = 8
EDGE_THRESHOLD = 0.04


def segment(rgb: np.ndarray) -> np.ndarray:
    """Label image of colour regions, computed on a small frame for speed."""
    scale = SEGMENT_FRAME / max(rgb.shape[:2])
    if scale < 1:
        shape = (max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale)))
        rgb = resize(rgb, shape, anti_aliasing=True, preserve_range=True)
    return felzenszwalb(rgb, scale=600, sigma=0.8, min_size=90, channel_axis=-1)


def soft_bin(value: float, centres: tuple[float, ...]) -> list[tuple[int, float]]:
    """The two bins around `value` with triangular weights: a region whose elongation sits on a
    bin edge counts half in each, so a small change never flips it whole."""
    if value <= centres[0]:
        return [(0, 1.0)]
    if value >= centres[-1]:
        return [(len(centres) - 1, 1.0)]
    upper = int(np.searchsorted(centres, value))
    frac = (value - centres[upper - 1]) / (centres[upper] - centres[upper - 1])
    return [(upper - 1, 1.0 - frac), (upper, frac)]


def region_histograms(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eccentricity x solidity histogram, size-class histogram), both area-weighted."""
    total = labels.size
    form = np.zeros(len(ECCENTRICITY_CENTRES) * len(SOLIDITY_CENTRES))
    sizes = np.zeros(len(SIZE_CENTRES))
    for region in regionprops(labels + 1):
        share = region.area / total
        if share < MIN_REGION_SHARE:
            continue
        for ecc, w_ecc in soft_bin(region.eccentricity, ECCENTRICITY_CENTRES):
            for sol, w_sol in soft_bin(region.solidity, SOLIDITY_CENTRES):
                form[ecc * len(SOLIDITY_CENTRES) + sol] += share * w_ecc * w_sol
        for size, w_size in soft_bin(np.log10(share), SIZE_CENTRES):
            sizes[size] += share * w_size
    return normalised_histogram(form), normalised_histogram(sizes)


def edge_type_map(gray: np.ndarray, block: int = EDGE_BLOCK) -> np.ndarray:
    """Per block of `block` pixels: index into EDGE_TYPES (MPEG-7 style 2x2 sub-block filters)."""
    half = block // 2
    rows, cols = gray.shape[0] // block, gray.shape[1] // block
    if rows == 0 or cols == 0:
        return np.zeros((max(rows, 1), max(cols, 1)), dtype=np.int64)
    g = gray[: rows * block, : cols * block]
    sub = g.reshape(rows * 2, half, cols * 2, half).mean(axis=(1, 3))
    a0, a1 = sub[0::2, 0::2], sub[0::2, 1::2]
    a2, a3 = sub[1::2, 0::2], sub[1::2, 1::2]
    root2 = np.sqrt(2.0)
    responses = (
        np.stack(
            [
                np.abs(a0 - a1 + a2 - a3),  # vertical
                np.abs(a0 + a1 - a2 - a3),  # horizontal
                np.maximum(np.abs(root2 * (a0 - a3)), np.abs(root2 * (a1 - a2))),  # diagonals
                np.abs(2 * (a0 - a1 - a2 + a3)),  # non-directional
            ]
        )
        / 2.0
    )
    kind = responses.argmax(axis=0) + 1
    return np.where(responses.max(axis=0) >= EDGE_THRESHOLD, kind, 0)


def edge_histogram(types: np.ndarray) -> np.ndarray:
    return normalised_histogram(np.bincount(types.ravel(), minlength=len(EDGE_TYPES)))


class ShapeExtractor:
    name = "shape"
    version = "3"
    BLOCK_WEIGHTS = [0.25, 0.25, 0.5]

    def __init__(self) -> None:
        self.blocks = [
            len(ECCENTRICITY_CENTRES) * len(SOLIDITY_CENTRES),
            len(SIZE_CENTRES),
            len(EDGE_TYPES),
        ]
        self.dim = sum(self.blocks)

    def extract(self, image: PreparedImage) -> np.ndarray:
        form, sizes = region_histograms(segment(image.rgb))
        edges = edge_histogram(edge_type_map(image.gray))
        return np.concatenate([form, sizes, edges]).astype(np.float32)

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        # Edges are the steadier half under crops and recompression; regions refine them.
        return block_histogram_distance(query, stored, self.blocks, self.BLOCK_WEIGHTS)

    def index_space(self) -> IndexSpace:
        return block_l1_space(self.blocks, self.BLOCK_WEIGHTS)
