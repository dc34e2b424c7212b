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
    lazy_njit,
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

    Every pixel is spread over its two hue, two saturation and two value neighbours (weights
    from `_soft_weights`); a neighbour combination whose saturation or value is the lowest
    level counts in the grey ramp at that value, any other in its chromatic bin. One compiled
    pass over the pixels (`_soft_hsv_counts`) adds the eight weights of each pixel into its
    cell's bins.
    """
    h, s, v = (hsv[..., i].ravel() for i in range(3))
    counts = _soft_hsv_counts(
        h, s, v, cells.ravel().astype(np.intp), n_cells, hue_bins, sat_levels, val_levels
    )
    return normalised_rows(counts)


@lazy_njit(cache=True, nogil=True)
def _soft_hsv_counts(h, s, v, cells, n_cells: int, hue_bins: int, sat_levels: int,
                     val_levels: int) -> np.ndarray:  # fmt: skip
    """(n_cells, size) soft counts; `_soft_weights`' arithmetic pixel by pixel, in float64.
    Saturation centres are 0, 1/sat_levels, ..., 1; value centres 0, 1/(val_levels-1), ..., 1."""
    counts = np.zeros((n_cells, val_levels + hue_bins * sat_levels * (val_levels - 1)))
    hue_stride = sat_levels * (val_levels - 1)
    s_step = 1.0 / sat_levels
    v_step = 1.0 / (val_levels - 1)
    for i in range(len(h)):
        pos = np.float64(h[i]) * hue_bins
        lower = np.floor(pos)
        h_frac = pos - lower
        h_lo = int(lower) % hue_bins
        hues = (h_lo, (h_lo + 1) % hue_bins)
        h_weights = (1.0 - h_frac, h_frac)
        pos = min(max(np.float64(s[i]) / s_step, 0.0), float(sat_levels))
        s_lo = min(int(np.floor(pos)), sat_levels - 1)
        s_weights = (1.0 - (pos - s_lo), pos - s_lo)
        pos = min(max(np.float64(v[i]) / v_step, 0.0), float(val_levels - 1))
        v_lo = min(int(np.floor(pos)), val_levels - 2)
        v_weights = (1.0 - (pos - v_lo), pos - v_lo)
        row = counts[cells[i]]
        for ds in range(2):
            for dv in range(2):
                w_sv = s_weights[ds] * v_weights[dv]
                s_at, v_at = s_lo + ds, v_lo + dv
                if s_at == 0 or v_at == 0:  # grey: its hue means nothing
                    row[v_at] += w_sv * h_weights[0] + w_sv * h_weights[1]
                    continue
                chroma = val_levels + (s_at - 1) * (val_levels - 1) + (v_at - 1)
                for dh in range(2):
                    row[chroma + hues[dh] * hue_stride] += w_sv * h_weights[dh]
    return counts


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
    compile_size = 16  # compiled loops: features.base.warm_up

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
