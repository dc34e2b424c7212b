"""The REST API and the web page: one FastAPI app over one open Collection.

The collection (catalog, extractors, models, indexes) is opened once when the app is made and
shared by every request; its catalog serialises access with a lock and writes are single
transactions, so a search running beside an upload sees an image wholly or not at all.
Ranking runs in worker threads; decoding and describing uploads in worker processes at a lower
CPU priority (`describers`), so that searches proceed while uploads are being described.

Safety, in the order a request meets it: the Host header must name this server (400: DNS
rebinding); body size and body arrival time are bounded before any parsing (413, 408); every
field is checked against the configured limits before it reaches the engine (400, see
`inputs`); expensive work waits for a slot of a bounded gate or is answered 503 with
Retry-After (see `admission`); writes need the API key (401 without one, 403 with a wrong
one); uploaded images are bounded in bytes and pixels (413) and must decode (400); query URLs
go through `urls.fetch_url` (http(s) only, public addresses only unless allowed, bounded);
searches are bounded in time (408). Clients name stored images by integer id only: no client
string is ever used as a file path. An unexpected exception is logged and answered 500
without details.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import hmac
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.api import Collection, Ranking, SearchResults
from lookalike.decode import is_url, probe_size
from lookalike.errors import (
    CollectionBusy,
    CollectionError,
    DecodeError,
    LookalikeError,
    QueryError,
)
from lookalike.index.prefetch import prefetch_vector_maps
from lookalike.server import thumbnails
from lookalike.server.admission import (
    Saturated,
    WorkGate,
    allowed_host,
    allowed_host_names,
    budget_threads,
    collector_paused,
    freeze_heap,
    server_timing,
    start_timing,
    thread_report,
)
from lookalike.server.describers import Describers, NoWorker, WorkerTimeout
from lookalike.server.inputs import (
    MAX_FEEDBACK_IDS,
    MAX_ID,
    MIN_ID,
    InputError,
    check_json_value,
    check_number,
    check_text,
    check_threshold,
    filter_fields,
    parse_ids,
    parse_json_text,
    safe_filename,
)
from lookalike.server.urls import FetchPolicy, UrlFetchError, fetch_url
from lookalike.store.catalog import ImageRecord, StatementTimeout

STATIC_DIR = Path(__file__).with_name("static")
MiB = 1024 * 1024
log = logging.getLogger("lookalike.server")
ImageId = Annotated[int, PathParam(ge=MIN_ID, le=MAX_ID, description="A stored image's id.")]

FALLBACK_PALETTE = {
    "white": "#ffffff",
    "black": "#000000",
    "red": "#ff0000",
    "green": "#00c800",
    "yellow": "#ffff00",
    "blue": "#0000ff",
    "brown": "#8b4513",
    "purple": "#800080",
    "pink": "#ffc0cb",
    "orange": "#ffa500",
    "grey": "#808080",
}


# -- settings ---------------------------------------------------------------------------------


class ServerSettings(BaseModel):
    """What the server allows. Every field can come from the environment as LOOKALIKE_<NAME>
    (e.g. LOOKALIKE_API_KEY, LOOKALIKE_ALLOW_PRIVATE_URLS=1); see `from_env`."""

    api_key: str | None = Field(None, description="Key for writes (and reads if required).")
    read_key_required: bool = Field(False, description="Searches and reads need the key too.")
    max_upload_bytes: int = Field(20 * MiB, gt=0, description="Largest image upload.")
    max_pixels: int = Field(50_000_000, gt=0, description="Largest image, in pixels.")
    request_timeout_s: float = Field(30.0, gt=0, description="Longest search.")
    body_timeout_s: float = Field(60.0, gt=0, description="Longest wait for a request body.")
    url_fetch_timeout_s: float = Field(10.0, gt=0, description="Longest query-URL download.")
    url_max_bytes: int = Field(20 * MiB, gt=0, description="Largest query-URL download.")
    allow_private_urls: bool = Field(
        False, description="Let query URLs reach loopback/private/link-local addresses."
    )
    max_top_k: int = Field(500, gt=0, description="Most results one search may ask for.")
    max_query_pixels: int = Field(
        25_000_000, gt=0, description="Largest query image (search by upload or URL), in pixels."
    )
    max_text_chars: int = Field(1000, gt=0, description="Longest text, layout or colours query.")
    max_filter_chars: int = Field(2000, gt=0, description="Longest metadata filter.")
    max_filter_terms: int = Field(32, gt=0, description="Most predicates in one filter.")
    max_json_depth: int = Field(16, gt=0, description="Deepest nesting of a JSON field.")
    max_metadata_chars: int = Field(64 * 1024, gt=0, description="Largest metadata, as JSON.")
    max_sketch_side: int = Field(64, gt=0, description="Largest sketch grid (cells per side).")
    statement_budget_s: float = Field(
        10.0, gt=0, description="Longest one catalog read may run before it is stopped (400)."
    )
    max_concurrent_searches: int = Field(4, gt=0, description="Searches ranking at once.")
    max_concurrent_describes: int = Field(
        2, gt=0, description="Images decoded and described at once (query uploads, adds)."
    )
    describe_workers: bool = Field(
        True,
        description="Describe uploads in worker processes, one per describe slot, started with "
        "the server (false: in the server's own threads).",
    )
    describe_nice: int = Field(
        10, ge=0, le=19, description="How much lower the describe workers' CPU priority is."
    )
    queue_wait_s: float = Field(
        5.0, ge=0, description="Longest wait for a free slot before answering 503."
    )
    allowed_hosts: str = Field(
        "",
        description="Host names served (comma-separated, * = any); default: loopback "
        "names and the bind address.",
    )
    bind_host: str = Field("127.0.0.1", description="The address the server listens on.")
    thread_budget: bool = Field(
        True, description="One BLAS/OpenMP/torch thread per request (set at start-up)."
    )
    warm_indexes: bool = Field(True, description="Build every search index at start-up.")
    thumbnail_cache_bytes: int = Field(64 * MiB, ge=0)
    expose_paths: bool = Field(False, description="Show server file paths in answers.")
    warm_up: bool = Field(
        True, description="Load the text model in the background at start-up, not on a search."
    )
    freeze_heap: bool = Field(
        True,
        description="Freeze the objects made at start-up (and by the warm-up) out of the garbage "
        "collector, whose full passes over them stopped every request for 0.1-0.8 s (off if the "
        "app shares its process with other work).",
    )

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: one image plus room for the form's other fields."""
        return self.max_upload_bytes + MiB

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Settings from LOOKALIKE_* variables; keyword overrides that are not None win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(f"LOOKALIKE_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    def public(self) -> dict[str, Any]:
        """What the page may know: limits and whether keys are needed, never the key."""
        return {
            "writes_enabled": bool(self.api_key),
            "read_key_required": self.read_key_required and bool(self.api_key),
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels,
            "request_timeout_s": self.request_timeout_s,
            "max_top_k": self.max_top_k,
            "max_query_pixels": self.max_query_pixels,
            "max_text_chars": self.max_text_chars,
            "max_filter_chars": self.max_filter_chars,
            "max_filter_terms": self.max_filter_terms,
            "allow_private_urls": self.allow_private_urls,
        }


# -- errors with a reason ---------------------------------------------------------------------


class ApiError(HTTPException):
    """An HTTP error whose body says why: {"detail": message, "error": code, ...extra}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.extra = extra


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: ASCII escapes (a stray surrogate in stored text cannot break
    the answer) and no NaN (not JSON)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode("ascii")


_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^/\s'\"]+/)+([^/\s'\"]*)")


def scrub(message: str, directory: Path | None = None) -> str:
    """A message without absolute server paths: the collection folder and any other absolute
    path are reduced to their last component (URLs are left alone)."""
    message = _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "<path>", message)
    if directory is not None:
        for form in {str(directory), str(directory.resolve())}:
            message = message.replace(form, "<collection>")
    return message


def _too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


# -- request bounds (before any parsing) ------------------------------------------------------


class RequestBounds:
    """ASGI middleware: refuse bodies over the limit (413) or arriving too slowly (408), and
    add security headers to every answer (no sniffing, no framing, no external loads)."""

    PAGE_POLICY = (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    )

    def __init__(self, app: ASGIApp, settings: ServerSettings):
        self.app = app
        self.settings = settings
        self.hosts = allowed_host_names(settings.allowed_hosts, settings.bind_host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        started = False

        timings = start_timing()

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"server-timing", server_timing(timings).encode()),
                ]
                if not any(k.lower() == b"content-security-policy" for k, _ in message["headers"]):
                    extra.append((b"content-security-policy", self.PAGE_POLICY.encode()))
                message = {**message, "headers": [*message["headers"], *extra]}
            await send(message)

        host = headers.get(b"host", b"").decode("latin-1")
        if not allowed_host(host, self.hosts):
            await self._refuse(
                send_with_headers,
                400,
                "bad_host",
                f"this server does not answer to the host name {host[:100]!r} "
                "(allowed_hosts setting, LOOKALIKE_ALLOWED_HOSTS)",
            )
            return
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(
                send_with_headers,
                413,
                "too_large",
                f"request body of {int(declared):,} bytes exceeds the limit of {limit:,} "
                f"(max_upload_bytes {self.settings.max_upload_bytes:,} plus 1 MiB for fields)",
            )
            return
        deadline = anyio.current_time() + self.settings.body_timeout_s
        received = 0
        body_done = False
        too_slow = f"request body not received within {self.settings.body_timeout_s:g} s"

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later reads wait for a disconnect: no deadline applies to those
                return await receive()
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise ApiError(408, "timeout", too_slow)
            try:
                with anyio.fail_after(remaining):
                    message = await receive()
            except TimeoutError:
                raise ApiError(408, "timeout", too_slow) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(f"request body exceeds the limit of {limit:,} bytes")
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except ApiError as exc:  # raised outside a route (e.g. while a middleware read the body)
            if started:
                raise
            await self._refuse(send_with_headers, exc.status_code, exc.code, str(exc.detail))

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps({"detail": message, "error": code}).encode()  # ASCII escapes
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# -- shared state -----------------------------------------------------------------------------


@dataclass
class ServerState:
    """Everything requests share: opened once when the app is made."""

    collection: Collection
    settings: ServerSettings
    thumbnails: thumbnails.ThumbnailCache
    policy: FetchPolicy
    owns_collection: bool
    searches: WorkGate
    describes: WorkGate
    health_threads: anyio.CapacityLimiter | None = None  # made in the event loop, on first use
    describers: Describers | None = None  # started with the server (settings.describe_workers)
    prefetched_vector_bytes: int = 0  # index vectors read into the page cache at start-up

    def fetch(self, url: str) -> bytes:
        """Download a query or original URL under the server's URL policy."""
        try:
            return fetch_url(url, self.policy)
        except UrlFetchError as exc:
            if exc.too_large:
                raise _too_large(str(exc)) from None
            if exc.timed_out:
                raise ApiError(408, "timeout", str(exc)) from None
            raise ApiError(400, "bad_url", str(exc)) from None


# the dependencies below do no I/O: async, so FastAPI runs them on the event loop instead of
# sending each to a worker thread and back (two thread hops per request, ~15% of the CPU of
# answering GET /api/images/{id})


async def _state(request: Request) -> ServerState:
    return request.app.state.lookalike


StateDep = Annotated[ServerState, Depends(_state)]

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")
_bearer = HTTPBearer(auto_error=False, description="The API key as a bearer token.")


def _presented_key(header: str | None, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    if header:
        return header
    return bearer.credentials if bearer is not None else None


def _check_key(state: ServerState, presented: str | None, action: str) -> None:
    expected = state.settings.api_key
    if not expected:
        raise ApiError(
            403,
            "writes_disabled",
            f"{action} is disabled: the server has no API key configured "
            "(set LOOKALIKE_API_KEY or pass --api-key)",
        )
    if not presented:
        raise ApiError(401, "no_key", f"{action} needs an API key (X-API-Key header)")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise ApiError(403, "wrong_key", "the API key is not valid")


async def require_write(
    state: StateDep,
    header: Annotated[str | None, Depends(_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Writes always need the configured key."""
    _check_key(state, _presented_key(header, bearer), "changing the collection")


async def require_read(
    state: StateDep,
    header: Annotated[str | None, Depends(_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Reads need the key only when the settings say so."""
    if state.settings.read_key_required and state.settings.api_key:
        _check_key(state, _presented_key(header, bearer), "reading the collection")


# -- helpers ----------------------------------------------------------------------------------


async def read_upload(upload: UploadFile, settings: ServerSettings) -> bytes:
    """An uploaded file's bytes, refused (413) past max_upload_bytes without reading it all."""
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise _too_large(
            f"{upload.filename or 'upload'} exceeds the upload limit of "
            f"{settings.max_upload_bytes:,} bytes"
        )
    if not data:
        raise ApiError(400, "bad_image", f"{upload.filename or 'upload'}: empty file")
    return data


def check_pixels(data: bytes, label: str, limit: int) -> None:
    """Refuse (413) an image whose header declares more pixels than `limit`, before decoding."""
    size = probe_size(data)
    if size is None:
        return  # not readable as an image: the decoder will say why (400)
    width, height = size
    if width * height > limit:
        raise _too_large(
            f"{label}: {width}x{height} = {width * height:,} pixels exceeds the limit of {limit:,}"
        )


def parse_json_field(raw: str | None, name: str, settings: ServerSettings) -> Any:
    """A form field holding JSON, bounded in size and depth (400 with the reason)."""
    return parse_json_text(
        raw, name, max_depth=settings.max_json_depth, max_chars=settings.max_metadata_chars
    )


def check_metadata(value: Any, settings: ServerSettings) -> dict[str, Any] | None:
    """Metadata a client wants stored: an object, bounded, storable, with a text filename."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_field", "metadata must be a JSON object")
    check_json_value(value, "metadata", max_depth=settings.max_json_depth)
    if len(json.dumps(value)) > settings.max_metadata_chars:
        raise ApiError(
            400, "bad_field", f"metadata is larger than {settings.max_metadata_chars:,} characters"
        )
    if "filename" in value and not isinstance(value["filename"], str):
        raise ApiError(400, "bad_field", "metadata.filename must be text")
    return value


def parse_metadata(raw: str | None, settings: ServerSettings) -> dict[str, Any] | None:
    return check_metadata(parse_json_field(raw, "metadata", settings), settings)


def parse_weights(
    raw: str | Mapping[str, Any] | None, settings: ServerSettings
) -> str | dict[str, float] | None:
    """Weights as a JSON object or the CLI's 'color=0.6,texture=0.4'; the engine validates."""
    if raw is None:
        return None
    if isinstance(raw, str):
        if not raw.strip():
            return None
        check_text(raw, "weights", settings.max_text_chars)
        if not raw.lstrip().startswith("{"):
            return raw
        raw = parse_json_field(raw, "weights", settings)
    if not isinstance(raw, Mapping):
        raise ApiError(400, "bad_weights", "weights must be an object of name: number")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(400, "bad_weights", f"weight for {name!r} must be a number")
        if not math.isfinite(float(value)):
            raise ApiError(400, "bad_weights", f"weight for {name!r} must be finite")
        out[str(name)] = float(value)
    return out


def parse_sketch(raw: Any, settings: ServerSettings) -> list[list[str | None]] | None:
    """A square grid of colour terms (null or "" = unspecified), at most max_sketch_side."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = parse_json_field(raw, "sketch", settings)
        if raw is None:
            return None
    side = settings.max_sketch_side
    if (
        not isinstance(raw, list)
        or not raw
        or len(raw) > side
        or not all(isinstance(row, list) and len(row) == len(raw) for row in raw)
    ):
        raise ApiError(
            400,
            "bad_sketch",
            f"sketch must be a square grid (list of equal lists), at most {side} x {side}",
        )
    grid: list[list[str | None]] = []
    for row in raw:
        cells: list[str | None] = []
        for cell in row:
            if cell is None or cell == "":
                cells.append(None)
            elif isinstance(cell, str) and len(cell) <= 32:
                cells.append(check_text(cell, "sketch", 32) or "")
            else:
                raise ApiError(400, "bad_sketch", "sketch cells must be colour names or null")
        grid.append(cells)
    if all(cell is None for row in grid for cell in row):
        return None  # an empty drawing asks for nothing
    return grid


def public_record(record: ImageRecord, settings: ServerSettings) -> dict[str, Any]:
    """A record as clients see it: links instead of server paths (unless expose_paths)."""
    data = record.to_dict()
    source = "url" if is_url(record.path) else "file"
    if not settings.expose_paths and source == "file":
        data.pop("path")
    data["name"] = display_name(record.metadata, record.path)
    data["source"] = source
    data.update(image_links(record.id))
    return data


def image_links(image_id: int) -> dict[str, str]:
    """Where a client fetches an image's thumbnail and original."""
    return {
        "thumbnail": f"/api/images/{image_id}/thumbnail",
        "original": f"/api/images/{image_id}/original",
    }


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]


def display_name(metadata: Mapping[str, Any], path: str) -> str:
    """The name to show: metadata's filename when it is text (it may be anything a client
    once stored), else the path's last component."""
    name = metadata.get("filename")
    if isinstance(name, str) and name.strip():
        return safe_filename(name)
    return safe_filename(_basename(path), default="image")


def public_results(results: SearchResults, settings: ServerSettings) -> dict[str, Any]:
    data = results.to_dict()
    for hit in data["results"]:
        path = hit.pop("path", "") if not settings.expose_paths else hit.get("path", "")
        if is_url(path):
            hit["url"] = path
        hit["name"] = display_name(hit.get("metadata") or {}, path)
        hit.update(image_links(hit["id"]))
    return data


def public_ranking(ranking: Ranking) -> dict[str, Any]:
    """Results without records: each one's id, score, breakdown and image links."""
    data = ranking.to_dict()
    for hit in data["results"]:
        hit.update(image_links(hit["id"]))
    return data


def public_group(
    group: Any, records: Mapping[int, ImageRecord], settings: ServerSettings
) -> dict[str, Any]:
    """A near-duplicate group: ids, pairs, and each image's record as clients see records."""
    data = group.to_dict()
    data["images"] = [public_record(records[i], settings) for i in group.ids if i in records]
    return data


# -- searching --------------------------------------------------------------------------------


@dataclass
class SearchSpec:
    """One search as the API received it; exactly the engine's query parameters."""

    image: bytes | int | None = None
    url: str | None = None
    text: str | None = None
    sketch: list[list[str | None]] | None = None
    layout: str | None = None
    colors: str | None = None
    where: str | None = None
    weights: str | dict[str, float] | None = None
    part_weights: dict[str, float] | None = None
    top_k: int = 10
    threshold: float | str | None = None
    more: list[int] | None = None  # relevance feedback: ids wanted / not wanted
    less: list[int] | None = None
    calibrated: bool = False
    understand: bool = True
    windows: bool = False
    records: bool = True  # false: ids, scores and breakdowns only (Collection.nearest)

    def kinds(self) -> list[str]:
        return [
            name
            for name, value in (
                ("image", self.image is not None or self.url is not None),
                ("feedback", self.more or self.less),
                ("text", self.text),
                ("sketch", self.sketch),
                ("layout", self.layout),
                ("colors", self.colors),
            )
            if value
        ]


RECORDS_HELP = (
    "false: each result is its id, score and breakdown only (no path, name, metadata or "
    "index key): no catalog read, for clients that keep their own records"
)
WINDOWS_HELP = (
    "true: also find a query image inside other pictures (insets, crops on a background); "
    "the CNN looks at it twice, ~3x the CPU"
)


class SearchRequest(BaseModel):
    """A search as JSON. Give at least one of id, url, image_base64, text, sketch, layout."""

    id: int | None = Field(None, ge=MIN_ID, le=MAX_ID, description="Search by a stored image.")
    url: str | None = Field(None, description="Search by an image at an http(s) URL.")
    image_base64: str | None = Field(None, description="Search by image bytes, base64-encoded.")
    text: str | None = None
    sketch: list[list[str | None]] | None = Field(
        None, description="Square grid of colour terms; null = unspecified."
    )
    layout: str | None = Field(None, description="e.g. 'top blue, bottom grey'")
    colors: str | None = Field(None, description="e.g. 'blue then white'")
    where: str | None = Field(None, description="e.g. \"category = 'shirt'\"")
    weights: dict[str, float] | str | None = None
    part_weights: dict[str, float] | None = None
    top_k: int = Field(10, ge=1, le=MAX_ID)
    threshold: float | Literal["auto"] | None = Field(
        None, description="0..100, or 'auto': the likely matches"
    )
    more: list[Annotated[int, Field(ge=MIN_ID, le=MAX_ID)]] | None = Field(
        None, max_length=MAX_FEEDBACK_IDS, description="Ids of answers wanted: more like these."
    )
    less: list[Annotated[int, Field(ge=MIN_ID, le=MAX_ID)]] | None = Field(
        None, max_length=MAX_FEEDBACK_IDS, description="Ids of answers not wanted: less like these."
    )
    calibrated: bool = Field(False, description="true: calibrated distances; false: raw 0..100")
    understand: bool = Field(True, description="false: text is only words")
    windows: bool = Field(False, description=WINDOWS_HELP)
    records: bool = Field(True, description=RECORDS_HELP)


class MetadataPatch(BaseModel):
    """New metadata for an image; merged into what it has unless merge is false."""

    metadata: dict[str, Any]
    merge: bool = True


def check_spec(spec: SearchSpec, settings: ServerSettings) -> SearchSpec:
    """Refuse (400) a search whose size or cost is past the configured limits, before any work."""
    if not 1 <= spec.top_k <= settings.max_top_k:
        raise ApiError(400, "bad_field", f"top_k must be between 1 and {settings.max_top_k}")
    spec.threshold = check_threshold(spec.threshold)
    spec.more = parse_ids(spec.more, "more")
    spec.less = parse_ids(spec.less, "less")
    for name in ("text", "layout", "colors"):
        setattr(spec, name, check_text(getattr(spec, name), name, settings.max_text_chars))
    spec.where = check_text(spec.where, "where", settings.max_filter_chars)
    if spec.url is not None:
        spec.url = check_text(spec.url, "url", 2048)
    if spec.where:
        terms, columns = filter_fields(spec.where)
        if terms > settings.max_filter_terms:
            raise ApiError(
                400,
                "too_costly",
                f"the filter has {terms} terms, over the limit of {settings.max_filter_terms} "
                "(max_filter_terms)",
            )
        if "path" in columns and not settings.expose_paths:
            raise ApiError(
                400,
                "bad_filter",
                "filters on 'path' are refused: this server does not expose file paths",
            )
    if spec.part_weights:
        for name, value in spec.part_weights.items():
            check_text(name, "part_weights", 64)
            check_number(value, f"part weight {name!r}", 0, 1)
    if isinstance(spec.weights, dict):
        for name, value in spec.weights.items():
            check_text(name, "weights", 64)
            check_number(value, f"weight {name!r}", -1e9, 1e9)
    return spec


def run_search(state: ServerState, spec: SearchSpec) -> dict[str, Any]:
    """Blocking: fetch a query URL, check sizes, rank; called in a worker thread."""
    started = time.perf_counter()
    settings = state.settings
    check_spec(spec, settings)
    kinds = spec.kinds()
    if not kinds and not spec.where:
        raise ApiError(
            400,
            "empty_query",
            "give something to search by: an image, URL, id, text, sketch, layout, colours "
            "or a filter",
        )
    image = spec.image
    if spec.url is not None:
        image = state.fetch(spec.url)
    if isinstance(image, bytes):
        check_pixels(image, "query image", min(settings.max_query_pixels, settings.max_pixels))
    coll = state.collection
    if isinstance(image, int):
        state_get(coll, image)  # 404 for an unknown id, before any work
    for marked in (*(spec.more or ()), *(spec.less or ())):
        state_get(coll, marked)
    query = dict(
        image=image,
        text=spec.text,
        sketch=spec.sketch,
        layout=spec.layout,
        colors=spec.colors,
        where=spec.where,
        weights=spec.weights,
        part_weights=spec.part_weights,
        top_k=spec.top_k,
        threshold=spec.threshold,
        more=spec.more,
        less=spec.less,
        calibrated=spec.calibrated,
        understand=spec.understand,
        windows=spec.windows,
    )
    if spec.records:
        data = public_results(coll.query(**query), settings)
    else:
        data = public_ranking(coll.nearest(**query))
    data["query"] = {
        "kinds": kinds,
        "top_k": spec.top_k,
        "where": spec.where,
        "windows": spec.windows and isinstance(image, bytes),
    }
    if isinstance(image, int):
        data["query"]["same_as"] = [image]
    elif isinstance(image, bytes):  # the page leaves the query image out of its own results
        data["query"]["same_as"] = stored_copies(coll, image)
    data["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return data


async def bounded(
    state: ServerState, func: Callable[[], Any], what: str, gate: WorkGate | None = None
) -> Any:
    """Run blocking work in a worker thread holding a slot of `gate` (default: searches);
    503 with Retry-After when no slot frees up in time, 408 once it passes request_timeout_s.

    The thread cannot be killed; it finishes in the background (keeping its slot until then)
    and its answer is dropped."""
    limit = state.settings.request_timeout_s
    try:
        return await (gate or state.searches).run(func, timeout_s=limit)
    except TimeoutError:
        raise ApiError(
            408, "timeout", f"{what} took longer than the limit of {limit:g} s (request_timeout_s)"
        ) from None


def gate_for(state: ServerState, spec: SearchSpec) -> WorkGate:
    """Searches that decode an image take a describe slot; the others a search slot."""
    return state.describes if isinstance(spec.image, bytes) or spec.url else state.searches


def stored_copies(coll: Collection, data: bytes) -> list[int]:
    """Ids of stored images whose source bytes are exactly these (same sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    return [
        row[0] for row in coll.catalog.query("SELECT id FROM images WHERE sha256 = ?", (digest,))
    ]


def state_get(coll: Collection, image_id: int) -> ImageRecord:
    if not MIN_ID <= image_id <= MAX_ID:
        raise ApiError(404, "not_found", f"no image with id {image_id}")
    try:
        return coll.get(int(image_id))
    except CollectionError:
        raise ApiError(404, "not_found", f"no image with id {image_id}") from None


# -- the app ----------------------------------------------------------------------------------


def create_app(
    collection: str | os.PathLike[str] | Collection, settings: ServerSettings | None = None
) -> FastAPI:
    """The API and page over `collection` (a folder, opened here once, or an open Collection)."""
    settings = settings or ServerSettings.from_env()
    owns = not isinstance(collection, Collection)
    coll = Collection.open(collection) if owns else collection  # type: ignore[arg-type]
    coll.catalog.statement_budget_s = settings.statement_budget_s
    state = ServerState(
        collection=coll,
        settings=settings,
        thumbnails=thumbnails.ThumbnailCache(
            settings.thumbnail_cache_bytes, max_pixels=coll.max_pixels
        ),
        policy=FetchPolicy(
            max_bytes=settings.url_max_bytes,
            timeout_s=settings.url_fetch_timeout_s,
            allow_private=settings.allow_private_urls,
        ),
        owns_collection=owns,
        searches=WorkGate("search", settings.max_concurrent_searches, settings.queue_wait_s),
        describes=WorkGate("describe", settings.max_concurrent_describes, settings.queue_wait_s),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(lambda: coll.extractors)  # models load now, not on a request
        describers = None
        if settings.describe_workers and type(coll) is Collection:  # they start meanwhile
            describers = Describers(
                coll,
                workers=settings.max_concurrent_describes,
                niceness=settings.describe_nice,
                budget_s=settings.request_timeout_s,
            )
        if settings.thread_budget:
            log.info("thread budget: %s", budget_threads(torch_needed="deep" in coll.attributes))
        if settings.warm_indexes:  # the first search must not pay for loading every signature
            state.prefetched_vector_bytes = await run_in_threadpool(warm_indexes, coll)
        if describers is not None:
            state.describers = await run_in_threadpool(install_describers, coll, describers)
        if settings.freeze_heap:
            log.info("objects frozen out of the collector: %d", freeze_heap(collect=True))
        if settings.warm_up:
            threading.Thread(
                target=_warm_up_text_model,
                args=(settings.freeze_heap,),
                name="lookalike-warm-up",
                daemon=True,
            ).start()
        try:
            yield
        finally:
            if state.describers is not None:
                coll.describe_elsewhere = None
                state.describers.close()
            if state.owns_collection:
                coll.close()

    app = FastAPI(
        title="lookalike",
        version="0.1.0",
        description="Content-based image retrieval: search a collection by example image, "
        "URL, stored image, text, sketch or layout sentence.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads assets from a CDN; the page must work offline
        redoc_url=None,
        openapi_url="/api/openapi.json",
        default_response_class=SafeJSONResponse,
    )
    app.state.lookalike = state
    app.add_middleware(RequestBounds, settings=settings)

    def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        body["detail"] = scrub(str(body.get("detail", "")), coll.directory)
        return SafeJSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return answer(
            exc.status_code, {"detail": exc.detail, "error": exc.code, **exc.extra}, headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404/405
        return answer(exc.status_code, {"detail": str(exc.detail), "error": "http"}, exc.headers)

    @app.exception_handler(InputError)
    async def input_error(_: Request, exc: InputError) -> JSONResponse:
        return answer(400, {"detail": str(exc), "error": "bad_field", "field": exc.field})

    @app.exception_handler(Saturated)
    async def saturated(_: Request, exc: Saturated) -> JSONResponse:
        return answer(
            503,
            {
                "detail": f"the server is busy ({exc.gate} slots all taken); retry in "
                f"{exc.retry_after_s} s",
                "error": "busy",
            },
            {"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, without echoing the input (it may not even encode)."""
        problems = [
            {
                "loc": [str(part)[:64] for part in error.get("loc", ())],
                "msg": str(error.get("msg", ""))[:200],
                "type": str(error.get("type", "")),
            }
            for error in exc.errors()[:20]
        ]
        summary = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems)
        return answer(
            422, {"detail": summary or "invalid request", "error": "bad_field", "errors": problems}
        )

    @app.exception_handler(LookalikeError)
    async def engine_error(_: Request, exc: LookalikeError) -> JSONResponse:
        body: dict[str, Any] = {"detail": str(exc), "error": type(exc).__name__}
        status = 400
        if isinstance(exc, DecodeError):
            body.update(error="bad_image", detail=exc.reason)
        elif isinstance(exc, QueryError):
            body.update(error="bad_query", position=exc.position)
        elif isinstance(exc, StatementTimeout):
            body.update(error="too_costly")
        elif isinstance(exc, CollectionError) and "no image" in str(exc):
            status, body["error"] = 404, "not_found"
        elif isinstance(exc, CollectionBusy | NoWorker):
            return answer(503, {**body, "error": "busy"}, {"Retry-After": "1"})
        elif isinstance(exc, WorkerTimeout):
            status, body["error"] = 408, "timeout"
        return answer(status, body)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Last resort: the traceback goes to the server log, the client learns nothing inside."""
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return answer(500, {"detail": "internal error (logged on the server)", "error": "internal"})

    register_routes(app, state)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def register_routes(app: FastAPI, state: ServerState) -> None:
    settings = state.settings
    coll = state.collection
    # reads declare the key (and pay for solving it) only where they need it: the schema
    # then says which routes are open, and an open read skips four dependency calls
    reads_need_key = settings.read_key_required and bool(settings.api_key)
    read = [Depends(require_read)] if reads_need_key else []
    write = [Depends(require_write)]

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/health", tags=["collection"], summary="Is the server up")
    async def health() -> dict[str, Any]:
        """Answered on its own two threads with a one-second cap: never behind searches or
        the catalog's write lock."""
        images = None
        if state.health_threads is None:
            state.health_threads = anyio.CapacityLimiter(2)
        with anyio.move_on_after(1.0):
            images = await anyio.to_thread.run_sync(
                coll.__len__, abandon_on_cancel=True, limiter=state.health_threads
            )
        return {
            "status": "ok",
            "images": images,
            "busy": {"searches": state.searches.busy, "describes": state.describes.busy},
        }

    @app.get(
        "/api/info",
        tags=["collection"],
        summary="Collection, query kinds and limits",
        dependencies=read,
    )
    def info() -> dict[str, Any]:
        data = coll.info()
        if not settings.expose_paths:
            data.pop("path", None)
        attributes = list(data["attributes"])
        sliders = [a for a in ("color", "texture", "shape") if a in attributes]
        if any(a.endswith("_location") for a in attributes):
            sliders.append("location")
        sliders += [a for a in ("perceptual", "deep") if a in attributes]
        colour_grid = "perceptual" in attributes  # sketches, layouts and colours need it
        return {
            "collection": data,
            "weights": sliders,
            "query_kinds": {
                "image": True,
                "url": True,
                "id": True,
                "text": True,
                "sketch": colour_grid,
                "layout": colour_grid,
                "where": True,
                "colors": colour_grid,
                "feedback": True,  # the page shows "more / less like this" buttons
            },
            "feedback": {"more": True, "less": True},
            "scores": {"calibrated": True, "raw": True, "threshold_auto": True},
            "palette": palette(),
            "server": {
                **settings.public(),
                "threads": thread_report(),
                "gc_frozen_objects": gc.get_freeze_count(),
                "prefetched_vector_bytes": state.prefetched_vector_bytes,
                "describe_workers": None if state.describers is None else state.describers.report(),
            },
        }

    # -- images ---------------------------------------------------------------------------

    @app.post(
        "/api/images",
        tags=["images"],
        status_code=201,
        dependencies=write,
        summary="Add images (multipart upload, with metadata)",
    )
    async def add_images(
        files: Annotated[list[UploadFile], File(description="One or more image files.")],
        metadata: Annotated[
            str | None, Form(description="JSON object stored with each image.")
        ] = None,
    ) -> dict[str, Any]:
        meta = parse_metadata(metadata, settings)
        blobs = []
        for upload in files:
            data = await read_upload(upload, settings)
            name = safe_filename(upload.filename)
            check_pixels(data, name, settings.max_pixels)
            blobs.append((name, data))

        def add_all() -> dict[str, Any]:
            added, failed = [], []
            for name, data in blobs:
                try:
                    image_id = coll.add_bytes(data, name, metadata=meta)
                except DecodeError as exc:
                    failed.append({"filename": name, "reason": exc.reason})
                    continue
                state.thumbnails.forget(image_id)
                added.append(public_record(coll.get(image_id), settings))
            return {"added": added, "failed": failed}

        result = await state.describes.run(add_all)
        if not result["added"]:
            reasons = "; ".join(f"{f['filename']}: {f['reason']}" for f in result["failed"])
            raise ApiError(400, "bad_image", reasons, failed=result["failed"])
        return result

    @app.get(
        "/api/images/{image_id}", tags=["images"], summary="One image's record", dependencies=read
    )
    async def get_image(image_id: ImageId) -> SafeJSONResponse:
        # on the event loop: one row read (WAL: a reader never waits for the writer) costs
        # less than the hop to a worker thread, and the answer is made here, not re-encoded
        record = state_get(coll, image_id)
        return SafeJSONResponse(
            {**public_record(record, settings), "index_key": coll.index_key(record)}
        )

    @app.put(
        "/api/images/{image_id}",
        tags=["images"],
        dependencies=write,
        summary="Replace an image's pixels and/or metadata",
    )
    async def replace_image(
        image_id: ImageId,
        file: Annotated[UploadFile | None, File(description="New image content.")] = None,
        metadata: Annotated[str | None, Form(description="JSON object.")] = None,
        merge_metadata: Annotated[bool, Form(description="Merge into, not replace.")] = True,
    ) -> dict[str, Any]:
        state_get(coll, image_id)
        data = None
        name = safe_filename(file.filename if file is not None else None)
        if file is not None:
            data = await read_upload(file, settings)
            check_pixels(data, name, settings.max_pixels)
        meta = parse_metadata(metadata, settings)
        if data is None and meta is None:
            raise ApiError(400, "empty_update", "give a file, metadata or both")

        def update() -> ImageRecord:
            return coll.update(
                image_id,
                source=data,
                metadata=meta,
                merge_metadata=merge_metadata,
                name=name,
            )

        record = (
            await state.describes.run(update)
            if data is not None
            else await run_in_threadpool(update)
        )
        state.thumbnails.forget(image_id)
        return public_record(record, settings)

    @app.patch(
        "/api/images/{image_id}",
        tags=["images"],
        dependencies=write,
        summary="Change an image's metadata (JSON)",
    )
    def patch_image(image_id: ImageId, body: MetadataPatch) -> dict[str, Any]:
        state_get(coll, image_id)
        metadata = check_metadata(body.metadata, settings)
        record = coll.update(image_id, metadata=metadata, merge_metadata=body.merge)
        return public_record(record, settings)

    @app.delete(
        "/api/images/{image_id}",
        tags=["images"],
        dependencies=write,
        summary="Remove an image from the collection",
    )
    def delete_image(image_id: ImageId) -> dict[str, Any]:
        state_get(coll, image_id)
        removed = coll.remove(image_id)
        state.thumbnails.forget(image_id)
        return {"removed": removed, "id": image_id}

    @app.get(
        "/api/images/{image_id}/thumbnail",
        tags=["images"],
        dependencies=read,
        summary="JPEG thumbnail",
        response_class=Response,
    )
    async def thumbnail(
        request: Request, image_id: ImageId, size: Annotated[int, Query(ge=16, le=1024)] = 256
    ) -> Response:
        record = state_get(coll, image_id)
        try:
            thumb = await bounded(
                state,
                lambda: state.thumbnails.get(record, size, state.fetch),
                "thumbnail",
                state.describes,
            )
        except DecodeError as exc:  # the original moved, vanished or broke since indexing
            raise ApiError(404, "gone", f"image {image_id}: {exc.reason}") from None
        # Revalidate every time (cheap, by ETag): a replaced image keeps its URL.
        headers = {"ETag": thumb.etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == thumb.etag:
            return Response(status_code=304, headers=headers)
        return Response(thumb.data, media_type=thumb.media_type, headers=headers)

    @app.get(
        "/api/images/{image_id}/original",
        tags=["images"],
        dependencies=read,
        summary="The original image file",
        response_class=Response,
    )
    def original(image_id: ImageId) -> Response:
        record = state_get(coll, image_id)
        if is_url(record.path):
            return RedirectResponse(record.path, status_code=307)
        try:
            path, media_type = thumbnails.original_file(record)
        except DecodeError as exc:
            raise ApiError(404, "gone", f"image {image_id}: {exc.reason}") from None
        return FileResponse(
            path,
            media_type=media_type,
            headers={"Content-Security-Policy": "default-src 'none'; sandbox"},
            content_disposition_type="inline",
            filename=display_name(record.metadata, str(path)),
        )

    # -- searching ------------------------------------------------------------------------

    @app.post(
        "/api/search",
        tags=["search"],
        dependencies=read,
        summary="Search (multipart form: upload, url, id, text, sketch, layout, ...)",
    )
    async def search_form(
        image: Annotated[UploadFile | None, File(description="Query image upload.")] = None,
        url: Annotated[str | None, Form(description="Query image URL (http/https).")] = None,
        id: Annotated[
            int | None, Form(ge=MIN_ID, le=MAX_ID, description="Id of a stored image.")
        ] = None,
        text: Annotated[str | None, Form()] = None,
        sketch: Annotated[str | None, Form(description="JSON square grid of terms.")] = None,
        layout: Annotated[str | None, Form()] = None,
        colors: Annotated[str | None, Form(description="Index key: 'blue then white'.")] = None,
        where: Annotated[str | None, Form()] = None,
        weights: Annotated[str | None, Form(description="JSON object or a=0.5,b=0.5")] = None,
        part_weights: Annotated[str | None, Form(description="JSON object.")] = None,
        top_k: Annotated[int, Form()] = 10,
        threshold: Annotated[str | None, Form(description="0..100 or 'auto'")] = None,
        more: Annotated[str | None, Form(description="Ids wanted, e.g. '3,12'.")] = None,
        less: Annotated[str | None, Form(description="Ids not wanted, e.g. '7'.")] = None,
        calibrated: Annotated[bool, Form()] = False,
        understand: Annotated[bool, Form()] = True,
        windows: Annotated[bool, Form(description=WINDOWS_HELP)] = False,
        records: Annotated[bool, Form(description=RECORDS_HELP)] = True,
    ) -> SafeJSONResponse:
        sources = sum(x is not None and x != "" for x in (image, url, id))
        if sources > 1:
            raise ApiError(400, "bad_field", "give one query image: an upload, a url or an id")
        spec = SearchSpec(
            image=await read_upload(image, settings) if image is not None else id,
            url=url or None,
            text=text,
            sketch=parse_sketch(sketch, settings),
            layout=layout,
            colors=colors,
            where=where,
            weights=parse_weights(weights, settings),
            part_weights=parse_part_weights(
                parse_json_field(part_weights, "part_weights", settings)
            ),
            top_k=top_k,
            threshold=threshold,
            more=parse_ids(more, "more"),
            less=parse_ids(less, "less"),
            calibrated=calibrated,
            understand=understand,
            windows=windows,
            records=records,
        )
        check_spec(spec, settings)
        return SafeJSONResponse(
            await bounded(state, lambda: run_search(state, spec), "search", gate_for(state, spec))
        )

    @app.post(
        "/api/search/json", tags=["search"], dependencies=read, summary="Search with a JSON body"
    )
    async def search_json(body: SearchRequest) -> dict[str, Any]:
        given = [x for x in (body.id, body.url, body.image_base64) if x is not None]
        if len(given) > 1:
            raise ApiError(400, "bad_field", "give one of id, url, image_base64")
        image: bytes | int | None = body.id
        if body.image_base64 is not None:
            image = decode_base64(body.image_base64, settings)
        spec = SearchSpec(
            image=image,
            url=body.url,
            text=body.text,
            sketch=parse_sketch(body.sketch, settings),
            layout=body.layout,
            colors=body.colors,
            where=body.where,
            weights=parse_weights(body.weights, settings),
            part_weights=parse_part_weights(body.part_weights),
            top_k=body.top_k,
            threshold=body.threshold,
            more=body.more,
            less=body.less,
            calibrated=body.calibrated,
            understand=body.understand,
            windows=body.windows,
            records=body.records,
        )
        check_spec(spec, settings)
        return await bounded(
            state, lambda: run_search(state, spec), "search", gate_for(state, spec)
        )

    @app.get(
        "/api/images/{image_id}/similar",
        tags=["search"],
        dependencies=read,
        summary="Images like a stored image",
    )
    async def similar(
        image_id: ImageId,
        weights: str | None = None,
        top_k: Annotated[int, Query(ge=1, le=MAX_ID)] = 10,
        threshold: Annotated[float | None, Query(ge=0, le=100, allow_inf_nan=False)] = None,
        where: str | None = None,
        records: Annotated[bool, Query(description=RECORDS_HELP)] = True,
    ) -> dict[str, Any]:
        spec = SearchSpec(
            image=image_id,
            weights=parse_weights(weights, settings),
            top_k=top_k,
            threshold=threshold,
            where=where,
            records=records,
        )
        check_spec(spec, settings)
        return await bounded(state, lambda: run_search(state, spec), "search")

    @app.get(
        "/api/duplicates",
        tags=["search"],
        dependencies=read,
        summary="Groups of near-duplicate images, with each pair's score",
    )
    async def duplicates(
        threshold: Annotated[
            float | None,
            Query(ge=0, le=100, allow_inf_nan=False, description="Highest pair score (0-100)."),
        ] = None,
        weights: Annotated[str | None, Query(description="JSON object or a=0.5,b=0.5")] = None,
    ) -> dict[str, Any]:
        parsed = parse_weights(weights, settings)

        def find() -> dict[str, Any]:
            groups = coll.duplicates(threshold=threshold, weights=parsed)
            records = coll.catalog.get_many({i for g in groups for i in g.ids})
            return {"groups": [public_group(g, records, settings) for g in groups]}

        return await bounded(state, find, "duplicates")

    @app.get(
        "/api/layout",
        tags=["search"],
        dependencies=read,
        summary="The sketch grid a layout sentence produces",
    )
    async def layout_grid(sentence: Annotated[str, Query(min_length=1)]):
        spec = check_spec(SearchSpec(layout=sentence, top_k=1), settings)
        data = await bounded(state, lambda: run_search(state, spec), "layout")
        return {"sentence": sentence, **(data.get("explain", {}).get("layout") or {})}


def install_describers(coll: Collection, describers: Describers) -> Describers:
    """Wait for the describe workers to be ready (models loaded and warmed), then let them
    describe `coll`'s uploads."""
    try:
        describers.pool.wait_ready()
    except LookalikeError:
        describers.close()
        raise
    coll.describe_elsewhere = describers
    log.info("describe workers: %s", describers.report())
    return describers


def warm_indexes(coll: Collection) -> int:
    """Build every attribute's search index now and run one search by a stored id, so the
    first request pays for neither (it took 0.5-1.4 s: numba's kernels of the float32
    rescoring and of layout sentences loaded, the calibration read, the first rows paged
    in), split every image's perceptual row by one colour query (the first sketch, layout
    or colour request at 1M took 11 s), and read the indexes' vectors into the page cache
    where they fit (`prefetch_vector_maps`: the bytes asked for)."""
    from lookalike.features.base import load_rough_kernel
    from lookalike.query.layout import load_layout_kernels

    indexes = [coll.index_for(name) for name in coll.extractors]
    load_rough_kernel()
    load_layout_kernels()
    if not isinstance(coll, Collection):  # another backend warms its own way
        return 0
    prefetched = prefetch_vector_maps([ix.vectors for ix in indexes])
    if prefetched:
        log.info("reading %.0f MB of index vectors into the page cache", prefetched / 1e6)
    first = next(iter(coll.catalog.query("SELECT id FROM images ORDER BY id LIMIT 1")), None)
    if first is not None:
        coll.search(int(first[0]), top_k=10)
        if "perceptual" in coll.attributes:  # sketch, layout and colour parts split every
            coll.query(colors="blue", top_k=1)  # image's perceptual row once: 11 s at 1M
    return prefetched


def parse_part_weights(raw: Any) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ApiError(400, "bad_weights", "part_weights must be an object of part: number")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            # (NaN fails the range test too)
            raise ApiError(400, "bad_weights", f"part weight {name!r} must be a number in 0..1")
        out[str(name)] = float(value)
    return out


def decode_base64(text: str, settings: ServerSettings) -> bytes:
    import base64
    import binascii

    if len(text) > settings.max_upload_bytes * 4 // 3 + 8:
        raise _too_large(f"image exceeds the upload limit of {settings.max_upload_bytes:,} bytes")
    try:
        data = base64.b64decode(
            text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True
        )
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_image", "image_base64 is not valid base64") from None
    if not data:
        raise ApiError(400, "bad_image", "image_base64 is empty")
    return data


def _warm_up_text_model(pause_collector: bool) -> None:
    """Load the sentence model (if installed) so the first text search does not wait for it;
    the engine loads it once per process under a lock, so a search arriving meanwhile waits."""
    try:
        from lookalike import semantic

        if semantic.is_available():
            # its imports alone made the collector stop every thread for 0.1-0.3 s, several
            # times, while serving
            with collector_paused() if pause_collector else contextlib.nullcontext():
                semantic.load_model()
    except Exception:  # warm-up is an optimisation: a failure shows up on the search instead
        pass


def palette() -> list[dict[str, str]]:
    """The 11 basic colour terms with a swatch colour each, in the engine's fixed order."""
    try:
        from lookalike.features.perceptual import PROTOTYPES_HEX, TERMS

        return [{"term": t, "hex": "#" + PROTOTYPES_HEX[t].split()[0]} for t in TERMS]
    except Exception:  # the perceptual module is optional for the server
        return [{"term": t, "hex": h} for t, h in FALLBACK_PALETTE.items()]
