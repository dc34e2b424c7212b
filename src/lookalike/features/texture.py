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

import numpy as np
from scipy import ndimage
from skimage.feature import local_binary_pattern

from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    block_histogram_distance,
    block_l1_space,
    normalised_histogram,
)

LBP_SETTINGS = ((8, 1.0), (16, 2.0))
DIRECTION_BINS = 4
STRENGTH_BINS = 8


def smoothed_u8(gray: np.ndarray) -> np.ndarray:
    """Grey image lightly blurred (sigma 1): LBP then sees structure, not JPEG blocking or
    sensor noise, and the same patterns survive a change of resolution."""
    blurred = ndimage.gaussian_filter(gray.astype(np.float32), 1.0)
    return np.clip(blurred * 255.0 + 0.5, 0, 255).astype(np.uint8)


def lbp_codes(image: PreparedImage, points: int, radius: float) -> np.ndarray:
    """Rotation-invariant uniform LBP codes of the smoothed grey image (shared, made once)."""

    def compute() -> np.ndarray:
        smooth = image.shared("smoothed_u8", lambda: smoothed_u8(image.gray))
        return local_binary_pattern(smooth, points, radius, method="uniform").astype(np.int64)

    return image.shared(f"lbp{points}_{radius}", compute)


def gradients(image: PreparedImage) -> tuple[np.ndarray, np.ndarray]:
    """Sobel (gx, gy) of the grey image (shared, made once)."""
    return image.shared(
        "sobel",
        lambda: (
            ndimage.sobel(image.gray, axis=1, mode="reflect"),
            ndimage.sobel(image.gray, axis=0, mode="reflect"),
        ),
    )


def gradient_histograms(gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(direction histogram, strength histogram) from Sobel gradients."""
    magnitude = np.hypot(gx, gy).ravel()
    folded = np.abs(np.arctan2(gy, gx)).ravel()  # 0..pi
    folded = np.where(folded > np.pi / 2, np.pi - folded, folded)  # 0..pi/2, mirror-invariant
    strong = magnitude > 0.1  # ignore sensor noise on flat areas
    direction_bins = np.minimum(
        (folded / (np.pi / 2) * DIRECTION_BINS).astype(np.int64), DIRECTION_BINS - 1
    )
    direction = normalised_histogram(
        np.bincount(direction_bins[strong], weights=magnitude[strong], minlength=DIRECTION_BINS)
    )
    # log-spaced strength bins from 0.01 to ~4 (Sobel on [0,1] grey peaks at 4*sqrt(2)).
    edges = np.geomspace(0.01, 4.0, STRENGTH_BINS - 1)
    strength = normalised_histogram(
        np.bincount(np.searchsorted(edges, magnitude), minlength=STRENGTH_BINS)
    )
    return direction, strength


class TextureExtractor:
    name = "texture"
    version = "2"

    def __init__(self) -> None:
        self.blocks = [p + 2 for p, _ in LBP_SETTINGS] + [DIRECTION_BINS, STRENGTH_BINS]
        self.dim = sum(self.blocks)

    def extract(self, image: PreparedImage) -> np.ndarray:
        parts = [
            normalised_histogram(np.bincount(lbp_codes(image, p, r).ravel(), minlength=p + 2))
            for p, r in LBP_SETTINGS
        ]
        parts.extend(gradient_histograms(*gradients(image)))
        return np.concatenate(parts).astype(np.float32)

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        return block_histogram_distance(query, stored, self.blocks)

    def index_space(self) -> IndexSpace:
        return block_l1_space(self.blocks)
