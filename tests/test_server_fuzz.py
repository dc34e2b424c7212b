"""A hypothesis fuzz of every endpoint's fields: path ids (huge included), query parameters
(NaN, infinities, huge and odd text), JSON bodies (nested, odd types), multipart (odd names
and bytes). Whatever arrives, the answer is never a 5xx (except 503 with Retry-After, load
shedding), never carries a server path, and the server logs no unexpected exception.

LOOKALIKE_FUZZ_EXAMPLES raises the number of examples per endpoint (default 30).
"""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_fixtures import API_KEY, fresh_collection, local_client, png_bytes, solid

from lookalike.api import Collection
from lookalike.server.app import ServerSettings, create_app

EXAMPLES = int(os.environ.get("LOOKALIKE_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
KEY = {"X-API-Key": API_KEY}

ids = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**40]),
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "-0", "null", "\ud800",
                     "red", "blue then white", "top blue and bottom grey", "price > 1",
                     "path CONTAINS 'a'", "(" * 300, "x" * 3000]),
)  # fmt: skip
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**80), 2**80),
    st.sampled_from(["nan", "inf", "1e400", "-1", "0", "10", "501", "abc", ""]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
deep = st.integers(10, 3000).map(lambda n: "[" * n + "]" * n)
json_texts = st.one_of(json_values.map(lambda v: json.dumps(v, allow_nan=True)), deep, texts)
image_bytes = st.one_of(
    st.binary(max_size=200),
    st.just(png_bytes(solid("red"))),
    st.binary(max_size=64).map(lambda b: png_bytes(solid("blue"))[:40] + b),
)
names = st.one_of(st.text(max_size=30), st.sampled_from(["../../x.png", "a\x00.png", "\\a\\b.jpg"]))


def wire(params: dict[str, str]) -> str:
    """Form or query text as a hostile client sends it: a lone surrogate goes out as the
    invalid UTF-8 bytes it stands for (httpx itself refuses to encode it)."""
    return urlencode(params, encoding="utf-8", errors="surrogatepass")


def raw(text: str) -> bytes:
    """A request body as a hostile client sends it: lone surrogates go out as invalid UTF-8."""
    return text.encode("utf-8", "surrogatepass")


def printable(text: str) -> str:
    """Text a multipart client can send at all (surrogates replaced)."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class ErrorLog(logging.Handler):
    """Collects what the server logs at ERROR (the last-resort handler's tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    directory = fresh_collection(tmp_path_factory.getbasetemp(), base / "coll")
    errors = ErrorLog()
    logging.getLogger("lookalike.server").addHandler(errors)
    with Collection.open(directory) as coll:
        app = create_app(coll, ServerSettings(api_key=API_KEY, warm_up=False))
        yield local_client(app, raise_server_exceptions=False), errors, str(base)
    logging.getLogger("lookalike.server").removeHandler(errors)


def check(served, response) -> None:
    _, errors, base = served
    status = response.status_code
    assert status < 500 or (status == 503 and "retry-after" in response.headers), (
        status,
        response.text[:500],
    )
    assert base not in response.text, response.text[:500]
    assert not errors.records, [r.getMessage() for r in errors.records]


@FUZZ
@given(image_id=ids, method=st.sampled_from(["GET", "DELETE", "PATCH", "PUT"]), meta=json_texts)
def test_image_endpoints(served, image_id, method, meta):
    client = served[0]
    if method == "PATCH":
        response = client.patch(
            f"/api/images/{image_id}",
            content=raw(f'{{"metadata": {{"m": {meta}}}}}'),
            headers={"content-type": "application/json", **KEY},
        )
    elif method == "PUT":
        response = client.put(
            f"/api/images/{image_id}",
            content=wire({"metadata": meta}),
            headers={"content-type": "application/x-www-form-urlencoded", **KEY},
        )
    elif method == "DELETE":
        response = client.delete(f"/api/images/{image_id + 1000}", headers=KEY)  # keep the data
    else:
        response = client.get(f"/api/images/{image_id}")
    check(served, response)


@FUZZ
@given(image_id=ids, size=numbers, part=st.sampled_from(["thumbnail", "original", "similar"]))
def test_image_reads(served, image_id, size, part):
    client = served[0]
    params = {"size": str(size)} if part == "thumbnail" else {"top_k": str(size)}
    check(served, client.get(f"/api/images/{image_id % 20}/{part}", params=params))
    check(served, client.get(f"/api/images/{image_id}/{part}"))


@FUZZ
@given(threshold=numbers, top_k=numbers, where=texts, weights=json_texts)
def test_similar_query_params(served, threshold, top_k, where, weights):
    params = {"threshold": str(threshold), "top_k": str(top_k), "where": where, "weights": weights}
    check(served, served[0].get("/api/images/1/similar?" + wire(params)))


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(ids.map(str), texts),
            "text": texts,
            "layout": texts,
            "colors": texts,
            "where": texts,
            "sketch": json_texts,
            "weights": json_texts,
            "part_weights": json_texts,
            "top_k": numbers.map(str),
            "threshold": numbers.map(str),
            "url": st.sampled_from(["http://192.0.0.8/a", "ftp://x", "http://[::1]/", "x"]),
        },
    ),
    upload=st.one_of(st.none(), st.tuples(names, image_bytes)),
)
def test_search_form(served, fields, upload):
    if upload is None:
        form = {"content-type": "application/x-www-form-urlencoded"}
        check(served, served[0].post("/api/search", content=wire(fields), headers=form))
        return
    files = {"image": (printable(upload[0]) or "q", upload[1], "image/png")}
    data = {name: printable(value) for name, value in fields.items()}
    check(served, served[0].post("/api/search", data=data, files=files))


@FUZZ
@given(
    body=st.one_of(
        st.dictionaries(
            st.sampled_from(["id", "text", "sketch", "layout", "colors", "where", "weights",
                             "part_weights", "top_k", "threshold", "image_base64", "url"]),
            json_values,
            max_size=5,
        ).map(lambda d: json.dumps(d, allow_nan=True)),
        deep,
        json_texts,
    )
)  # fmt: skip
def test_search_json(served, body):
    headers = {"content-type": "application/json"}
    check(served, served[0].post("/api/search/json", content=raw(body), headers=headers))


def test_search_json_invalid_utf8(served):
    """A body with a lone surrogate (invalid UTF-8) is a 4xx, never a 500."""
    response = served[0].post(
        "/api/search/json",
        content=raw('{"text": "\ud800"}'),
        headers={"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text[:300]
    check(served, response)


@FUZZ
@given(files=st.lists(st.tuples(names, image_bytes), min_size=1, max_size=3), meta=json_texts)
def test_add_images(served, files, meta):
    upload = [("files", (printable(name) or "f", data, "image/png")) for name, data in files]
    response = served[0].post(
        "/api/images", files=upload, data={"metadata": printable(meta)}, headers=KEY
    )
    check(served, response)
    if response.status_code == 201:  # keep the collection small: remove what was added
        for record in response.json()["added"]:
            served[0].delete(f"/api/images/{record['id']}", headers=KEY)


@FUZZ
@given(sentence=texts, host=st.one_of(st.text(max_size=30), st.just("localhost")))
def test_layout_and_host(served, sentence, host):
    check(served, served[0].get("/api/layout?" + wire({"sentence": sentence})))
    try:
        response = served[0].get("/api/health", headers={"host": host})
    except UnicodeEncodeError:  # the client cannot send such a header at all
        return
    check(served, response)
