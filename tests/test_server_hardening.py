"""Regression tests for the review's findings against the server: each one was a 500, a leak,
or a way for one keyless client to starve everyone else, and is a clear 4xx (or 503 with
Retry-After) now."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from server_fixtures import (
    API_KEY,
    fresh_collection,
    ids_by_name,
    live_server,
    local_client,
    png_bytes,
    solid,
    static_http_server,
    template_collection,
)

from lookalike.api import Collection
from lookalike.server.app import ServerSettings, create_app, scrub
from lookalike.server.urls import FetchPolicy, UrlFetchError, check_url
from lookalike.store.catalog import StatementTimeout

KEY = {"X-API-Key": API_KEY}
HUGE = 2**63
DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture
def writable(tmp_path, tmp_path_factory):
    directory = fresh_collection(tmp_path_factory.getbasetemp(), tmp_path / "coll")
    with Collection.open(directory) as opened:
        client = local_client(
            create_app(opened, ServerSettings(api_key=API_KEY)), raise_server_exceptions=False
        )
        yield client, opened


def assert_4xx(response: httpx.Response, *statuses: int) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert body["detail"], body
    return body


# -- 5: no 500 for a client's mistake ----------------------------------------------------------


def test_ids_past_sqlite_integers_are_4xx_on_every_endpoint(writable):
    client, _ = writable
    for huge in (HUGE, 2**64, -(2**63) - 1, 10**30):
        for method, url, kwargs in (
            ("GET", f"/api/images/{huge}", {}),
            ("PUT", f"/api/images/{huge}", {"data": {"metadata": "{}"}, "headers": KEY}),
            ("PATCH", f"/api/images/{huge}", {"json": {"metadata": {}}, "headers": KEY}),
            ("DELETE", f"/api/images/{huge}", {"headers": KEY}),
            ("GET", f"/api/images/{huge}/thumbnail", {}),
            ("GET", f"/api/images/{huge}/original", {}),
            ("GET", f"/api/images/{huge}/similar", {}),
            ("POST", "/api/search", {"data": {"id": str(huge)}}),
            ("POST", "/api/search/json", {"json": {"id": huge}}),
        ):
            assert_4xx(client.request(method, url, **kwargs))


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400", "-1e400"])
def test_non_finite_threshold_and_top_k_are_4xx(writable, value):
    client, _ = writable
    assert_4xx(client.post("/api/search", data={"id": "1", "threshold": value}))
    assert_4xx(client.post("/api/search", data={"id": "1", "top_k": value}))
    assert_4xx(client.get("/api/images/1/similar", params={"threshold": value}))
    assert_4xx(client.get("/api/images/1/similar", params={"top_k": value}))
    raw = '{"id": 1, "threshold": ' + value.replace("nan", "NaN").replace("inf", "Infinity") + "}"
    headers = {"content-type": "application/json"}
    assert_4xx(client.post("/api/search/json", content=raw, headers=headers))
    assert_4xx(client.post("/api/search/json", json={"id": 1, "top_k": 10**400}))
    weights = '{"id": 1, "weights": {"color": Infinity}}'
    assert_4xx(client.post("/api/search/json", content=weights, headers=headers))


def test_deeply_nested_json_is_4xx(writable):
    client, coll = writable
    for field in ("sketch", "part_weights", "weights"):
        assert_4xx(client.post("/api/search", data={"text": "red", field: DEEP}))
    assert_4xx(
        client.post(
            "/api/images",
            files={"files": ("a.png", png_bytes(solid("red")))},
            data={"metadata": '{"a": ' + DEEP + "}"},
            headers=KEY,
        )  # fmt: skip
    )
    headers = {"content-type": "application/json", **KEY}
    body = '{"metadata": {"a": ' + DEEP + "}}"
    assert_4xx(client.patch("/api/images/1", content=body, headers=headers))
    nested = {"a": None}
    for _ in range(40):  # within json's own limits, past the server's depth
        nested = {"a": nested}
    assert_4xx(client.patch("/api/images/1", json={"metadata": nested}, headers=KEY))
    assert_4xx(client.post("/api/search/json", content='{"sketch": ' + DEEP + "}", headers=headers))
    assert coll.get(1).metadata  # nothing half-written


def test_lone_surrogates_and_huge_numbers_in_text_fields_are_4xx(writable):
    client, coll = writable
    headers = {"content-type": "application/json", **KEY}
    for field in ("text", "layout", "colors", "where"):
        assert_4xx(client.post("/api/search/json", content='{"' + field + '": "a\\ud800b"}',
                               headers=headers))  # fmt: skip
    assert_4xx(client.patch("/api/images/1", content='{"metadata": {"t": "\\udfff"}}',
                            headers=headers))  # fmt: skip
    assert_4xx(client.patch("/api/images/1", content='{"metadata": {"\\ud800": 1}}',
                            headers=headers))  # fmt: skip
    assert_4xx(
        client.post(
            "/api/images",
            files={"files": ("a.png", png_bytes(solid("red")))},
            data={"metadata": '{"n": ' + "9" * 5000 + "}"},
            headers=KEY,
        )  # fmt: skip
    )
    nan = '{"metadata": {"x": NaN}}'
    assert_4xx(client.patch("/api/images/1", content=nan, headers=headers))
    assert client.get("/api/images/1").status_code == 200


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd.png", "a\x00b.png", "\r\nX-Evil: 1.png", "..", "/", "C:\\x\\y.png",
     "é" * 300 + ".png", ".hidden.png", "a.png\x7f"],
)  # fmt: skip
def test_odd_upload_file_names_are_stored_harmless(writable, name):
    client, coll = writable
    response = client.post(
        "/api/images", files={"files": (name, png_bytes(solid("red")), "image/png")}, headers=KEY
    )
    assert response.status_code == 201, response.text
    record = response.json()["added"][0]
    stored = coll.get(record["id"])
    assert "/" not in record["name"] and "\\" not in record["name"]
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in record["name"])
    assert len(record["name"]) <= 200
    assert Path(stored.path).parent == (coll.directory / "uploads").resolve()
    assert client.get(f"/api/images/{record['id']}/original").status_code == 200


def test_upload_without_a_file_name_is_4xx(writable):
    client, _ = writable
    files = {"files": ("", png_bytes(solid("red")), "image/png")}  # a plain field, not a file
    assert_4xx(client.post("/api/images", files=files, headers=KEY), 422)


def test_non_text_metadata_filename_is_refused_and_never_breaks_original(writable):
    client, coll = writable
    for bad in (42, ["a"], {"x": 1}, None, True):
        response = client.post(
            "/api/images",
            files={"files": ("a.png", png_bytes(solid("blue")))},
            data={"metadata": json.dumps({"filename": bad})},
            headers=KEY,
        )
        assert_4xx(response, 400)
        assert_4xx(client.patch("/api/images/1", json={"metadata": {"filename": bad}}, headers=KEY))
    coll.update(1, metadata={"filename": 12345})  # as an older server or the API could store
    assert client.get("/api/images/1/original").status_code == 200
    assert client.get("/api/images/1").json()["name"] == "solid_red.png"
    hits = client.post("/api/search", data={"id": "1", "top_k": "3"}).json()["results"]
    assert hits[0]["name"] == "solid_red.png"


def test_error_bodies_carry_no_server_paths(writable, tmp_path):
    client, coll = writable
    original = Path(coll.get(1).path)  # shared by every copy of the template collection:
    hidden = original.with_suffix(".hidden")  # put back afterwards, or later tests lose it
    original.rename(hidden)  # the original vanished since indexing
    try:
        for response in (
            client.get("/api/images/1/thumbnail"),
            client.get("/api/images/1/original"),
            client.post("/api/search", data={"where": "width >"}),
            client.put("/api/images/1", files={"file": ("x.png", b"not an image")}, headers=KEY),
        ):
            assert_4xx(response)
            assert str(tmp_path) not in response.text and "/coll" not in response.text
    finally:
        hidden.rename(original)
    assert (
        scrub(f"cannot read {tmp_path}/images/a.png: gone", tmp_path) == "cannot read a.png: gone"
    )
    assert scrub("fetch http://host/a/b failed") == "fetch http://host/a/b failed"


def test_unexpected_exception_is_logged_and_answered_without_internals(writable, caplog):
    client, coll = writable

    def broken() -> dict:
        raise RuntimeError(f"secret state at {coll.directory}")

    coll.info = broken  # an engine bug, as far as the server can tell
    with caplog.at_level(logging.ERROR, logger="lookalike.server"):
        response = client.get("/api/info")
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal error (logged on the server)",
        "error": "internal",
    }
    assert "secret" not in response.text
    assert any("secret state" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


# -- 6: one client cannot starve the server ---------------------------------------------------


def test_huge_query_image_is_refused_before_decoding(writable):
    client, _ = writable
    bomb = png_bytes(Image.new("1", (7071, 7071)))  # 50 M pixels, a few hundred KB
    assert len(bomb) < 20 * 1024 * 1024
    body = assert_4xx(client.post("/api/search", files={"image": ("q.png", bomb)}), 413)
    assert "25,000,000" in body["detail"]


def test_costly_filters_and_oversized_fields_are_refused(writable):
    client, _ = writable
    eighty = " OR ".join(f"price = {i}" for i in range(80))
    body = assert_4xx(client.post("/api/search", data={"where": eighty}), 400)
    assert body["error"] == "too_costly"
    assert_4xx(client.post("/api/search", data={"text": "x" * 1001}), 400)
    assert_4xx(client.post("/api/search", data={"where": "price = 1 " + " " * 3000}), 400)
    assert_4xx(client.post("/api/search", data={"id": "1", "top_k": "501"}), 400)
    assert_4xx(client.post("/api/search/json", json={"sketch": [["red"] * 65] * 65}), 400)
    assert client.post("/api/search", data={"where": " OR ".join(["price = 1"] * 32)}).json()


def test_catalog_read_past_the_budget_is_stopped_and_others_read_meanwhile(tmp_path_factory):
    directory = template_collection(tmp_path_factory.getbasetemp())
    with Collection.open(directory) as coll:
        coll.catalog.statement_budget_s = 1.5
        slow = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
        )
        outcome: list[BaseException] = []

        def run_slow() -> None:
            try:
                coll.catalog.query(slow)
            except BaseException as exc:  # noqa: BLE001 - the outcome is what is asserted
                outcome.append(exc)

        thread = threading.Thread(target=run_slow)
        started = time.monotonic()
        thread.start()
        time.sleep(0.2)
        assert len(coll) == 16 and coll.get(1).id == 1  # not behind the slow statement
        assert thread.is_alive()
        thread.join(timeout=30)
        assert isinstance(outcome[0], StatementTimeout), outcome
        assert time.monotonic() - started < 10


def test_health_answers_while_the_catalog_is_locked_and_searches_are_saturated(tmp_path):
    directory = fresh_collection(tmp_path.parent, tmp_path / "coll")
    settings = ServerSettings(max_concurrent_describes=1, queue_wait_s=0.2, allow_private_urls=True)

    def trickle(handler) -> None:  # a query URL that takes 3 s: holds the one describe slot
        handler.send_response(200)
        handler.send_header("Content-Length", "10")
        handler.end_headers()
        time.sleep(3)
        handler.wfile.write(b"0123456789")

    with (
        Collection.open(directory) as coll,
        static_http_server({"/slow.png": (200, {}, trickle)}) as origin,
        live_server(create_app(coll, settings)) as url,
        httpx.Client(base_url=url, timeout=5) as http,
    ):
        slow = threading.Thread(
            target=lambda: http.post("/api/search", data={"url": f"{origin}/slow.png"})
        )
        slow.start()
        time.sleep(0.5)
        busy = http.post("/api/search", files={"image": ("q.png", png_bytes(solid("red")))})
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"].isdigit()
        assert busy.json()["error"] == "busy"
        assert http.post("/api/search", data={"id": "1"}).status_code == 200  # other gate
        with coll.catalog._lock:  # a long write transaction, as far as readers can tell
            health = http.get("/api/health", timeout=3)
            search = http.post("/api/search", data={"id": "2"}, timeout=3)
        assert health.status_code == 200 and health.json()["images"] == 16
        assert health.json()["busy"]["describes"] == 1
        assert search.status_code == 200
        slow.join()


# -- 7: closing doors --------------------------------------------------------------------------


def test_host_header_must_name_the_server(tmp_path_factory):
    directory = template_collection(tmp_path_factory.getbasetemp())
    with Collection.open(directory) as coll:
        app = create_app(coll, ServerSettings())
        for base, status in (
            ("http://localhost:8000", 200),
            ("http://127.0.0.1", 200),
            ("http://[::1]:8000", 200),
            ("http://evil.example", 400),
            ("http://localhost.evil.example", 400),
        ):
            response = local_client(app).get("/api/info", headers={"host": base.split("//")[1]})
            assert response.status_code == status, (base, response.text)
        assert (
            local_client(app).get("/api/info", headers={"host": "evil.example"}).json()["error"]
            == "bad_host"
        )
        named = create_app(coll, ServerSettings(allowed_hosts="photos.example, other.example"))
        assert local_client(named).get("/", headers={"host": "photos.example"}).status_code == 200
        assert local_client(named).get("/", headers={"host": "localhost"}).status_code == 400


@pytest.mark.parametrize(
    "address",
    ["192.0.0.8", "0.0.0.0", "[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]", "[64:ff9b::7f00:1]",
     "[64:ff9b::a9fe:a9fe]", "224.0.0.1", "[ff02::1]", "[::]", "[2002:a00:1::]", "100.64.0.1",
     "198.18.0.1", "[::127.0.0.1]", "[2001::1]", "255.255.255.255"],
)  # fmt: skip
def test_urls_to_non_global_addresses_are_refused(writable, address):
    client, _ = writable
    with pytest.raises(UrlFetchError):
        check_url(f"http://{address}/q.png", FetchPolicy())
    body = assert_4xx(client.post("/api/search", data={"url": f"http://{address}/q.png"}), 400)
    assert body["error"] == "bad_url"


def test_filters_on_path_are_refused_unless_paths_are_exposed(tmp_path_factory):
    directory = template_collection(tmp_path_factory.getbasetemp())
    with Collection.open(directory) as coll:
        hidden = local_client(create_app(coll, ServerSettings()))
        for where in ("path CONTAINS 'solid'", "NOT (path = 'x' OR width > 1)"):
            body = assert_4xx(hidden.post("/api/search", data={"where": where}), 400)
            assert "path" in body["detail"]
            assert_4xx(hidden.get("/api/images/1/similar", params={"where": where}), 400)
        assert hidden.post("/api/search", data={"where": "metadata.path = 'x'"}).status_code == 200
        shown = local_client(create_app(coll, ServerSettings(expose_paths=True)))
        names = ids_by_name(coll)
        found = shown.post("/api/search", data={"where": "path CONTAINS 'solid_red'"}).json()
        assert [hit["id"] for hit in found["results"]] == [names["solid_red"]]
