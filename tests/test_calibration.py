"""Calibrated scores and the likely-matches cut (issue 11), through the CLI: near-duplicates
above the cut, unrelated images below, the query itself marked as the query."""

from __future__ import annotations

import numpy as np
import pytest
from query_fixtures import DUPLICATED, PHOTOS, names, query_collection, run_json

from lookalike.calibration import Calibration, likely_cut


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return query_collection(tmp_path_factory)


@pytest.mark.parametrize("raw", [True, False])
def test_likely_cut_keeps_near_duplicates_and_drops_unrelated(built, raw):
    """Raw fusion is the default (it ranked better in bench_quality): there the cut holds
    exactly the copies. On the calibrated scale the copies are likely too, but on this small
    collection of few subjects an unrelated photo may also pass (see bench/README.md)."""
    coll, images = built
    flags = [] if raw else ["--calibrated"]
    for photo in DUPLICATED:
        query = images / "photos" / "photos" / f"{photo}.png"
        results = run_json("search", str(query), "-c", str(coll), "--top", "12", *flags)
        assert results["likely_cut"] is not None and results["calibrated"] is (not raw)
        hits = results["results"]
        assert hits[0]["is_query"] and not hits[0]["likely"]  # the same bytes: the query itself
        likely = {n for n, h in zip(names(results), hits, strict=True) if h["likely"]}
        copies = {f"{photo}__crop80", f"{photo}__jpeg30"}
        assert set(names(results)[1:3]) == copies
        if raw:
            assert likely == copies, (photo, results)
        else:
            assert copies <= likely, (photo, results)


def test_threshold_auto_returns_the_likely_matches_only(built):
    coll, images = built
    query = images / "copies" / "variants" / "coffee__crop80.jpg"
    results = run_json("search", str(query), "-c", str(coll), "--threshold", "auto")
    assert set(names(results)) == {"coffee", "coffee__crop80", "coffee__jpeg30"}
    by_id = run_json("search", "id:1", "-c", str(coll), "--top", "3")
    assert by_id["results"][0]["id"] == 1 and by_id["results"][0]["is_query"]


def test_calibration_is_kept_with_the_collection(built):
    from lookalike.api import Collection

    coll, _ = built
    with Collection.open(coll) as c:
        stored = c.catalog.get_meta("calibration")
        calibration = Calibration.from_meta(stored)
        assert calibration.images == len(c)  # the broken file is not an image
        assert len(calibration.pairs) > 100
        assert len(PHOTOS) < calibration.images


def test_calibrated_scale_is_monotone_and_comparable():
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.uniform(30, 60, 500), rng.uniform(5, 15, 500)], axis=1)
    calibration = Calibration(("color", "texture"), {}, 100, pairs.astype(np.float32))
    assert calibration.calibrate("color", np.array([45.0]))[0] == pytest.approx(50, abs=8)
    assert calibration.calibrate("texture", np.array([10.0]))[0] == pytest.approx(50, abs=8)
    ramp = calibration.calibrate("color", np.linspace(0, 100, 50))
    assert (np.diff(ramp) > 0).all()  # never a tie: near-duplicates keep their order
    null = calibration.null_image({"color": 0.5, "texture": 0.5}, True)
    cut = likely_cut((null, null), {}, {"image": 1.0})
    assert 0 < cut < np.quantile(null, 0.05)
