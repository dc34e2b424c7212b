"""The server over real HTTP on loopback (uvicorn in a thread): endpoints, limits enforced on
the wire, query-URL safety, and searches running while images are uploaded."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx  # the server extras are part of the project's install: no skip
import pytest
from server_fixtures import (  # noqa: E402
    API_KEY,
    fresh_collection,
    ids_by_name,
    live_server,
    photo_variant_bytes,
    png_bytes,
    quadrants,
    solid,
    static_http_server,
)

from lookalike.api import Collection  # noqa: E402
from lookalike.server.app import ServerSettings, create_app  # noqa: E402
from lookalike.server.urls import (  # noqa: E402
    FetchPolicy,
    UrlFetchError,
    check_url,
    fetch_url,
    public_address,
)

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, collection, ids by name) of a live server over a private collection copy."""
    base = tmp_path_factory.getbasetemp()
    directory = fresh_collection(base, tmp_path_factory.mktemp("http") / "coll")
    settings = ServerSettings(
        api_key=API_KEY, body_timeout_s=1.0, max_upload_bytes=2_000_000, warm_up=False
    )
    with Collection.open(directory) as coll, live_server(create_app(coll, settings)) as url:
        yield url, coll, ids_by_name(coll)


@pytest.fixture(scope="module")
def served_private(served):
    """A second server on the same collection that may fetch loopback URLs, with small limits."""
    _, coll, names = served
    settings = ServerSettings(
        api_key=API_KEY,
        allow_private_urls=True,
        url_max_bytes=300_000,
        url_fetch_timeout_s=0.5,
        warm_up=False,
    )
    with live_server(create_app(coll, settings)) as url:
        yield url, coll, names


def test_every_endpoint_over_http(served):
    url, _, names = served
    with httpx.Client(base_url=url, timeout=20) as client:
        assert client.get("/api/health").json()["status"] == "ok"
        assert client.get("/api/info").json()["collection"]["images"] >= len(names)
        assert "lookalike" in client.get("/").text
        assert client.get("/static/app.js").status_code == 200
        assert "/api/search" in client.get("/api/openapi.json").json()["paths"]

        query = photo_variant_bytes("astronaut")
        found = client.post("/api/search", files={"image": ("a.jpg", query, "image/jpeg")})
        assert found.json()["results"][0]["name"] == "astronaut.png"
        target = names["quad_rbyg"]
        assert client.post("/api/search", data={"id": target}).json()["results"][0]["id"] == target
        assert client.get(f"/api/images/{target}/similar").json()["results"][0]["id"] == target
        as_json = client.post("/api/search/json", json={"id": target, "top_k": 1})
        assert as_json.json()["results"][0]["id"] == target

        image = png_bytes(quadrants("white", "black", "black", "white"))
        added = client.post(
            "/api/images",
            files={"files": ("checker.png", image, "image/png")},
            data={"metadata": json.dumps({"category": "http"})},
            headers=KEY,
        )
        assert added.status_code == 201, added.text
        new_id = added.json()["added"][0]["id"]
        assert client.get(f"/api/images/{new_id}").json()["metadata"]["category"] == "http"
        assert client.get(f"/api/images/{new_id}/original").content == image
        assert client.get(f"/api/images/{new_id}/thumbnail").headers["content-type"] == (
            "image/jpeg"
        )
        replaced = client.put(
            f"/api/images/{new_id}",
            files={"file": ("w.png", png_bytes(solid("white")), "image/png")},
            headers=KEY,
        )
        assert replaced.status_code == 200
        patched = client.patch(f"/api/images/{new_id}", json={"metadata": {"a": 1}}, headers=KEY)
        assert patched.json()["metadata"]["a"] == 1
        assert client.delete(f"/api/images/{new_id}", headers=KEY).json()["removed"] == 1
        assert client.get(f"/api/images/{new_id}").status_code == 404


def test_records_false_gives_the_same_ranking_without_reading_records(served, monkeypatch):
    """`records: false` (JSON, form and /similar): every result's id, score, breakdown and
    marks as the full answer's, in the same order, with no record fields, and no catalog
    read of the hits."""
    url, coll, names = served
    photo = photo_variant_bytes("astronaut")
    asks = [
        ("json", {"id": names["quad_rbyg"], "top_k": 8}),
        ("json", {"text": "red", "where": "category = 'solid' or category = 'quadrants'"}),
        ("json", {"id": names["quad_rbyg"], "weights": "color=1", "threshold": 40}),
        ("form", {"id": str(names["halves_blue_grey"]), "layout": "top blue"}),
        ("upload", {"top_k": "12"}),
        ("similar", {"top_k": 6, "where": "price > 12"}),
    ]
    with httpx.Client(base_url=url, timeout=30) as client:

        def ask(kind: str, fields: dict, records: bool) -> dict:
            if kind == "json":
                answer = client.post("/api/search/json", json={**fields, "records": records})
            elif kind == "form":
                answer = client.post("/api/search", data={**fields, "records": str(records)})
            elif kind == "upload":
                answer = client.post(
                    "/api/search",
                    data={**fields, "records": str(records)},
                    files={"image": ("a.jpg", photo, "image/jpeg")},
                )
            else:
                target = names["solid_red"]
                params = {**fields, "records": str(records).lower()}
                answer = client.get(f"/api/images/{target}/similar", params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()

        for kind, fields in asks:
            full = ask(kind, fields, True)
            monkeypatch.setattr(coll.catalog, "paths_and_metadata", _no_record_read)
            bare = ask(kind, fields, False)
            monkeypatch.undo()
            assert len(full["results"]) >= 2, (kind, fields)
            marks = ("id", "score", "breakdown", "similar", "likely", "is_query", "thumbnail")
            assert [{m: r[m] for m in marks} for r in bare["results"]] == [
                {m: r[m] for m in marks} for r in full["results"]
            ], (kind, fields)
            for result in bare["results"]:
                assert not {"path", "name", "metadata", "index_key"} & set(result)
            same = ("weights", "threshold", "considered", "likely_cut", "explain", "query")
            assert {k: bare[k] for k in same} == {k: full[k] for k in same}
        refused = client.post("/api/search/json", json={"id": 1, "records": "some"})
        assert refused.status_code in (400, 422)


def _no_record_read(ids):
    raise AssertionError(f"records of {list(ids)} read for a search with records=false")


def test_key_errors_over_http(served):
    url, _, _ = served
    files = {"files": ("r.png", png_bytes(solid("red")), "image/png")}
    with httpx.Client(base_url=url, timeout=20) as client:
        assert client.post("/api/images", files=files).status_code == 401
        assert (
            client.post("/api/images", files=files, headers={"X-API-Key": "no"}).status_code == 403
        )
        assert client.delete("/api/images/1").status_code == 401


def test_bad_requests_over_http(served):
    url, _, _ = served
    with httpx.Client(base_url=url, timeout=20) as client:
        bad = client.post("/api/search", files={"image": ("x.jpg", b"GIF89a broken", "image/gif")})
        assert bad.status_code == 400 and bad.json()["error"] == "bad_image"
        private = client.post("/api/search", data={"url": "http://127.0.0.1:1/x.png"})
        assert private.status_code == 400 and "non-public" in private.json()["detail"]
        scheme = client.post("/api/search", data={"url": "gopher://example.com/"})
        assert scheme.status_code == 400 and "only http and https" in scheme.json()["detail"]
        weights = client.post("/api/search", data={"id": 1, "weights": "color=7"})
        assert weights.status_code == 400
        oversize = client.post(
            "/api/search", files={"image": ("n.png", b"\0" * 2_100_000, "image/png")}
        )
        assert oversize.status_code == 413


def _raw_request(url: str, head: bytes, body: bytes = b"", wait: float = 5.0) -> bytes:
    """Send raw bytes to the server and return what it answers within `wait` seconds."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head + body)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunk:
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_declared_oversize_body_is_refused_before_it_arrives(served):
    url, _, _ = served
    head = (
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        b"Content-Length: 5000000000\r\n\r\n"
    )
    started = time.monotonic()
    answer = _raw_request(url, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"exceeds the limit" in answer
    assert time.monotonic() - started < 2


def test_streamed_oversize_body_is_refused(served):
    url, _, _ = served

    def body():
        yield (
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        for _ in range(40):  # 40 x 100 kB > 3 MB limit, sent without a Content-Length
            yield b"\0" * 100_000

    with httpx.Client(base_url=url, timeout=20) as client:
        response = client.post(
            "/api/search",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["detail"]


def test_slow_body_answers_408(served):
    url, _, _ = served
    head = (
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    started = time.monotonic()
    answer = _raw_request(url, head, b"--xyz\r\n", wait=5)  # then nothing more
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within 1 s" in answer
    assert 0.8 < elapsed < 4


# -- query URLs -------------------------------------------------------------------------------


def test_query_url_is_refused_by_default_and_fetched_when_allowed(served, served_private):
    image = photo_variant_bytes("coffee")
    routes = {"/coffee.jpg": (200, {"Content-Type": "image/jpeg"}, image)}
    with static_http_server(routes) as images, httpx.Client(timeout=20) as client:
        refused = client.post(f"{served[0]}/api/search", data={"url": f"{images}/coffee.jpg"})
        assert refused.status_code == 400
        assert "127.0.0.1" in refused.json()["detail"]
        assert "allow_private_urls" in refused.json()["detail"]
        allowed = client.post(
            f"{served_private[0]}/api/search", data={"url": f"{images}/coffee.jpg"}
        )
        assert allowed.status_code == 200
        assert allowed.json()["results"][0]["name"] == "coffee.png"


def _trickle(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.end_headers()
    for _ in range(30):  # one byte every 0.1 s: each read succeeds, the whole never ends
        try:
            handler.wfile.write(b"\0")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.1)


def test_query_url_limits(served_private):
    big = png_bytes(solid("red", (900, 900)), "BMP")  # > 300 kB
    routes = {
        "/big.bmp": (200, {"Content-Type": "image/bmp"}, big),
        "/text": (200, {"Content-Type": "text/plain"}, b"hello"),
        "/slow.png": (200, {}, _trickle),
        "/loop": (302, {"Location": "/loop"}, b""),
    }
    with static_http_server(routes) as images, httpx.Client(timeout=20) as client:
        search = f"{served_private[0]}/api/search"
        too_big = client.post(search, data={"url": f"{images}/big.bmp"})
        assert too_big.status_code == 413 and "300,000" in too_big.json()["detail"]
        not_image = client.post(search, data={"url": f"{images}/text"})
        assert not_image.status_code == 400 and not_image.json()["error"] == "bad_image"
        started = time.monotonic()
        slow = client.post(search, data={"url": f"{images}/slow.png"})
        assert slow.status_code == 408 and "longer than 0.5 s" in slow.json()["detail"]
        assert time.monotonic() - started < 2.5
        loop = client.post(search, data={"url": f"{images}/loop"})
        assert loop.status_code == 400 and "redirected more than" in loop.json()["detail"]


# -- urls.py directly -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, public",
    [
        ("93.184.216.34", True),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_public_address(address, public):
    assert public_address(ipaddress.ip_address(address)) is public


def test_any_private_answer_refuses_the_host():
    """A name that resolves to a public and a private address is refused outright, so a
    rebinding resolver cannot get the private one used."""
    policy = FetchPolicy(resolve=lambda host, port: ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(UrlFetchError, match="127.0.0.1"):
        check_url("http://rebind.test/x.png", policy)


def test_connection_goes_to_the_checked_address():
    """The fetch connects to the address that was checked, not to a fresh DNS answer: the
    name below exists only in the test's resolver, yet the fetch reaches the server."""
    body = png_bytes(solid("green"))
    seen_hosts = []

    def record(handler) -> None:
        seen_hosts.append(handler.headers["Host"])
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with static_http_server({"/g.png": (200, {}, record)}) as base:
        port = int(base.rsplit(":", 1)[1])
        policy = FetchPolicy(
            resolve=lambda host, _port: ["127.0.0.1"] if host == "images.test" else [],
            address_allowed=lambda ip: str(ip) == "127.0.0.1",
        )
        assert fetch_url(f"http://images.test:{port}/g.png", policy) == body
        assert seen_hosts == [f"images.test:{port}"]


def test_redirects_are_checked_again():
    only_first = FetchPolicy(address_allowed=lambda ip: str(ip) == "127.0.0.1")
    routes = {"/hop": (302, {"Location": "http://127.0.0.2:9/secret"}, b"")}
    with static_http_server(routes) as base, pytest.raises(UrlFetchError, match="127.0.0.2"):
        fetch_url(f"{base}/hop", only_first)


def test_fetch_bounds_size_by_header_and_by_count():
    body = b"x" * 5000

    def no_length(handler) -> None:
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(body)

    routes = {"/declared": (200, {}, body), "/undeclared": (200, {}, no_length)}
    policy = FetchPolicy(max_bytes=1000, allow_private=True)
    with static_http_server(routes) as base:
        for path in ("/declared", "/undeclared"):
            with pytest.raises(UrlFetchError) as info:
                fetch_url(f"{base}{path}", policy)
            assert info.value.too_large


# -- concurrency ------------------------------------------------------------------------------


def test_searches_run_during_uploads_without_errors_or_torn_results(served):
    url, _, names = served
    uploads = [
        png_bytes(quadrants(*order, size=64 + 8 * i))
        for i, order in enumerate(
            [
                ("red", "green", "blue", "yellow"), ("green", "red", "yellow", "blue"),
                ("white", "red", "black", "blue"), ("orange", "purple", "grey", "green"),
                ("yellow", "yellow", "blue", "blue"), ("black", "white", "white", "black"),
                ("purple", "purple", "orange", "orange"), ("grey", "red", "grey", "red"),
            ]
        )
    ]  # fmt: skip
    query = photo_variant_bytes("chelsea")
    done = threading.Event()
    errors: list[str] = []

    def uploader(start: int) -> list[int]:
        ids = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for n in range(start, len(uploads), 2):
                meta = {"category": "concurrent", "n": n, "keywords": [f"n{n}"]}
                response = client.post(
                    "/api/images",
                    files={"files": (f"c{n}.png", uploads[n], "image/png")},
                    data={"metadata": json.dumps(meta)},
                    headers=KEY,
                )
                if response.status_code != 201:
                    errors.append(f"upload {n}: {response.status_code} {response.text}")
                    continue
                ids.append(response.json()["added"][0]["id"])
        return ids

    def searcher(kind: int) -> int:
        count = 0
        last_considered = 0
        with httpx.Client(base_url=url, timeout=30) as client:
            while count < 40 and (count < 3 or not done.is_set()):
                if kind % 2:
                    response = client.post(
                        "/api/search",
                        files={"image": ("q.jpg", query, "image/jpeg")},
                        data={"top_k": 50},
                    )
                    expected = names["chelsea"]
                else:
                    response = client.post(
                        "/api/search", data={"id": names["quad_rbyg"], "top_k": 50}
                    )
                    expected = names["quad_rbyg"]
                count += 1
                if response.status_code != 200:
                    errors.append(f"search: {response.status_code} {response.text}")
                    continue
                data = response.json()
                hits = data["results"]
                if hits[0]["id"] != expected:
                    errors.append(f"search: first was {hits[0]['name']}")
                if data["considered"] < last_considered:
                    errors.append("search: saw fewer images than a previous search")
                last_considered = data["considered"]
                for hit in hits:
                    if set(hit["breakdown"]) != set(data["weights"]):
                        errors.append(f"torn: {hit['id']} lacks attributes")
                    meta = hit["metadata"]
                    if meta.get("category") == "concurrent" and (
                        meta.get("keywords") != [f"n{meta.get('n')}"]
                        or hit["name"] != f"c{meta['n']}.png"
                    ):
                        errors.append(f"torn: {hit['id']} metadata {meta}")
        return count

    with ThreadPoolExecutor(max_workers=6) as pool:
        searches = [pool.submit(searcher, kind) for kind in range(4)]
        up = [pool.submit(uploader, start) for start in (0, 1)]
        new_ids = [i for future in up for i in future.result(timeout=120)]
        done.set()
        counts = [future.result(timeout=120) for future in searches]
    assert not errors, errors[:5]
    assert len(new_ids) == len(uploads) and min(counts) >= 3
    with httpx.Client(base_url=url, timeout=30) as client:
        final = client.post("/api/search", data={"id": names["quad_rbyg"], "top_k": 500}).json()
        found = {hit["id"] for hit in final["results"]}
        assert set(new_ids) <= found
        for image_id in new_ids:  # leave the module's collection as it was
            assert client.delete(f"/api/images/{image_id}", headers=KEY).status_code == 200


def test_server_module_imports_no_web_framework_at_cli_import():
    """`lookalike.server.command` must import without FastAPI/uvicorn being loaded."""
    import subprocess
    import sys

    code = (
        "import sys, lookalike.server.command as c; "
        "print(any(m in sys.modules for m in ('fastapi', 'uvicorn', 'starlette')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
