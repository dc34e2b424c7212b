"""Shape: regions of uniform colour and what they look like, plus the kinds of edges present.

The image is segmented by colour (Felzenszwalb's graph method) into regions; each region that
covers at least 0.5% of the image is described by eccentricity (round vs elongated) and solidity
(convex vs ragged), weighted by its area, and by its size class. An edge histogram in the
manner of MPEG-7's edge histogram descriptor adds the kind of contours present. Diagonals are
pooled so that a mirrored image keeps its shape signature.
"""

from __future__ import annotations

import numpy as np

from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    block_histogram_distance,
    block_l1_space,
    lazy_njit,
    normalised_histogram,
)
from lookalike.features.filters import gaussian_weights
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

    Halving both sides (the 256-pixel frame to 128) is one compiled pass, `_blur_halve`, with
    scipy's arithmetic (the same floats: tests compare it with `zoomed_planes`); any other
    shape goes through scipy. Box or Lanczos resizes in Pillow are faster still, but they moved
    the regions enough to miss 2-8 more of 120 near-duplicates on shape alone (bench/README.md).
    """
    factors = np.divide(rgb.shape[:2], shape)
    if (factors == 2).all() and min(shape) >= 4 and rgb.dtype == np.float32:
        weights = gaussian_weights(0.5)  # sigma (2 - 1) / 2
        return np.clip(_blur_halve(rgb, weights), rgb.min(), rgb.max())
    return zoomed_planes(rgb, shape)


def zoomed_planes(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`antialiased_resize` through scipy.ndimage, plane by plane."""
    from scipy import ndimage  # here: the usual halving never needs it (worker start -0.5 s)

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


@lazy_njit(cache=True, nogil=True, inline="always")
def _mirror(index: int, size: int) -> int:
    """scipy's "mirror" extension (d c b | a b c d | c b a), one reflection deep."""
    if index < 0:
        return -index
    return 2 * (size - 1) - index if index >= size else index


@lazy_njit(cache=True, nogil=True)
def _blur_halve(rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per plane: scipy's `gaussian_filter(mode="mirror")` (down the columns, then along the
    rows, each pass summed in float64 as scipy does, from the outer taps in, and stored as
    float32), then its order-1 zoom to half size, which for a factor of exactly 2 is the mean
    of each 2 x 2 block (weights 1/4, summed in scipy's order). Each tap is added over a whole
    row of a contiguous plane at once (the same sums per pixel, in the same order)."""
    height, width, channels = rgb.shape
    radius = len(weights) // 2
    out = np.empty((height // 2, width // 2, channels), np.float32)
    plane = np.empty((height, width), np.float32)
    down = np.empty((height, width), np.float32)
    across = np.empty((2, width), np.float32)
    total = np.empty(width)
    line = np.empty(width + 2 * radius)
    for channel in range(channels):
        for row in range(height):
            for col in range(width):
                plane[row, col] = rgb[row, col, channel]
        for row in range(height):
            centre = plane[row]
            for col in range(width):
                total[col] = np.float64(centre[col]) * weights[radius]
            for k in range(radius, 0, -1):
                above, below = plane[_mirror(row - k, height)], plane[_mirror(row + k, height)]
                weight = weights[radius - k]
                for col in range(width):
                    total[col] += (np.float64(above[col]) + np.float64(below[col])) * weight
            for col in range(width):
                down[row, col] = total[col]
        for row in range(2 * (height // 2)):
            source = down[row]
            for i in range(width + 2 * radius):
                line[i] = source[_mirror(i - radius, width)]
            for col in range(width):
                total[col] = line[col + radius] * weights[radius]
            for k in range(radius, 0, -1):
                weight = weights[radius - k]
                for col in range(width):
                    total[col] += (line[col + radius - k] + line[col + radius + k]) * weight
            smoothed = across[row % 2]
            for col in range(width):
                smoothed[col] = total[col]
            if row % 2:
                top, bottom = across[0], across[1]
                half = row // 2
                for col in range(width // 2):
                    mean = np.float64(top[2 * col]) * 0.25 + np.float64(top[2 * col + 1]) * 0.25
                    mean += np.float64(bottom[2 * col]) * 0.25
                    out[half, col, channel] = mean + np.float64(bottom[2 * col + 1]) * 0.25
    return out


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

    Eccentricity is regionprops' (from the second central moments, summed for all regions in
    one compiled pass, `_region_sums`). Solidity is the region's area over the area of the
    convex hull of its pixel squares (so a filled rectangle is exactly 1), from `_hull_areas`.
    """
    n = int(labels.max()) + 1
    labels = np.ascontiguousarray(labels, dtype=np.intp)
    area, sum_r, sum_c, sum_rr, sum_cc, sum_rc = _region_sums(labels, n)
    mean_r = sum_r / area
    mean_c = sum_c / area
    var_r = sum_rr / area - mean_r**2
    var_c = sum_cc / area - mean_c**2
    cov = sum_rc / area - mean_r * mean_c
    half_gap = np.sqrt(((var_r - var_c) / 2) ** 2 + cov**2)
    major = np.maximum((var_r + var_c) / 2 + half_gap, 0.0)
    minor = np.clip((var_r + var_c) / 2 - half_gap, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        eccentricity = np.where(major > 0, np.sqrt(np.clip(1 - minor / major, 0, 1)), 0.0)

    hull_area = _hull_areas(labels, n)
    solidity = np.clip(area / np.maximum(hull_area, area), 0.0, 1.0)
    return area / labels.size, eccentricity, solidity


@lazy_njit(cache=True, nogil=True)
def _region_sums(labels: np.ndarray, n: int):
    """Per label: pixel count and the sums of row, column, row², column², row x column, each
    added in pixel order in float64: the values of `np.bincount(labels, weights)` for each,
    in one pass instead of six."""
    area, sum_r, sum_c = np.zeros(n), np.zeros(n), np.zeros(n)
    sum_rr, sum_cc, sum_rc = np.zeros(n), np.zeros(n), np.zeros(n)
    height, width = labels.shape
    for row in range(height):
        r = np.float64(row)
        for col in range(width):
            label, c = labels[row, col], np.float64(col)
            area[label] += 1.0
            sum_r[label] += r
            sum_c[label] += c
            sum_rr[label] += r * r
            sum_cc[label] += c * c
            sum_rc[label] += r * c
    return area, sum_r, sum_c, sum_rr, sum_cc, sum_rc


@lazy_njit(cache=True, nogil=True)
def _hull_areas(labels: np.ndarray, n: int) -> np.ndarray:
    """Area of the convex hull of each label's pixel squares (1 for an absent label).

    The hull only needs, on each horizontal line between pixel rows, the leftmost and the
    rightmost corner of the label's pixels on the rows either side of it: the leftmost corners
    make one chain of the hull, the rightmost the other (Andrew's monotone chain, the lines
    taken in order, so no sort), and the shoelace formula gives the area. Corners sit on
    half-integers, so every step is exact in float64 (qhull, used before, agreed to ~1e-15).
    """
    height, width = labels.shape
    first = np.full((n, height), width, dtype=np.intp)
    last = np.full((n, height), -1, dtype=np.intp)
    for row in range(height):
        for col in range(width):
            label = labels[row, col]
            first[label, row] = min(first[label, row], col)
            last[label, row] = max(last[label, row], col)
    areas = np.ones(n)
    line = np.empty(height + 1)
    left = np.empty(height + 1)
    right = np.empty(height + 1)
    for label in range(n):
        m = 0  # the lines that touch the label, with its extreme corners on each
        for boundary in range(height + 1):
            low, high = width + 1.0, -2.0
            for row in (boundary - 1, boundary):
                if 0 <= row < height and last[label, row] >= 0:
                    low = min(low, first[label, row] - 0.5)
                    high = max(high, last[label, row] + 0.5)
            if high > -2.0:
                line[m], left[m], right[m] = boundary - 0.5, low, high
                m += 1
        if m >= 2:
            areas[label] = _polygon_area(
                *_chain(line[:m], left[:m], 1.0), *_chain(line[:m], right[:m], -1.0)
            )
    return areas


@lazy_njit(cache=True, nogil=True)
def _chain(x: np.ndarray, y: np.ndarray, turn: float) -> tuple[np.ndarray, np.ndarray]:
    """One monotone chain of the hull through points sorted by x: with `turn` 1 the chain
    below (smallest y), with -1 the chain above; collinear points are dropped."""
    cx, cy = np.empty(len(x)), np.empty(len(x))
    k = 0
    for i in range(len(x)):
        while (
            k >= 2
            and turn
            * (
                (cx[k - 1] - cx[k - 2]) * (y[i] - cy[k - 2])
                - (cy[k - 1] - cy[k - 2]) * (x[i] - cx[k - 2])
            )
            <= 0
        ):
            k -= 1
        cx[k], cy[k] = x[i], y[i]
        k += 1
    return cx[:k], cy[:k]


@lazy_njit(cache=True, nogil=True)
def _polygon_area(low_x, low_y, high_x, high_y) -> float:
    """Shoelace area of the polygon along the lower chain, then back along the upper one."""
    xs = np.concatenate((low_x, high_x[::-1]))
    ys = np.concatenate((low_y, high_y[::-1]))
    total = 0.0
    for i in range(len(xs)):
        j = (i + 1) % len(xs)
        total += xs[i] * ys[j] - xs[j] * ys[i]
    return abs(total) / 2.0


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
    compile_size = 2 * SEGMENT_FRAME  # base.warm_up: large enough to be halved to the frame
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
        edges = edge_histogram(edge_types(image))
        return np.concatenate([form, sizes, edges]).astype(np.float32)

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        # Edges are the steadier half under crops and recompression; regions refine them.
        return block_histogram_distance(query, stored, self.blocks, self.BLOCK_WEIGHTS)

    def index_space(self) -> IndexSpace:
        return block_l1_space(self.blocks, self.BLOCK_WEIGHTS)
