"""The REST API through FastAPI's test client: every endpoint and every error case."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from server_fixtures import (  # noqa: E402
    API_KEY,
    fresh_collection,
    halves,
    ids_by_name,
    local_client,
    photo_variant_bytes,
    png_bytes,
    quadrants,
    solid,
    static_http_server,
    template_collection,
)

from lookalike.api import Collection  # noqa: E402
from lookalike.server.app import STATIC_DIR, ServerSettings, create_app  # noqa: E402

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory) -> Path:
    return template_collection(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def coll(shared_dir):
    with Collection.open(shared_dir) as opened:
        yield opened


@pytest.fixture(scope="module")
def names(coll) -> dict[str, int]:
    return ids_by_name(coll)


@pytest.fixture(scope="module")
def client(coll):
    """Read-only client over the shared collection (writes are tested on private copies)."""
    return local_client(create_app(coll, ServerSettings(api_key=API_KEY)))


@pytest.fixture
def writable(tmp_path, tmp_path_factory):
    """(client, collection) over a private copy of the test collection."""
    directory = fresh_collection(tmp_path_factory.getbasetemp(), tmp_path / "coll")
    with Collection.open(directory) as opened:
        yield local_client(create_app(opened, ServerSettings(api_key=API_KEY))), opened


def make_client(coll: Collection, **settings) -> TestClient:
    return local_client(create_app(coll, ServerSettings(**settings)))


def upload(name: str, data: bytes, mime: str = "image/png") -> dict:
    return {"image": (name, data, mime)}


def result_names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["name"].rsplit(".", 1)[0] for hit in response.json()["results"]]


# -- collection, page, spec -------------------------------------------------------------------


def test_health_and_info(client, names):
    health = client.get("/api/health").json()
    assert {k: health[k] for k in ("status", "images")} == {"status": "ok", "images": len(names)}
    assert health["busy"] == {"searches": 0, "describes": 0}
    info = client.get("/api/info").json()
    assert info["collection"]["images"] == len(names)
    assert "path" not in info["collection"]  # no server paths unless expose_paths
    assert info["weights"] == ["color", "texture", "shape", "location", "perceptual"]
    assert [p["term"] for p in info["palette"]] == [
        "white", "black", "red", "green", "yellow", "blue", "brown", "purple", "pink",
        "orange", "grey",
    ]  # fmt: skip
    server = info["server"]
    assert server["writes_enabled"] is True and server["read_key_required"] is False
    assert API_KEY not in json.dumps(info)


def test_openapi_lists_every_endpoint(client):
    spec = client.get("/api/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/api/health": {"get"},
        "/api/info": {"get"},
        "/api/images": {"post"},
        "/api/images/{image_id}": {"get", "put", "patch", "delete"},
        "/api/images/{image_id}/thumbnail": {"get"},
        "/api/images/{image_id}/original": {"get"},
        "/api/images/{image_id}/similar": {"get"},
        "/api/search": {"post"},
        "/api/search/json": {"post"},
        "/api/layout": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]


def test_page_and_static_files_load_nothing_external(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("index.html", "app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), name
        assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import", text), name


def test_static_paths_cannot_escape(client):
    for path in ("/static/../catalog.sqlite", "/static/%2e%2e/app.py", "/static/..%2fapp.py"):
        assert client.get(path).status_code == 404, path


# -- searching by example --------------------------------------------------------------------


def test_search_by_upload_finds_the_original_first(client):
    response = client.post(
        "/api/search", files=upload("cat.jpg", photo_variant_bytes("chelsea"), "image/jpeg")
    )
    names = result_names(response)
    assert names[0] == "chelsea"
    data = response.json()
    hit = data["results"][0]
    assert set(hit["breakdown"]) == set(data["weights"])
    assert hit["thumbnail"] == f"/api/images/{hit['id']}/thumbnail"
    assert "path" not in hit
    assert data["query"]["kinds"] == ["image"] and data["elapsed_ms"] >= 0


def test_search_by_id_and_similar(client, names):
    target = names["halves_blue_grey"]
    response = client.post("/api/search", data={"id": target, "top_k": 3})
    assert response.json()["results"][0]["id"] == target
    assert response.json()["results"][0]["score"] == 0
    similar = client.get(f"/api/images/{target}/similar", params={"top_k": 2})
    assert [h["id"] for h in similar.json()["results"]][0] == target
    by_json = client.post("/api/search/json", json={"id": target, "top_k": 2})
    assert by_json.json()["results"][0]["id"] == target


def test_search_by_base64_json(client):
    import base64

    data = base64.b64encode(photo_variant_bytes("coffee")).decode()
    response = client.post("/api/search/json", json={"image_base64": data, "top_k": 1})
    assert result_names(response) == ["coffee"]
    bad = client.post("/api/search/json", json={"image_base64": "not base64!!", "top_k": 1})
    assert bad.status_code == 400 and "base64" in bad.json()["detail"]


def test_search_by_url_when_private_addresses_are_allowed(coll):
    client = make_client(coll, api_key=API_KEY, allow_private_urls=True)
    image = photo_variant_bytes("rocket")
    routes = {"/rocket.jpg": (200, {"Content-Type": "image/jpeg"}, image)}
    with static_http_server(routes) as base:
        response = client.post("/api/search", data={"url": f"{base}/rocket.jpg", "top_k": 2})
        assert result_names(response)[0] == "rocket"
        missing = client.post("/api/search", data={"url": f"{base}/nothing.jpg"})
        assert missing.status_code == 400 and "404" in missing.json()["detail"]


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1:9/x.jpg", "non-public"),
        ("http://localhost/x.jpg", "non-public"),
        ("http://10.1.2.3/x.jpg", "non-public"),
        ("http://192.168.0.1/x.jpg", "non-public"),
        ("http://169.254.169.254/latest/meta-data/", "non-public"),
        ("http://[::1]/x.jpg", "non-public"),
        ("http://[::ffff:127.0.0.1]/x.jpg", "non-public"),
        ("http://0.0.0.0/x.jpg", "non-public"),
        ("http://224.0.0.1/x.jpg", "non-public"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/x.jpg", "only http and https"),
        ("/etc/passwd", "only http and https"),
        ("http://user:secret@example.com/x.jpg", "user name or password"),
        ("http:///x.jpg", "no host"),
    ],
)
def test_bad_or_private_urls_are_refused(client, url, reason):
    response = client.post("/api/search", data={"url": url})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_url"
    assert reason in response.json()["detail"]


def test_weights_change_the_order(client):
    query = png_bytes(quadrants("red", "blue", "yellow", "green"))
    colour_only = client.post(
        "/api/search", files=upload("q.png", query), data={"weights": '{"color": 1}', "top_k": 3}
    )
    with_location = client.post(
        "/api/search",
        files=upload("q.png", query),
        data={"weights": "color=1,location=1", "top_k": 3},
    )
    # The permuted quadrants have the same colours: equal on colour, far apart on location.
    assert result_names(colour_only)[:2] == ["quad_rbyg", "quad_gybr"]
    assert result_names(with_location)[0] == "quad_rbyg"
    assert "quad_gybr" not in result_names(with_location)[:2]
    weights = with_location.json()["weights"]
    assert set(weights) == {"color", "color_location"} and abs(sum(weights.values()) - 1) < 1e-6


def test_threshold_and_top_k(client):
    query = png_bytes(solid("red"))
    loose = client.post("/api/search", files=upload("q.png", query), data={"top_k": 50})
    assert len(loose.json()["results"]) == loose.json()["considered"]
    tight = client.post(
        "/api/search", files=upload("q.png", query), data={"threshold": 5, "top_k": 50}
    )
    hits = tight.json()["results"]
    assert [h["name"] for h in hits] == ["solid_red.png"]
    assert all(h["similar"] is True and h["score"] <= 5 for h in hits)
    assert client.post("/api/search", data={"id": 1, "top_k": 0}).status_code == 400
    assert client.post("/api/search", data={"id": 1, "top_k": 100_000}).status_code == 400
    for bad in ("101", "nan", "-1", "abc"):  # a form's threshold: 0..100 or 'auto'
        refused = client.post("/api/search", data={"id": 1, "threshold": bad})
        assert refused.status_code == 400 and refused.json()["field"] == "threshold", bad
    auto = client.post("/api/search", files=upload("q.png", query), data={"threshold": "auto"})
    kept = auto.json()["results"]
    assert auto.status_code == 200 and kept
    assert all(h["likely"] or h["is_query"] for h in kept)
    assert all(h["score"] < auto.json()["likely_cut"] or h["is_query"] for h in kept)


@pytest.mark.parametrize(
    "fields, files, code, fragment",
    [
        ({}, None, "empty_query", "give something to search by"),
        ({"weights": '{"colour": 2}', "id": "1"}, None, "WeightsError", "between 0 and 1"),
        ({"weights": "sparkle=1", "id": "1"}, None, "WeightsError", "unknown attribute"),
        ({"weights": "{not json", "id": "1"}, None, "bad_field", "not valid JSON"),
        ({"weights": '{"color": "lots"}', "id": "1"}, None, "bad_weights", "must be a number"),
        ({"sketch": "[[1, 2], [3]]"}, None, "bad_sketch", "square grid"),
        ({"sketch": '[["red", 5], ["blue", null]]'}, None, "bad_sketch", "colour names"),
        ({"id": "1", "url": "http://example.com/a.jpg"}, None, "bad_field", "one query image"),
        (
            {},
            {"image": ("bad.jpg", b"this is not an image", "image/jpeg")},
            "bad_image",
            "not an image",
        ),
        ({}, {"image": ("half.png", png_bytes(solid("red"))[:60], "image/png")}, "bad_image", ""),
        ({"part_weights": '{"image": 3}', "id": "1"}, None, "bad_weights", "0..1"),
    ],
)
def test_bad_search_requests_say_why(client, fields, files, code, fragment):
    response = client.post("/api/search", data=fields, files=files)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == code and fragment in body["detail"]


def test_unknown_ids_are_404(client):
    for path in (
        "/api/images/999999",
        "/api/images/999999/thumbnail",
        "/api/images/999999/original",
        "/api/images/999999/similar",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    assert client.post("/api/search", data={"id": 999999}).status_code == 404


def test_ids_are_integers_never_paths(client):
    assert client.get("/api/images/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    assert client.get("/api/images/catalog.sqlite/original").status_code == 422
    assert client.post("/api/search", data={"id": "/etc/passwd"}).status_code == 422


# -- reading images ---------------------------------------------------------------------------


def test_record_thumbnail_and_original(client, coll, names):
    image_id = names["chelsea"]
    record = client.get(f"/api/images/{image_id}").json()
    assert record["id"] == image_id and record["name"] == "chelsea.png"
    assert record["metadata"]["category"] == "photo" and "path" not in record
    thumb = client.get(f"/api/images/{image_id}/thumbnail", params={"size": 100})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(__import__("io").BytesIO(thumb.content)) as img:
        assert max(img.size) == 128  # sizes are rounded up to a few cached ones
    again = client.get(
        f"/api/images/{image_id}/thumbnail",
        params={"size": 100},
        headers={"If-None-Match": thumb.headers["etag"]},
    )
    assert again.status_code == 304
    original = client.get(f"/api/images/{image_id}/original")
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert original.content == Path(coll.get(image_id).path).read_bytes()
    assert "sandbox" in original.headers["content-security-policy"]
    assert client.get(f"/api/images/{image_id}/thumbnail", params={"size": 5}).status_code == 422


def test_expose_paths_setting(coll, names):
    client = make_client(coll, expose_paths=True)
    record = client.get(f"/api/images/{names['chelsea']}").json()
    assert record["path"] == coll.get(names["chelsea"]).path


# -- keys -------------------------------------------------------------------------------------


def test_writes_need_the_key(writable):
    client, _ = writable
    files = {"files": ("red.png", png_bytes(solid("red")), "image/png")}
    none = client.post("/api/images", files=files)
    assert none.status_code == 401 and none.json()["error"] == "no_key"
    assert none.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/api/images", files=files, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403 and wrong.json()["error"] == "wrong_key"
    for method in ("put", "patch", "delete"):
        assert client.request(method, "/api/images/1").status_code == 401, method
        assert (
            client.request(method, "/api/images/1", headers={"X-API-Key": "x"}).status_code == 403
        )
    bearer = client.post("/api/images", files=files, headers={"Authorization": f"Bearer {API_KEY}"})
    assert bearer.status_code == 201


def test_writes_are_disabled_without_a_configured_key(coll):
    client = make_client(coll)
    response = client.post(
        "/api/images", files={"files": ("a.png", b"x", "image/png")}, headers=KEY
    )
    assert response.status_code == 403 and response.json()["error"] == "writes_disabled"
    assert "LOOKALIKE_API_KEY" in response.json()["detail"]
    assert client.get("/api/info").json()["server"]["writes_enabled"] is False


def test_reads_can_require_the_key(coll, names):
    client = make_client(coll, api_key=API_KEY, read_key_required=True)
    assert client.get("/api/health").status_code == 200  # for load balancers
    for path in ("/api/info", f"/api/images/{names['chelsea']}/thumbnail"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": "wrong"}).status_code == 403
        assert client.get(path, headers=KEY).status_code == 200
    assert client.post("/api/search", data={"id": names["chelsea"]}).status_code == 401
    assert client.get("/").status_code == 200  # the page itself asks for the key


def test_settings_from_environment():
    settings = ServerSettings.from_env(
        {
            "LOOKALIKE_API_KEY": "k",
            "LOOKALIKE_ALLOW_PRIVATE_URLS": "1",
            "LOOKALIKE_MAX_UPLOAD_BYTES": "1234",
            "LOOKALIKE_REQUEST_TIMEOUT_S": "2.5",
        },
        max_pixels=99,
    )
    assert settings.api_key == "k" and settings.allow_private_urls is True
    assert settings.max_upload_bytes == 1234 and settings.request_timeout_s == 2.5
    assert settings.max_pixels == 99
    assert ServerSettings.from_env({}, api_key=None).api_key is None


# -- writing ----------------------------------------------------------------------------------


def test_add_get_search_replace_delete(writable):
    client, coll = writable
    image = png_bytes(quadrants("purple", "orange", "white", "black"))
    added = client.post(
        "/api/images",
        files=[("files", ("new quad.png", image, "image/png"))],
        data={"metadata": json.dumps({"category": "new", "keywords": ["purple", "orange"]})},
        headers=KEY,
    )
    assert added.status_code == 201, added.text
    record = added.json()["added"][0]
    image_id = record["id"]
    assert record["name"] == "new quad.png" and record["metadata"]["category"] == "new"
    assert added.json()["failed"] == []

    found = client.post("/api/search", files=upload("q.png", image), data={"top_k": 1})
    assert found.json()["results"][0]["id"] == image_id
    assert client.get(f"/api/images/{image_id}/original").content == image
    assert client.get(f"/api/images/{image_id}/thumbnail").status_code == 200

    patched = client.patch(f"/api/images/{image_id}", json={"metadata": {"price": 7}}, headers=KEY)
    assert patched.json()["metadata"] == {
        "category": "new", "filename": "new quad.png", "keywords": ["purple", "orange"],
        "price": 7,
    }  # fmt: skip

    replacement = png_bytes(halves("white", "black"))
    replaced = client.put(
        f"/api/images/{image_id}",
        files={"file": ("other.png", replacement, "image/png")},
        data={"metadata": json.dumps({"price": 8})},
        headers=KEY,
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["id"] == image_id and replaced.json()["metadata"]["price"] == 8
    assert replaced.json()["metadata"]["category"] == "new"  # merged, not replaced
    found = client.post("/api/search", files=upload("q.png", replacement), data={"top_k": 1})
    assert found.json()["results"][0]["id"] == image_id
    assert found.json()["results"][0]["score"] == 0

    only_meta = client.put(
        f"/api/images/{image_id}",
        data={"metadata": json.dumps({"x": 1}), "merge_metadata": "false"},
        headers=KEY,
    )
    assert only_meta.json()["metadata"] == {"x": 1}
    empty = client.put(f"/api/images/{image_id}", headers=KEY)
    assert empty.status_code == 400 and empty.json()["error"] == "empty_update"

    removed = client.delete(f"/api/images/{image_id}", headers=KEY)
    assert removed.json() == {"removed": 1, "id": image_id}
    assert client.get(f"/api/images/{image_id}").status_code == 404
    assert client.delete(f"/api/images/{image_id}", headers=KEY).status_code == 404
    after = client.post("/api/search", files=upload("q.png", replacement), data={"top_k": 50})
    assert image_id not in [h["id"] for h in after.json()["results"]]


def test_replaced_image_shows_its_new_thumbnail(writable):
    client, _ = writable
    first = client.post(
        "/api/images",
        files={"files": ("a.png", png_bytes(solid("red")), "image/png")},
        headers=KEY,
    ).json()["added"][0]["id"]
    client.put(
        f"/api/images/{first}",
        files={"file": ("b.png", png_bytes(solid("blue")), "image/png")},
        headers=KEY,
    )
    thumb = client.get(f"/api/images/{first}/thumbnail")
    with Image.open(__import__("io").BytesIO(thumb.content)) as img:
        r, g, b = img.convert("RGB").getpixel((5, 5))
    assert b > 150 and r < 100


def test_upload_errors(writable):
    client, _ = writable
    bad = client.post(
        "/api/images", files={"files": ("x.jpg", b"not an image", "image/jpeg")}, headers=KEY
    )
    assert bad.status_code == 400 and bad.json()["error"] == "bad_image"
    assert bad.json()["failed"][0]["filename"] == "x.jpg"
    empty = client.post("/api/images", files={"files": ("e.png", b"", "image/png")}, headers=KEY)
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    mixed = client.post(
        "/api/images",
        files=[
            ("files", ("ok.png", png_bytes(solid("green", (50, 40))), "image/png")),
            ("files", ("bad.png", b"\x89PNG nonsense", "image/png")),
        ],
        headers=KEY,
    )
    assert mixed.status_code == 201
    assert [r["name"] for r in mixed.json()["added"]] == ["ok.png"]
    assert [f["filename"] for f in mixed.json()["failed"]] == ["bad.png"]
    bad_meta = client.post(
        "/api/images",
        files={"files": ("ok.png", png_bytes(solid("green")), "image/png")},
        data={"metadata": "[1, 2]"},
        headers=KEY,
    )
    assert bad_meta.status_code == 400 and "JSON object" in bad_meta.json()["detail"]
    traversal = client.post(
        "/api/images",
        files={"files": ("../../evil.png", png_bytes(solid("black")), "image/png")},
        headers=KEY,
    )
    assert traversal.status_code == 201
    assert traversal.json()["added"][0]["name"] == "evil.png"


def test_oversize_uploads_and_pixel_bombs_are_413(tmp_path, tmp_path_factory):
    directory = fresh_collection(tmp_path_factory.getbasetemp(), tmp_path / "coll")
    with Collection.open(directory) as coll:
        client = make_client(coll, api_key=API_KEY, max_upload_bytes=30_000, max_pixels=250_000)
        noise = Image.effect_noise((200, 200), 80).convert("RGB")
        big = png_bytes(noise)
        assert len(big) > 30_000
        for response in (
            client.post("/api/images", files={"files": ("big.png", big, "image/png")}, headers=KEY),
            client.post("/api/search", files=upload("big.png", big)),
        ):
            assert response.status_code == 413, response.text
            assert "limit of 30,000 bytes" in response.json()["detail"]
        body = client.post(
            "/api/search", files=upload("huge.png", big * 40)
        )  # over the whole-body limit: refused before parsing
        assert body.status_code == 413 and "request body" in body.json()["detail"]
        bomb = png_bytes(Image.new("1", (1000, 1000)))  # small file, a million pixels
        assert len(bomb) < 30_000
        for response in (
            client.post("/api/images", files={"files": ("b.png", bomb, "image/png")}, headers=KEY),
            client.post("/api/search", files=upload("b.png", bomb)),
        ):
            assert response.status_code == 413
            assert (
                "1000x1000 = 1,000,000 pixels exceeds the limit of 250,000"
                in (response.json()["detail"])
            )


# -- time bounds ------------------------------------------------------------------------------


def test_slow_search_answers_408(coll, monkeypatch):
    client = make_client(coll, request_timeout_s=0.2)
    real = coll.query

    def slow(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(coll, "query", slow)
    started = time.monotonic()
    response = client.post("/api/search", data={"id": 1})
    assert response.status_code == 408
    assert "longer than the limit of 0.2 s" in response.json()["detail"]
    assert time.monotonic() - started < 1.2  # answered without waiting for the slow search


def test_collection_opens_once(shared_dir, monkeypatch):
    opened = []
    real_open = Collection.open.__func__

    def counting(cls, directory):
        opened.append(directory)
        return real_open(cls, directory)

    monkeypatch.setattr(Collection, "open", classmethod(counting))
    app = create_app(shared_dir, ServerSettings(warm_up=False))
    with local_client(app) as client:  # runs the lifespan: models load at start-up
        for _ in range(3):
            assert client.post("/api/search", data={"id": 1}).status_code == 200
        assert client.get("/api/info").status_code == 200
    assert len(opened) == 1


# -- text, sketch, layout, filters (need Collection.query) -----------------------------------


def blue_over_grey_sketch(size: int = 16) -> list[list[str | None]]:
    half = size // 2
    return [["blue"] * size] * half + [["grey"] * size] * half


def test_sketch_search(client):
    response = client.post("/api/search", data={"sketch": json.dumps(blue_over_grey_sketch())})
    assert result_names(response)[0] == "halves_blue_grey"
    coarse = client.post(
        "/api/search/json", json={"sketch": [["blue", "blue"], [None, None]], "top_k": 5}
    )  # coarse grids are scaled up; blank cells say nothing
    assert result_names(coarse)[0] in {"solid_blue", "halves_blue_grey"}


def test_layout_search_and_grid(client):
    sentence = "top predominantly blue and bottom predominantly grey"
    response = client.post("/api/search", data={"layout": sentence})
    assert result_names(response)[0] == "halves_blue_grey"
    grid = response.json()["explain"]["layout"]["grid"]
    assert len(grid) == 16 and grid[0][0] == "blue" and grid[-1][-1] == "grey"
    preview = client.get("/api/layout", params={"sentence": sentence}).json()
    assert preview["grid"] == grid
    bad = client.post("/api/search", data={"layout": "zorgle the flibbet"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_query"


def test_text_search(client, monkeypatch):
    from lookalike import semantic

    def unavailable():  # the engine's own tests cover the sentence model; spare its load here
        raise semantic.SemanticUnavailable("not loaded in the server tests")

    monkeypatch.setattr(semantic, "load_model", unavailable)
    response = client.post("/api/search", data={"text": "chelsea", "top_k": 3})
    assert result_names(response)[0] == "chelsea"
    assert response.json()["explain"]["text"]["query"] == "chelsea"
    assert set(response.json()["results"][0]["breakdown"]) == {"text"}


def test_filters(client):
    response = client.post(
        "/api/search",
        data={"id": 1, "where": "category = 'halves' AND price BETWEEN 30 AND 31", "top_k": 20},
    )
    names = result_names(response)
    assert sorted(names) == ["halves_blue_grey", "halves_grey_blue"]
    bad = client.post("/api/search", data={"id": 1, "where": "price BETWEEN AND"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_query"
    assert bad.json()["position"] is not None


def test_filter_only_and_index_key_searches(client):
    browse = client.post("/api/search", data={"where": "category = 'quadrants'", "top_k": 20})
    assert sorted(result_names(browse)) == ["quad_gybr", "quad_rbyg", "quad_rbyg_shaded"]
    colours = client.post("/api/search/json", json={"colors": "blue then grey", "top_k": 3})
    assert result_names(colours)[0] in {"halves_blue_grey", "halves_grey_blue"}


# -- start-up and the serve command -----------------------------------------------------------


def test_warm_up_loads_the_text_model_in_the_background(coll, monkeypatch):
    import threading

    from lookalike import semantic

    loaded = threading.Event()
    monkeypatch.setattr(semantic, "is_available", lambda: True)
    monkeypatch.setattr(semantic, "load_model", loaded.set)
    with local_client(create_app(coll, ServerSettings(warm_up=True))) as client:
        assert client.get("/api/health").status_code == 200
        assert loaded.wait(5)


def test_serve_command(shared_dir, monkeypatch, capsys):
    import uvicorn

    from lookalike.errors import LookalikeError
    from lookalike.server import command

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.delenv("LOOKALIKE_API_KEY", raising=False)
    command.serve(collection=shared_dir, host="127.0.0.1", port=8123, api_key="k1")
    app, options = calls[-1]
    assert options["host"] == "127.0.0.1" and options["port"] == 8123
    settings = app.state.lookalike.settings
    assert settings.api_key == "k1" and settings.allow_private_urls is False
    command.serve(collection=shared_dir, allow_private_urls=True, max_upload_mb=2)
    settings = calls[-1][0].state.lookalike.settings
    assert settings.api_key is None and settings.allow_private_urls is True
    assert settings.max_upload_bytes == 2 * 1024 * 1024
    assert "uploads and deletions are disabled" in capsys.readouterr().err

    monkeypatch.setattr(command, "build_demo", lambda folder: shared_dir)
    command.serve(demo=True)
    settings = calls[-1][0].state.lookalike.settings
    assert settings.api_key and len(settings.api_key) >= 16
    assert f"demo API key for uploads: {settings.api_key}" in capsys.readouterr().err
    with pytest.raises(LookalikeError, match="either"):
        command.serve(collection=shared_dir, demo=True)
    with pytest.raises(LookalikeError, match="--demo"):
        command.serve()


def test_a_vanished_original_is_404_gone(writable):
    client, coll = writable
    added = client.post(
        "/api/images",
        files={"files": ("g.png", png_bytes(solid("grey")), "image/png")},
        headers=KEY,
    ).json()["added"][0]["id"]
    Path(coll.get(added).path).unlink()
    for path in (f"/api/images/{added}/thumbnail", f"/api/images/{added}/original"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"] == "gone", path


def test_start_up_splits_the_perceptual_rows_so_the_first_colour_query_does_not(tmp_path):
    """Sketch, layout and colour parts score every image's perceptual row, split once per map:
    at 1M images the first such request after start-up waited 11 s for it. The server's warm
    start does it (one colour query), so that request finds it made."""
    directory = fresh_collection(tmp_path / "base", tmp_path / "coll")
    with Collection.open(directory) as opened:
        assert opened._perceptual_main is None
        with local_client(create_app(opened, ServerSettings(api_key=API_KEY))) as client:
            made = opened._perceptual_main
            assert made is not None  # at start-up, before any request
            answer = client.post("/api/search", data={"layout": "top red and bottom green"})
            assert answer.status_code == 200 and answer.json()["results"]
            assert opened._perceptual_main is made  # the request used it, made nothing
