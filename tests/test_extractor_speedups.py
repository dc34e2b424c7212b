"""The fast extractors measure what the slow originals measured.

Each test keeps the original implementation (scikit-image's colour conversions, its LBP and
regionprops, one histogram pass per grid cell) as a reference here, not in the product, and
holds the product to it on real photos in the common frame. Documented tolerance: 1e-6 per
histogram bin (float rounding of sums taken in another order); LBP codes, HSV and the
Felzenszwalb labels (compiled with numba) are exact.
`shape` changed what it measures (version 4: solidity from the hull of the pixel squares); its
test pins what stayed the same (eccentricity, the segmentation frame) and bounds the rest.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import ndimage
from skimage import color as skcolor
from skimage.feature import local_binary_pattern
from skimage.measure import regionprops

from lookalike.decode import Preprocess, decode_bytes, prepare
from lookalike.features import filters, perceptual, segmentation, shape, texture
from lookalike.features.base import PreparedImage, grid_cell_index, grid_cells, rgb_to_hsv
from lookalike.features.registry import create_extractor
from lookalike.samples import PHOTO_NAMES, TRANSFORMS, sample_photo

TOLERANCE = 1e-6


def _prepared(image) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return prepare(decode_bytes(buffer.getvalue(), "photo").rgb, Preprocess())


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    """Every sample photo, and some transformed copies, enlarged to 1024x768 then framed."""
    out = {}
    for name in PHOTO_NAMES:
        photo = sample_photo(name).resize((1024, 768))
        out[name] = _prepared(photo)
    for name in ("chelsea", "astronaut", "coffee"):
        for transform in ("jpeg30", "rotate5", "bright120"):
            out[f"{name}/{transform}"] = _prepared(TRANSFORMS[transform](sample_photo(name)))
    return out


# ---- references: the implementations these extractors replaced ----------------------------


def reference_hsv_histogram(hsv, hue_bins, sat_levels, val_levels):
    """One bincount per neighbour combination on masked pixels (the original)."""
    from lookalike.features.color import _soft_weights

    h, s, v = (hsv[..., i].ravel().astype(np.float64) for i in range(3))
    h_lo, h_hi, h_wlo, h_whi = _soft_weights(h, np.arange(hue_bins), circular=True)
    s_lo, s_hi, s_wlo, s_whi = _soft_weights(s, np.linspace(0.0, 1.0, sat_levels + 1))
    v_lo, v_hi, v_wlo, v_whi = _soft_weights(v, np.linspace(0.0, 1.0, val_levels))
    counts = np.zeros(val_levels + hue_bins * sat_levels * (val_levels - 1))
    for s_idx, s_w in ((s_lo, s_wlo), (s_hi, s_whi)):
        for v_idx, v_w in ((v_lo, v_wlo), (v_hi, v_whi)):
            grey = (s_idx == 0) | (v_idx == 0)
            w_sv = s_w * v_w
            counts += np.bincount(v_idx[grey], weights=w_sv[grey], minlength=len(counts))
            chroma = ~grey
            base = val_levels + ((s_idx[chroma] - 1) * (val_levels - 1) + (v_idx[chroma] - 1))
            for h_idx, h_w in ((h_lo, h_wlo), (h_hi, h_whi)):
                index = base + h_idx[chroma] * sat_levels * (val_levels - 1)
                counts += np.bincount(index, w_sv[chroma] * h_w[chroma], minlength=len(counts))
    return counts / counts.sum()


def reference_signature(name: str, rgb: np.ndarray) -> np.ndarray:
    hsv = skcolor.rgb2hsv(rgb).astype(np.float32)
    gray = skcolor.rgb2gray(rgb).astype(np.float32)
    cells = grid_cells(*rgb.shape[:2], 4, 4)
    blurred = ndimage.gaussian_filter(gray, 1.0)
    smooth = np.clip(blurred * 255.0 + 0.5, 0, 255).astype(np.uint8)
    lbp = {
        p: local_binary_pattern(smooth, p, r, method="uniform").astype(int)
        for p, r in texture.LBP_SETTINGS
    }
    gx, gy = (ndimage.sobel(gray, axis=a, mode="reflect") for a in (1, 0))

    def hist(values, n):
        counts = np.bincount(values.ravel(), minlength=n).astype(np.float64)
        return counts / counts.sum() if counts.sum() else counts

    if name == "color":
        return reference_hsv_histogram(hsv, 12, 2, 4)
    if name == "color_location":
        return np.concatenate([reference_hsv_histogram(hsv[c], 12, 1, 3) for c in cells])
    if name == "texture":
        parts = [hist(lbp[p], p + 2) for p, _ in texture.LBP_SETTINGS]
        return np.concatenate(parts + list(texture.gradient_histograms(gx, gy)))
    if name == "texture_location":
        return np.concatenate(
            [
                np.r_[hist(lbp[8][c], 10), texture.gradient_histograms(gx[c], gy[c])[1]]
                for c in cells
            ]
        )
    if name == "shape_location":
        types = shape.edge_type_map(gray)
        return np.concatenate([hist(types[c], 5) for c in grid_cells(*types.shape, 4, 4)])
    raise KeyError(name)


# ---- tests -----------------------------------------------------------------------------------


def test_hsv_and_grey_equal_scikit_image_exactly(frames):
    rng = np.random.default_rng(0)
    noise = rng.random((64, 64, 3), dtype=np.float32)
    noise[:16] = np.round(noise[:16] * 4) / 4  # ties between channels: blue > green > red
    noise[16:32] = noise[16:32, :, :1]  # greys: hue 0
    for rgb in [noise, *frames.values()]:
        assert np.array_equal(rgb_to_hsv(rgb), skcolor.rgb2hsv(rgb))
        assert np.array_equal(PreparedImage(rgb).gray, skcolor.rgb2gray(rgb))


@pytest.mark.parametrize(("points", "radius"), [(8, 1.0), (16, 2.0), (12, 1.5), (8, 2.5)])
def test_lbp_codes_equal_scikit_image_exactly(frames, points, radius):
    rng = np.random.default_rng(points)
    flat_areas = rng.integers(0, 3, (41, 57)).astype(np.uint8)  # ties on every side
    images = [flat_areas] + [texture.smoothed_u8(PreparedImage(f).gray) for f in frames.values()]
    for image in images:
        expected = local_binary_pattern(image, points, radius, method="uniform")
        assert np.array_equal(texture.uniform_lbp(image, points, radius), expected)


@pytest.mark.parametrize(
    "attribute", ["color", "color_location", "texture", "texture_location", "shape_location"]
)
def test_vectors_stay_within_tolerance_of_the_reference(frames, attribute):
    extractor = create_extractor(attribute)
    for label, rgb in frames.items():
        vector = extractor.extract(PreparedImage(rgb))
        assert vector.dtype == np.float32 and vector.shape == (extractor.dim,)
        error = np.abs(vector - reference_signature(attribute, rgb)).max()
        assert error <= TOLERANCE, f"{attribute} on {label}: off by {error}"


def test_grid_cell_index_numbers_the_cells_of_grid_cells():
    for height, width in [(192, 256), (7, 5), (50, 70)]:
        index = grid_cell_index(height, width, 4, 4)
        for number, cell in enumerate(grid_cells(height, width, 4, 4)):
            assert (index[cell] == number).all()
        assert index.shape == (height, width)


def test_shape_region_statistics_against_regionprops(frames):
    """Eccentricity is regionprops' to float noise. Solidity is now the region's area over the
    area of the hull of its pixel squares (regionprops counts pixel centres in a hull of edge
    midpoints): never above 1, exactly 1 for a rectangle, and close to regionprops' value."""
    for label, rgb in frames.items():
        labels = shape.segment(rgb)
        share, eccentricity, solidity = shape.region_shapes(labels)
        props = regionprops(labels + 1)
        assert np.allclose(share * labels.size, [p.area for p in props])
        assert np.allclose(eccentricity, [p.eccentricity for p in props], atol=1e-9), label
        assert ((solidity > 0) & (solidity <= 1)).all()
        assert np.abs(solidity - [p.solidity for p in props]).max() < 0.15, label
    rectangle = np.zeros((20, 30), dtype=np.int64)
    rectangle[5:15, 3:25] = 1
    ring = np.zeros((20, 20), dtype=np.int64)
    ring[2:18, 2:18] = 1
    ring[5:15, 5:15] = 0
    assert shape.region_shapes(rectangle)[2][1] == pytest.approx(1.0)
    assert shape.region_shapes(ring)[2][1] == pytest.approx((256 - 100) / 256)


def test_extractors_share_intermediate_results():
    """texture and texture_location read one LBP pass; shape and shape_location one edge map."""
    image = PreparedImage(np.random.default_rng(1).random((96, 128, 3), dtype=np.float32))
    for name in ("texture", "texture_location", "shape", "shape_location"):
        create_extractor(name).extract(image)
    computed = image._shared
    lbp = texture.lbp_codes(image, 8, 1.0)
    assert lbp is computed["lbp8_1.0"]
    assert {"lbp8_1.0", "lbp16_2.0", "edge_types", "strength_bins", "sobel"} <= set(computed)


def test_segmentation_frame_equals_scikit_image_resize(frames):
    from skimage.transform import resize

    for rgb in list(frames.values())[:6]:
        expected = resize(rgb, (96, 128), anti_aliasing=True, preserve_range=True)
        assert np.abs(shape.antialiased_resize(rgb, (96, 128)) - expected).max() <= TOLERANCE


def test_segmentation_labels_equal_scikit_image_felzenszwalb(frames):
    """The compiled Felzenszwalb gives scikit-image's labels, region for region, numbered
    alike: on the photos' segmentation frames, on noise, on flat areas (costs that tie) and on
    images of one row, one column or one pixel."""
    from skimage.segmentation import felzenszwalb

    rng = np.random.default_rng(3)
    flat = np.zeros((40, 50, 3), dtype=np.float32)
    flat[10:30, 5:20] = (0.2, 0.5, 0.9)
    images = [rng.random((30, 45, 3)), flat, np.round(rng.random((33, 41, 3)) * 2) / 2]
    images += [rng.random(size) for size in [(1, 1, 3), (1, 6, 3), (7, 1, 3)]]
    for rgb in frames.values():
        scale = shape.SEGMENT_FRAME / max(rgb.shape[:2])
        size = (round(rgb.shape[0] * scale), round(rgb.shape[1] * scale))
        images.append(shape.antialiased_resize(rgb, size))
    params = (shape.SEGMENT_SCALE, shape.SEGMENT_SIGMA, shape.SEGMENT_MIN_SIZE)
    for image in images:
        expected = felzenszwalb(image, *params, channel_axis=-1)
        assert np.array_equal(shape.segment(image), expected)  # the frames are <= 128 pixels
        for scale, sigma, min_size in [(1, 0.8, 20), (300, 0.5, 5)]:
            expected = felzenszwalb(image, scale, sigma, min_size, channel_axis=-1)
            assert np.array_equal(
                segmentation.felzenszwalb(image, scale, sigma, min_size), expected
            )


def test_region_hulls_equal_qhull_on_the_pixel_squares(frames):
    """Solidity's hull (monotone chains over row extremes) has the area qhull gives for the
    corners of every pixel square of the region, on segmented photos and on scattered labels
    (regions in pieces, rows with gaps)."""
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(5)
    label_images = [rng.integers(0, 6, (20, 30)), rng.integers(0, 40, (37, 23))]
    label_images += [shape.segment(rgb) for rgb in list(frames.values())[:8]]
    offsets = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    for labels in label_images:
        share, _, solidity = shape.region_shapes(labels)
        for label in range(int(labels.max()) + 1):
            pixels = np.argwhere(labels == label)
            corners = (pixels[:, None, :] + offsets[None]).reshape(-1, 2)
            hull_area = ConvexHull(corners).volume
            expected = len(pixels) / max(hull_area, len(pixels))
            assert solidity[label] == pytest.approx(expected, abs=1e-12), label
            assert share[label] * labels.size == pytest.approx(len(pixels))


def test_direction_bins_by_comparison_equal_the_arctangent_bins():
    """Gradients on the bin edges (diagonals, axes, 22.5 and 67.5 degrees, every sign) and at
    random: the histogram from slope comparisons equals the one from the float32 arctangent."""
    rng = np.random.default_rng(11)
    base = rng.normal(size=50_000).astype(np.float32)
    slopes = [np.float32(np.tan(k * np.pi / 8)) for k in (1, 2, 3)]
    gx = np.concatenate([base, -base, base, base, np.zeros(50, np.float32), base])
    gy = np.concatenate([base, base, base * slopes[0], -base * slopes[2], np.ones(50, np.float32),
                         np.zeros_like(base)])  # fmt: skip
    noise = rng.normal(size=(2, 50_000)).astype(np.float32)
    gx, gy = np.concatenate([gx, noise[0]]), np.concatenate([gy, noise[1]])
    magnitude = np.hypot(gx, gy)
    strong = magnitude > 0.1
    folded = np.abs(np.arctan2(gy[strong], gx[strong]))
    folded = np.where(folded > np.pi / 2, np.pi - folded, folded)
    bins = np.minimum((folded / (np.pi / 2) * 4).astype(np.int64), 3)
    expected = np.bincount(bins, weights=magnitude[strong], minlength=4)
    expected = (expected / expected.sum()).astype(np.float32)
    assert np.array_equal(texture.direction_histogram(gx, gy, magnitude), expected)


def test_halving_the_segmentation_frame_gives_scipys_floats(frames):
    """The compiled blur-and-halve gives the floats of scipy's Gaussian and zoom, bit for bit
    (and an odd-sized frame still goes through scipy)."""
    rng = np.random.default_rng(2)
    images = [rng.random((12, 20, 3), dtype=np.float32), *list(frames.values())]
    for rgb in images:
        size = (rgb.shape[0] // 2, rgb.shape[1] // 2)
        rgb = np.ascontiguousarray(rgb[: 2 * size[0], : 2 * size[1]])
        assert np.array_equal(shape.antialiased_resize(rgb, size), shape.zoomed_planes(rgb, size))
    odd = images[1][:191]
    assert np.array_equal(
        shape.antialiased_resize(odd, (96, 128)), shape.zoomed_planes(odd, (96, 128))
    )


def test_compiled_gaussian_and_sobel_give_scipys_floats(frames):
    """texture's blur and Sobel (features/filters.py) equal scipy.ndimage's bit for bit, on
    every frame's grey image and on tiny images where the reflection wraps more than once."""
    rng = np.random.default_rng(3)
    tiny = [rng.random(shape, dtype=np.float32) for shape in ((1, 1), (1, 6), (2, 3), (5, 9))]
    flat = [np.full((7, 8), 0.25, np.float32), np.round(rng.random((9, 9), np.float32) * 4) / 4]
    grays = [*tiny, *flat, *(PreparedImage(rgb).gray for rgb in frames.values())]
    for gray in grays:
        blurred = filters.gaussian_blur(gray, 1.0)
        assert blurred.dtype == np.float32
        assert blurred.tobytes() == ndimage.gaussian_filter(gray, 1.0).tobytes()
        for axis in (0, 1):
            expected = ndimage.sobel(gray, axis=axis, mode="reflect")
            assert filters.sobel(gray, axis).tobytes() == expected.tobytes()
    # Felzenszwalb's smoothing: float64 colour planes, scipy's sigma=[s, s, 0] (0: untouched)
    for rgb in [rng.random((2, 5, 3)), *(shape.antialiased_resize(f, (96, 128)) for f in
                                         list(frames.values())[:6])]:  # fmt: skip
        planes = np.asarray(rgb, dtype=np.float64)
        for sigma in (shape.SEGMENT_SIGMA, 0.5, 0.0):
            expected = ndimage.gaussian_filter(planes, sigma=[sigma, sigma, 0], mode="reflect")
            blurred = [filters.gaussian_blur(planes[..., c], sigma) for c in range(3)]
            assert np.stack(blurred, axis=-1).tobytes() == expected.tobytes()


def reference_direction_histogram(gx, gy, magnitude):
    """The numpy slope comparisons that the compiled pass replaced (ingest4)."""
    strong = magnitude.ravel() > 0.1
    gx, gy, weight = gx.ravel()[strong], gy.ravel()[strong], magnitude.ravel()[strong]
    across, along = np.abs(gx).astype(np.float64), np.abs(gy).astype(np.float64)
    bins = np.zeros(len(gx), dtype=np.int64)
    near_edge = np.zeros(len(gx), dtype=bool)
    for edge in texture._BIN_EDGE_SLOPES:
        gap = along - edge * across
        bins += gap >= 0
        near_edge |= np.abs(gap) <= 1e-4 * (along + across)
    bins[near_edge] = texture._angle_bins(gx[near_edge], gy[near_edge])
    counts = np.bincount(bins, weights=weight, minlength=texture.DIRECTION_BINS)
    return (counts / counts.sum()).astype(np.float32)


def test_compiled_gradient_bins_equal_numpys(frames):
    """Direction histograms and strength bins from the compiled passes equal the numpy ones
    they replaced, exactly, on every frame and on edge cases (exact diagonals, the 0.1 floor
    in float32, values on a strength edge, NaN)."""
    edges = np.geomspace(0.01, 4.0, texture.STRENGTH_BINS - 1)
    diagonal = np.array([[0.5, -0.5, 0.3, 0.1, 0.1000000015]], dtype=np.float32)
    cases = [(diagonal, diagonal[:, ::-1])]
    cases += [texture.gradients(PreparedImage(rgb)) for rgb in frames.values()]
    for gx, gy in cases:
        magnitude = np.hypot(gx, gy)
        expected = reference_direction_histogram(gx, gy, magnitude)
        assert texture.direction_histogram(gx, gy, magnitude).tobytes() == expected.tobytes()
        assert np.array_equal(texture.strength_bins(magnitude), np.searchsorted(edges, magnitude))
    odd = np.array([np.nan, 0.01, edges[3], 4.0, 5.0, -1.0, 0.0], dtype=np.float32)
    assert np.array_equal(texture.strength_bins(odd), np.searchsorted(edges, odd))


COMPILE_CHECK = """
from lookalike.decode import Preprocess, decode_bytes, prepare
from lookalike.features import base, color, filters, perceptual, segmentation, shape, texture
from lookalike.features.base import PreparedImage, warm_up
from lookalike.features.registry import create_extractor
from lookalike.samples import sample_photo
import io
kernels = [segmentation._edges, segmentation._merge, segmentation._numbered_keys,
           segmentation._order_by_cost, shape._blur_halve, shape._hull_areas,
           shape._region_sums, base._hsv_pixels, perceptual._named_float32,
           texture._uniform_lbp, color._soft_hsv_counts, filters._axis0_symmetric,
           filters._axis1_symmetric, filters._axis0_difference, filters._axis1_difference,
           texture._slope_bins, texture._edges_below]
extractors = [create_extractor(n) for n in
              ("color", "texture", "shape", "color_location", "texture_location", "perceptual")]
assert not any(k.signatures for k in kernels), "compiled by building alone (info, search by id)"
warm_up(extractors)  # as an ingest worker does at start
compiled = [list(k.signatures) for k in kernels]
assert all(compiled), compiled
buffer = io.BytesIO()
sample_photo("chelsea").resize((1024, 768)).save(buffer, format="JPEG")
image = PreparedImage(prepare(decode_bytes(buffer.getvalue(), "photo").rgb, Preprocess()))
for extractor in extractors:
    extractor.extract(image)
assert [list(k.signatures) for k in kernels] == compiled, "compiled during the photo"
"""


def test_building_the_extractors_compiles_every_kernel_a_photo_needs():
    """In a fresh process, building the extractors compiles nothing (a search by id needs no
    kernel); warming them up as an ingest worker does at start compiles every numba kernel a
    photo in the frame runs: none is compiled inside the photo's time budget."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", COMPILE_CHECK], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_stable_order_is_numpys_stable_argsort(frames):
    """Felzenszwalb's edge order (numbered uint64 keys, then an insertion pass) is exactly
    `np.argsort(kind="stable")`: on the photos' edge costs, on costs that tie or differ only
    in their last bits, on zeros, and on what has no order in its bits (negative, NaN)."""
    rng = np.random.default_rng(7)
    costs = [segmentation._edges(shape.antialiased_resize(rgb, (96, 128)).astype(np.float64))[1]
             for rgb in list(frames.values())[:6]]  # fmt: skip
    near = 1.0 + rng.integers(0, 2**20, 5000) * np.finfo(np.float64).eps
    costs += [near, np.round(rng.random(4000) * 4) / 4, np.zeros(300), np.zeros(0), np.ones(1)]
    costs += [np.array([0.5, -0.0, 0.25, 0.0, -0.0]), np.array([0.5, np.nan, 0.25, np.inf])]
    costs += [rng.normal(size=500)]
    for values in costs:
        expected = np.argsort(values, kind="stable")
        assert np.array_equal(segmentation.stable_order(values), expected)


def test_compiled_hsv_and_colour_names_equal_numpys(frames):
    """The compiled HSV and colour-name passes give the floats and names of the numpy
    expressions they replaced, on the frames and on values at rounding halves, out of range
    and tied between channels."""
    rng = np.random.default_rng(13)
    halves = ((np.arange(189, dtype=np.float32) + 0.5) / 63).reshape(-1, 1, 3) * 1.05 - 0.02
    ties = np.round(rng.random((20, 20, 3), dtype=np.float32) * 4) / 4
    for rgb in [halves, ties, *list(frames.values())[:6]]:
        q = np.rint(np.clip(rgb, 0.0, 1.0) * 63).astype(np.int32)
        expected = perceptual._lookup_table()[(q[..., 0] * 64 + q[..., 1]) * 64 + q[..., 2]]
        assert np.array_equal(perceptual.name_pixels(rgb), expected)
        assert rgb_to_hsv(rgb).tobytes() == reference_rgb_to_hsv(rgb).tobytes()


def reference_rgb_to_hsv(rgb):
    """The numpy version of `rgb_to_hsv` (ingest3), without masked assignments."""
    r, g, b = np.moveaxis(np.asarray(rgb, dtype=np.float32), -1, 0).copy()
    value = np.maximum(np.maximum(r, g), b)
    delta = value - np.minimum(np.minimum(r, g), b)
    grey = delta == 0
    divisor = delta + grey
    saturation = delta / (value + (value == 0))
    hue = np.where(g == value, 2.0 + (b - r) / divisor, (g - b) / divisor)
    hue = np.where(b == value, 4.0 + (r - g) / divisor, hue)
    hue /= 6.0
    hue += hue < 0
    hue = np.where(grey, np.float32(0), hue)
    return np.stack([hue, saturation, value], axis=-1).astype(np.float32, copy=False)


def test_gaussian_weights_are_scipys_kernel_without_importing_it():
    """filters.gaussian_weights repeats scipy's kernel arithmetic (so that a worker need not
    import scipy.ndimage): the same floats for every sigma the extractors use and more."""
    from scipy.ndimage._filters import _gaussian_kernel1d

    for sigma in (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 3.7):
        for truncate in (4.0, 3.0):
            radius = int(truncate * sigma + 0.5)
            expected = _gaussian_kernel1d(sigma, 0, radius)[::-1]
            assert filters.gaussian_weights(sigma, truncate).tobytes() == expected.tobytes(), sigma
