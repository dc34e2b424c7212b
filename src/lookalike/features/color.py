"""Colour: the distribution of colours over the whole image, wherever they sit.

A soft-binned HSV histogram. Soft (triangular) assignment spreads each pixel over the two nearest
bins on every axis, so a small shift in brightness or hue moves mass gradually instead of
flipping it across a bin edge. Dark pixels and unsaturated pixels carry no reliable hue: they
are pooled into a grey ramp indexed by value alone.
"""

from __future__ import annotations

import numpy as np

from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    block_histogram_distance,
    block_l1_space,
    normalised_rows,
)


def _soft_weights(values: np.ndarray, centres: np.ndarray, circular: bool = False):
    """For each value, the two nearest bin indices and their triangular weights."""
    n = len(centres)
    if circular:
        pos = values * n  # centres at i / n: pure primaries and secondaries sit on a centre
        lower = np.floor(pos)
        frac = pos - lower
        lo = lower.astype(np.int64) % n
        return lo, (lo + 1) % n, 1.0 - frac, frac
    step = centres[1] - centres[0]
    pos = np.clip((values - centres[0]) / step, 0, n - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    frac = pos - lo
    return lo, lo + 1, 1.0 - frac, frac


def hsv_histogram(hsv: np.ndarray, hue_bins: int, sat_levels: int, val_levels: int) -> np.ndarray:
    """Soft HSV histogram: `val_levels` grey bins, then hue x saturation x value chromatic bins.

    Saturation and value are split on evenly spaced centres from 0 to 1; the lowest saturation
    level and the lowest value level go to the grey ramp (their hue means nothing).
    """
    cells = np.zeros(hsv.shape[:-1], dtype=np.intp)
    return hsv_cell_histograms(hsv, cells, 1, hue_bins, sat_levels, val_levels)[0]


def hsv_cell_histograms(
    hsv: np.ndarray, cells: np.ndarray, n_cells: int, hue_bins: int, sat_levels: int,
    val_levels: int,
) -> np.ndarray:  # fmt: skip
    """`hsv_histogram` of every cell at once: (n_cells, size); `cells` numbers each pixel's cell
    (see `grid_cell_index`).

    Every pixel is spread over its two saturation and two value neighbours; each of those four
    shares goes to the grey ramp or to a hue bin and the next one. Both hue shares are counted
    at the lower hue's bin in two bincounts, the upper one rolled by one hue afterwards: the
    same sums as a pass per cell and per neighbour, in far fewer passes over the pixels.
    """
    h = hsv[..., 0].ravel().astype(np.float64)
    s = hsv[..., 1].ravel().astype(np.float64)
    v = hsv[..., 2].ravel().astype(np.float64)
    h_lo, _, h_wlo, h_whi = _soft_weights(h, np.arange(hue_bins), circular=True)
    s_lo, s_hi, s_wlo, s_whi = _soft_weights(s, np.linspace(0.0, 1.0, sat_levels + 1))
    v_lo, v_hi, v_wlo, v_whi = _soft_weights(v, np.linspace(0.0, 1.0, val_levels))

    size = hsv_histogram_size(hue_bins, sat_levels, val_levels)
    hue_stride = sat_levels * (val_levels - 1)
    cell_base = cells.ravel() * size + val_levels + h_lo * hue_stride
    cell_grey = cells.ravel() * size
    n = len(h)
    bins = np.empty((4, n), dtype=np.intp)
    lower = np.empty((4, n), dtype=np.float64)
    upper = np.empty((4, n), dtype=np.float64)
    row = 0
    for s_idx, s_w in ((s_lo, s_wlo), (s_hi, s_whi)):
        for v_idx, v_w in ((v_lo, v_wlo), (v_hi, v_whi)):
            chroma = (s_idx != 0) & (v_idx != 0)  # else grey: its hue means nothing
            sv_bin = (s_idx - 1) * (val_levels - 1) + (v_idx - 1)
            bins[row] = np.where(chroma, cell_base + sv_bin, cell_grey + v_idx)
            w_sv = s_w * v_w
            lower[row] = w_sv * np.where(chroma, h_wlo, 1.0)
            upper[row] = w_sv * h_whi * chroma
            row += 1
    minlength = n_cells * size
    counts = np.bincount(bins.ravel(), lower.ravel(), minlength=minlength).reshape(n_cells, size)
    shifted = np.bincount(bins.ravel(), upper.ravel(), minlength=minlength).reshape(n_cells, size)
    chroma_upper = shifted[:, val_levels:].reshape(n_cells, hue_bins, hue_stride)
    counts[:, val_levels:] += np.roll(chroma_upper, 1, axis=1).reshape(n_cells, -1)
    return normalised_rows(counts)


def hsv_histogram_size(hue_bins: int, sat_levels: int, val_levels: int) -> int:
    return val_levels + hue_bins * sat_levels * (val_levels - 1)


def blur_hue(vectors: np.ndarray, hue_bins: int, sat_levels: int, val_levels: int) -> np.ndarray:
    """Spread each chromatic bin over its hue neighbours (1/4, 1/2, 1/4), circularly.

    Plain bin-by-bin comparison finds orange as far from red as blue is; comparing blurred
    histograms gives neighbouring hues partial credit while equal histograms stay at 0.
    """
    vectors = np.atleast_2d(vectors)
    grey, chroma = vectors[:, :val_levels], vectors[:, val_levels:]
    chroma = chroma.reshape(len(vectors), hue_bins, sat_levels * (val_levels - 1))
    blurred = 0.5 * chroma + 0.25 * (np.roll(chroma, 1, axis=1) + np.roll(chroma, -1, axis=1))
    return np.concatenate([grey, blurred.reshape(len(vectors), -1)], axis=1)


class ColorExtractor:
    """Global colour distribution (12 hues x 2 saturations x 3 values, plus 4 greys)."""

    name = "color"
    version = "1"
    HUE_BINS, SAT_LEVELS, VAL_LEVELS = 12, 2, 4

    def __init__(self) -> None:
        self.dim = hsv_histogram_size(self.HUE_BINS, self.SAT_LEVELS, self.VAL_LEVELS)

    def extract(self, image: PreparedImage) -> np.ndarray:
        return hsv_histogram(image.hsv, self.HUE_BINS, self.SAT_LEVELS, self.VAL_LEVELS)

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        levels = (self.HUE_BINS, self.SAT_LEVELS, self.VAL_LEVELS)
        return block_histogram_distance(
            blur_hue(query, *levels)[0], blur_hue(stored, *levels), [self.dim]
        )

    def index_space(self) -> IndexSpace:
        levels = (self.HUE_BINS, self.SAT_LEVELS, self.VAL_LEVELS)
        return block_l1_space([self.dim], prepare=lambda v: blur_hue(v, *levels))
