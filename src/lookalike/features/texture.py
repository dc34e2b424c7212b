"""Texture: low-level patterns (graininess, smoothness, direction), wherever they sit.

Four histograms, each comparable by total variation:
- rotation-invariant uniform LBP at radius 1 (8 neighbours) and radius 2 (16): fine and
  coarser micro-patterns (spots, edges, corners, flat areas);
- gradient direction, folded to the angle from horizontal (0..90 degrees) so that a mirrored
  image has the same texture, weighted by gradient strength;
- gradient strength on a log scale: smooth surfaces pile up in the low bins, grain in the high.
LBP is invariant to monotone grey-level changes, which makes texture robust to brightness.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    block_histogram_distance,
    block_l1_space,
    lazy_njit,
    normalised_histogram,
)
from lookalike.features.filters import gaussian_blur, sobel

LBP_SETTINGS = ((8, 1.0), (16, 2.0))
DIRECTION_BINS = 4
STRENGTH_BINS = 8


def smoothed_u8(gray: np.ndarray) -> np.ndarray:
    """Grey image lightly blurred (sigma 1): LBP then sees structure, not JPEG blocking or
    sensor noise, and the same patterns survive a change of resolution."""
    blurred = gaussian_blur(gray.astype(np.float32), 1.0)  # scipy's gaussian_filter, compiled
    return np.clip(blurred * 255.0 + 0.5, 0, 255).astype(np.uint8)


def lbp_codes(image: PreparedImage, points: int, radius: float) -> np.ndarray:
    """Rotation-invariant uniform LBP codes of the smoothed grey image (shared, made once)."""

    def compute() -> np.ndarray:
        smooth = image.shared("smoothed_u8", lambda: smoothed_u8(image.gray))
        return uniform_lbp(smooth, points, radius)

    return image.shared(f"lbp{points}_{radius}", compute)


def uniform_lbp(gray_u8: np.ndarray, points: int, radius: float) -> np.ndarray:
    """scikit-image's `local_binary_pattern(gray_u8, points, radius, "uniform")`, bit for bit,
    compiled (numba) one neighbour at a time over the whole image: several times faster than
    scikit-image's loop, which interpolates pixel by pixel (tests hold it to its codes).

    Neighbour p sits at (-R sin(2 pi p / P), R cos(2 pi p / P)) rounded to 5 decimals, read by
    bilinear interpolation in float64 with zeros outside the image; it is "on" when it is at
    least the centre. A pattern with at most two on/off changes between consecutive neighbours
    (p = 0 .. P-1, not wrapping round, as scikit-image counts them) gets its number of "on"
    neighbours, any other pattern P + 1.
    """
    angles = 2 * np.pi * np.arange(points, dtype=np.float64) / points
    row_steps = np.round(-radius * np.sin(angles), 5)
    col_steps = np.round(radius * np.cos(angles), 5)
    return _uniform_lbp(gray_u8.astype(np.float64), row_steps, col_steps).astype(np.int64)


@lazy_njit(cache=True, nogil=True)
def _uniform_lbp(image: np.ndarray, row_steps: np.ndarray, col_steps: np.ndarray) -> np.ndarray:
    """The codes of `uniform_lbp`, row by row, one neighbour at a time along the row (the
    inner loops run along contiguous rows; the row's counts stay in the L1 cache). The row and
    column fractions are scikit-image's expressions (`r + step` minus its floor) taken per row
    and per column; the floor and the ceiling of `c + step` are `c` plus those of `step`
    (steps have 5 decimals, far from an integer by more than any rounding). The image is
    padded with zeros, read outside it. Neighbours on the pixel grid skip the interpolation
    (the same bits, fewer operations)."""
    points = len(row_steps)
    rows, cols = image.shape
    pad = 1 + int(np.ceil(max(np.abs(row_steps).max(), np.abs(col_steps).max())))
    padded = np.zeros((rows + 2 * pad, cols + 2 * pad))
    padded[pad : pad + rows, pad : pad + cols] = image
    codes = np.empty((rows, cols), dtype=np.uint8)
    ones = np.empty(cols, dtype=np.uint8)  # of the row being coded: stays in the L1 cache
    changes = np.empty(cols, dtype=np.uint8)  # between consecutive neighbours
    previous = np.empty(cols, dtype=np.uint8)  # the last neighbour's bit
    bits = np.empty(cols, dtype=np.uint8)
    lefts, rights = np.empty(points, np.intp), np.empty(points, np.intp)
    on_grid = np.empty(points, np.bool_)
    col_fracs = np.empty((points, cols))
    for p in range(points):
        lefts[p] = int(np.floor(col_steps[p])) + pad
        rights[p] = int(np.ceil(col_steps[p])) + pad
        on_grid[p] = row_steps[p] == np.floor(row_steps[p]) and lefts[p] == rights[p]
        for c in range(cols):
            at = c + col_steps[p]
            col_fracs[p, c] = at - np.floor(at)
    for r in range(rows):
        centre = image[r]
        for p in range(points):
            left, right = lefts[p], rights[p]
            at = r + row_steps[p]
            top_row = padded[int(np.floor(at)) + pad]
            if on_grid[p]:
                # On the grid (0, 90, 180, 270 degrees) both fractions are 0, and the
                # interpolation 1 * x + 0 * x of a finite x is x itself: compare the pixel.
                for c in range(cols):
                    bits[c] = top_row[c + left] - centre[c] >= 0
            else:
                row_frac = at - np.floor(at)
                bottom_row = padded[int(np.ceil(at)) + pad]
                col_frac = col_fracs[p]
                for c in range(cols):
                    dc = col_frac[c]
                    top = (1 - dc) * top_row[c + left] + dc * top_row[c + right]
                    bottom = (1 - dc) * bottom_row[c + left] + dc * bottom_row[c + right]
                    bits[c] = (1 - row_frac) * top + row_frac * bottom - centre[c] >= 0
            if p == 0:  # the first neighbour changes nothing: count from it, not from "off"
                for c in range(cols):
                    ones[c], changes[c], previous[c] = bits[c], 0, bits[c]
                continue
            for c in range(cols):
                ones[c] += bits[c]
                changes[c] += bits[c] ^ previous[c]
                previous[c] = bits[c]
        for c in range(cols):
            codes[r, c] = ones[c] if changes[c] <= 2 else points + 1
    return codes


def gradients(image: PreparedImage) -> tuple[np.ndarray, np.ndarray]:
    """Sobel (gx, gy) of the grey image (shared, made once): scipy's, compiled."""
    return image.shared("sobel", lambda: (sobel(image.gray, axis=1), sobel(image.gray, axis=0)))


def gradient_magnitude(image: PreparedImage) -> np.ndarray:
    """Sobel gradient strength (shared: direction weights and strength bins)."""
    return image.shared("magnitude", lambda: np.hypot(*gradients(image)))


def gradient_strength_bins(image: PreparedImage) -> np.ndarray:
    """Each pixel's gradient strength bin (shared: texture and texture_location count them)."""
    return image.shared("strength_bins", lambda: strength_bins(gradient_magnitude(image)))


_STRENGTH_EDGES = np.geomspace(0.01, 4.0, STRENGTH_BINS - 1)


def strength_bins(magnitude: np.ndarray) -> np.ndarray:
    """Log-spaced strength bins from 0.01 to ~4 (Sobel on [0,1] grey peaks at 4*sqrt(2)):
    `np.searchsorted(edges, magnitude)` (the number of edges below each value), compiled."""
    magnitude = np.asarray(magnitude)
    flat = np.ascontiguousarray(magnitude.ravel())
    return _edges_below(flat, _STRENGTH_EDGES).reshape(magnitude.shape)


@lazy_njit(cache=True, nogil=True)
def _edges_below(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """For each value, how many (sorted) edges are below it, compared in float64 as numpy's
    searchsorted does; a NaN, above every edge there, is counted so here too."""
    out = np.empty(len(values), dtype=np.int64)
    for i in range(len(values)):
        value = np.float64(values[i])
        below = 0
        while below < len(edges) and (edges[below] < value or value != value):
            below += 1
        out[i] = below
    return out


def gradient_histograms(gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(direction histogram, strength histogram) from Sobel gradients."""
    magnitude = np.hypot(gx, gy).ravel()
    return direction_histogram(gx, gy, magnitude), normalised_histogram(
        np.bincount(strength_bins(magnitude), minlength=STRENGTH_BINS)
    )


def direction_histogram(gx: np.ndarray, gy: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """Strength-weighted histogram of the edge angle from horizontal (0..90 degrees).

    The angle's bin is the number of bin edges (tan of 22.5, 45, 67.5 degrees times |gx|) that
    |gy| reaches: comparisons instead of an arctangent per pixel (~10x cheaper). Where |gy| lies
    within 1e-4 of an edge, the bin is `_angle_bins`' (the arctangent), so that float rounding
    near an edge falls as it always did: the bins are the same.
    """
    gx, gy, magnitude = (np.ascontiguousarray(np.ravel(a)) for a in (gx, gy, magnitude))
    floor = magnitude.dtype.type(0.1)  # numpy compares a float32 array with 0.1 in float32
    direction_bins, weight, strong_at, near = _slope_bins(
        gx, gy, magnitude, floor, _BIN_EDGE_SLOPES
    )
    pixels = strong_at[near]
    direction_bins[near] = _angle_bins(gx[pixels], gy[pixels])
    return normalised_histogram(
        np.bincount(direction_bins, weights=weight, minlength=DIRECTION_BINS)
    )


@lazy_njit(cache=True, nogil=True)
def _slope_bins(
    gx: np.ndarray, gy: np.ndarray, magnitude: np.ndarray, floor: Any, slopes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The slope comparisons of `direction_histogram` in one pass over the pixels stronger
    than `floor` (in the magnitude's own float type): their bins,
    weights (strengths) and pixel numbers, and which of them lie within 1e-4 of a bin edge.
    The float64 arithmetic is numpy's, operation for operation."""
    n = len(magnitude)
    bins = np.empty(n, dtype=np.int64)
    weight = np.empty(n, dtype=magnitude.dtype)
    strong_at = np.empty(n, dtype=np.int64)
    near = np.empty(n, dtype=np.int64)
    count = near_count = 0
    for i in range(n):
        if not magnitude[i] > floor:
            continue
        across, along = np.float64(abs(gx[i])), np.float64(abs(gy[i]))
        bin_ = 0
        is_near = False
        for slope in slopes:
            gap = along - slope * across
            bin_ += gap >= 0
            is_near |= abs(gap) <= 1e-4 * (along + across)
        bins[count], weight[count], strong_at[count] = bin_, magnitude[i], i
        if is_near:
            near[near_count] = count
            near_count += 1
        count += 1
    return bins[:count], weight[:count], strong_at[:count], near[:near_count]


_BIN_EDGE_SLOPES = np.tan(np.arange(1, DIRECTION_BINS) * (np.pi / 2) / DIRECTION_BINS)


def _angle_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Direction bins from the folded angle itself (float32 arctangent), as first defined."""
    folded = np.abs(np.arctan2(gy, gx))  # 0..pi
    folded = np.where(folded > np.pi / 2, np.pi - folded, folded)  # 0..pi/2, mirror-invariant
    return np.minimum((folded / (np.pi / 2) * DIRECTION_BINS).astype(np.int64), DIRECTION_BINS - 1)


class TextureExtractor:
    name = "texture"
    version = "2"
    compile_size = 16  # compiled loops: features.base.warm_up

    def __init__(self) -> None:
        self.blocks = [p + 2 for p, _ in LBP_SETTINGS] + [DIRECTION_BINS, STRENGTH_BINS]
        self.dim = sum(self.blocks)

    def extract(self, image: PreparedImage) -> np.ndarray:
        parts = [
            normalised_histogram(np.bincount(lbp_codes(image, p, r).ravel(), minlength=p + 2))
            for p, r in LBP_SETTINGS
        ]
        gx, gy = gradients(image)
        parts.append(direction_histogram(gx, gy, gradient_magnitude(image)))
        bins = gradient_strength_bins(image)
        parts.append(normalised_histogram(np.bincount(bins.ravel(), minlength=STRENGTH_BINS)))
        return np.concatenate(parts).astype(np.float32)

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        return block_histogram_distance(query, stored, self.blocks)

    def index_space(self) -> IndexSpace:
        return block_l1_space(self.blocks)
