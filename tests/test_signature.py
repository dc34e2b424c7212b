"""Signature and scoring: known cases come out as a person expects."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CLASSIC, quadrants, stripes

from lookalike.decode import Preprocess, prepare
from lookalike.errors import WeightsError
from lookalike.features.base import PreparedImage
from lookalike.features.registry import create_extractor
from lookalike.scoring import fuse, is_similar, normalise_weights


def signature(rgb: np.ndarray) -> dict[str, np.ndarray]:
    image = PreparedImage(prepare(rgb, Preprocess()))
    return {name: create_extractor(name).extract(image) for name in CLASSIC}


def distance(name: str, a: dict, b: dict) -> float:
    return float(create_extractor(name).distance(a[name], b[name][None, :])[0])


def test_quadrant_pair_same_colours_opposite_places():
    left, mirrored = quadrants()
    a, b = signature(left), signature(mirrored)
    assert distance("color", a, b) == pytest.approx(0.0, abs=0.5)
    assert distance("color_location", a, b) == pytest.approx(100.0, abs=0.5)


def test_image_against_itself_is_zero_on_every_attribute():
    rng = np.random.default_rng(1)
    rgb = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    sig = signature(rgb)
    for name in CLASSIC:
        vector = sig[name]
        assert vector.dtype == np.float32 and vector.shape == (create_extractor(name).dim,)
        assert distance(name, sig, sig) == pytest.approx(0.0, abs=1e-6), name


def test_distances_stay_within_0_and_100():
    rng = np.random.default_rng(2)
    sigs = [signature((rng.random((64, 64, 3)) * 255).astype(np.uint8)) for _ in range(3)]
    sigs.append(signature(np.zeros((64, 64, 3), np.uint8)))
    for name in CLASSIC:
        extractor = create_extractor(name)
        stored = np.stack([s[name] for s in sigs])
        for s in sigs:
            d = extractor.distance(s[name], stored)
            assert np.all((d >= 0) & (d <= 100)), name


def test_colour_ranks_by_hue_closeness():
    def solid(rgb):
        return signature(np.full((64, 64, 3), rgb, np.uint8))

    red, crimson, orange, blue = (
        solid(c) for c in [(230, 20, 20), (200, 20, 40), (240, 140, 20), (20, 20, 230)]
    )
    d = [distance("color", red, other) for other in (crimson, orange, blue)]
    assert d[0] < d[1] < d[2]
    assert d[1] == pytest.approx(50.0, abs=10)  # a neighbouring hue: half way
    assert d[2] == pytest.approx(100.0, abs=1)


def test_texture_tells_stripes_from_flat_and_ignores_mirroring():
    horizontal, vertical = signature(stripes(True)), signature(stripes(False))
    flat = signature(np.full((128, 128, 3), 127, np.uint8))
    noise = signature((np.random.default_rng(3).random((128, 128, 3)) * 255).astype(np.uint8))
    assert distance("texture", horizontal, vertical) < distance("texture", horizontal, flat)
    assert distance("texture", horizontal, vertical) < distance("texture", horizontal, noise)
    assert distance("texture", flat, noise) > 40
    mirrored = signature(stripes(True)[:, ::-1])
    assert distance("texture", horizontal, mirrored) == pytest.approx(0, abs=1)


def test_shape_distinguishes_one_blob_from_many():
    def blobs(count):
        rgb = np.full((128, 128, 3), 255, np.uint8)
        size = 128 // (2 * count)
        for i in range(count):
            for j in range(count):
                y, x = 2 * i * size + size // 2, 2 * j * size + size // 2
                rgb[y : y + size, x : x + size] = (200, 30, 30)
        return signature(rgb)

    one, one_again, many = blobs(1), blobs(1), blobs(4)
    assert distance("shape", one, one_again) == pytest.approx(0, abs=1e-6)
    assert distance("shape", one, many) > 10


def test_location_of_texture_and_shape_sees_where_things_are():
    rgb = np.full((128, 128, 3), 128, np.uint8)
    top = rgb.copy()
    top[:64] = stripes(True, period=6)[:64]
    bottom = rgb.copy()
    bottom[64:] = stripes(True, period=6)[64:]
    a, b = signature(top), signature(bottom)
    assert distance("texture_location", a, b) > 30
    assert distance("shape_location", a, b) > 30
    assert distance("texture", a, b) < 5


class TestWeights:
    AVAILABLE = CLASSIC

    def test_weights_are_normalised_to_sum_one(self):
        w = normalise_weights("color=0.6,texture=0.2,shape=0.2", self.AVAILABLE, {})
        assert w == pytest.approx({"color": 0.6, "texture": 0.2, "shape": 0.2})
        w = normalise_weights({"color": 1, "texture": 1}, self.AVAILABLE, {})
        assert sum(w.values()) == pytest.approx(1.0) and w["color"] == pytest.approx(0.5)

    def test_location_is_spread_over_the_weighted_attributes(self):
        w = normalise_weights("color=0.4,texture=0.1,shape=0.3,location=0.2", self.AVAILABLE, {})
        assert w["color_location"] == pytest.approx(0.2 * 0.4 / 0.8)
        assert w["shape_location"] == pytest.approx(0.2 * 0.3 / 0.8)
        assert sum(w.values()) == pytest.approx(1.0)

    @pytest.mark.parametrize(
        "spec,message",
        [
            ("location=1", "needs a colour, texture or shape"),
            ("color=0,texture=0", "at least one"),
            ("color=1.5", "between 0 and 1"),
            ("color=-0.1", "between 0 and 1"),
            ("smell=0.5", "unknown attribute"),
            ("color", "name=0.5"),
            ("color=lots", "not a number"),
        ],
    )
    def test_bad_weights_get_a_clear_error(self, spec, message):
        with pytest.raises(WeightsError, match=message):
            normalise_weights(spec, self.AVAILABLE, {})

    def test_interMedia_worked_example(self):
        # Oracle interMedia's table: colour 15, texture 5, shape 50 (no location).
        distances = {
            "color": np.array([15.0]),
            "texture": np.array([5.0]),
            "shape": np.array([50.0]),
        }
        first = normalise_weights("color=0.9,texture=0.1,shape=0.1", self.AVAILABLE, {})
        # weights 0.9/0.1/0.1 normalise to 9/11, 1/11, 1/11
        assert fuse(distances, first)[0] == pytest.approx((0.9 * 15 + 0.1 * 5 + 0.1 * 50) / 1.1)
        even = normalise_weights("color=0.1,texture=0.1,shape=0.9", self.AVAILABLE, {})
        assert fuse(distances, even)[0] > fuse(distances, first)[0]

    def test_threshold_rule(self):
        assert is_similar(16.5, 20) is True
        assert is_similar(37.5, 20) is False
        assert is_similar(20.0, 20) is True
        assert is_similar(5.0, None) is None
