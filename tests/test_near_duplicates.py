"""Transformed copies of real photos find their original first, for every attribute that should
be invariant to that change (and the default fused score for every change)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import CLASSIC

from lookalike.api import DEFAULT_WEIGHTS
from lookalike.features.registry import create_extractor
from lookalike.ingest import Settings, describe_bytes
from lookalike.samples import TRANSFORMS, sample_photos
from lookalike.scoring import fuse, normalise_weights

# Which attributes a change should leave alone. Brightness moves colours; mirroring moves
# where things are; a crop moves cell contents and loses edges at the border.
INVARIANT = {
    "crop80": ["color", "color_location", "texture_location"],
    "half": ["color", "texture", "color_location", "texture_location", "shape_location"],
    "jpeg30": ["color", "texture", "color_location", "shape_location"],
    "rotate5": ["texture", "color_location", "texture_location"],
    "bright120": ["texture", "shape", "texture_location", "shape_location"],
    "hflip": ["color", "texture", "shape"],
}
SETTINGS = Settings(
    preprocess={"frame": 256, "normalize": "none", "denoise": 0},
    attributes={name: {} for name in CLASSIC},
    max_pixels=10**8,
)


def describe(image) -> dict[str, np.ndarray]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    item = describe_bytes(buffer.getvalue(), "q", SETTINGS)
    return {name: vector for name, (_, vector) in item.signatures.items()}


@pytest.fixture(scope="module")
def photos():
    images = sample_photos()
    names = list(images)
    stored = [describe(images[n]) for n in names]
    matrices = {a: np.stack([s[a] for s in stored]) for a in CLASSIC}
    return images, names, matrices


def ranking(query: dict, matrices: dict, weights: dict) -> np.ndarray:
    distances = {a: create_extractor(a).distance(query[a], matrices[a]) for a in weights}
    return np.argsort(fuse(distances, weights), kind="stable")


@pytest.mark.parametrize("transform", list(INVARIANT))
def test_original_comes_first(photos, transform):
    images, names, matrices = photos
    default = normalise_weights(None, CLASSIC, DEFAULT_WEIGHTS)
    misses = []
    for index, name in enumerate(names):
        query = describe(TRANSFORMS[transform](images[name]))
        for attribute in INVARIANT[transform]:
            if ranking(query, matrices, {attribute: 1.0})[0] != index:
                misses.append(f"{name}/{attribute}")
        if ranking(query, matrices, default)[0] != index:
            misses.append(f"{name}/default weights")
    assert not misses, f"{transform}: original not first for {misses}"
