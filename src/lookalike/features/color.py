"""Colour: the distribution of colours over the whole image, wherever they sit.

A soft-binned HSV histogram. Soft (triangular) assignment spreads each pixel over the two nearest
bins on every axis, so a small shift in brightness or hue moves mass gradually instead of
flipping it across a bin edge. Dark pixels and unsaturated pixels carry no reliable hue: they
are pooled into a grey ramp indexed by value alone.
"""

from __future__ import annotations

import functools

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

    Every pixel is spread over its two hue, two saturation and two value neighbours. Its
    lower neighbours (cell, hue, saturation, value) make one small key; each of the eight
    neighbour combinations is one bincount of the weights over that key, and a fixed 0/1
    matrix (`_neighbour_bins`) sends every (combination, key) to its histogram bin: the grey
    ramp when the saturation or value neighbour is the lowest level, else the chromatic bin.
    The same sums as a pass per cell and per neighbour, without a per-pixel bin array.
    """
    h = hsv[..., 0].ravel().astype(np.float64)
    s = hsv[..., 1].ravel().astype(np.float64)
    v = hsv[..., 2].ravel().astype(np.float64)
    h_lo, _, h_wlo, h_whi = _soft_weights(h, np.arange(hue_bins), circular=True)
    s_lo, _, s_wlo, s_whi = _soft_weights(s, np.linspace(0.0, 1.0, sat_levels + 1))
    v_lo, _, v_wlo, v_whi = _soft_weights(v, np.linspace(0.0, 1.0, val_levels))
    n_keys = sat_levels * (val_levels - 1) * hue_bins  # per cell
    key = cells.ravel() * n_keys + (s_lo * (val_levels - 1) + v_lo) * hue_bins + h_lo
    tables = []
    for s_w in (s_wlo, s_whi):
        for v_w in (v_wlo, v_whi):
            w_sv = s_w * v_w
            for h_w in (h_wlo, h_whi):
                counts = np.bincount(key, w_sv * h_w, minlength=n_cells * n_keys)
                tables.append(counts.reshape(n_cells, n_keys))
    counts = np.concatenate(tables, axis=1) @ _neighbour_bins(hue_bins, sat_levels, val_levels)
    return normalised_rows(counts)


@functools.cache
def _neighbour_bins(hue_bins: int, sat_levels: int, val_levels: int) -> np.ndarray:
    """(8 neighbour combinations x lower-neighbour keys, histogram size) 0/1 matrix: where
    each combination of a key's neighbours counts (see `hsv_cell_histograms`)."""
    size = hsv_histogram_size(hue_bins, sat_levels, val_levels)
    hue_stride = sat_levels * (val_levels - 1)
    rows = []
    for ds in (0, 1):
        for dv in (0, 1):
            for dh in (0, 1):
                for s_lo in range(sat_levels):
                    for v_lo in range(val_levels - 1):
                        for h_lo in range(hue_bins):
                            s_at, v_at = s_lo + ds, v_lo + dv
                            if s_at == 0 or v_at == 0:  # grey: its hue means nothing
                                rows.append(v_at)
                                continue
                            hue = (h_lo + dh) % hue_bins
                            sv_bin = (s_at - 1) * (val_levels - 1) + (v_at - 1)
                            rows.append(val_levels + hue * hue_stride + sv_bin)
    matrix = np.zeros((len(rows), size))
    matrix[np.arange(len(rows)), rows] = 1.0
    return matrix


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
