"""Regional (R-MAC) pooling of the CNN's feature map: a crop or an inset still finds its source.

Through the CLI on scikit-image's photos, with the default job count, as a user runs it.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from quality_fixtures import run

pytest.importorskip("torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lookalike.features.deep import DeepExtractor, pool_features, regions  # noqa: E402
from lookalike.samples import COPY_TRANSFORMS, sample_photo, write_samples  # noqa: E402


def test_regions_cover_the_map_at_three_levels():
    square = regions(7, 7)
    assert square[0] == (0, 0, 7, 7) and len(square) == 1 + 4 + 9
    for top, left, h, w in square:
        assert min(top, left) >= 0 and top + h <= 7 and left + w <= 7
    wide = regions(7, 10)  # one more region along the longer side
    assert len(wide) == 1 + 2 * 3 + 3 * 4


def test_rmac_sums_normalised_region_maxima():
    fmap = torch.rand(2, 5, 7, 7)
    expected = sum(
        torch.nn.functional.normalize(fmap[:, :, t : t + h, x : x + w].amax(dim=(2, 3)), dim=1)
        for t, x, h, w in regions(7, 7)
    )
    np.testing.assert_allclose(pool_features(fmap, "rmac"), expected.numpy(), rtol=1e-6)
    # a strong response in one corner moves R-MAC more than the global average
    spot = fmap.clone()
    spot[:, 0, :3, :3] += 5
    assert (pool_features(spot, "rmac")[:, 0] - pool_features(fmap, "rmac")[:, 0]).min() > 1


def test_default_pooling_is_regional():
    assert DeepExtractor().pooling == "rmac"
    assert "rmac" in DeepExtractor().version


@pytest.fixture(scope="module")
def photo_collection(tmp_path_factory):
    """scikit-image's 20 photos and two broken files, indexed with every default setting."""
    tmp = tmp_path_factory.mktemp("regional")
    write_samples(tmp / "images", variants=())
    (tmp / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp / "images" / "notes.jpg").write_text("not a picture")
    coll = tmp / "coll"
    indexed = run("index", str(tmp / "images"), "-c", str(coll), check=False)
    assert indexed.returncode == 3, indexed.stderr  # finished, the broken files skipped
    return tmp, coll


def test_an_inset_finds_its_source_with_the_default_weights(photo_collection):
    """Horse's inset was missed by the default search before (bench/README.md, issue 12): the
    classic colour and texture saw the noise background and outvoted the CNN."""
    tmp, coll = photo_collection
    query = tmp / "horse_inset_default.jpg"
    COPY_TRANSFORMS["inset"](sample_photo("horse")).save(query, quality=92)
    answer = json.loads(run("search", str(query), "-c", str(coll), "--json").stdout)
    first = answer["results"][0]  # no weights, no options: what `lookalike search` does
    assert "windows" not in answer["explain"]  # the CNN looked once
    assert first["path"].endswith("horse.png"), first


def test_an_inset_the_whole_query_misses_is_found_with_windows(photo_collection):
    """Rocket's inset is found only when the CNN also looks at the query's windows."""
    tmp, coll = photo_collection
    query = tmp / "rocket_inset_windows.jpg"
    COPY_TRANSFORMS["inset"](sample_photo("rocket")).save(query, quality=92)
    plain = json.loads(run("search", str(query), "-c", str(coll), "--json").stdout)
    assert not plain["results"][0]["path"].endswith("rocket.png")
    answer = json.loads(run("search", str(query), "-c", str(coll), "--windows", "--json").stdout)
    first = answer["results"][0]
    assert answer["explain"]["windows"] == {"deep": 9}
    assert first["path"].endswith("rocket.png"), first
    assert first["breakdown"]["deep"] < 45  # matched through a window, not the noise


def test_query_windows_see_half_the_query_at_twice_the_scale():
    from PIL import Image

    from lookalike.decode import Preprocess
    from lookalike.features.deep import WINDOW_STEPS, window_grid

    assert window_grid(14, 14, 7) == [(t, left) for t in (0, 4, 7) for left in (0, 4, 7)]
    extractor = DeepExtractor()
    assert extractor.window_input == 2 * extractor.image_size
    buffer = io.BytesIO()
    COPY_TRANSFORMS["inset"](sample_photo("rocket")).save(buffer, format="JPEG", quality=92)
    windows = extractor.windows_from_bytes(buffer.getvalue(), "<inset>", Preprocess(), 10**8)
    assert windows.shape == (WINDOW_STEPS**2, extractor.dim)
    np.testing.assert_allclose(np.linalg.norm(windows, axis=1), 1.0, rtol=1e-5)
    source = extractor.extract(prepared(sample_photo("rocket")))
    whole = extractor.extract(prepared(Image.open(buffer)))
    assert extractor.windowed_distance(whole, windows, source[None])[0] < (
        extractor.distance(whole, source[None])[0] - 10
    )


def prepared(image):
    from lookalike.decode import Preprocess, prepare
    from lookalike.features.base import PreparedImage

    return PreparedImage(prepare(np.asarray(image.convert("RGB")), Preprocess()))


@pytest.mark.parametrize("transform", ["inset", "crop30"])
def test_an_inset_or_crop_finds_its_source(photo_collection, transform):
    tmp, coll = photo_collection
    for name in ("astronaut", "coffee", "rocket"):
        query = tmp / f"{name}_{transform}.jpg"
        COPY_TRANSFORMS[transform](sample_photo(name)).save(query, quality=92)
        hits = json.loads(
            run("search", str(query), "-c", str(coll), "--weights", "deep=1", "--json").stdout
        )["results"]
        assert hits[0]["path"].endswith(f"{name}.png"), (transform, name, hits[:3])


def test_expand_query_vector_leans_towards_confident_neighbours():
    from lookalike.query.expansion_image import expand_query_vector

    query = np.array([1.0, 0.0, 0.0])
    near, far = np.array([0.8, 0.6, 0.0]), np.array([0.0, 0.0, 1.0])
    out = expand_query_vector(query, np.stack([near, far]), alpha=3.0)
    assert np.linalg.norm(out) == pytest.approx(1.0, abs=1e-6)
    assert out[1] > 0.2 and out[2] == pytest.approx(0.0)  # the orthogonal one pulls nothing
    assert np.allclose(expand_query_vector(query, np.zeros((0, 3))), query)


def test_search_with_query_expansion_keeps_the_source_first(photo_collection):
    from lookalike.api import Collection

    tmp, coll = photo_collection
    query = tmp / "coffee_expand.jpg"
    COPY_TRANSFORMS["crop30"](sample_photo("coffee")).save(query, quality=92)
    with Collection.open(coll) as opened:
        plain = opened.query(image=query, weights="deep=1", top_k=5)
        expanded = opened.query(image=query, weights="deep=1", top_k=5, expand=True)
    assert expanded[0].path.endswith("coffee.png")
    assert len(expanded.explain["expand"]["neighbours"]) == 3
    assert [h.score for h in expanded] != [h.score for h in plain]


def test_query_windows_agree_across_plans_and_can_be_turned_off(photo_collection, tmp_path):
    import shutil

    from lookalike.api import Collection

    tmp, coll = photo_collection
    copy = tmp_path / "coll"
    shutil.copytree(coll, copy)  # the module's collection keeps its exact index
    query = tmp / "rocket_inset_plans.jpg"
    COPY_TRANSFORMS["inset"](sample_photo("rocket")).save(query, quality=92)
    with Collection.open(copy) as opened:
        opened.configure_index(kind="hnsw", effort={"hnsw": 256})
        fast = opened.query(image=query, top_k=3, windows=True)
        exact = opened.query(image=query, top_k=3, exact=True, windows=True)
        plain = opened.query(image=query, top_k=3)
    assert fast.explain["plan"] == "candidates" and exact.explain["plan"] == "exact"
    assert [(h.id, round(h.score, 9)) for h in fast] == [(h.id, round(h.score, 9)) for h in exact]
    assert fast[0].path.endswith("rocket.png")
    assert not plain[0].path.endswith("rocket.png")  # the whole query alone misses it


def test_windows_over_http(photo_collection):
    """The same switch over REST (multipart and JSON), off unless asked for."""
    from server_fixtures import local_client

    from lookalike.server.app import create_app

    tmp, coll = photo_collection
    data = io.BytesIO()
    COPY_TRANSFORMS["inset"](sample_photo("rocket")).save(data, "JPEG", quality=92)
    upload = {"image": ("inset.jpg", data.getvalue(), "image/jpeg")}
    with local_client(create_app(coll)) as client:
        plain = client.post("/api/search", files=upload, data={"top_k": "3"}).json()
        both = client.post("/api/search", files=upload, data={"top_k": "3", "windows": "true"})
        body = {"image_base64": base64.b64encode(data.getvalue()).decode()}
        as_json = client.post("/api/search/json", json={**body, "windows": True})
    assert "windows" not in plain["explain"]
    assert both.status_code == 200 and as_json.status_code == 200, (both.text, as_json.text)
    for answer in (both.json(), as_json.json()):
        assert answer["explain"]["windows"] == {"deep": 9}
        assert answer["results"][0]["name"] == "rocket.png"
