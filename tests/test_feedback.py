"""More like this / less like this (issue 11) through the CLI and REST: the ranking moves
toward the wanted examples, an image marked "less" never comes first."""

from __future__ import annotations

import numpy as np
import pytest
from query_fixtures import ids_by_stem, names, query_collection, run, run_json

from lookalike.query.feedback import move_query, shift_weights


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    coll, _ = query_collection(tmp_path_factory)
    return coll, ids_by_stem(coll)


def test_more_moves_the_ranking_toward_the_marked_image(built):
    coll, ids = built
    query = f"id:{ids['chelsea']}"
    before = names(run_json("search", query, "-c", str(coll), "--top", "30"))
    target = before[8]  # an answer far down the list
    after = names(
        run_json("search", query, "-c", str(coll), "--top", "30", "--more", f"id:{ids[target]}")
    )
    assert after.index(target) < before.index(target), (before, after)


def test_less_never_comes_first_and_others_move_away(built):
    coll, ids = built
    query = f"id:{ids['coffee']}"
    before = run_json("search", query, "-c", str(coll), "--top", "8")
    first_match = names(before)[1]  # [0] is the query itself
    after = run_json(
        "search", query, "-c", str(coll), "--top", "8", "--less", f"id:{ids[first_match]}"
    )
    assert first_match not in names(after)
    assert after["explain"]["feedback"]["less"] == [ids[first_match]]
    # with no query image, wanted examples alone make the query; the unwanted stay out
    wanted = [f"id:{ids['blue_0']}", f"id:{ids['blue_1']}"]
    only = run_json("search", "-c", str(coll), "--more", wanted[0], "--more", wanted[1],
                    "--less", f"id:{ids['blue_2']}", "--top", "4")  # fmt: skip
    assert set(names(only)[:2]) == {"blue_0", "blue_1"} and "blue_2" not in names(only)


def test_feedback_over_rest_and_info_offers_it(built):
    from server_fixtures import local_client, settings_without_uploads

    from lookalike.server.app import create_app

    coll, ids = built
    with local_client(create_app(coll, settings_without_uploads())) as client:
        assert client.get("/api/info").json()["feedback"] == {"more": True, "less": True}
        plain = client.post("/api/search/json", json={"id": ids["astronaut"], "top_k": 5}).json()
        marked = plain["results"][1]["id"]
        moved = client.post(
            "/api/search/json", json={"id": ids["astronaut"], "top_k": 5, "less": [marked]}
        ).json()
        assert marked not in [h["id"] for h in moved["results"]]
        form = client.post("/api/search", data={"id": ids["astronaut"], "less": f"{marked}"})
        assert form.status_code == 200 and marked not in [h["id"] for h in form.json()["results"]]
        bad = client.post("/api/search", data={"id": ids["astronaut"], "less": "x;drop"})
        assert bad.status_code == 400
        both = client.post(
            "/api/search/json", json={"id": ids["astronaut"], "more": [marked], "less": [marked]}
        )
        assert both.status_code == 400
    proc = run("search", "-c", str(coll), "--less", "id:3", check=False)
    assert proc.returncode != 0 and "needs a query image" in proc.stderr + proc.stdout


def test_rocchio_and_weights_unit():
    query = {"color": np.array([1.0, 0.0, 0.0], np.float32)}
    more = {"color": np.array([[0.0, 1.0, 0.0]], np.float32)}
    less = {"color": np.array([[0.0, 0.0, 1.0]], np.float32)}
    moved = move_query(query, more, less)["color"]
    assert moved[1] > 0 and moved[2] == 0 and moved.sum() == pytest.approx(1.0)
    shifted = shift_weights({"color": 0.5, "texture": 0.5}, {"color": 0.05, "texture": 0.5})
    assert shifted["color"] > shifted["texture"]


def test_less_in_one_process_after_writes_sees_new_images_and_keeps_the_marked_out(built, tmp_path):
    """An unwanted image is left out by the searchable ids minus it; those ids are kept in a
    process until a write, and a write brings the new image in (the server's case)."""
    import shutil

    from lookalike.api import Collection

    folder, ids = built
    shutil.copytree(folder, tmp_path / "coll")
    with Collection.open(tmp_path / "coll") as coll:
        coffee = ids["coffee"]
        marked = [h.id for h in coll.query(image=coffee, top_k=3)][1]
        first = [h.id for h in coll.query(image=coffee, less=[marked], top_k=5)]
        assert marked not in first and coffee == first[0]
        vectors = {n: v[None, :] for n, v in coll.describe(coffee).items()}
        copy = coll.add_vectors(["elsewhere/coffee-copy.jpg"], vectors)[0]
        again = [h.id for h in coll.query(image=coffee, less=[marked], top_k=5)]
        assert copy in again[:2] and marked not in again
        coll.remove(copy)
        assert copy not in [h.id for h in coll.query(image=coffee, less=[marked], top_k=5)]
