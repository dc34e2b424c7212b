"""Shape: regions of uniform colour and what they look like, plus the kinds of edges present.

The image is segmented by colour (Felzenszwalb's graph method) into regions; each region that
covers at least 0.5% of the image is described by eccentricity (round vs elongated) and solidity
(convex vs ragged), weighted by its area, and by its size class. An edge histogram in the
manner of MPEG-7's edge histogram descriptor adds the kind of contours present. Diagonals are
pooled so that a mirrored image keeps its shape signature.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    block_histogram_distance,
    block_l1_space,
    compile_ahead,
    normalised_histogram,
)
from lookalike.features.segmentation import felzenszwalb

SEGMENT_FRAME = 128
SEGMENT_SCALE, SEGMENT_SIGMA, SEGMENT_MIN_SIZE = 600, 0.8, 90  # Felzenszwalb's, for that frame
MIN_REGION_SHARE = 0.005
ECCENTRICITY_CENTRES = (0.3, 0.7, 0.9, 0.99)  # round ... elongated
SOLIDITY_CENTRES = (0.5, 0.75, 0.95)  # ragged ... convex
SIZE_CENTRES = (-2.3, -1.9, -1.5, -1.1, -0.7, -0.3)  # log10 of the share of the image
EDGE_TYPES = ("none", "vertical", "horizontal", "diagonal", "nondirectional")
EDGE_BLOCK = 8
EDGE_THRESHOLD = 0.04


def segment(rgb: np.ndarray) -> np.ndarray:
    """Label image (0..n-1) of colour regions, computed on a small frame for speed."""
    scale = SEGMENT_FRAME / max(rgb.shape[:2])
    if scale < 1:
        shape = (max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale)))
        rgb = antialiased_resize(rgb, shape)
    return felzenszwalb(rgb, SEGMENT_SCALE, SEGMENT_SIGMA, SEGMENT_MIN_SIZE)


def antialiased_resize(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """scikit-image's `resize(rgb, shape, anti_aliasing=True, preserve_range=True)`, the same
    values, done plane by plane (Gaussian of sigma (factor - 1) / 2, then linear zoom).

    Box or Lanczos resizes in Pillow are faster still, but they moved the regions enough to
    miss 2-8 more of 120 near-duplicates on shape alone (see bench/README.md).
    """
    factors = np.divide(rgb.shape[:2], shape)
    sigma = np.maximum(0, (factors - 1) / 2)
    planes = [
        ndimage.zoom(
            ndimage.gaussian_filter(np.ascontiguousarray(rgb[..., c]), sigma, mode="mirror"),
            1 / factors,
            order=1,
            mode="mirror",
            grid_mode=True,
        )
        for c in range(rgb.shape[2])
    ]
    return np.clip(np.stack(planes, axis=-1), rgb.min(), rgb.max())


def soft_bin_many(values: np.ndarray, centres: tuple[float, ...]) -> np.ndarray:
    """(n, len(centres)) triangular weights of each value over its two neighbouring centres
    (values beyond the ends go whole to the end bin): a region whose elongation sits on a bin
    edge counts half in each, so a small change never flips it whole."""
    points = np.asarray(centres, dtype=np.float64)
    values = np.clip(np.asarray(values, dtype=np.float64), points[0], points[-1])
    upper = np.clip(np.searchsorted(points, values), 1, len(points) - 1)
    frac = (values - points[upper - 1]) / (points[upper] - points[upper - 1])
    weights = np.zeros((len(values), len(points)))
    rows = np.arange(len(values))
    weights[rows, upper - 1] = 1.0 - frac
    weights[rows, upper] += frac
    return weights


def region_shapes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(share of the image, eccentricity, solidity) of every label, without regionprops.

    Eccentricity is regionprops' (from the second central moments, summed with bincount for
    all regions at once). Solidity is the region's area over the area of the convex hull of its
    pixel squares (so a filled rectangle is exactly 1); the hull only needs each row's leftmost
    and rightmost pixel.
    """
    n = int(labels.max()) + 1
    flat = labels.ravel()
    rows, cols = np.indices(labels.shape).reshape(2, -1).astype(np.float64)
    area = np.bincount(flat, minlength=n).astype(np.float64)
    mean_r = np.bincount(flat, rows, n) / area
    mean_c = np.bincount(flat, cols, n) / area
    var_r = np.bincount(flat, rows * rows, n) / area - mean_r**2
    var_c = np.bincount(flat, cols * cols, n) / area - mean_c**2
    cov = np.bincount(flat, rows * cols, n) / area - mean_r * mean_c
    half_gap = np.sqrt(((var_r - var_c) / 2) ** 2 + cov**2)
    major = np.maximum((var_r + var_c) / 2 + half_gap, 0.0)
    minor = np.clip((var_r + var_c) / 2 - half_gap, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        eccentricity = np.where(major > 0, np.sqrt(np.clip(1 - minor / major, 0, 1)), 0.0)

    # Per (label, row): the extreme columns. The hull of those pixels' corners is the hull of
    # the region's pixel squares.
    key = flat.astype(np.int64) * labels.shape[0] + rows.astype(np.int64)
    order = np.lexsort((cols, key))
    key, col_sorted = key[order], cols[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)] - 1
    row_label, row_index = np.divmod(key[starts], labels.shape[0])
    left, right = col_sorted[starts] - 0.5, col_sorted[ends] + 0.5
    top, bottom = row_index - 0.5, row_index + 0.5
    corners = np.stack(
        [
            np.stack([top, left], 1),
            np.stack([top, right], 1),
            np.stack([bottom, left], 1),
            np.stack([bottom, right], 1),
        ],
        axis=1,
    )  # (label rows, 4, 2)
    hull_area = np.ones(n)
    bounds = np.searchsorted(row_label, np.arange(n + 1))
    for label in range(n):
        points = corners[bounds[label] : bounds[label + 1]].reshape(-1, 2)
        if len(points) >= 3:
            try:
                hull_area[label] = ConvexHull(points).volume  # in 2-D, volume is the area
            except QhullError:  # a single row or column: the squares are the hull
                hull_area[label] = area[label]
    solidity = np.clip(area / np.maximum(hull_area, area), 0.0, 1.0)
    return area / labels.size, eccentricity, solidity


def region_histograms(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eccentricity x solidity histogram, size-class histogram), both area-weighted."""
    share, eccentricity, solidity = region_shapes(labels)
    kept = share >= MIN_REGION_SHARE
    share, eccentricity, solidity = share[kept], eccentricity[kept], solidity[kept]
    ecc_w = soft_bin_many(eccentricity, ECCENTRICITY_CENTRES)
    sol_w = soft_bin_many(solidity, SOLIDITY_CENTRES)
    form = np.einsum("n,ne,ns->es", share, ecc_w, sol_w).ravel()
    sizes = share @ soft_bin_many(np.log10(share), SIZE_CENTRES)
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


def edge_types(image: PreparedImage) -> np.ndarray:
    """`edge_type_map` of the grey image (shared: shape and shape_location count it)."""
    return image.shared("edge_types", lambda: edge_type_map(image.gray))


def edge_histogram(types: np.ndarray) -> np.ndarray:
    return normalised_histogram(np.bincount(types.ravel(), minlength=len(EDGE_TYPES)))


class ShapeExtractor:
    name = "shape"
    version = "4"
    BLOCK_WEIGHTS = [0.25, 0.25, 0.5]

    def __init__(self) -> None:
        self.blocks = [
            len(ECCENTRICITY_CENTRES) * len(SOLIDITY_CENTRES),
            len(SIZE_CENTRES),
            len(EDGE_TYPES),
        ]
        self.dim = sum(self.blocks)
        compile_ahead(self)

    def extract(self, image: PreparedImage) -> np.ndarray:
        form, sizes = region_histograms(segment(image.rgb))
        edges = edge_histogram(edge_types(image))
        return np.concatenate([form, sizes, edges]).astype(np.float32)

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        # Edges are the steadier half under crops and recompression; regions refine them.
        return block_histogram_distance(query, stored, self.blocks, self.BLOCK_WEIGHTS)

    def index_space(self) -> IndexSpace:
        return block_l1_space(self.blocks, self.BLOCK_WEIGHTS)
